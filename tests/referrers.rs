//! The referrers API through the mirror (OCI distribution 1.1): signatures
//! and SBOMs of an image looked up cold, warm, filtered, single-flight,
//! offline and air-gapped after a restart, and the artifacts they list
//! pulled by digest. The real registry (2.8) holds every manifest and blob;
//! a front with the referrers API (which that registry lacks) answers the
//! referrers endpoint.

mod common;

use awc::http::StatusCode;
use common::referrers::{Answer, ReferrersFront};
use common::{client, digest_of, docker_io_config, push_image, Server, TestImage, Upstream};
use serde_json::Value;

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

/// Status, `X-Cache`, `OCI-Filters-Applied` and body of a GET.
async fn get(url: &str) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
    let mut res = client().get(url).send().await.expect("an answer");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (cache, filters) = (header("x-cache"), header("oci-filters-applied"));
    let body = res.body().limit(16 << 20).await.expect("a body").to_vec();
    (res.status(), cache, filters, body)
}

/// `text` as a query value (`+` would read as a space).
fn query_value(text: &str) -> String {
    text.replace('+', "%2B")
}

/// The digests an index lists.
fn listed(body: &[u8]) -> Vec<String> {
    let index: Value = serde_json::from_slice(body).expect("JSON");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().expect("manifests").iter();
    entries
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

/// An image with a signature and an SBOM, pushed to a fresh registry, and
/// a referrers front listing them.
struct Signed {
    upstream: Upstream,
    front: ReferrersFront,
    image: TestImage,
    signature: TestImage,
    sbom: TestImage,
}

async fn signed_image() -> Signed {
    let upstream = Upstream::start();
    let image = TestImage::oci(41, &[8_000]);
    push_image(&client(), &upstream.url(), "library/app", "v1", &image).await;
    let front = ReferrersFront::start(&upstream.url());
    let signature = TestImage::artifact(SIG, b"signature", image.descriptor());
    let sbom = TestImage::artifact(SBOM, b"{\"spdxVersion\":\"SPDX-2.3\"}", image.descriptor());
    for (artifact, kind) in [(&signature, SIG), (&sbom, SBOM)] {
        let digest = &artifact.manifest_digest;
        push_image(&client(), &upstream.url(), "library/app", digest, artifact).await;
        front.refer(&image.manifest_digest, artifact.descriptor(), kind);
    }
    Signed {
        upstream,
        front,
        image,
        signature,
        sbom,
    }
}

#[actix_web::test]
async fn referrers_are_served_cold_warm_filtered_offline_and_air_gapped() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let Signed {
        mut upstream,
        front,
        image,
        signature,
        sbom,
    } = signed_image().await;
    // Every lookup is asked of the upstream again (tagTtl 0).
    let config = docker_io_config(front.url(), "tagTtl: 0s\n");
    let server = Server::start(&config, &[]);
    let base = server.url();
    let subject = &image.manifest_digest;
    let url = format!("{base}/v2/library/app/referrers/{subject}?ns=docker.io");

    // Cold, then again: the upstream's index byte for byte, unfiltered.
    let (status, cache, filters, body) = get(&url).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("MISS")));
    assert_eq!(filters, None);
    assert_eq!(body, front.index(subject));
    assert_eq!(
        listed(&body),
        [
            signature.manifest_digest.clone(),
            sbom.manifest_digest.clone()
        ]
    );
    let (status, cache, _, again) = get(&url).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("HIT")));
    assert_eq!(again, body);
    assert_eq!(front.asked(), 2);

    // Filtered by the mirror, in either routing form.
    let in_path = format!("{base}/v2/docker.io/library/app/referrers/{subject}");
    let (status, _, filters, sigs) =
        get(&format!("{in_path}?artifactType={}", query_value(SIG))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(
        listed(&sigs),
        std::slice::from_ref(&signature.manifest_digest)
    );

    // Many clients at once: their requests coalesce (fewer upstream
    // requests than clients; those arriving after a fetch ended start one).
    let asked = front.asked();
    let all = futures::future::join_all((0..16).map(|_| get(&url))).await;
    assert!(all
        .iter()
        .all(|(s, _, _, b)| *s == StatusCode::OK && *b == body));
    let coalesced = front.asked() - asked;
    assert!(
        coalesced < 16,
        "{coalesced} upstream requests for 16 clients"
    );

    // The artifacts are ordinary content: pulled by digest, verified, cached.
    for artifact in [&signature, &sbom] {
        let manifest = format!(
            "{base}/v2/library/app/manifests/{}?ns=docker.io",
            artifact.manifest_digest
        );
        let (status, _, _, bytes) = get(&manifest).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(digest_of(&bytes), artifact.manifest_digest);
        for blob in artifact.blobs() {
            let url = format!("{base}/v2/library/app/blobs/{}?ns=docker.io", blob.digest);
            let (status, _, _, bytes) = get(&url).await;
            assert_eq!(
                (status, digest_of(&bytes)),
                (StatusCode::OK, blob.digest.clone())
            );
        }
    }

    // A subject nobody refers to: an empty index.
    let lonely = format!(
        "{base}/v2/library/app/referrers/{}?ns=docker.io",
        signature.manifest_digest
    );
    let (status, _, _, empty) = get(&lonely).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed(&empty).is_empty());

    // Bad subjects: 400, the upstream not asked.
    let asked = front.asked();
    for bad in ["sha256:abc", "sha256", "md5:00", "SHA256:0000"] {
        let url = format!("{base}/v2/library/app/referrers/{bad}?ns=docker.io");
        let (status, _, _, body) = get(&url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["errors"][0]["code"], "DIGEST_INVALID", "{bad}");
    }
    assert_eq!(front.asked(), asked);

    // Offline: what the cache kept, filtered too.
    front.stop().await;
    upstream.stop();
    let (status, cache, _, offline) = get(&url).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("STALE")));
    assert_eq!(offline, body);
    let (_, cache, filters, sboms) =
        get(&format!("{url}&artifactType={}", query_value(SBOM))).await;
    assert_eq!(
        (cache.as_deref(), filters.as_deref()),
        (Some("STALE"), Some("artifactType"))
    );
    assert_eq!(listed(&sboms), std::slice::from_ref(&sbom.manifest_digest));

    // Restarted air-gapped: the journal kept it; the artifacts are cached.
    // (The first server's value keeps its temporary directory.)
    let mut first = server;
    first.kill();
    let server = Server::start_with_cache(&config, &first.cache_dir(), &["--air-gapped"]);
    let url = format!(
        "{}/v2/library/app/referrers/{subject}?ns=docker.io",
        server.url()
    );
    let (status, cache, _, kept) = get(&url).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("STALE")));
    assert_eq!(kept, body);
    let manifest = format!(
        "{}/v2/library/app/manifests/{}?ns=docker.io",
        server.url(),
        signature.manifest_digest
    );
    assert_eq!(get(&manifest).await.0, StatusCode::OK);
    // Never looked up: 404, so that the client tries the tag schema.
    let never = format!(
        "{}/v2/library/app/referrers/{}?ns=docker.io",
        server.url(),
        sbom.manifest_digest
    );
    assert_eq!(get(&never).await.0, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn upstreams_without_the_api_or_with_a_broken_one_get_clear_answers_and_nothing_kept() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let Signed {
        upstream,
        front,
        image,
        ..
    } = signed_image().await;
    let server = Server::start(&docker_io_config(front.url(), ""), &[]);
    let base = server.url();
    let subject = &image.manifest_digest;
    let url = format!("{base}/v2/library/app/referrers/{subject}?ns=docker.io");

    // Broken answers: 502, not kept (the next good answer is asked for).
    for broken in [Answer::NotAnIndex, Answer::Oversized] {
        front.set_answer(broken);
        let (status, _, _, body) = get(&url).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{broken:?}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(error["errors"][0]["code"].is_string(), "{broken:?}");
    }
    front.set_answer(Answer::Unsupported);
    let asked = front.asked();
    // No referrers API: 404, kept (tagTtl 10 min): the upstream is asked once.
    for _ in 0..2 {
        assert_eq!(get(&url).await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(front.asked(), asked + 1);
    // The client's fallback, the tag schema, is an ordinary manifest.
    let tag = subject.replace(':', "-");
    let fallback = TestImage::artifact(SIG, b"tagged signature", image.descriptor());
    push_image(&client(), &upstream.url(), "library/app", &tag, &fallback).await;
    let url = format!("{base}/v2/library/app/manifests/{tag}?ns=docker.io");
    let (status, _, _, bytes) = get(&url).await;
    assert_eq!(
        (status, digest_of(&bytes)),
        (StatusCode::OK, fallback.manifest_digest)
    );
}

#[actix_web::test]
async fn load_with_referrers_fills_an_air_gapped_cache_with_signatures_and_sboms() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let mut signed = signed_image().await;
    let front = &signed.front;
    let dir = tempfile::tempdir().unwrap();
    let config = docker_io_config(front.url(), "");
    let list = dir.path().join("images.txt");
    std::fs::write(&list, "library/app:v1\n").unwrap();
    let load = [
        "load",
        "--referrers",
        "--image-file",
        list.to_str().unwrap(),
    ];
    let out = common::server::cli_in(dir.path(), &config, &load);
    common::assert_success(&out, "load --referrers");
    front.stop().await;
    signed.upstream.stop();

    let cache = dir.path().join("cache");
    let server = Server::start_with_cache(&config, &cache, &["--air-gapped"]);
    let base = server.url();
    let subject = &signed.image.manifest_digest;
    let url = format!("{base}/v2/library/app/referrers/{subject}?ns=docker.io");
    let (status, _, _, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, front.index(subject));
    for artifact in [&signed.signature, &signed.sbom] {
        let digest = &artifact.manifest_digest;
        let manifest = format!("{base}/v2/library/app/manifests/{digest}?ns=docker.io");
        let (status, _, _, bytes) = get(&manifest).await;
        assert_eq!(
            (status, digest_of(&bytes)),
            (StatusCode::OK, digest.clone())
        );
        for blob in artifact.blobs() {
            let url = format!("{base}/v2/library/app/blobs/{}?ns=docker.io", blob.digest);
            assert_eq!(get(&url).await.0, StatusCode::OK, "{}", blob.digest);
        }
    }
}
