//! Production hardening: metrics and health ports, JSON logs with request
//! ids, graceful shutdown, HTTPS toward clients, the upstream guard, and a
//! full disk.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use awc::http::StatusCode;
use common::{
    client, digest_of, docker_io_config, free_port, push_image, skopeo, Fault, FaultUpstream, Pki,
    RawConn, Server, TestImage, Upstream, STORE_DEADLINE,
};
use futures::StreamExt;

/// How long a read from the metrics port may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of one series (`name{labels}`) in an exposition, if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The exposition the metrics port serves.
fn scrape(metrics_port: u16) -> String {
    let mut conn = RawConn::connect(&format!("127.0.0.1:{metrics_port}"), IO_TIMEOUT)
        .expect("connect to the metrics port");
    let (head, body) = conn.get("/metrics", &[]).expect("GET /metrics");
    assert_eq!(head.status, 200, "GET /metrics");
    String::from_utf8(body).expect("a UTF-8 exposition")
}

/// GETs `url`, returning the status and the body as text.
async fn get_text(url: &str) -> (StatusCode, String) {
    let mut res = client().get(url).send().await.expect("response");
    let body = res.body().limit(64 << 20).await.expect("body");
    (res.status(), String::from_utf8_lossy(&body).into_owned())
}

#[actix_web::test]
async fn metrics_and_health_ports_report_what_happened() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let image = TestImage::oci(61, &[300_000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let (metrics_port, health_port) = (free_port(), free_port());
    // Through upstreamMirror, registries the configuration does not list
    // are fetched too (the test registry ignores `?ns=`).
    let extra = format!("pullTimeout: 5000\nupstreamMirror: {}\n", upstream.url());
    let server = Server::start(
        &docker_io_config(&upstream.url(), &extra),
        &[
            "--metrics",
            &metrics_port.to_string(),
            "--health",
            &health_port.to_string(),
        ],
    );
    let layer = &image.layers[0];
    let blob_url = format!(
        "{}/v2/library/app/blobs/{}?ns=docker.io",
        server.url(),
        layer.digest
    );
    let idle = || {
        let text = scrape(metrics_port);
        metric(&text, "ociregistry_upstream_fetches_in_flight") == Some(0.0)
    };
    for _ in 0..2 {
        // The blob's fetch ends (fsync, index) just after its client has
        // the last byte: the second round starts once it has, so that it
        // is all hits.
        assert!(common::wait_until(STORE_DEADLINE, idle));
        let (status, _) = get_text(&format!(
            "{}/v2/library/app/manifests/1.0?ns=docker.io",
            server.url()
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        let mut res = client().get(&blob_url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            digest_of(&res.body().limit(1 << 20).await.unwrap()),
            layer.digest
        );
    }
    // Registries that clients invent are counted, never as label values.
    for name in ["invented-a.example", "invented-b.example"] {
        let url = format!("{}/v2/library/app/manifests/1.0?ns={name}", server.url());
        let (status, body) = get_text(&url).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
    }

    // The figures are read once nothing is in flight.
    assert!(common::wait_until(STORE_DEADLINE, idle));
    let text = scrape(metrics_port);
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        value("ociregistry_cache_requests_total{outcome=\"miss\"}"),
        4.0
    );
    assert_eq!(
        value("ociregistry_cache_requests_total{outcome=\"hit\"}"),
        2.0
    );
    assert_eq!(
        value("ociregistry_http_requests_total{route=\"blob\",method=\"GET\",status=\"2xx\"}"),
        2.0
    );
    assert!(
        value("ociregistry_upstream_bytes_total{registry=\"docker.io\"}")
            >= layer.bytes.len() as f64
    );
    assert_eq!(
        value("ociregistry_served_bytes_total{kind=\"blob\"}"),
        2.0 * layer.bytes.len() as f64
    );
    assert!(
        value("ociregistry_upstream_request_duration_seconds_count{registry=\"docker.io\"}") >= 2.0
    );
    assert_eq!(value("ociregistry_upstream_fetches_in_flight"), 0.0);
    assert!(value("ociregistry_upstream_fetch_waiters_count") >= 2.0);
    assert!(value("ociregistry_cache_blobs") >= 1.0);
    assert!(value("ociregistry_cache_size_bytes") >= layer.bytes.len() as f64);
    assert!(
        value("ociregistry_upstream_request_duration_seconds_count{registry=\"other\"}") >= 2.0
    );
    assert!(
        !text.contains("invented-"),
        "unbounded label values:\n{text}"
    );

    // The chart's dashboard and alerts query only metrics the server has.
    let names: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/ociregistry/files/");
    let queried = regex::Regex::new(r"ociregistry_[a-z_]+").unwrap();
    for file in ["dashboard.json", "alerts.yaml"] {
        let text = std::fs::read_to_string(format!("{chart}{file}")).unwrap();
        if file.ends_with(".json") {
            let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert!(dashboard["panels"]
                .as_array()
                .is_some_and(|p| p.len() >= 10));
        }
        let unknown: Vec<&str> = queried
            .find_iter(&text)
            .map(|m| m.as_str())
            .filter(|m| !names.contains(m))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries {unknown:?}, not in:\n{names:?}"
        );
    }

    // Tag lists and referrers have routes of their own (the registry has
    // no referrers API: 404).
    let base = format!("{}/v2/library/app", server.url());
    let tags = get_text(&format!("{base}/tags/list?ns=docker.io")).await;
    assert_eq!(tags.0, StatusCode::OK, "{}", tags.1);
    let referrers = format!("{base}/referrers/{}?ns=docker.io", image.manifest_digest);
    assert_eq!(get_text(&referrers).await.0, StatusCode::NOT_FOUND);
    let text = scrape(metrics_port);
    for series in [
        "ociregistry_http_requests_total{route=\"tags\",method=\"GET\",status=\"2xx\"}",
        "ociregistry_http_requests_total{route=\"referrers\",method=\"GET\",status=\"4xx\"}",
    ] {
        assert_eq!(metric(&text, series), Some(1.0), "{series} in:\n{text}");
    }

    let health = format!("http://127.0.0.1:{health_port}");
    assert_eq!(
        get_text(&format!("{health}/health")).await.0,
        StatusCode::OK
    );
    let (status, ready) = get_text(&format!("{health}/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ready.contains("\"ready\""), "{ready}");
    assert_eq!(
        get_text(&format!("{health}/v2/")).await.0,
        StatusCode::NOT_FOUND,
        "the health port serves nothing else"
    );
    assert_eq!(
        get_text(&format!("{}/health", server.url())).await.0,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn json_logs_carry_the_request_id_of_each_response() {
    let server = Server::start("", &["--hello-world", "--log-format", "json"]);
    let res = client()
        .get(format!(
            "{}/v2/library/hello-world/manifests/latest?ns=docker.io",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let id = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let log = server.log_contents();
    let mut access = None;
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if entry["msg"] == "request" && entry["request_id"] == id.as_str() {
            access = Some(entry);
        }
    }
    let access = access.unwrap_or_else(|| panic!("no access line with id {id}:\n{log}"));
    assert_eq!(access["status"], 200);
    assert_eq!(access["cache"], "hit");
}

/// Shutdown without the delay before draining.
const NO_DELAY: &str = "shutdownDelay: 0s\n";

/// A server (with `extra` config lines) whose upstream holds a 4 MiB blob
/// at a gate half-way; a client
/// has its response headers and first bytes. Returns the upstream, the
/// server, the blob URL, that response and its first bytes.
async fn gated_download(
    seed: usize,
    extra: &str,
) -> (FaultUpstream, Server, String, awc::ClientResponse, Vec<u8>) {
    let blob: Vec<u8> = (0..4 << 20)
        .map(|i: usize| ((i + seed) % 251) as u8)
        .collect();
    let upstream = FaultUpstream::start(blob, b"{}".to_vec());
    upstream.push_faults(&[Fault::Gated]);
    let server = Server::start(&docker_io_config(upstream.url(), extra), &[]);
    let url = format!(
        "{}/v2/library/app/blobs/{}?ns=docker.io",
        server.url(),
        upstream.blob_digest()
    );
    let mut res = client().get(&url).send().await.expect("headers");
    let first = res.next().await.expect("first bytes").unwrap().to_vec();
    (upstream, server, url, res, first)
}

/// Sends SIGTERM and waits until the server's listener is closed.
fn terminate_and_wait_for_close(server: &Server) {
    let host_port = server.host_port();
    server.terminate();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&host_port).is_err()
        }),
        "the listener closes on SIGTERM"
    );
}

#[actix_web::test]
async fn sigterm_drains_a_transfer_in_flight_then_exits_zero() {
    let (upstream, mut server, url, mut res, mut body) = gated_download(0, NO_DELAY).await;

    // SIGTERM while the upstream is held: the server stops accepting but
    // keeps the transfer going.
    terminate_and_wait_for_close(&server);
    upstream.open_gate();
    while let Some(chunk) = res.next().await {
        body.extend_from_slice(&chunk.expect("the drained transfer completes"));
    }
    assert_eq!(digest_of(&body), upstream.blob_digest());
    server.wait_clean_exit("after draining");
    assert!(server.log_contents().contains("shutting down"));

    // What the drained fetch stored is complete: served air-gapped.
    let cache = server.cache_dir();
    let again = Server::start_with_cache("", &cache, &["--air-gapped"]);
    let mut res = client()
        .get(url.replace(&server.url(), &again.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest_of(&res.body().limit(8 << 20).await.unwrap()),
        upstream.blob_digest()
    );
}

#[actix_web::test]
async fn sigterm_turns_ready_off_at_once_and_keeps_serving_for_the_shutdown_delay() {
    let (upstream, mut server, _, mut res, mut body) =
        gated_download(3, "shutdownDelay: 3s\n").await;
    let ready = format!("{}/ready", server.url());
    assert_eq!(
        client().get(&ready).send().await.unwrap().status(),
        StatusCode::OK
    );

    server.terminate();
    let unready = async {
        loop {
            // A new connection each time, as a kubelet probe.
            let res = common::client().get(&ready).send().await;
            if res.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE) {
                return;
            }
            actix_web::rt::time::sleep(common::POLL_INTERVAL).await;
        }
    };
    let within = Duration::from_secs(10);
    assert!(
        actix_web::rt::time::timeout(within, unready).await.is_ok(),
        "/ready stays 200"
    );
    // Unready, it still answers new connections for the delay (the held
    // transfer alone would keep the process alive, not the listener open).
    let fresh = common::client().get(format!("{}/v2/", server.url())).send();
    assert_eq!(fresh.await.unwrap().status(), StatusCode::OK);

    // The transfer in flight completes whenever the upstream goes on.
    upstream.open_gate();
    while let Some(chunk) = res.next().await {
        body.extend_from_slice(&chunk.expect("the transfer completes"));
    }
    assert_eq!(digest_of(&body), upstream.blob_digest());
    server.wait_clean_exit("after the delay and the drain");
}

#[actix_web::test]
async fn sigterm_lets_an_upstream_fetch_without_clients_finish_and_store() {
    let (upstream, mut server, _, res, _) = gated_download(7, NO_DELAY).await;
    // The only client goes away: nothing but the drain keeps the fetch.
    drop(res);

    terminate_and_wait_for_close(&server);
    assert_eq!(
        server.wait_exit(Duration::from_millis(300)),
        None,
        "the server waits for the upstream fetch in flight"
    );
    upstream.open_gate();
    server.wait_clean_exit("once the fetch ended");

    let stored = std::fs::read(common::stored_blob(
        &server.cache_dir(),
        upstream.blob_digest(),
    ))
    .expect("the drained fetch was stored");
    assert_eq!(digest_of(&stored), upstream.blob_digest());
}

/// A server config with HTTPS toward clients from `pki`.
fn tls_config(pki: &Pki, client_auth: &str) -> String {
    format!(
        "serverTlsConfig:\n  cert: {}\n  key: {}\n  ca: {}\n  clientAuth: {client_auth}\n",
        pki.path("server.pem").display(),
        pki.path("server-key.pem").display(),
        pki.path("ca.pem").display(),
    )
}

/// A skopeo `--cert-dir`: the CA, and the client certificate if asked.
fn cert_dir(pki: &Pki, with_client: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("ca.pem"), dir.path().join("ca.crt")).unwrap();
    if with_client {
        std::fs::copy(pki.path("client.pem"), dir.path().join("client.cert")).unwrap();
        std::fs::copy(pki.path("client-key.pem"), dir.path().join("client.key")).unwrap();
    }
    dir
}

/// `skopeo inspect --raw` of the embedded image through `server`.
fn inspect(server: &Server, certs: &Path) -> std::process::Output {
    let image = format!(
        "docker://{}/docker.io/library/hello-world:latest",
        server.host_port()
    );
    let cert_dir = format!("--cert-dir={}", certs.display());
    skopeo(&["inspect", "--raw", "--tls-verify=true", &cert_dir, &image])
}

/// `curl` exit code for `GET /v2/` with the given extra arguments.
fn curl(server: &Server, args: &[&str]) -> i32 {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10"])
        .args(args)
        .arg(format!("https://{}/v2/", server.host_port()))
        .status()
        .expect("run curl")
        .code()
        .unwrap_or(-1)
}

#[actix_web::test]
async fn https_toward_clients_with_and_without_client_certificates() {
    if !common::e2e(&["skopeo", "openssl", "curl"], false) {
        return;
    }
    let pki = Pki::generate();
    let ca = pki.path("ca.pem").display().to_string();

    let server = Server::start(&tls_config(&pki, "none"), &["--hello-world"]);
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let out = inspect(&server, cert_dir(&pki, false).path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifests"));
    assert_eq!(curl(&server, &["--cacert", &ca]), 0);
    assert_ne!(curl(&server, &[]), 0, "the certificate is verified");
    assert_ne!(
        curl(&server, &["--cacert", &ca, "--tls-max", "1.1"]),
        0,
        "TLS 1.1 is refused"
    );
    let plain = common::http_get_status(&server.host_port(), "/v2/");
    assert_ne!(plain, Some(200), "no plain HTTP on the TLS port");

    let mtls = Server::start(&tls_config(&pki, "verify"), &["--hello-world"]);
    let out = inspect(&mtls, cert_dir(&pki, false).path());
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
    let out = inspect(&mtls, cert_dir(&pki, true).path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = (
        pki.path("client.pem").display().to_string(),
        pki.path("client-key.pem").display().to_string(),
    );
    assert_eq!(
        curl(&mtls, &["--cacert", &ca, "--cert", &cert, "--key", &key]),
        0
    );
}

#[test]
fn unusable_server_tls_files_fail_start_up() {
    if !common::e2e(&["openssl"], false) {
        return;
    }
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cases = [
        (
            format!(
                "serverTlsConfig:\n  cert: {}\n  key: {}\n",
                dir.path().join("missing.pem").display(),
                pki.path("server-key.pem").display()
            ),
            "missing.pem",
        ),
        (
            format!(
                "serverTlsConfig:\n  cert: {}\n  key: {}\n",
                garbage.display(),
                pki.path("server-key.pem").display()
            ),
            "garbage.pem",
        ),
        (
            format!(
                "serverTlsConfig:\n  cert: {}\n  key: {}\n  clientAuth: verify\n",
                pki.path("server.pem").display(),
                pki.path("server-key.pem").display()
            ),
            "needs ca",
        ),
    ];
    for (config, expected) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .arg("--config-file")
            .arg(&path)
            .arg("--image-path")
            .arg(dir.path().join("cache"))
            .args([
                "serve",
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--hello-world",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}: started anyway");
        assert!(stderr.contains(expected), "{config}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{config}: listened before failing"
        );
    }
}

#[actix_web::test]
async fn the_upstream_guard_refuses_what_clients_choose() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let image = TestImage::oci(62, &[1000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let port = upstream.host_port().rsplit(':').next().unwrap().to_string();
    let config = "upstreams:\n  deny: ['*.blocked.example']\n";
    let server = Server::start(config, &["--pull-timeout", "5000"]);
    let manifest = |ns: &str| format!("{}/v2/library/app/manifests/1.0?ns={ns}", server.url());
    upstream.clear_log();
    // Loopback and metadata addresses, by IP or by a name resolving to one,
    // by `ns` or in the path, are refused for registries not configured.
    let refused = [
        manifest(&upstream.host_port()),
        manifest(&format!("localhost:{port}")),
        manifest("169.254.169.254"),
        format!(
            "{}/v2/{}/library/app/manifests/1.0",
            server.url(),
            upstream.host_port()
        ),
        manifest("registry.blocked.example"),
    ];
    for url in &refused {
        let (status, body) = get_text(url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
        assert!(body.contains("DENIED"), "{url}: {body}");
    }
    assert!(
        upstream.requests().is_empty(),
        "the guarded registry was reached"
    );

    // The same registry, configured by the operator, is trusted.
    let listed = Server::start(
        &format!(
            "registries:\n  - name: {}\n    scheme: http\n",
            upstream.host_port()
        ),
        &[],
    );
    let (status, body) = get_text(&format!(
        "{}/v2/library/app/manifests/1.0?ns={}",
        listed.url(),
        upstream.host_port()
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An allow list admits only what it names.
    let only = Server::start("upstreams:\n  allow: [docker.io]\n", &[]);
    let (status, body) = get_text(&format!(
        "{}/v2/org/app/manifests/1.0?ns=quay.io",
        only.url()
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("quay.io"), "{body}");
}

/// A manifest, for hostile registries to serve.
const MANIFEST: &[u8] = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;

/// Asserts a refusal the client sees names none of `hidden`.
fn assert_hides(body: &str, hidden: &[&str]) {
    for h in hidden {
        assert!(!body.contains(h), "{h:?} in {body}");
    }
}

#[actix_web::test]
async fn redirects_and_token_realms_of_unlisted_registries_stay_off_denied_names_and_networks() {
    if !common::e2e(&["openssl"], false) {
        return;
    }
    let pki = Pki::generate();
    let blob = b"a layer".to_vec();
    // An unlisted HTTPS registry on 127.0.0.1 that clients may use, an
    // internal service on a denied network, and a host on an allowed
    // network that only a denied name leads to.
    let hostile = FaultUpstream::start_on(
        "127.0.0.1:0",
        Some(pki.server_tls()),
        blob.clone(),
        MANIFEST.to_vec(),
    );
    let internal = FaultUpstream::start_on("127.0.0.2:0", None, blob.clone(), MANIFEST.to_vec());
    let named = FaultUpstream::start(blob.clone(), MANIFEST.to_vec());
    let named_port = named.host_port().rsplit(':').next().unwrap().to_string();
    let config = "upstreams:\n  deny: [localhost]\n  denyNetworks: [127.0.0.2/32]\n";
    let ca = pki.path("ca.pem");
    let server = Server::start_env(
        config,
        &["--pull-timeout", "5000"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let ns = hostile.host_port();
    let manifest = |tag: &str| format!("{}/v2/library/app/manifests/{tag}?ns={ns}", server.url());
    let blob_url = format!(
        "{}/v2/library/app/blobs/{}?ns={ns}",
        server.url(),
        digest_of(&blob)
    );

    let (status, body) = get_text(&manifest("control")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unlisted registry itself: {body}"
    );

    let internal_url = internal.url().to_string();
    let hops = [
        (Fault::Redirect, internal_url.clone(), StatusCode::FORBIDDEN),
        (
            Fault::Redirect,
            format!("http://localhost:{named_port}"),
            StatusCode::FORBIDDEN,
        ),
        (
            Fault::Challenge,
            format!("{internal_url}/internal/issue?x=y").replace("http:", "https:"),
            StatusCode::FORBIDDEN,
        ),
        (
            Fault::Challenge,
            format!("https://localhost:{named_port}/token"),
            StatusCode::FORBIDDEN,
        ),
        (
            Fault::Challenge,
            format!("{}/token", named.url()),
            StatusCode::BAD_GATEWAY,
        ),
    ];
    for (i, (fault, target, expected)) in hops.iter().enumerate() {
        hostile.set_target(target);
        for url in [manifest(&format!("t{i}")), blob_url.clone()] {
            hostile.push_faults(&[*fault]);
            let (status, body) = get_text(&url).await;
            assert_eq!(status, *expected, "{fault:?} to {target}: {body}");
            assert_hides(&body, &["127.0.0.2", &named_port, "localhost"]);
        }
    }
    assert_eq!(internal.requests(), 0, "the denied network was reached");
    assert_eq!(named.requests(), 0, "the denied name was reached");
    assert_eq!(
        hostile.authorizations(),
        Vec::<String>::new(),
        "no token reached the hostile registry"
    );
    let log = server.log_contents();
    assert!(log.contains("127.0.0.2"), "refusals are logged: {log}");

    // An https realm on an allowed network issues a token, which goes to
    // the registry and nowhere else: not to a redirect target.
    hostile.set_target(&format!("{}/token", hostile.url()));
    hostile.push_faults(&[Fault::Challenge]);
    assert_eq!(get_text(&manifest("token")).await.0, StatusCode::OK);
    assert_eq!(hostile.authorizations(), ["Bearer fault-upstream-token"]);
    hostile.set_target(named.url());
    hostile.push_faults(&[Fault::Redirect]);
    let (status, body) = get_text(&blob_url).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hostile.authorizations().len(), 2);
    assert_eq!(named.requests(), 1);
    assert_eq!(named.authorizations(), Vec::<String>::new());
}

#[actix_web::test]
async fn errors_for_unlisted_registries_name_no_address_port_or_os_error() {
    let closed = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let config = "upstreams:\n  denyNetworks: [127.0.0.2/32]\n";
    let server = Server::start(config, &["--pull-timeout", "5000"]);
    for (ns, expected) in [
        (
            format!("127.0.0.3:{closed_port}"),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (format!("127.0.0.2:{closed_port}"), StatusCode::FORBIDDEN),
    ] {
        let url = format!("{}/v2/library/app/manifests/1.0?ns={ns}", server.url());
        let (status, body) = get_text(&url).await;
        assert_eq!(status, expected, "{ns}: {body}");
        assert_hides(
            &body,
            &["127.0.0", &closed_port, "os error", "refused (", "https://"],
        );
    }
    let log = server.log_contents();
    assert!(
        log.contains(&format!("127.0.0.3:{closed_port}")),
        "the details are logged: {log}"
    );
}

/// A tmpfs of `size` mounted on a new directory; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[actix_web::test]
async fn a_full_disk_keeps_serving_the_cache_and_fails_misses_cleanly() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let small = TestImage::oci(63, &[200_000]);
    let big = TestImage::oci(64, &[6 << 20]);
    push_image(&client(), &upstream.url(), "library/small", "1.0", &small).await;
    push_image(&client(), &upstream.url(), "library/big", "1.0", &big).await;
    let disk = Tmpfs::mount("4m");
    let cache = disk.0.path().join("cache");
    let metrics_port = free_port();
    let server = Server::start_with_cache(
        &docker_io_config(&upstream.url(), ""),
        &cache,
        &["--metrics", &metrics_port.to_string()],
    );
    let blob = |image: &str, digest: &str| {
        format!(
            "{}/v2/library/{image}/blobs/{digest}?ns=docker.io",
            server.url()
        )
    };
    let small_layer = &small.layers[0];
    let (status, _) = get_text(&blob("small", &small_layer.digest)).await;
    assert_eq!(status, StatusCode::OK);

    // 6 MiB does not fit on 4 MiB: the client's transfer fails, nothing
    // partial stays, the failure is counted.
    let big_layer = &big.layers[0];
    let mut res = client()
        .get(blob("big", &big_layer.digest))
        .send()
        .await
        .unwrap();
    if res.status() == StatusCode::OK {
        let body = res.body().limit(16 << 20).await;
        assert!(
            body.map_or(true, |b| b.len() < big_layer.bytes.len()),
            "a blob that could not be stored completed"
        );
    } else {
        assert!(res.status().is_server_error(), "{}", res.status());
    }
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(big_layer.digest.trim_start_matches("sha256:")))
        .collect();
    assert!(leftovers.is_empty(), "left on disk: {leftovers:?}");
    let text = scrape(metrics_port);
    assert!(
        metric(&text, "ociregistry_cache_write_failures_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    // What is cached is still served, and a manifest miss is still answered.
    let mut res = client()
        .get(blob("small", &small_layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("x-cache").unwrap(), "HIT");
    assert_eq!(
        digest_of(&res.body().limit(1 << 20).await.unwrap()),
        small_layer.digest
    );
    let (status, body) = get_text(&format!(
        "{}/v2/library/big/manifests/1.0?ns=docker.io",
        server.url()
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn every_top_level_key_is_read_from_its_environment_variable() {
    let cache = tempfile::tempdir().unwrap();
    for (var, value, message) in [
        ("OCIREGISTRY_PULL_TIMEOUT", "soon", "pullTimeout"),
        ("OCIREGISTRY_LOG_FORMAT", "xml", "logFormat"),
        (
            "OCIREGISTRY_MAX_CONNECTIONS",
            "0",
            "maxConnections: must be at least 1",
        ),
        (
            "OCIREGISTRY_MAX_FETCHES_PER_REGISTRY",
            "0",
            "maxFetchesPerRegistry: must be at least 1",
        ),
    ] {
        let out = common::server::serve_with_env(cache.path(), var, value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} started: {stderr}");
        assert!(stderr.contains(message), "{var}={value}: {stderr}");
    }
}
