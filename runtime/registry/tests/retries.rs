//! Retries against a scripted fake registry: 5xx and 429 are retried (with
//! Retry-After), 4xx are not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::{ClientConfig, RegistryClient, RegistryError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `script[i]` (status, extra headers) to the i-th request, then the
/// last entry forever; 200 answers carry a tags list. Returns port and count.
async fn fake(script: Vec<(u16, &'static str)>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 2048];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.first() != Some(&0x16) {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            // The insecure-scheme probe (TLS hello) is not a request.
            if !buf.starts_with(b"GET ") {
                continue;
            }
            let i = seen.fetch_add(1, Ordering::SeqCst);
            let (status, headers) = script[i.min(script.len() - 1)];
            let body = if status == 200 {
                r#"{"name":"x","tags":["a"]}"#.to_string()
            } else {
                format!(r#"{{"errors":[{{"code":"E{status}","message":"scripted"}}]}}"#)
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (port, count)
}

fn client() -> RegistryClient {
    RegistryClient::new(ClientConfig {
        docker_config: Some("/nonexistent/berth-test/config.json".into()),
        retries: 3,
        retry_base_delay: Duration::from_millis(5),
        docker_hub_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    })
    .expect("client")
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let (port, count) = fake(vec![(503, ""), (502, ""), (200, "")]).await;
    let tags = client()
        .tags(&format!("127.0.0.1:{port}"), "x")
        .await
        .expect("tags");
    assert_eq!(tags, vec!["a".to_string()]);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_then_fails() {
    let (port, count) = fake(vec![(429, "Retry-After: 0\r\n")]).await;
    let err = client()
        .tags(&format!("127.0.0.1:{port}"), "x")
        .await
        .expect_err("429");
    assert!(
        matches!(err, RegistryError::TooManyRequests { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn persistent_5xx_is_reported_after_retries() {
    let (port, count) = fake(vec![(500, "")]).await;
    let err = client()
        .tags(&format!("127.0.0.1:{port}"), "x")
        .await
        .expect_err("500");
    assert!(
        matches!(
            err,
            RegistryError::ServerError {
                status: 500,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (port, count) = fake(vec![(400, "")]).await;
    let err = client()
        .tags(&format!("127.0.0.1:{port}"), "x")
        .await
        .expect_err("400");
    assert!(
        matches!(err, RegistryError::UnexpectedStatus { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn registry_without_catalog_gives_clear_error() {
    let (port, _) = fake(vec![(404, "")]).await;
    let err = client()
        .catalog(&format!("127.0.0.1:{port}"))
        .await
        .expect_err("404");
    assert!(matches!(err, RegistryError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("catalog"), "{err}");
}
