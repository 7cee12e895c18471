//! The cache's life cycle: list, prune (CLI and admin API), size eviction
//! with pins and shared blobs, and pruning beside a running download or a
//! client reading the pruned blob.

mod common;

use std::time::Duration;

use awc::http::StatusCode;
use common::{
    assert_success, client, digest_of, docker_io_config, free_port, push_image, Fault,
    FaultUpstream, Server, TestImage, Upstream,
};
use futures::StreamExt;

/// Pulls `repo:1` through the server: the manifest, then every blob.
async fn pull(server: &Server, repo: &str, img: &TestImage) {
    let base = format!("{}/v2/docker.io/{repo}", server.url());
    let res = client()
        .get(format!("{base}/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{repo}");
    for blob in img.blobs() {
        let mut res = client()
            .get(format!("{base}/blobs/{}", blob.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(
            digest_of(&res.body().limit(8 << 20).await.unwrap()),
            blob.digest
        );
        assert!(
            common::wait_stored(&server.cache_dir(), &blob.digest),
            "{repo}: {} is stored",
            blob.digest
        );
    }
}

fn blob_cached(server: &Server, digest: &str) -> bool {
    common::stored_blob(&server.cache_dir(), digest).exists()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two images sharing a base layer, pulled through a fresh server.
async fn two_images() -> (Upstream, Server, TestImage, TestImage) {
    let upstream = Upstream::start();
    let keep = TestImage::oci(31, &[40_000, 10_000]);
    let drop_me = TestImage::oci(31, &[40_000, 20_000]);
    push_image(&client(), &upstream.url(), "library/keep", "1", &keep).await;
    push_image(&client(), &upstream.url(), "library/dropme", "1", &drop_me).await;
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    pull(&server, "library/keep", &keep).await;
    pull(&server, "library/dropme", &drop_me).await;
    (upstream, server, keep, drop_me)
}

#[actix_web::test]
async fn list_and_prune_from_the_cli_keep_what_other_images_use() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (upstream, mut server, keep, drop_me) = two_images().await;
    let (shared, unique) = (&drop_me.layers[0].digest, &drop_me.layers[1].digest);
    assert_eq!(keep.layers[0].digest, *shared, "a shared first layer");

    let listed = server.cli(&["list"]);
    assert_success(&listed, "list");
    assert!(
        stdout(&listed).contains("docker.io/library/keep:1")
            && stdout(&listed).contains("docker.io/library/dropme:1")
    );

    // A server holds the cache and has no admin port: prune refuses.
    assert!(!server
        .cli(&["prune", "--type", "pattern", "--expr", "dropme"])
        .status
        .success());
    server.kill();

    let dry = server.cli(&[
        "prune",
        "--type",
        "pattern",
        "--expr",
        "dropme",
        "--dry-run",
    ]);
    assert_success(&dry, "prune --dry-run");
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        report["images"],
        serde_json::json!(["docker.io/library/dropme:1"])
    );
    assert!(blob_cached(&server, unique), "a dry run removes nothing");

    assert_success(
        &server.cli(&["prune", "--type", "pattern", "--expr", "dropme"]),
        "prune",
    );
    assert!(
        !blob_cached(&server, unique),
        "the pruned image's own layer is gone"
    );
    assert!(
        blob_cached(&server, shared),
        "the layer the kept image uses stays"
    );
    assert!(!stdout(&server.cli(&["list"])).contains("dropme"));
    let history = stdout(&server.cli(&["list", "--history"]));
    assert!(history.contains(r#""kind":"untag""#), "{history}");

    let accessed = server.cli(&[
        "prune",
        "--type",
        "accessed",
        "--duration",
        "1h",
        "--dry-run",
    ]);
    assert_success(&accessed, "prune --type accessed");
    let report: serde_json::Value = serde_json::from_slice(&accessed.stdout).unwrap();
    assert_eq!(
        report["images"],
        serde_json::json!([]),
        "pulled within the hour"
    );

    drop(upstream);
    server.restart();
    pull(&server, "library/keep", &keep).await;
    let gone = client()
        .get(format!(
            "{}/v2/docker.io/library/dropme/manifests/1",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "pruned and the upstream is gone"
    );
}

#[actix_web::test]
async fn the_admin_api_needs_its_token_and_prunes_only_when_asked() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let img = TestImage::oci(33, &[30_000]);
    push_image(&client(), &upstream.url(), "library/app", "1", &img).await;
    let admin_port = free_port();
    let extra = format!("adminPort: {admin_port}\nadminToken: let-me-in\n");
    let server = Server::start(&docker_io_config(&upstream.url(), &extra), &[]);
    pull(&server, "library/app", &img).await;
    let admin = format!("http://127.0.0.1:{admin_port}/admin");

    assert_eq!(
        client()
            .get(format!("{admin}/images"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let registry_port_admin = client()
        .get(format!("{}/admin/images", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registry_port_admin.status(),
        StatusCode::NOT_FOUND,
        "never on the registry port"
    );

    let mut images = client()
        .get(format!("{admin}/images"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = images.json().await.unwrap();
    assert_eq!(list[0]["name"], "docker.io/library/app:1");
    assert_eq!(list[0]["digest"], img.manifest_digest.as_str());

    let prune = serde_json::json!({"type": "pattern", "expr": "app"});
    let mut dry = client()
        .post(format!("{admin}/prune"))
        .bearer_auth("let-me-in")
        .send_json(&prune)
        .await
        .unwrap();
    let report: serde_json::Value = dry.json().await.unwrap();
    assert_eq!(report["dryRun"], true, "dry run unless asked otherwise");
    assert!(blob_cached(&server, &img.layers[0].digest));

    let mut stats = client()
        .get(format!("{admin}/stats"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    let stats: serde_json::Value = stats.json().await.unwrap();
    assert_eq!(stats["cache"]["manifests"], 1);
    assert!(stats["requests"]["misses"].as_u64().unwrap() >= 1);
    assert_eq!(stats["upstreams"][0]["registry"], "docker.io");
    assert_eq!(stats["upstreams"][0]["failures"], 0);

    // The CLI prunes through the admin API while the server runs.
    let out = server.cli(&["prune", "--type", "pattern", "--expr", "app"]);
    assert_success(&out, "prune through the admin API");
    assert!(stdout(&out).contains("docker.io/library/app:1"));
    let mut after = client()
        .get(format!("{admin}/images"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([])
    );
    let layer = &img.layers[0].digest;
    assert!(
        common::wait_until(Duration::from_secs(5), || !blob_cached(&server, layer)),
        "files are deleted too"
    );
}

#[actix_web::test]
async fn size_eviction_drops_the_least_recently_pulled_but_never_pins_or_shared_layers() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let upstream = Upstream::start();
    let pinned = TestImage::oci(41, &[100_000]);
    let old = TestImage::oci(42, &[20_000, 100_000]);
    let new = TestImage::oci(42, &[20_000, 100_001]);
    assert_eq!(
        old.layers[0].digest, new.layers[0].digest,
        "a shared base layer"
    );
    for (repo, img) in [
        ("library/pause", &pinned),
        ("library/old", &old),
        ("library/new", &new),
    ] {
        push_image(&client(), &upstream.url(), repo, "1", img).await;
    }
    let extra = "maxCacheSize: 300K\npins: [\"/library/pause:\"]\n";
    let server = Server::start(&docker_io_config(&upstream.url(), extra), &[]);
    pull(&server, "library/pause", &pinned).await;
    pull(&server, "library/old", &old).await;
    pull(&server, "library/new", &new).await;

    // The journal is rewritten in the background after an eviction.
    let mut listed = String::new();
    common::wait_until(Duration::from_secs(5), || {
        listed = stdout(&server.cli(&["list"]));
        !listed.contains("library/old:1")
    });
    assert!(
        listed.contains("library/pause:1") && listed.contains("pinned"),
        "{listed}"
    );
    assert!(listed.contains("library/new:1"), "{listed}");
    assert!(
        !listed.contains("library/old:1"),
        "the least recently pulled image went: {listed}"
    );
    assert!(blob_cached(&server, &pinned.layers[0].digest));
    assert!(
        blob_cached(&server, &new.layers[0].digest),
        "the shared base layer stays"
    );
    let old_layer = old.layers[1].digest.clone();
    assert!(common::wait_until(Duration::from_secs(5), || !blob_cached(
        &server, &old_layer
    )));
}

#[actix_web::test]
async fn a_prune_during_a_download_does_not_break_it() {
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#.to_vec();
    let upstream = FaultUpstream::start(blob, manifest);
    let admin_port = free_port();
    let extra = format!("adminPort: {admin_port}\n");
    let server = Server::start(&docker_io_config(upstream.url(), &extra), &[]);
    let tag = client()
        .get(format!(
            "{}/v2/docker.io/library/app/manifests/1",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(tag.status(), StatusCode::OK);

    upstream.push_faults(&[Fault::Gated]);
    let url = format!(
        "{}/v2/docker.io/library/app/blobs/{}",
        server.url(),
        upstream.blob_digest()
    );
    let mut res = client().get(url).send().await.unwrap();
    let mut body = res.next().await.unwrap().unwrap().to_vec();

    let admin_url = format!("http://127.0.0.1:{admin_port}/admin");
    assert_eq!(
        common::prune_everything(&admin_url).await,
        serde_json::json!(["docker.io/library/app:1"])
    );

    upstream.open_gate();
    body.extend_from_slice(&res.body().limit(8 << 20).await.unwrap());
    assert_eq!(digest_of(&body), upstream.blob_digest());
}

/// A client reading a cached blob keeps receiving it whole when the blob
/// is pruned meanwhile (it reads the file it opened, not the path). The
/// blob is larger than what the socket buffers can take ahead of the
/// client, so most of it is read after the prune.
#[actix_web::test]
async fn a_blob_pruned_while_a_client_reads_it_is_still_served_whole() {
    let blob: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 241) as u8).collect();
    let digest = digest_of(&blob);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest, "size": blob.len()}],
    });
    let upstream = FaultUpstream::start(blob, manifest.to_string().into_bytes());
    let admin_port = free_port();
    let extra = format!("adminPort: {admin_port}\n");
    let server = Server::start(&docker_io_config(upstream.url(), &extra), &[]);
    let base = format!("{}/v2/docker.io/library/app", server.url());
    let tag = client().get(format!("{base}/manifests/1")).send().await;
    assert_eq!(tag.unwrap().status(), StatusCode::OK);
    let url = format!("{base}/blobs/{digest}");
    let mut cold = client().get(&url).send().await.unwrap();
    assert_eq!(
        digest_of(&cold.body().limit(64 << 20).await.unwrap()),
        digest
    );
    assert!(common::wait_stored(&server.cache_dir(), &digest), "stored");
    let file = common::stored_blob(&server.cache_dir(), &digest);

    let mut res = client().get(&url).send().await.unwrap();
    assert_eq!(res.headers().get("x-cache").unwrap(), "HIT");
    let mut body = res.next().await.unwrap().unwrap().to_vec();
    let admin_url = format!("http://127.0.0.1:{admin_port}/admin");
    assert_eq!(
        common::prune_everything(&admin_url).await,
        serde_json::json!(["docker.io/library/app:1"])
    );
    // The files go a moment after the answer.
    assert!(
        common::wait_until(Duration::from_secs(10), || !file.exists()),
        "pruned"
    );

    body.extend_from_slice(&res.body().limit(64 << 20).await.unwrap());
    assert_eq!(digest_of(&body), digest);
    assert_eq!(
        upstream.blob_gets(),
        1,
        "served from the file, not fetched again"
    );
}

#[actix_web::test]
async fn prune_by_creation_and_by_access_time() {
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (_upstream, mut server, _, _) = two_images().await;
    server.kill();
    let prune = |args: &[&str]| {
        let mut all = vec!["prune"];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        assert_success(&out, "prune");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["images"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        prune(&["--type", "created", "--duration", "1h"]),
        0,
        "both cached moments ago"
    );
    assert_eq!(
        prune(&["--type", "created", "--duration", "0s", "--count", "1"]),
        1,
        "count limits a run"
    );
    assert_eq!(
        prune(&["--type", "accessed", "--duration", "1h"]),
        0,
        "the other was pulled moments ago"
    );
    assert_eq!(prune(&["--type", "accessed", "--duration", "0s"]), 1);
    assert!(
        !stdout(&server.cli(&["list"])).contains("docker.io/"),
        "nothing left"
    );
}
