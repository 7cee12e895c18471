//! Faults the real registry cannot produce, from a hand-written upstream:
//! nothing unverified is ever served complete or kept, and clients stream
//! from a download while it is still arriving.

mod common;

use std::path::Path;

use awc::http::StatusCode;
use common::{
    client, digest_of, docker_io_config, wait_stored, Fault, FaultUpstream, RawConn, Server,
};
use futures::StreamExt;

/// A blob big enough to arrive in many chunks.
const BLOB_LEN: usize = 4 * 1024 * 1024;

fn blob() -> Vec<u8> {
    (0..BLOB_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn manifest() -> Vec<u8> {
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec()
}

fn server_for(upstream: &FaultUpstream, pull_timeout_ms: u64) -> Server {
    let extra = format!("pullTimeout: {pull_timeout_ms}\n");
    Server::start(&docker_io_config(upstream.url(), &extra), &[])
}

fn blob_url(server: &Server, digest: &str) -> String {
    format!(
        "{}/v2/library/app/blobs/{digest}?ns=docker.io",
        server.url()
    )
}

/// Files in the server's blob store (complete or partial) for `digest`.
fn cached_files(cache: &Path, digest: &str) -> Vec<String> {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(hex))
                .collect()
        })
        .unwrap_or_default()
}

/// GETs a URL and reads the whole body: `Err` when the transfer was cut
/// (an error, or fewer bytes than the announced `Content-Length`).
async fn get_body(client: &awc::Client, url: &str) -> (StatusCode, Result<Vec<u8>, String>) {
    let mut res = client.get(url).send().await.expect("response headers");
    let status = res.status();
    let announced = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match res.body().limit(64 << 20).await {
        Err(e) => Err(e.to_string()),
        Ok(b) if announced.is_some_and(|n| n != b.len()) => Err(format!(
            "cut after {} of {} bytes",
            b.len(),
            announced.unwrap_or(0)
        )),
        Ok(b) => Ok(b.to_vec()),
    };
    (status, body)
}

#[actix_web::test]
async fn reset_mid_blob_aborts_the_client_and_keeps_nothing_then_refetches() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Reset]);
    let server = server_for(&upstream, 10_000);
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());

    let (status, body) = get_body(&client, &url).await;
    // Headers go out once the first bytes arrive: the client sees either
    // a 5xx (the reset came first) or a 200 whose transfer is cut.
    assert!(
        status.is_server_error() || (status == StatusCode::OK && body.is_err()),
        "a cut upstream transfer must fail the client: {status}"
    );
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());

    let (status, body) = get_body(&client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        digest_of(&body.expect("second fetch completes")),
        upstream.blob_digest()
    );
    assert_eq!(
        upstream.blob_gets(),
        2,
        "the failed fetch is not remembered"
    );
    assert!(common::wait_stored(
        &server.cache_dir(),
        upstream.blob_digest()
    ));
    let files = cached_files(&server.cache_dir(), upstream.blob_digest());
    assert_eq!(
        files,
        vec![upstream
            .blob_digest()
            .trim_start_matches("sha256:")
            .to_string()]
    );
}

#[actix_web::test]
async fn wrong_bytes_are_never_served_complete_nor_cached() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::WrongBytes]);
    let server = server_for(&upstream, 10_000);
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());

    let (_, body) = get_body(&client, &url).await;
    match body {
        Err(_) => {}
        Ok(bytes) => panic!(
            "a {}-byte body with the wrong digest completed",
            bytes.len()
        ),
    }
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());

    let (_, body) = get_body(&client, &url).await;
    assert_eq!(
        digest_of(&body.expect("good fetch")),
        upstream.blob_digest()
    );
}

#[actix_web::test]
async fn clients_stream_while_the_upstream_is_still_sending() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Gated]);
    let server = server_for(&upstream, 10_000);
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());

    // Five clients get their first bytes while the upstream is held at the gate.
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut res = client
            .get(&url)
            .send()
            .await
            .expect("headers before the body is complete");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get("content-length").unwrap(),
            &BLOB_LEN.to_string()
        );
        let first = res.next().await.expect("a first chunk").expect("chunk");
        assert!(!first.is_empty());
        streams.push((res, first.to_vec()));
    }
    assert!(
        cached_files(&server.cache_dir(), upstream.blob_digest())
            .iter()
            .all(|f| f.ends_with(".partial")),
        "nothing is complete while the upstream is held"
    );
    // A ranged request inside the bytes already received is answered too,
    // while the five streams wait for the rest.
    let mut ranged = client
        .get(&url)
        .insert_header(("Range", "bytes=100-199"))
        .send()
        .await
        .expect("ranged headers");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers().get("content-range").unwrap(),
        &format!("bytes 100-199/{BLOB_LEN}")
    );
    assert_eq!(
        ranged.body().await.unwrap().to_vec(),
        blob()[100..200].to_vec()
    );
    // A range in the part still held waits for its bytes, then gets them.
    let tail = BLOB_LEN - 1000;
    let mut held = client
        .get(&url)
        .insert_header(("Range", format!("bytes={tail}-")))
        .send()
        .await
        .expect("ranged headers");
    assert_eq!(held.status(), StatusCode::PARTIAL_CONTENT);

    upstream.open_gate();
    assert_eq!(held.body().await.unwrap().to_vec(), blob()[tail..].to_vec());
    for (mut res, mut body) in streams {
        body.extend_from_slice(&res.body().limit(64 << 20).await.expect("rest of the body"));
        assert_eq!(digest_of(&body), upstream.blob_digest());
    }
    assert_eq!(
        upstream.blob_gets(),
        1,
        "one upstream fetch for every client"
    );
}

#[actix_web::test]
async fn manifest_with_a_wrong_announced_digest_is_502_and_not_cached() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::WrongDigestHeader]);
    let server = server_for(&upstream, 10_000);
    let client = client();
    let url = format!("{}/v2/library/app/manifests/1.0?ns=docker.io", server.url());

    let (status, _) = get_body(&client, &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let stored = std::fs::read_dir(server.cache_dir().join("manifests/sha256"))
        .unwrap()
        .count();
    assert_eq!(
        stored, 0,
        "a manifest that failed verification is not stored"
    );

    let (status, body) = get_body(&client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap(), manifest());
    assert_eq!(upstream.manifest_gets(), 2);
}

#[actix_web::test]
async fn answers_that_are_not_manifests_are_502_and_never_stored() {
    // What an internal service might answer, by tag and without a
    // Docker-Content-Digest, so no digest vouches for it.
    let bodies: [&[u8]; 4] = [
        br#"{"access_token":"internal-secret","expires_in":300}"#,
        b"<html><body>internal admin</body></html>",
        br#"{"schemaVersion":2,"mediaType":"application/json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
    ];
    for body in bodies {
        let upstream = FaultUpstream::start(blob(), body.to_vec());
        upstream.push_faults(&[Fault::NoDigestHeader]);
        let server = server_for(&upstream, 10_000);
        let url = format!("{}/v2/library/app/manifests/1.0?ns=docker.io", server.url());

        let (status, answer) = get_body(&client(), &url).await;
        let answer = String::from_utf8_lossy(&answer.unwrap()).into_owned();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
        assert!(!answer.contains("internal"), "{answer}");
        let stored =
            std::fs::read_dir(server.cache_dir().join("manifests/sha256")).map_or(0, |d| d.count());
        assert_eq!(stored, 0, "{}", String::from_utf8_lossy(body));
    }
}

#[actix_web::test]
async fn an_upstream_that_never_answers_gives_503_within_the_pull_timeout() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Hang, Fault::Hang]);
    let server = server_for(&upstream, 300);
    let client = client();

    let (status, body) = get_body(
        &client,
        &format!("{}/v2/library/app/manifests/1.0?ns=docker.io", server.url()),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8(body.unwrap())
        .unwrap()
        .contains("UNAVAILABLE"));
    let (status, _) = get_body(&client, &blob_url(&server, upstream.blob_digest())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[actix_web::test]
async fn upstream_statuses_keep_their_meaning() {
    let upstream = FaultUpstream::start(blob(), manifest());
    let server = server_for(&upstream, 10_000);
    let client = client();
    let manifest_url = format!("{}/v2/library/app/manifests/1.0?ns=docker.io", server.url());
    let cases = [
        (404, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        (401, StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        (403, StatusCode::FORBIDDEN, "DENIED"),
        (429, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
    ];
    for (upstream_status, expected, code) in cases {
        upstream.push_faults(&[Fault::Status(upstream_status)]);
        let mut res = client.get(&manifest_url).send().await.unwrap();
        assert_eq!(res.status(), expected, "upstream {upstream_status}");
        if upstream_status == 429 {
            assert_eq!(res.headers().get("retry-after").unwrap(), "7");
        }
        let body = res.body().await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains(code),
            "upstream {upstream_status}: {body:?}"
        );
    }
    upstream.push_faults(&[Fault::Status(404)]);
    let missing = blob_url(&server, &digest_of(b"not there"));
    let (status, body) = get_body(&client, &missing).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8(body.unwrap())
        .unwrap()
        .contains("BLOB_UNKNOWN"));
}

#[actix_web::test]
async fn a_crash_mid_download_restarts_clean() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Gated]);
    let mut server = server_for(&upstream, 10_000);
    let client = client();

    let mut res = client
        .get(blob_url(&server, upstream.blob_digest()))
        .send()
        .await
        .unwrap();
    res.next().await.expect("first bytes").expect("chunk");
    let files = cached_files(&server.cache_dir(), upstream.blob_digest());
    assert!(
        files.len() == 1 && files[0].ends_with(".partial"),
        "one partial file while downloading: {files:?}"
    );

    server.restart(); // SIGKILL, then start again on the same cache
    assert!(
        cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty(),
        "start-up removes what a crash left half-written"
    );
    let (status, body) = get_body(&client, &blob_url(&server, upstream.blob_digest())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(digest_of(&body.unwrap()), upstream.blob_digest());
}

/// A server for `upstream` on a cache of its own, with `extra` config.
fn fresh_server(upstream: &FaultUpstream, extra: &str) -> Server {
    Server::start(&docker_io_config(upstream.url(), extra), &[])
}

#[actix_web::test]
async fn every_broken_blob_transfer_fails_the_client_and_keeps_nothing() {
    let upstream = FaultUpstream::start(blob(), manifest());
    let client = client();
    let cases = [
        (Fault::Truncated, StatusCode::OK),
        (Fault::ExtraBytes, StatusCode::OK),
        (Fault::Status(500), StatusCode::SERVICE_UNAVAILABLE),
        (Fault::Status(502), StatusCode::SERVICE_UNAVAILABLE),
        (Fault::Status(503), StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (fault, expected) in cases {
        let server = fresh_server(&upstream, "");
        let url = blob_url(&server, upstream.blob_digest());
        upstream.push_faults(&[fault]);
        if fault == Fault::ExtraBytes {
            // Streamed chunked (no length upstream): the end must be missing.
            let response = raw_get(&server, &url);
            assert!(response.starts_with(b"HTTP/1.1 200"), "{fault:?}");
            assert!(
                !response.ends_with(b"\r\n0\r\n\r\n"),
                "{fault:?}: the chunked body was terminated as if complete"
            );
            assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
            continue;
        }
        let (status, body) = get_body(&client, &url).await;
        // A cut transfer may fail before the headers went out (a 5xx) or
        // after (a 200 whose body is cut), depending on when it lands.
        let failed_early = expected == StatusCode::OK && status.is_server_error();
        assert!(status == expected || failed_early, "{fault:?}: {status}");
        match body {
            Ok(bytes) if status == StatusCode::OK => {
                panic!("{fault:?}: a {}-byte body completed", bytes.len())
            }
            Ok(bytes) => {
                let code = if failed_early {
                    "errors"
                } else {
                    "UNAVAILABLE"
                };
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.contains(code), "{fault:?}: {text}");
            }
            Err(_) => {}
        }
        assert!(
            cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty(),
            "{fault:?} left a file"
        );
        let (status, body) = get_body(&client, &url).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}: next request");
        assert_eq!(digest_of(&body.unwrap()), upstream.blob_digest());
    }
}

/// The raw bytes of a `GET url` answer, read until the server closes.
fn raw_get(server: &Server, url: &str) -> Vec<u8> {
    let path = url.strip_prefix(&server.url()).expect("server URL");
    let stream = std::net::TcpStream::connect(server.host_port()).unwrap();
    let mut conn = RawConn::new(stream, "x");
    conn.write_request("GET", path, &[("Connection", "close")])
        .unwrap();
    conn.read_to_end()
}

#[actix_web::test]
async fn a_stalled_upstream_body_is_cut_after_the_idle_timeout() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Stall]);
    let server = fresh_server(&upstream, "idleTimeout: 1s\n");
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());

    let (status, body) = get_body(&client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_err(), "a stalled transfer must not complete");
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
    assert!(server.log_contents().contains("no data for 1s"));

    let (_, body) = get_body(&client, &url).await;
    assert_eq!(digest_of(&body.unwrap()), upstream.blob_digest());
}

#[actix_web::test]
async fn every_waiter_on_a_failing_fetch_sees_the_failure() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::GatedReset]);
    let server = fresh_server(&upstream, "");
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());

    let mut waiters = Vec::new();
    for _ in 0..5 {
        let mut res = client.get(&url).send().await.expect("headers");
        assert_eq!(res.status(), StatusCode::OK);
        let first = res.next().await.expect("first chunk").expect("chunk");
        waiters.push((res, first.len()));
    }
    upstream.open_gate();
    for (mut res, first) in waiters {
        let rest = res.body().limit(64 << 20).await;
        if let Ok(rest) = rest {
            assert!(
                first + rest.len() < BLOB_LEN,
                "a waiter received all {BLOB_LEN} bytes of a failed fetch"
            );
        }
    }
    assert_eq!(upstream.blob_gets(), 1, "the waiters shared one fetch");
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());

    let (_, body) = get_body(&client, &url).await;
    assert_eq!(digest_of(&body.unwrap()), upstream.blob_digest());
}

#[actix_web::test]
async fn a_tls_handshake_failure_is_503_and_caches_nothing() {
    let upstream = FaultUpstream::start(blob(), manifest());
    // The upstream speaks plain HTTP; the configuration says HTTPS.
    let https = upstream.url().replace("http://", "https://");
    let server = Server::start(&docker_io_config(&https, ""), &[]);
    let client = client();

    let (status, body) = get_body(&client, &blob_url(&server, upstream.blob_digest())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8(body.unwrap())
        .unwrap()
        .contains("UNAVAILABLE"));
    assert_eq!(upstream.blob_gets(), 0, "no HTTP request got through");
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
}

#[actix_web::test]
async fn a_client_that_stops_reading_does_not_hold_the_fetch_hostage() {
    use std::io::Write;
    // Larger than loopback socket buffers, so a reader that never reads
    // really stops taking bytes.
    let big: Vec<u8> = (0..48 << 20).map(|i: usize| (i * 13 % 251) as u8).collect();
    let upstream = FaultUpstream::start(big, manifest());
    let server = fresh_server(&upstream, "");
    let path = format!(
        "/v2/library/app/blobs/{}?ns=docker.io",
        upstream.blob_digest()
    );
    let mut stalled = std::net::TcpStream::connect(server.host_port()).unwrap();
    write!(
        stalled,
        "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.host_port()
    )
    .unwrap();

    // Another client reads the whole blob while the first never reads.
    let client = client();
    let (_, body) = get_body(&client, &format!("{}{path}", server.url())).await;
    assert_eq!(digest_of(&body.unwrap()), upstream.blob_digest());
    let hex = upstream
        .blob_digest()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(common::wait_stored(
        &server.cache_dir(),
        upstream.blob_digest()
    ));
    assert_eq!(
        cached_files(&server.cache_dir(), upstream.blob_digest()),
        vec![hex],
        "the fetch completed and was stored while a reader stalled"
    );
    assert_eq!(upstream.blob_gets(), 1);
    drop(stalled);
}

#[actix_web::test]
async fn a_fetch_from_another_registry_never_holds_or_fails_a_client() {
    // Two registries serve the same blob; the other one holds its transfer
    // half-way and then resets it.
    let (good, other) = (
        FaultUpstream::start(blob(), manifest()),
        FaultUpstream::start(blob(), manifest()),
    );
    other.push_faults(&[Fault::GatedReset]);
    let config = format!(
        "pullTimeout: 10000\nregistries:\n  - name: docker.io\n    urls: [{}]\n  - name: other.test\n    urls: [{}]\n",
        good.url(),
        other.url()
    );
    let server = Server::start(&config, &[]);
    let client = client();
    let digest = good.blob_digest();
    let mut held = client
        .get(format!(
            "{}/v2/library/app/blobs/{digest}?ns=other.test",
            server.url()
        ))
        .send()
        .await
        .expect("headers from the held fetch");
    let first = held.next().await.expect("first bytes").expect("chunk");

    // While that fetch is held, a client of docker.io gets the whole blob.
    let deadline = std::time::Duration::from_secs(20);
    let own = tokio::time::timeout(deadline, get_body(&client, &blob_url(&server, digest)))
        .await
        .expect("the docker.io client waited on the other registry's fetch");
    assert_eq!(own.0, StatusCode::OK);
    assert_eq!(digest_of(&own.1.expect("whole body")), digest);
    assert_eq!(good.blob_gets(), 1);
    assert!(wait_stored(&server.cache_dir(), digest));

    // The held fetch fails; the cache keeps the verified blob, served whole.
    other.open_gate();
    let rest = held.body().limit(64 << 20).await;
    assert!(
        rest.map_or(true, |r| first.len() + r.len() < BLOB_LEN),
        "the reset transfer was cut"
    );
    let again = get_body(&client, &blob_url(&server, digest)).await;
    assert_eq!(digest_of(&again.1.expect("cached body")), digest);
    assert_eq!(good.blob_gets(), 1, "served from the cache");
}

#[actix_web::test]
async fn a_blob_over_max_blob_size_is_refused_or_cut_and_never_kept() {
    let upstream = FaultUpstream::start(blob(), manifest());
    let server = fresh_server(&upstream, "maxBlobSize: 1Mi\n");
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());
    // Announced larger than the limit: refused before anything is written.
    let (status, _) = get_body(&client, &url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
    // No length announced: cut once past the limit (the chunked body
    // never gets its terminating chunk).
    upstream.push_faults(&[Fault::ExtraBytes]);
    let response = raw_get(&server, &url);
    assert!(
        !response.ends_with(b"\r\n0\r\n\r\n"),
        "the chunked body was terminated as if complete"
    );
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
    assert_eq!(upstream.blob_gets(), 2);
}

#[actix_web::test]
async fn nothing_is_written_before_the_upstream_answers() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Hang]);
    let server = fresh_server(&upstream, "pullTimeout: 30000\n");
    let path = format!(
        "/v2/library/app/blobs/{}?ns=docker.io",
        upstream.blob_digest()
    );
    let timeout = std::time::Duration::from_secs(30);
    let mut conn = RawConn::connect(&server.host_port(), timeout).unwrap();
    conn.write_request("GET", &path, &[]).unwrap();
    let asked = || upstream.blob_gets() == 1;
    assert!(common::wait_until(
        std::time::Duration::from_secs(10),
        asked
    ));
    assert_eq!(
        cached_files(&server.cache_dir(), upstream.blob_digest()),
        Vec::<String>::new(),
        "a partial file exists while the upstream has not answered"
    );
}

#[actix_web::test]
async fn a_new_fetch_beyond_the_registry_limit_is_503_and_joins_still_work() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::Gated]);
    let server = fresh_server(&upstream, "maxFetchesPerRegistry: 1\n");
    let client = client();
    let url = blob_url(&server, upstream.blob_digest());
    let mut held = client.get(&url).send().await.expect("headers");
    held.next().await.expect("first bytes").expect("chunk");

    let manifest_url = format!("{}/v2/library/app/manifests/1?ns=docker.io", server.url());
    let busy = client.get(&manifest_url).send().await.expect("an answer");
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers().get("retry-after").unwrap(), "1");
    assert_eq!(
        upstream.manifest_gets(),
        0,
        "the refused fetch never reached the upstream"
    );
    let mut joined = client
        .get(&url)
        .send()
        .await
        .expect("a join is no new fetch");
    assert_eq!(joined.status(), StatusCode::OK);

    upstream.open_gate();
    assert_eq!(
        digest_of(&joined.body().limit(64 << 20).await.unwrap()),
        upstream.blob_digest()
    );
    drop(held);
    assert!(wait_stored(&server.cache_dir(), upstream.blob_digest()));
    // The blob is on disk a moment before the coordinator hears its fetch
    // ended: ask again while the answer is still 503, never longer than 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let (status, _) = get_body(&client, &manifest_url).await;
        if status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            break status;
        }
        actix_web::rt::time::sleep(common::POLL_INTERVAL).await;
    };
    assert_eq!(status, StatusCode::OK, "room again once the fetch ended");
    assert_eq!(
        upstream.manifest_gets(),
        1,
        "503s never reached the upstream"
    );
}

#[actix_web::test]
async fn a_range_over_the_last_bytes_of_a_bad_blob_never_completes() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.push_faults(&[Fault::WrongBytes]);
    let server = fresh_server(&upstream, "");
    let mut res = client()
        .get(blob_url(&server, upstream.blob_digest()))
        .insert_header(("Range", format!("bytes={}-", BLOB_LEN - 100)))
        .send()
        .await
        .expect("an answer");
    let status = res.status();
    let body = res.body().limit(64 << 20).await;
    assert!(
        status.is_server_error() || body.as_ref().map_or(true, |b| b.len() < 100),
        "the last bytes of a blob that failed verification were served: {status}"
    );
    assert!(cached_files(&server.cache_dir(), upstream.blob_digest()).is_empty());
}
