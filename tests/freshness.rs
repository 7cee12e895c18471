//! Degraded operation against a real registry: tag TTLs, revalidation with
//! HEAD, stale-if-error, stale-while-revalidate, air-gapped serving, and
//! back-off from an upstream that keeps failing.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use awc::http::StatusCode;
use common::{client, docker_io_config, push_image, Server, TestImage, Upstream};

const REPO: &str = "library/app";
const TAG: &str = "1";
const MANIFEST_PATH: &str = "/v2/library/app/manifests/1";

/// GET of the tag through the server: status, `Docker-Content-Digest`, `X-Cache`.
async fn get_tag(server: &Server) -> (StatusCode, String, String) {
    let url = format!("{}/v2/{REPO}/manifests/{TAG}?ns=docker.io", server.url());
    let res = client().get(url).send().await.expect("response");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (
        res.status(),
        header("docker-content-digest"),
        header("x-cache"),
    )
}

#[actix_web::test]
async fn ttl_zero_revalidates_with_head_follows_a_moved_tag_and_serves_stale_when_the_upstream_is_gone(
) {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let mut upstream = Upstream::start();
    let (first, second) = (TestImage::oci(21, &[10_000]), TestImage::oci(22, &[10_000]));
    push_image(&client(), &upstream.url(), REPO, TAG, &first).await;
    let server = Server::start(&docker_io_config(&upstream.url(), "tagTtl: 0\n"), &[]);

    assert_eq!(
        get_tag(&server).await,
        (StatusCode::OK, first.manifest_digest.clone(), "MISS".into())
    );
    for _ in 0..3 {
        let (status, digest, _) = get_tag(&server).await;
        assert_eq!(
            (status, digest),
            (StatusCode::OK, first.manifest_digest.clone())
        );
    }
    assert_eq!(
        upstream.count_requests("GET", MANIFEST_PATH),
        1,
        "one GET, then HEADs only"
    );
    assert_eq!(upstream.count_requests("HEAD", MANIFEST_PATH), 3);

    push_image(&client(), &upstream.url(), REPO, TAG, &second).await;
    let (status, digest, _) = get_tag(&server).await;
    assert_eq!(
        (status, digest),
        (StatusCode::OK, second.manifest_digest.clone()),
        "the moved tag is followed"
    );

    upstream.stop();
    assert_eq!(
        get_tag(&server).await,
        (
            StatusCode::OK,
            second.manifest_digest.clone(),
            "STALE".into()
        ),
        "a cached tag is never turned into an error because the upstream is down"
    );
    let journal = std::fs::read_to_string(server.cache_dir().join("index.jsonl")).unwrap();
    let history: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains(r#""kind":"tag""#))
        .collect();
    assert_eq!(
        history.len(),
        2,
        "the tag journal keeps both digests: {history:?}"
    );
}

#[actix_web::test]
async fn within_the_ttl_the_cached_tag_is_served_without_asking_the_upstream() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let (first, second) = (TestImage::oci(23, &[10_000]), TestImage::oci(24, &[10_000]));
    push_image(&client(), &upstream.url(), REPO, TAG, &first).await;
    let server = Server::start(&docker_io_config(&upstream.url(), "tagTtl: 10m\n"), &[]);

    assert_eq!(get_tag(&server).await.1, first.manifest_digest);
    push_image(&client(), &upstream.url(), REPO, TAG, &second).await;
    assert_eq!(
        get_tag(&server).await,
        (StatusCode::OK, first.manifest_digest.clone(), "HIT".into())
    );
    assert_eq!(upstream.count_requests("HEAD", MANIFEST_PATH), 0);
    assert_eq!(upstream.count_requests("GET", MANIFEST_PATH), 1);
}

#[actix_web::test]
async fn stale_while_revalidate_answers_at_once_and_updates_in_the_background() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let (first, second) = (TestImage::oci(25, &[10_000]), TestImage::oci(26, &[10_000]));
    push_image(&client(), &upstream.url(), REPO, TAG, &first).await;
    let server = Server::start(
        &docker_io_config(&upstream.url(), "tagTtl: 0\nstaleWhileRevalidate: true\n"),
        &[],
    );
    assert_eq!(get_tag(&server).await.1, first.manifest_digest);

    push_image(&client(), &upstream.url(), REPO, TAG, &second).await;
    assert_eq!(
        get_tag(&server).await,
        (
            StatusCode::OK,
            first.manifest_digest.clone(),
            "STALE".into()
        ),
        "answered from the cache while the tag is revalidated"
    );
    let mut moved = false;
    for _ in 0..200 {
        if get_tag(&server).await.1 == second.manifest_digest {
            moved = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        moved,
        "the background revalidation brought in the new digest"
    );
}

#[actix_web::test]
async fn air_gapped_mode_never_contacts_the_upstream() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let img = TestImage::oci(27, &[10_000]);
    push_image(&client(), &upstream.url(), REPO, TAG, &img).await;
    upstream.clear_log();
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &["--air-gapped"]);

    let (status, _, _) = get_tag(&server).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let blob = format!(
        "{}/v2/{REPO}/blobs/{}?ns=docker.io",
        server.url(),
        img.layers[0].digest
    );
    assert_eq!(
        client().get(blob).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(upstream.requests().is_empty(), "no upstream request at all");
}

#[actix_web::test]
async fn a_registry_that_keeps_failing_is_backed_off_instead_of_dialled_each_time() {
    // Accepts connections and closes them at once: every request fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let server = Server::start(&docker_io_config(&url, ""), &[]);
    for _ in 0..3 {
        assert_eq!(get_tag(&server).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    let after_three = dials.load(Ordering::SeqCst);
    assert!(after_three >= 3);
    for _ in 0..5 {
        assert_eq!(get_tag(&server).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        dials.load(Ordering::SeqCst),
        after_three,
        "backed off: not dialled again"
    );
}
