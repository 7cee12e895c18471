//! Every kind of upstream, proven against a real registry (CNCF
//! Distribution) on 127.0.0.1: HTTPS with a private CA, mTLS, basic auth,
//! bearer tokens; plus redirects, egress proxies and failover.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use awc::http::StatusCode;
use base64::Engine as _;
use common::{
    assert_success, client, digest_of, htpasswd, push_image, skopeo_copy_from_mirror, Containerd,
    Fault, FaultUpstream, Pki, Server, TestImage, TokenServer, Upstream,
};

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-Pa55";
const REPO: &str = "library/app";
const TAG: &str = "1.0";

/// A plain registry holding `library/app:1.0`, for secured registries to serve.
async fn seeded() -> (Upstream, TestImage) {
    let upstream = Upstream::start();
    let img = TestImage::oci(11, &[120_000, 30_000]);
    push_image(&client(), &upstream.url(), REPO, TAG, &img).await;
    (upstream, img)
}

/// A config with one `docker.io` entry: `urls: [url]` plus `extra` lines.
fn config(url: &str, extra: &str) -> String {
    format!("registries:\n  - name: docker.io\n    urls: [{url}]\n{extra}")
}

/// skopeo and ctr pull the image through the server and get its exact bytes.
fn pulls_through(server: &Server, img: &TestImage) {
    let reference = format!("docker.io/{REPO}:{TAG}");
    let dest = tempfile::tempdir().unwrap();
    let out = skopeo_copy_from_mirror(&server.host_port(), &reference, dest.path(), false);
    assert_success(
        &out,
        &format!("skopeo copy; server log:\n{}", server.log_contents()),
    );
    assert_eq!(common::read_dir_manifest(dest.path()), img.manifest);
    let ctr = Containerd::start();
    ctr.write_mirror_hosts(&server.url());
    assert_success(&ctr.pull(&reference), "ctr pull");
    assert_eq!(
        ctr.image_digest(&reference).as_deref(),
        Some(img.manifest_digest.as_str())
    );
}

/// GET of the tag's manifest through the server: status and body.
async fn get_manifest(server: &Server) -> (StatusCode, String) {
    let url = format!("{}/v2/{REPO}/manifests/{TAG}?ns=docker.io", server.url());
    let mut res = client().get(url).send().await.expect("response");
    let body = res.body().await.expect("body");
    (res.status(), String::from_utf8_lossy(&body).into_owned())
}

fn cached_manifests(server: &Server) -> usize {
    std::fs::read_dir(server.cache_dir().join("manifests/sha256")).map_or(0, |d| d.count())
}

#[actix_web::test]
async fn https_upstream_with_a_private_ca() {
    if !common::e2e(&[common::REAL_CLIENTS, &["openssl"]].concat(), true) {
        return;
    }
    let pki = Pki::generate();
    let (plain, img) = seeded().await;
    let registry = plain.secured(&pki.registry_tls(false), true);
    let ca = format!("    tls:\n      ca: {}\n", pki.path("ca.pem").display());
    let server = Server::start(&config(&registry.url(), &ca), &[]);
    pulls_through(&server, &img);
}

#[actix_web::test]
async fn https_upstream_without_its_ca_is_refused_with_a_hint_unless_verification_is_off() {
    if !common::e2e(&["docker-registry", "openssl"], false) {
        return;
    }
    let pki = Pki::generate();
    let (plain, _) = seeded().await;
    let registry = plain.secured(&pki.registry_tls(false), true);

    let server = Server::start(&config(&registry.url(), ""), &[]);
    let (status, body) = get_manifest(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        server.log_contents().contains("set tls.ca"),
        "{}",
        server.log_contents()
    );
    assert_eq!(cached_manifests(&server), 0);

    let insecure = "    tls:\n      insecureSkipVerify: true\n";
    let server = Server::start(&config(&registry.url(), insecure), &[]);
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    assert!(server.log_contents().contains("TLS verification is off"));
}

#[actix_web::test]
async fn mtls_upstream_needs_the_client_certificate() {
    if !common::e2e(&[common::REAL_CLIENTS, &["openssl"]].concat(), true) {
        return;
    }
    let pki = Pki::generate();
    let (plain, img) = seeded().await;
    let registry = plain.secured(&pki.registry_tls(true), true);
    let ca = format!("    tls:\n      ca: {}\n", pki.path("ca.pem").display());

    let without = Server::start(&config(&registry.url(), &ca), &[]);
    let (status, _) = get_manifest(&without).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        without.log_contents().contains("tls.cert"),
        "{}",
        without.log_contents()
    );

    let with = format!(
        "{ca}      cert: {}\n      key: {}\n",
        pki.path("client.pem").display(),
        pki.path("client-key.pem").display()
    );
    let server = Server::start(&config(&registry.url(), &with), &[]);
    pulls_through(&server, &img);
}

#[actix_web::test]
async fn basic_auth_from_env_or_file_and_a_wrong_password_is_401_and_caches_nothing() {
    if !common::e2e(
        &[common::REAL_CLIENTS, &["openssl", "htpasswd"]].concat(),
        true,
    ) {
        return;
    }
    let pki = Pki::generate();
    let (plain, img) = seeded().await;
    let htpasswd = htpasswd(pki.dir(), USER, PASSWORD);
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        htpasswd.display()
    );
    let registry = plain.secured(&format!("{}{auth}", pki.registry_tls(false)), true);
    let tls = format!("    tls:\n      ca: {}\n", pki.path("ca.pem").display());

    let from_env =
        format!("{tls}    auth:\n      user: {USER}\n      passwordFromEnv: UPSTREAM_PASSWORD\n");
    let server = Server::start_env(
        &config(&registry.url(), &from_env),
        &[],
        &[("UPSTREAM_PASSWORD", PASSWORD)],
    );
    pulls_through(&server, &img);
    assert!(
        !server.log_contents().contains(PASSWORD),
        "the password never reaches the log"
    );

    let file = pki.dir().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let from_file = format!(
        "{tls}    auth:\n      user: {USER}\n      passwordFile: {}\n",
        file.display()
    );
    let server = Server::start(&config(&registry.url(), &from_file), &[]);
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);

    let wrong = format!("{tls}    auth:\n      user: {USER}\n      password: wrong\n");
    let server = Server::start(&config(&registry.url(), &wrong), &[]);
    let (status, body) = get_manifest(&server).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    assert_eq!(cached_manifests(&server), 0);
}

#[actix_web::test]
async fn bearer_tokens_are_fetched_once_per_scope_and_refused_credentials_are_401() {
    if !common::e2e(&[common::REAL_CLIENTS, &["openssl"]].concat(), true) {
        return;
    }
    let pki = Pki::generate();
    let (plain, img) = seeded().await;
    let tokens = TokenServer::start(&pki, (USER, PASSWORD), false, 300);
    let registry = plain.secured(
        &format!("{}{}", pki.registry_tls(false), tokens.registry_auth(&pki)),
        true,
    );
    let tls = format!("    tls:\n      ca: {}\n", pki.path("ca.pem").display());

    let good = format!("{tls}    auth:\n      user: {USER}\n      password: {PASSWORD}\n");
    let server = Server::start(&config(&registry.url(), &good), &[]);
    pulls_through(&server, &img);
    assert_eq!(
        tokens.issued(),
        1,
        "one token for the repository, reused for every request"
    );

    let wrong = format!("{tls}    auth:\n      user: {USER}\n      password: wrong\n");
    let server = Server::start(&config(&registry.url(), &wrong), &[]);
    assert_eq!(get_manifest(&server).await.0, StatusCode::UNAUTHORIZED);
    assert!(tokens.refused() >= 1);
    assert_eq!(cached_manifests(&server), 0);
}

#[actix_web::test]
async fn anonymous_bearer_tokens_and_renewal_after_expiry() {
    if !common::e2e(&["docker-registry", "openssl"], false) {
        return;
    }
    let pki = Pki::generate();
    let (plain, img) = seeded().await;
    // Tokens that expire at once: the next request needs a new one.
    let tokens = TokenServer::start(&pki, (USER, PASSWORD), true, 0);
    let registry = plain.secured(
        &format!("{}{}", pki.registry_tls(false), tokens.registry_auth(&pki)),
        true,
    );
    let tls = format!("    tls:\n      ca: {}\n", pki.path("ca.pem").display());
    let server = Server::start(&config(&registry.url(), &tls), &[]);

    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    assert_eq!(tokens.issued(), 1);
    let layer = &img.layers[0];
    let url = format!(
        "{}/v2/{REPO}/blobs/{}?ns=docker.io",
        server.url(),
        layer.digest
    );
    let mut res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest_of(&res.body().limit(1 << 20).await.unwrap()),
        layer.digest
    );
    assert_eq!(tokens.issued(), 2);
}

/// A registry on 127.0.0.1 that wants Basic credentials and redirects blob
/// GETs to a blob host on 127.0.0.2, which records any `Authorization` it sees.
struct Redirecting {
    url: String,
    authorized_at_blob_host: Arc<Mutex<Vec<bool>>>,
}

fn redirecting(blob: Vec<u8>) -> Redirecting {
    let blob_host = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let blob_addr = blob_host.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_host = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in blob_host.incoming() {
            let mut conn = conn.unwrap();
            let head = read_head(&mut conn);
            seen_by_host
                .lock()
                .unwrap()
                .push(head.to_ascii_lowercase().contains("\r\nauthorization:"));
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                blob.len()
            );
            let _ = conn.write_all(&blob);
        }
    });
    let registry = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", registry.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in registry.incoming() {
            let mut conn = conn.unwrap();
            let head = read_head(&mut conn);
            let authorized =
                head.contains("Authorization: Basic ") || head.contains("authorization: Basic ");
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let _ = if !authorized {
                write!(conn, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            } else {
                write!(conn, "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{blob_addr}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            };
        }
    });
    Redirecting {
        url,
        authorized_at_blob_host: seen,
    }
}

/// Reads an HTTP request head (up to the blank line).
fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[actix_web::test]
async fn redirected_blobs_never_carry_the_registry_credentials() {
    let blob = b"layer bytes behind a redirect".to_vec();
    let digest = digest_of(&blob);
    let upstream = redirecting(blob);
    let auth = format!("    auth:\n      user: {USER}\n      password: {PASSWORD}\n");
    let server = Server::start(&config(&upstream.url, &auth), &[]);

    let url = format!("{}/v2/{REPO}/blobs/{digest}?ns=docker.io", server.url());
    let mut res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(digest_of(&res.body().await.unwrap()), digest);
    assert_eq!(
        *upstream.authorized_at_blob_host.lock().unwrap(),
        vec![false]
    );
}

/// A CONNECT proxy on 127.0.0.1.
struct ConnectProxy {
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// Tunnels opened.
    tunnels: Arc<AtomicUsize>,
    /// The head of every CONNECT request, as received.
    heads: Arc<Mutex<Vec<String>>>,
}

/// Starts a [`ConnectProxy`].
fn connect_proxy() -> ConnectProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tunnels = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (Arc::clone(&tunnels), Arc::clone(&heads));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut client = conn.unwrap();
            let head = read_head(&mut client);
            seen.lock().unwrap().push(head.clone());
            let Some(target) = head
                .strip_prefix("CONNECT ")
                .and_then(|r| r.split(' ').next())
            else {
                let _ = client
                    .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
                continue;
            };
            let Ok(mut server) = TcpStream::connect(target) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
            std::thread::spawn(move || std::io::copy(&mut server, &mut client));
        }
    });
    ConnectProxy {
        url,
        tunnels,
        heads,
    }
}

#[actix_web::test]
async fn egress_proxy_from_env_no_proxy_and_per_registry() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (plain, _) = seeded().await;
    let ConnectProxy {
        url: proxy,
        tunnels,
        ..
    } = connect_proxy();

    let server = Server::start_env(
        &config(&plain.url(), ""),
        &[],
        &[("HTTP_PROXY", proxy.as_str())],
    );
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    let through_proxy = tunnels.load(Ordering::SeqCst);
    assert!(
        through_proxy >= 1,
        "HTTP_PROXY carries the upstream connection"
    );

    let envs = [
        ("HTTP_PROXY", proxy.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let server = Server::start_env(&config(&plain.url(), ""), &[], &envs);
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        through_proxy,
        "NO_PROXY bypasses the proxy"
    );

    let per_registry = format!("    proxy: {proxy}\n");
    let server = Server::start(&config(&plain.url(), &per_registry), &[]);
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    assert!(
        tunnels.load(Ordering::SeqCst) > through_proxy,
        "a registry's own proxy: key is used"
    );
}

#[actix_web::test]
async fn egress_proxy_credentials_go_to_the_proxy_and_nowhere_else() {
    let blob = b"a layer behind an authenticating proxy".to_vec();
    let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec();
    let registry = FaultUpstream::start(blob.clone(), manifest);
    let proxy = connect_proxy();
    let address = proxy.url.strip_prefix("http://").unwrap();
    // Percent-encoded in the URL, sent decoded: "puller:p@ss:w0rd".
    let url = format!("http://puller:p%40ss%3Aw0rd@{address}");
    let from_env = Server::start_env(&config(registry.url(), ""), &[], &[("HTTP_PROXY", &url)]);
    let own_key = Server::start(&config(registry.url(), &format!("    proxy: {url}\n")), &[]);
    for server in [&from_env, &own_key] {
        let path = format!("/v2/{REPO}/blobs/{}?ns=docker.io", digest_of(&blob));
        let mut res = client().get(server.url() + &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(digest_of(&res.body().await.unwrap()), digest_of(&blob));
        let log = server.log_contents();
        assert!(!log.contains("p%40ss") && !log.contains("p@ss"), "{log}");
    }
    let expected = format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("puller:p@ss:w0rd")
    );
    let heads = proxy.heads.lock().unwrap();
    assert!(heads.len() >= 2, "both servers tunnelled: {heads:?}");
    for head in heads.iter() {
        assert!(head.lines().any(|l| l == expected), "{head:?}");
    }
    assert_eq!(registry.authorizations(), Vec::<String>::new());
}

#[test]
fn an_https_egress_proxy_stops_start_up() {
    let cache = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("HTTPS_PROXY", "https://puller:s3cret@127.0.0.1:3128"),
        ("http_proxy", "socks5://127.0.0.1:1080"),
    ] {
        let out = common::server::serve_with_env(cache.path(), var, value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} started: {stderr}");
        assert!(
            stderr.contains(&format!("egress proxy: {var}: proxy scheme")),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

#[actix_web::test]
async fn literal_denied_addresses_are_refused_before_the_egress_proxy() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (plain, _) = seeded().await;
    let port = plain.host_port().rsplit(':').next().unwrap().to_string();
    let ConnectProxy {
        url: proxy,
        tunnels,
        ..
    } = connect_proxy();
    let server = Server::start_env("", &[], &[("HTTPS_PROXY", proxy.as_str())]);
    for host in ["127.0.0.1", "0x7f.0.0.1", "2130706433", "127.1"] {
        let url = format!(
            "{}/v2/{REPO}/manifests/{TAG}?ns={host}:{port}",
            server.url()
        );
        let mut res = client().get(url).send().await.unwrap();
        let body = res.body().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(tunnels.load(Ordering::SeqCst), 0, "a tunnel was asked for");
}

#[actix_web::test]
async fn ipv6_literal_token_realms_and_redirects_work() {
    let blob = b"a layer behind an IPv6 literal".to_vec();
    let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec();
    let registry = FaultUpstream::start(blob.clone(), manifest.clone());
    let v6 = FaultUpstream::start_on("[::1]:0", None, blob.clone(), manifest);
    // The realm is the IPv6 host's /token; the redirect goes to the same
    // host (the blob is found by its digest at the end of the path).
    registry.set_target(&format!("{}/token", v6.url()));
    let ConnectProxy {
        url: proxy,
        tunnels,
        ..
    } = connect_proxy();
    let direct = [];
    let nothing_proxied = [("HTTP_PROXY", proxy.as_str()), ("NO_PROXY", "*")];
    let loopback_not_proxied = [
        ("HTTP_PROXY", proxy.as_str()),
        ("NO_PROXY", "127.0.0.1,::1"),
    ];
    let rounds = [&direct[..], &nothing_proxied, &loopback_not_proxied];
    for (round, envs) in rounds.into_iter().enumerate() {
        registry.push_faults(&[Fault::Challenge, Fault::Redirect]);
        let server = Server::start_env(&config(registry.url(), ""), &[], envs);
        let url = format!(
            "{}/v2/{REPO}/blobs/{}?ns=docker.io",
            server.url(),
            digest_of(&blob)
        );
        let mut res = client().get(url).send().await.unwrap();
        let body = res.body().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{envs:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(digest_of(&body), digest_of(&blob));
        assert_eq!(v6.requests(), 2 * (round + 1), "the token and the blob");
    }
    assert_eq!(tunnels.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn a_plain_http_realm_of_an_https_registry_gets_no_credentials() {
    if !common::e2e(&["openssl"], false) {
        return;
    }
    let pki = Pki::generate();
    let registry = FaultUpstream::start_on(
        "127.0.0.1:0",
        Some(pki.server_tls()),
        b"x".to_vec(),
        br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec(),
    );
    let realm = FaultUpstream::start(b"x".to_vec(), b"{}".to_vec());
    registry.set_target(&format!("{}/token", realm.url()));
    registry.push_faults(&[Fault::Challenge]);
    let extra = format!(
        "    tls:\n      ca: {}\n    auth:\n      user: {USER}\n      password: {PASSWORD}\n",
        pki.path("ca.pem").display()
    );
    let server = Server::start(&config(registry.url(), &extra), &[]);

    let (status, body) = get_manifest(&server).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(realm.requests(), 0, "the credentials went over plain http");
    assert_eq!(cached_manifests(&server), 0);
}

#[actix_web::test]
async fn failover_to_the_next_url_when_one_is_down() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (plain, img) = seeded().await;
    let urls = format!("http://127.0.0.1:1, {}", plain.url());
    let server = Server::start(&config(&urls, ""), &[]);
    assert_eq!(get_manifest(&server).await.0, StatusCode::OK);
    let layer = &img.layers[1];
    let url = format!(
        "{}/v2/{REPO}/blobs/{}?ns=docker.io",
        server.url(),
        layer.digest
    );
    let mut res = client().get(url).send().await.unwrap();
    assert_eq!(digest_of(&res.body().await.unwrap()), layer.digest);
}
