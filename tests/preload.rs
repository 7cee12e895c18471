//! Filling the cache before the network goes away: `load` from a list,
//! every platform by default or the chosen ones, then serving air-gapped.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    assert_success, client, docker_io_config, push_image, push_index, Containerd, Server,
    TestImage, TestIndex, Upstream,
};

/// Runs `ociregistry --config-file <dir>/config.yaml --image-path <dir>/cache load ...`.
fn load(dir: &Path, config: &str, args: &[&str]) -> Output {
    let mut line = vec!["load"];
    line.extend_from_slice(args);
    common::server::cli_in(dir, config, &line)
}

fn cached(dir: &Path, digest: &str) -> bool {
    dir.join("cache/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

/// A registry holding the OCI index `library/multi:latest`, and a server
/// config pointing docker.io at it.
async fn upstream_with_multi(seed: u64) -> (Upstream, TestIndex, String) {
    let upstream = Upstream::start();
    let multi = TestIndex::oci_multiarch(seed);
    push_index(
        &client(),
        &upstream.url(),
        "library/multi",
        "latest",
        &multi,
    )
    .await;
    let config = docker_io_config(&upstream.url(), "");
    (upstream, multi, config)
}

/// Writes an image list into `dir`; returns its path.
fn list_file(dir: &Path, text: &str) -> String {
    let path = dir.join("images.txt");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[actix_web::test]
async fn load_a_list_with_every_platform_then_pull_it_all_with_the_upstream_gone() {
    if !common::e2e(&["docker-registry", "ctr", "containerd"], false) {
        return;
    }
    let (mut upstream, multi, config) = upstream_with_multi(52).await;
    let app = TestImage::oci(51, &[50_000, 5_000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &app).await;
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(
        dir.path(),
        "# what the cluster needs\napp:1.0\ndocker.io/library/multi  # all platforms\n",
    );
    let list = list.as_str();

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
    if !common::e2e(&["docker-registry"], false) {
        return;
    }
    let (_upstream, multi, config) = upstream_with_multi(53).await;
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), "multi\n");

    let out = load(
        dir.path(),
        &config,
        &["--image-file", &list, "--platform", "linux/amd64"],
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
    let list = list_file(dir.path(), "app:1\nother:2\n");
    let config =
        "pullTimeout: 500\nregistries:\n  - name: docker.io\n    urls: [http://127.0.0.1:1]\n";
    let server = Server::start(config, &["--preload-images", &list]);
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

/// Writes `img` as an OCI image layout in `dir` (named by `name`, if any).
fn oci_layout(dir: &Path, img: &TestImage, name: Option<&str>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in img.blobs() {
        std::fs::write(
            blobs.join(blob.digest.trim_start_matches("sha256:")),
            &blob.bytes,
        )
        .unwrap();
    }
    std::fs::write(
        blobs.join(img.manifest_digest.trim_start_matches("sha256:")),
        &img.manifest,
    )
    .unwrap();
    let annotations = name.map_or(
        serde_json::json!({}),
        |n| serde_json::json!({"io.containerd.image.name": n}),
    );
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": img.media_type, "digest": img.manifest_digest, "size": img.manifest.len(),
        "annotations": annotations}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes `img` as a legacy `docker save` archive directory named `tag`.
fn docker_save(dir: &Path, img: &TestImage, tag: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), &img.config.bytes).unwrap();
    let mut layers = Vec::new();
    for (i, layer) in img.layers.iter().enumerate() {
        std::fs::create_dir_all(dir.join(format!("l{i}"))).unwrap();
        std::fs::write(dir.join(format!("l{i}/layer.tar")), &layer.bytes).unwrap();
        layers.push(format!("l{i}/layer.tar"));
    }
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": layers}]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// Tars the content of `dir` into `file`.
fn tar(dir: &Path, file: &Path) {
    let out = Command::new("tar")
        .arg("-cf")
        .arg(file)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .unwrap();
    assert_success(&out, "tar");
}

#[actix_web::test]
async fn load_oci_layout_and_docker_save_tarballs_then_serve_them_air_gapped() {
    if !common::e2e(&["ctr", "containerd"], false) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (named, unnamed, saved) = (
        TestImage::oci(61, &[30_000]),
        TestImage::oci(62, &[30_000]),
        TestImage::oci(63, &[30_000]),
    );
    oci_layout(
        &work.path().join("named"),
        &named,
        Some("docker.io/library/fromtar:1"),
    );
    oci_layout(&work.path().join("unnamed"), &unnamed, None);
    docker_save(&work.path().join("saved"), &saved, "saved:2");
    for name in ["named", "unnamed", "saved"] {
        tar(
            &work.path().join(name),
            &work.path().join(format!("{name}.tar")),
        );
    }
    let tarball = |name: &str| {
        work.path()
            .join(format!("{name}.tar"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let config = "registries: []\n";
    let dir = tempfile::tempdir().unwrap();

    assert_success(
        &load(dir.path(), config, &["--image-file", &tarball("named")]),
        "load an OCI layout",
    );
    assert_success(
        &load(dir.path(), config, &["--image-file", &tarball("saved")]),
        "load a docker save archive",
    );
    let nameless = load(dir.path(), config, &["--image-file", &tarball("unnamed")]);
    assert!(
        !nameless.status.success(),
        "a tarball without a name needs --resolve-ref"
    );
    let resolved = load(
        dir.path(),
        config,
        &[
            "--image-file",
            &tarball("unnamed"),
            "--resolve-ref",
            "quay.io/x/named:3",
        ],
    );
    assert_success(&resolved, "load with --resolve-ref");

    let server = Server::start_with_cache(config, &dir.path().join("cache"), &["--air-gapped"]);
    let ctr = Containerd::start();
    ctr.write_mirror_hosts(&server.url());
    for (reference, digest) in [
        ("docker.io/library/fromtar:1", named.manifest_digest.clone()),
        ("quay.io/x/named:3", unnamed.manifest_digest.clone()),
    ] {
        assert_success(&ctr.pull(reference), reference);
        assert_eq!(ctr.image_digest(reference), Some(digest));
    }
    assert_success(
        &ctr.pull("docker.io/library/saved:2"),
        "ctr pull of the docker save image",
    );
}
