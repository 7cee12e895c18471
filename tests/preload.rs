//! Filling the cache before the network goes away: `load` from a list,
//! every platform by default or the chosen ones, then serving air-gapped.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    assert_success, push_image, push_index, Containerd, Server, TestImage, TestIndex, Upstream,
};

fn client() -> awc::Client {
    awc::Client::default()
}

/// Runs `ociregistry --config-file <dir>/config.yaml --image-path <dir>/cache load ...`.
fn load(dir: &Path, config: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("--config-file")
        .arg(dir.join("config.yaml"))
        .arg("--image-path")
        .arg(dir.join("cache"))
        .arg("load")
        .args(args)
        .output()
        .unwrap()
}

fn cached(dir: &Path, digest: &str) -> bool {
    dir.join("cache/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

#[actix_web::test]
async fn load_a_list_with_every_platform_then_pull_it_all_with_the_upstream_gone() {
    let mut upstream = Upstream::start();
    let app = TestImage::oci(51, &[50_000, 5_000]);
    let multi = TestIndex::oci_multiarch(52);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &app).await;
    push_index(
        &client(),
        &upstream.url(),
        "library/multi",
        "latest",
        &multi,
    )
    .await;
    let config = format!(
        "registries:\n  - name: docker.io\n    urls: [{}]\n",
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    std::fs::write(
        &list,
        "# what the cluster needs\napp:1.0\ndocker.io/library/multi  # all platforms\n",
    )
    .unwrap();
    let list = list.to_str().unwrap();

    let out = load(dir.path(), &config, &["--image-file", list]);
    assert_success(&out, "load");
    for blob in app
        .blobs()
        .chain(multi.images.iter().flat_map(|i| i.blobs()))
    {
        assert!(cached(dir.path(), &blob.digest), "{} cached", blob.digest);
    }

    upstream.stop();
    let again = load(dir.path(), &config, &["--image-file", list]);
    assert_success(&again, "a second load finds everything cached");
    assert!(String::from_utf8_lossy(&again.stdout).contains("fetched 0 blobs"));

    let server = Server::start_with_cache(&config, &dir.path().join("cache"), &["--air-gapped"]);
    let ctr = Containerd::start();
    ctr.write_mirror_hosts(&server.url());
    assert_success(&ctr.pull("docker.io/library/app:1.0"), "ctr pull app");
    assert_success(
        &ctr.pull("docker.io/library/multi:latest"),
        "ctr pull multi (amd64)",
    );
    assert_success(
        &ctr.pull_platform("docker.io/library/multi:latest", "linux/arm64"),
        "ctr pull multi (arm64)",
    );
}

#[actix_web::test]
async fn load_only_the_chosen_platforms() {
    let upstream = Upstream::start();
    let multi = TestIndex::oci_multiarch(53);
    push_index(
        &client(),
        &upstream.url(),
        "library/multi",
        "latest",
        &multi,
    )
    .await;
    let config = format!(
        "registries:\n  - name: docker.io\n    urls: [{}]\n",
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    std::fs::write(&list, "multi\n").unwrap();

    let out = load(
        dir.path(),
        &config,
        &[
            "--image-file",
            list.to_str().unwrap(),
            "--platform",
            "linux/amd64",
        ],
    );
    assert_success(&out, "load --platform");
    let (amd64, arm64) = (&multi.images[0], &multi.images[1]);
    assert!(amd64.blobs().all(|b| cached(dir.path(), &b.digest)));
    assert!(
        arm64.layers.iter().all(|b| !cached(dir.path(), &b.digest)),
        "arm64 layers were not loaded"
    );
}

#[actix_web::test]
async fn preloading_from_an_unreachable_upstream_never_delays_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    std::fs::write(&list, "app:1\nother:2\n").unwrap();
    let config =
        "pullTimeout: 500\nregistries:\n  - name: docker.io\n    urls: [http://127.0.0.1:1]\n";
    let server = Server::start(config, &["--preload-images", list.to_str().unwrap()]);
    let res = client()
        .get(format!("{}/v2/", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        awc::http::StatusCode::OK,
        "serving while the preload fails in the background"
    );
}
