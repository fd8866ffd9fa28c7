//! HTTP-level checks over the Unix socket: `_ping`, versioned paths, error
//! bodies and status codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;

#[test]
fn ping_get_and_head() {
    let server = Server::start();
    for method in ["GET", "HEAD"] {
        let r = server.http(method, "/_ping");
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.header("Api-Version"), Some("1.45"));
        assert_eq!(r.header("Docker-Experimental"), Some("false"));
        assert_eq!(r.header("Ostype"), Some("linux"));
        assert_eq!(r.header("Builder-Version"), Some("1"));
        assert_eq!(
            r.header("Cache-Control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(r.header("Pragma"), Some("no-cache"));
        assert!(r.header("Server").is_some_and(|s| s.starts_with("Berth/")));
        if method == "GET" {
            assert_eq!(r.body, "OK");
        } else {
            assert_eq!(r.body, "");
        }
    }
    let r = server.http("GET", "/v1.45/_ping");
    assert_eq!(r.status, 200);
}

#[test]
fn versioned_and_unversioned_paths() {
    let server = Server::start();
    for path in ["/images/json", "/v1.44/images/json", "/v1.24/images/json"] {
        let r = server.http("GET", path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let list = r.json();
        let tags: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        assert!(tags.contains(&"hello:latest".to_string()), "{tags:?}");
    }
    let v = server.http("GET", "/v1.45/version").json();
    assert_eq!(v["ApiVersion"], "1.45");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Platform"]["Name"], "Berth");
}

#[test]
fn version_too_new_or_too_old_is_400() {
    let server = Server::start();
    let r = server.http("GET", "/v1.99/version");
    assert_eq!(r.status, 400);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("client version 1.99 is too new"), "{msg}");
    assert!(
        msg.contains("Maximum supported API version is 1.45"),
        "{msg}"
    );
    let r = server.http("GET", "/v1.12/version");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("too old"), "{}", r.body);
}

#[test]
fn errors_are_json_with_the_right_status() {
    let server = Server::start();
    let r = server.http("GET", "/v1.45/images/nosuchimage/json");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.json()["message"], "No such image: nosuchimage");

    let r = server.http("DELETE", "/images/nosuchimage");
    assert_eq!(r.status, 404);

    let r = server.http("POST", "/images/hello/tag?repo=Bad%20Name");
    assert_eq!(r.status, 400, "{}", r.body);

    let r = server.http("GET", "/v1.45/plugins");
    assert_eq!(r.status, 501);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("GET /plugins"), "{msg}");

    let r = server.http("GET", "/v1.45/containers/nosuchcontainer/json");
    assert_eq!(r.status, 404);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("nosuchcontainer"), "{msg}");

    let r = server.http("POST", "/swarm/init");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("not a swarm manager"), "{}", r.body);

    let r = server.http("GET", "/no/such/endpoint");
    assert_eq!(r.status, 404);
    assert!(r.header("Server").is_some_and(|s| s.starts_with("Berth/")));
}

#[test]
fn image_names_with_registry_ports_and_slashes_route() {
    let server = Server::start();
    let r = server.http("POST", "/images/hello/tag?repo=127.0.0.1:5000/a/b&tag=t1");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = server.http("GET", "/images/127.0.0.1:5000/a/b:t1/json");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["RepoTags"][0], "127.0.0.1:5000/a/b:t1");
    let r = server.http("GET", "/images/127.0.0.1:5000/a/b:t1/history");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.http("DELETE", "/images/127.0.0.1:5000/a/b:t1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["Untagged"], "127.0.0.1:5000/a/b:t1");
}
