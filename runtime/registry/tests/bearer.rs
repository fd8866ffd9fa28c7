//! The Bearer token flow against a real `docker-registry` configured with
//! `auth.token`, and a token server written here (ES256 JWTs with an x5c
//! chain of a self-signed certificate the registry trusts).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use berth_image::Reference;
use berth_registry::{ClientConfig, PushOptions, RegistryClient, RegistryError};
use common::*;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "berth-test";
const ISSUER: &str = "berth-test-issuer";

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

struct TokenServer {
    port: u16,
    issued: Arc<AtomicUsize>,
}

/// Answers `GET /token?service=&scope=…` for `user:pass` only.
async fn token_server(key_pem: String, cert_der: Vec<u8>, user: &str, pass: &str) -> TokenServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(key_pem.as_bytes()).expect("key");
    let x5c = base64::engine::general_purpose::STANDARD.encode(&cert_der);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .trim()
                .to_string();
            let mut scopes = Vec::new();
            let mut params = HashMap::new();
            if let Some((_, query)) = path.split_once('?') {
                for kv in query.split('&') {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    let v = percent_decode(v);
                    if k == "scope" {
                        scopes.extend(v.split(' ').map(str::to_string));
                    } else {
                        params.insert(k.to_string(), v);
                    }
                }
            }
            let response = if auth != expected {
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{\"details\":\"unauthorized\"}\n".to_string()
            } else {
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|s| {
                        let (kind, rest) = s.split_once(':')?;
                        let (name, actions) = rest.rsplit_once(':')?;
                        Some(serde_json::json!({
                            "type": kind,
                            "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let claims = serde_json::json!({
                    "iss": ISSUER,
                    "sub": "carol",
                    "aud": params.get("service").cloned().unwrap_or_default(),
                    "exp": now + 300,
                    "nbf": now - 10,
                    "iat": now,
                    "jti": format!("t{}", counter.fetch_add(1, Ordering::SeqCst)),
                    "access": access,
                });
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.x5c = Some(vec![x5c.clone()]);
                let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    TokenServer { port, issued }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_real_registry() {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["berth-token-issuer".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let tokens = token_server(key.serialize_pem(), cert.der().to_vec(), "carol", "s3cret").await;

    let dir = TempDir::new().expect("tmp");
    let bundle = dir.path().join("root.pem");
    std::fs::write(&bundle, cert.pem()).expect("bundle");
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.port,
        bundle.display()
    );
    let reg = Registry::start_in(dir, &auth);

    let tmp = TempDir::new().expect("tmp");
    let cfg = ClientConfig {
        docker_config: Some(tmp.path().join("docker-config.json")),
        retry_base_delay: Duration::from_millis(10),
        docker_hub_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    };
    let src = store_in(&tmp.path().join("src"));
    let image = build_image(&src, &[busybox_layer(), random_bytes(100_000, 5)], "amd64");
    let name = Reference::parse(&format!("{}/secure/app:v1", reg.host())).expect("reference");

    // Anonymous: the token server refuses, and the error says no credentials were used.
    let anonymous = RegistryClient::new(cfg.clone()).expect("client");
    let err = anonymous
        .push(
            &name,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect_err("anonymous push");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                with_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );

    let client = RegistryClient::new(cfg).expect("client");
    client
        .login(&reg.host(), "carol", "s3cret")
        .await
        .expect("login via token realm");
    client
        .push(
            &name,
            &image.manifest,
            &src,
            &PushOptions::default(),
            &|_| {},
        )
        .await
        .expect("push with token");
    let issued_after_push = tokens.issued.load(Ordering::SeqCst);
    let dst = store_in(&tmp.path().join("dst"));
    let pulled = client
        .pull(&name, None, &dst, &|_| {})
        .await
        .expect("pull with token");
    assert_eq!(pulled.manifest.digest, image.manifest);
    assert!(dst.verify().expect("verify").is_consistent());
    // One token per scope set, reused across requests.
    let issued = tokens.issued.load(Ordering::SeqCst);
    assert!(
        issued <= issued_after_push + 1,
        "{issued} tokens for one pull"
    );

    let err = client
        .login(&reg.host(), "carol", "wrong")
        .await
        .expect_err("wrong password");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );
}
