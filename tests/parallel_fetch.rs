//! Large blobs fetched with parallel `Range` requests (`parallelFetch`),
//! against the fault upstream: every client gets verified bytes or a cut
//! transfer, nothing wrong is stored, the next request succeeds, and the
//! upstream sends each byte once.

mod common;

use awc::http::StatusCode;
use common::{client, digest_of, wait_stored, Fault, FaultUpstream, Server};
use futures::StreamExt;

/// 3 MiB and a few bytes: a first answer of 1 MiB, then three segments.
const BLOB_LEN: usize = (3 << 20) + 5;

fn blob() -> Vec<u8> {
    (0..BLOB_LEN).map(|i| (i * 31 % 253) as u8).collect()
}

fn manifest() -> Vec<u8> {
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec()
}

/// A server fetching the fault upstream's blobs in four parallel parts.
fn parallel_server(upstream: &FaultUpstream) -> Server {
    let config = format!(
        "pullTimeout: 10000\nregistries:\n  - name: docker.io\n    urls: [{}]\n    \
         parallelFetch: {{minSize: 1Mi, connections: 4}}\n",
        upstream.url()
    );
    Server::start(&config, &[])
}

/// GETs the blob: status, and the body or why it broke off (an error,
/// or fewer bytes than the announced `Content-Length`).
async fn get(server: &Server, digest: &str) -> (StatusCode, Result<Vec<u8>, String>) {
    let url = format!(
        "{}/v2/library/app/blobs/{digest}?ns=docker.io",
        server.url()
    );
    let mut res = client().get(url).send().await.expect("an answer");
    let announced = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let body = match res.body().limit(64 << 20).await {
        Err(e) => Err(e.to_string()),
        Ok(b) if announced.is_some_and(|n| n != b.len()) => Err(format!("cut after {}", b.len())),
        Ok(b) => Ok(b.to_vec()),
    };
    (res.status(), body)
}

#[actix_web::test]
async fn a_large_blob_comes_over_four_connections_verified_and_each_byte_once() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.serve_ranges();
    let server = parallel_server(&upstream);
    let digest = upstream.blob_digest().to_string();
    let all = futures::future::join_all((0..6).map(|_| get(&server, &digest))).await;
    for (status, body) in all {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(digest_of(&body.expect("a whole body")), digest);
    }
    assert_eq!(
        upstream.blob_gets(),
        4,
        "one first answer and three segments"
    );
    assert_eq!(
        upstream.blob_bytes(),
        BLOB_LEN as u64,
        "each byte fetched once"
    );
    assert!(wait_stored(&server.cache_dir(), &digest));
    let (status, body) = get(&server, &digest).await;
    assert_eq!(
        (status, digest_of(&body.unwrap())),
        (StatusCode::OK, digest)
    );
    assert_eq!(upstream.blob_gets(), 4, "then served from the cache");
}

#[actix_web::test]
async fn upstreams_that_ignore_ranges_are_read_whole_or_up_to_the_segment() {
    // No range support at all: one connection, as without parallelFetch.
    let upstream = FaultUpstream::start(blob(), manifest());
    let server = parallel_server(&upstream);
    let digest = upstream.blob_digest().to_string();
    let (status, body) = get(&server, &digest).await;
    assert_eq!(
        (status, digest_of(&body.unwrap())),
        (StatusCode::OK, digest.clone())
    );
    assert_eq!(upstream.blob_gets(), 1);

    // One segment answered with the whole blob: read up to its end.
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.serve_ranges();
    upstream.push_faults(&[Fault::Good, Fault::IgnoreRange]);
    let server = parallel_server(&upstream);
    let (status, body) = get(&server, &digest).await;
    assert_eq!(
        (status, digest_of(&body.unwrap())),
        (StatusCode::OK, digest.clone())
    );
    assert_eq!(
        upstream.blob_gets(),
        4,
        "the whole answer was cut at the segment's end, not fetched again"
    );
    assert!(wait_stored(&server.cache_dir(), &digest));
}

#[actix_web::test]
async fn a_broken_segment_cuts_the_transfer_stores_nothing_and_the_next_request_succeeds() {
    for fault in [Fault::Reset, Fault::WrongBytes, Fault::Truncated] {
        let upstream = FaultUpstream::start(blob(), manifest());
        upstream.serve_ranges();
        // The first answer is good; one of the segments is not.
        upstream.push_faults(&[Fault::Good, Fault::Good, fault]);
        let server = parallel_server(&upstream);
        let digest = upstream.blob_digest().to_string();
        let (status, body) = get(&server, &digest).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}: headers come first");
        assert!(body.is_err(), "{fault:?}: the transfer is cut");
        let stored = common::stored_blob(&server.cache_dir(), &digest);
        assert!(!stored.exists(), "{fault:?}: nothing stored");
        let (status, body) = get(&server, &digest).await;
        assert_eq!(
            (status, digest_of(&body.expect("whole"))),
            (StatusCode::OK, digest.clone()),
            "{fault:?}: the next request fetches again"
        );
    }
}

#[actix_web::test]
async fn segments_landing_before_the_first_answer_are_served_in_order() {
    let upstream = FaultUpstream::start(blob(), manifest());
    upstream.serve_ranges();
    // The first answer stops half-way until the gate opens; the segments
    // after it complete meanwhile.
    upstream.push_faults(&[Fault::Gated]);
    let server = parallel_server(&upstream);
    let digest = upstream.blob_digest().to_string();
    let url = format!(
        "{}/v2/library/app/blobs/{digest}?ns=docker.io",
        server.url()
    );
    let mut res = client().get(&url).send().await.expect("headers");
    // The first bytes arrive while the first answer is held (its last
    // batch stays back until more comes).
    let mut body = Vec::new();
    while body.len() < (1 << 18) {
        body.extend_from_slice(&res.next().await.expect("bytes").expect("a chunk"));
    }
    let all_asked = || upstream.blob_gets() == 4;
    assert!(common::wait_for(std::time::Duration::from_secs(10), all_asked).await);
    upstream.open_gate();
    body.extend_from_slice(&res.body().limit(16 << 20).await.expect("the rest"));
    assert_eq!(digest_of(&body), digest, "every byte, in order");
    assert_eq!(upstream.blob_bytes(), BLOB_LEN as u64);
    assert!(wait_stored(&server.cache_dir(), &digest));
    assert_eq!(
        std::fs::read(common::stored_blob(&server.cache_dir(), &digest))
            .map(|b| digest_of(&b))
            .unwrap(),
        digest
    );
}

#[actix_web::test]
async fn skopeo_pulls_a_layer_the_mirror_fetched_in_ranges_from_the_real_registry() {
    if !common::e2e(&["docker-registry", "skopeo"], false) {
        return;
    }
    let upstream = common::Upstream::start();
    // One layer of about 3 MiB (incompressible bytes, gzip stored).
    let img = common::TestImage::oci(71, &[3 << 20]);
    common::push_image(&client(), &upstream.url(), "library/app", "1.0", &img).await;
    upstream.clear_log();
    let config = format!(
        "registries:\n  - name: docker.io\n    urls: [{}]\n    \
         parallelFetch: {{minSize: 1Mi, connections: 4}}\n",
        upstream.url()
    );
    let server = Server::start(&config, &[]);
    let dest = tempfile::tempdir().unwrap();
    let out = common::skopeo_copy_from_mirror(
        &server.host_port(),
        "docker.io/library/app:1.0",
        dest.path(),
        false,
    );
    common::assert_success(&out, "skopeo copy");
    let want: std::collections::BTreeSet<_> = img.blobs().map(|b| b.digest.clone()).collect();
    let got: std::collections::BTreeSet<_> =
        common::dir_blob_digests(dest.path()).into_iter().collect();
    assert_eq!(got, want, "every blob, verified by digest");
    let layer = &img.layers[0].digest;
    let partial = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(layer.as_str()) && r.status == 206)
        .count();
    assert_eq!(partial, 4, "the layer came in four ranged answers");
}
