//! Object storage end to end, with real parts on 127.0.0.1: an S3 API
//! server (moto), the upstream registry and skopeo. The backend suite runs
//! on a real bucket; servers whose store is that bucket pull through, serve
//! what another replica stored with the upstream gone, and refuse to start
//! on a bucket they cannot reach.

mod common;
#[path = "../actors/tests/suite/mod.rs"]
mod suite;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::freezer::Freezer;
use common::s3::{storage_config_via, S3Server, S3_SERVER};
use common::{
    assert_success, client, digest_of, docker_io_config, log_tail, push_image, read_dir_manifest,
    skopeo_copy_from_mirror, Server, TestImage, Upstream, POLL_INTERVAL, STORE_DEADLINE,
};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

/// A bucket on a fresh S3 server for the backend suite, or `None` (the
/// test skips) without the server program.
async fn s3_fixture() -> Option<suite::Fixture> {
    if !common::e2e(&[S3_SERVER], false) {
        return None;
    }
    let server = S3Server::start();
    server.create_bucket("suite").await;
    let store = server.client("suite");
    Some(suite::Fixture::bucket(store, Some(Box::new(server))))
}

suite! {
    s3_bucket => s3_fixture().await;
}

/// Every object under `blobs/` and `manifests/` of `bucket` hashes to its
/// name; returns the digests stored.
async fn verify_bucket(s3: &S3Server, bucket: &str) -> BTreeSet<String> {
    let store = s3.client(bucket);
    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut digests = BTreeSet::new();
    for meta in listed {
        let key = meta.location.to_string();
        let Some(hex) = key
            .strip_prefix("cache/blobs/sha256/")
            .or_else(|| key.strip_prefix("cache/manifests/sha256/"))
        else {
            continue;
        };
        let bytes: Bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(digest_of(&bytes), format!("sha256:{hex}"), "{key}");
        digests.insert(format!("sha256:{hex}"));
    }
    digests
}

/// Pulls `docker.io/library/app:1.0` through `server` with skopeo and
/// checks the manifest bytes and every blob against `image`.
fn pull_and_check(server: &Server, image: &TestImage, dest: &Path) {
    let out = skopeo_copy_from_mirror(
        &server.host_port(),
        "docker.io/library/app:1.0",
        dest,
        false,
    );
    let log = || log_tail(&server.log_path(), 20);
    assert_success(&out, &format!("skopeo copy; server log:\n{}", log()));
    assert_eq!(read_dir_manifest(dest), image.manifest);
    for blob in image.layers.iter().chain([&image.config]) {
        let hex = blob.digest.strip_prefix("sha256:").unwrap();
        let copied = std::fs::read(dest.join(hex)).unwrap();
        assert_eq!(digest_of(&copied), blob.digest);
    }
}

#[actix_web::test]
async fn replicas_share_a_bucket_and_serve_it_with_the_upstream_gone() {
    if !common::e2e(&["docker-registry", "skopeo", S3_SERVER], false) {
        return;
    }
    let s3 = S3Server::start();
    s3.create_bucket("shared").await;
    let mut upstream = Upstream::start();
    let image = TestImage::oci(81, &[300_000, 9 << 20]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;

    let upstream_url = upstream.url();
    let replica = |name: &str, extra: &str| {
        let config = docker_io_config(&upstream_url, extra) + &s3.storage_config("shared", name);
        Server::start(&config, &[])
    };
    // Replica b starts before anything is stored: it learns the tag from
    // the records a appends.
    let b = replica("b", "");
    let a = replica("a", "");
    let dest = tempfile::tempdir().unwrap();
    pull_and_check(&a, &image, &dest.path().join("a"));
    let mut expected: BTreeSet<String> = image.layers.iter().map(|l| l.digest.clone()).collect();
    expected.insert(image.config.digest.clone());
    expected.insert(image.manifest_digest.clone());
    // The last upload may end just after skopeo has the last bytes.
    let deadline = Instant::now() + STORE_DEADLINE;
    while verify_bucket(&s3, "shared").await != expected {
        assert!(Instant::now() < deadline, "the bucket holds the image");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }

    upstream.stop();
    // A new replica on an empty local directory, air-gapped.
    let c = replica("c", "airGapped: true\n");
    pull_and_check(&c, &image, &dest.path().join("c"));
    // The running replica b catches up on a's records (every 10 s).
    let caught_up = common::wait_until(Duration::from_secs(30), || {
        let path = "/v2/library/app/manifests/1.0?ns=docker.io";
        common::http_get_status(&b.host_port(), path) == Some(200)
    });
    assert!(
        caught_up,
        "b learns the tag a stored; log:\n{}",
        log_tail(&b.log_path(), 20)
    );
    pull_and_check(&b, &image, &dest.path().join("b"));
    assert_eq!(verify_bucket(&s3, "shared").await, expected);
}

#[test]
fn a_bucket_that_cannot_be_reached_stops_start_up_with_a_clear_error() {
    let closed = common::free_port();
    let config = format!(
        "storage:\n  kind: s3\n  bucket: nowhere\n  endpoint: http://127.0.0.1:{closed}\n  pathStyle: true\n  accessKeyId: test\n  secretAccessKey: very-secret-key\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = common::server::cli_in(
        dir.path(),
        &config,
        &["serve", "--port", "0", "--host", "127.0.0.1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(!stderr.contains("very-secret-key"), "{stderr}");
}

#[actix_web::test]
async fn a_bucket_that_fails_mid_run_leaves_local_copies_served_and_is_reported() {
    if !common::e2e(&["docker-registry", "skopeo", S3_SERVER], false) {
        return;
    }
    let mut s3 = S3Server::start();
    s3.create_bucket("failing").await;
    let upstream = Upstream::start();
    let image = TestImage::oci(82, &[400_000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let metrics_port = common::free_port();
    let config = docker_io_config(&upstream.url(), "") + &s3.storage_config("failing", "a");
    let server = Server::start(&config, &["--metrics", &metrics_port.to_string()]);
    let dest = tempfile::tempdir().unwrap();
    pull_and_check(&server, &image, &dest.path().join("first"));
    let uploaded = image.layers.len() + 2;
    let deadline = Instant::now() + STORE_DEADLINE;
    while verify_bucket(&s3, "failing").await.len() < uploaded {
        assert!(Instant::now() < deadline, "the image reaches the bucket");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }

    s3.stop();
    pull_and_check(&server, &image, &dest.path().join("again"));
    let get = |url: String| async move {
        let mut res = client().get(url).send().await.unwrap();
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ready = get(format!("{}/ready", server.url())).await;
        if ready.contains(r#""up":false"#) {
            assert!(ready.contains(r#""status":"ready""#), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "/ready never said: {ready}");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
    let metrics = get(format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert!(
        metrics.lines().any(|l| l == "ociregistry_store_up 0"),
        "{metrics}"
    );
    assert!(
        server.log_contents().contains("the shared store fails"),
        "{}",
        log_tail(&server.log_path(), 20)
    );
}

#[actix_web::test]
async fn load_fills_the_bucket_list_reads_it_and_an_air_gapped_replica_serves_it() {
    if !common::e2e(&["docker-registry", "skopeo", S3_SERVER], false) {
        return;
    }
    let s3 = S3Server::start();
    s3.create_bucket("loaded").await;
    let mut upstream = Upstream::start();
    let image = TestImage::oci(85, &[500_000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("images.txt");
    std::fs::write(&list, "docker.io/library/app:1.0\n").unwrap();
    let config = docker_io_config(&upstream.url(), "") + &s3.storage_config("loaded", "loader");
    let out = common::server::cli_in(
        work.path(),
        &config,
        &["load", "--image-file", list.to_str().unwrap()],
    );
    assert_success(&out, "load into the bucket");
    upstream.stop();

    let listing = common::server::cli_in(work.path(), &config, &["list"]);
    assert_success(&listing, "list the bucket");
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(stdout.contains("docker.io/library/app:1.0"), "{stdout}");
    let air_gapped = format!("airGapped: true\n{}", s3.storage_config("loaded", "server"));
    let server = Server::start(&air_gapped, &[]);
    pull_and_check(&server, &image, &work.path().join("pulled"));
}

/// GETs a blob through `server` and returns its digest.
async fn get_blob(server: &Server, digest: &str) -> String {
    let url = format!(
        "{}/v2/library/app/blobs/{digest}?ns=docker.io",
        server.url()
    );
    let mut res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), awc::http::StatusCode::OK);
    digest_of(&res.body().limit(256 << 20).await.unwrap())
}

#[actix_web::test]
async fn a_replica_killed_before_its_upload_ends_leaves_nothing_half_written() {
    if !common::e2e(&["docker-registry", S3_SERVER], false) {
        return;
    }
    let s3 = S3Server::start();
    s3.create_bucket("crash").await;
    let freezer = Freezer::start(&s3.host_port());
    let upstream = Upstream::start();
    let image = TestImage::oci(83, &[32 << 20]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let layer = image.layers[0].digest.clone();
    let config = |endpoint: &str, name: &str| {
        docker_io_config(&upstream.url(), "") + &storage_config_via(endpoint, "crash", name)
    };
    let mut doomed = Server::start(&config(&freezer.endpoint(), "doomed"), &[]);
    // The bucket stops answering when the first bytes reach the client:
    // the replica's bucket lookup is done, the blob not yet verified, so
    // its upload cannot have begun. The client gets every byte; the upload
    // never ends; the replica dies.
    let url = format!("{}/v2/library/app/blobs/{layer}?ns=docker.io", doomed.url());
    let mut res = client().get(url).send().await.unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut res).await {
        if body.is_empty() {
            freezer.freeze();
        }
        body.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(digest_of(&body), layer);
    doomed.kill();
    assert!(
        !verify_bucket(&s3, "crash").await.contains(&layer),
        "no blob object"
    );

    // The next replica fetches again, uploads, and the object is whole.
    let next = Server::start(&config(&s3.endpoint(), "next"), &[]);
    assert_eq!(get_blob(&next, &layer).await, layer);
    assert_eq!(upstream.count_requests("GET", &layer), 2);
    let deadline = Instant::now() + STORE_DEADLINE;
    while !verify_bucket(&s3, "crash").await.contains(&layer) {
        assert!(Instant::now() < deadline, "the blob reaches the bucket");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
}

#[actix_web::test]
async fn a_prune_on_one_replica_leaves_a_transfer_on_another_whole() {
    if !common::e2e(&["docker-registry", "skopeo", S3_SERVER], false) {
        return;
    }
    let s3 = S3Server::start();
    s3.create_bucket("pruned").await;
    let upstream = Upstream::start();
    let image = TestImage::oci(84, &[48 << 20]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &image).await;
    let layer = image.layers[0].digest.clone();
    let admin_port = common::free_port();
    let admin = format!("adminPort: {admin_port}\n");
    let pruner = Server::start(
        &(docker_io_config(&upstream.url(), &admin) + &s3.storage_config("pruned", "pruner")),
        &[],
    );
    let admin_url = format!("http://127.0.0.1:{admin_port}/admin");
    // The first replica takes the retention lease at start-up.
    let deadline = Instant::now() + STORE_DEADLINE;
    loop {
        let mut res = client()
            .get(format!("{admin_url}/stats"))
            .send()
            .await
            .unwrap();
        let stats: serde_json::Value = res.json().await.unwrap();
        if stats["cache"]["store"]["retentionLease"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no retention lease: {stats}");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
    let dest = tempfile::tempdir().unwrap();
    pull_and_check(&pruner, &image, &dest.path().join("pull"));
    let deadline = Instant::now() + STORE_DEADLINE;
    while !verify_bucket(&s3, "pruned").await.contains(&layer) {
        assert!(Instant::now() < deadline, "the layer reaches the bucket");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }

    // Another replica streams the layer from the bucket to a client while
    // the first prunes the image.
    let server = Server::start(
        &(docker_io_config(&upstream.url(), "") + &s3.storage_config("pruned", "server")),
        &[],
    );
    let url = format!("{}/v2/library/app/blobs/{layer}?ns=docker.io", server.url());
    let mut res = client().get(url).send().await.unwrap();
    let mut body = futures::StreamExt::next(&mut res)
        .await
        .unwrap()
        .unwrap()
        .to_vec();
    assert_eq!(
        common::prune_everything(&admin_url).await,
        serde_json::json!(["docker.io/library/app:1.0"])
    );
    body.extend_from_slice(&res.body().limit(64 << 20).await.unwrap());
    assert_eq!(digest_of(&body), layer);
    let deadline = Instant::now() + STORE_DEADLINE;
    while verify_bucket(&s3, "pruned").await.contains(&layer) {
        assert!(Instant::now() < deadline, "the prune deletes the layer");
        actix_web::rt::time::sleep(POLL_INTERVAL).await;
    }
}
