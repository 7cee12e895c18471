//! `ociregistry node-config` on a node laid out in a temporary directory,
//! then real runtimes using what it wrote: containerd (`ctr`, through the
//! `hosts.toml` files) pulls through the mirror, and from the registry
//! itself once the mirror is gone when fallback is allowed, and not when
//! it is not; podman (CRI-O's configuration library) pulls through the
//! `registries.conf.d` drop-in, in the in-path form.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    assert_success, client, docker_io_config, push_image, Containerd, Server, TestImage, Upstream,
};

/// Runs `ociregistry node-config ARGS...`.
fn node_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .arg("node-config")
        .args(args)
        .output()
        .unwrap()
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[actix_web::test]
async fn containerd_pulls_through_the_written_files_and_falls_back_only_when_allowed() {
    if !common::e2e(&["docker-registry", "ctr", "containerd"], true) {
        return;
    }
    let upstream = Upstream::start();
    let registry = upstream.host_port();
    let img = TestImage::oci(61, &[20_000]);
    push_image(&client(), &upstream.url(), "library/app", "1.0", &img).await;
    let config = format!(
        "registries:\n  - name: {registry}\n    urls: [{}]\n",
        upstream.url()
    );
    let mut server = Server::start(&config, &[]);
    let ctr = Containerd::start();
    let hosts = ctr.hosts_dir();
    let hosts = hosts.to_str().unwrap();
    let containerd_config = ctr.config_path();
    let server_url = server.url();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "--mirror", &server_url, "--certs-dir", hosts];
        args.extend(["--containerd-config", containerd_config.to_str().unwrap()]);
        args.extend_from_slice(extra);
        node_config(&args)
    };

    let out = apply(&["--fallback", "--dial-timeout", "300ms"]);
    assert_success(&out, "node-config apply");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("config_path is not set"), "{log}");
    let image = format!("{registry}/library/app:1.0");
    assert_success(
        &ctr.pull_args(&image, &["--plain-http"]),
        "pull through the mirror",
    );
    assert_eq!(ctr.image_digest(&image), Some(img.manifest_digest.clone()));
    assert!(
        common::stored_blob(&server.cache_dir(), &img.layers[0].digest).exists(),
        "the pull went through the mirror"
    );

    // The mirror is gone: with fallback, the registry itself answers.
    ctr.remove_all();
    server.kill();
    assert_success(
        &ctr.pull_args(&image, &["--plain-http"]),
        "pull with the mirror gone",
    );
    // Without fallback (air-gapped clusters) nothing but the mirror is asked.
    ctr.remove_all();
    assert_success(&apply(&[]), "node-config apply without fallback");
    let default = text(&ctr.hosts_dir().join("_default/hosts.toml"));
    assert!(
        default.contains(&format!("server = \"{server_url}\"")),
        "{default}"
    );
    let refused = ctr.pull_args(&image, &["--plain-http"]);
    assert!(!refused.status.success(), "no fallback: the pull fails");

    // Removal leaves the directory as it found it.
    let mut remove = vec!["remove", "--certs-dir", hosts];
    remove.extend(["--containerd-config", containerd_config.to_str().unwrap()]);
    assert_success(&node_config(&remove), "node-config remove");
    assert_eq!(std::fs::read_dir(ctr.hosts_dir()).unwrap().count(), 0);
}

#[actix_web::test]
async fn podman_pulls_through_the_crio_drop_in() {
    if !common::e2e(&["docker-registry", "podman"], true) {
        return;
    }
    let upstream = Upstream::start();
    let img = TestImage::oci(62, &[30_000]);
    push_image(&client(), &upstream.url(), "library/app", "2.0", &img).await;
    let server = Server::start(&docker_io_config(&upstream.url(), ""), &[]);
    // podman reads drop-ins from $HOME/.config/containers/registries.conf.d
    // too: the node's /etc/containers stays untouched.
    let home = tempfile::tempdir().unwrap();
    let drop_ins = home.path().join(".config/containers/registries.conf.d");
    let out = node_config(&[
        "apply",
        "--runtime",
        "crio",
        "--registry",
        "docker.io",
        "--mirror",
        &server.url(),
        "--crio-dir",
        drop_ins.to_str().unwrap(),
    ]);
    assert_success(&out, "node-config apply --runtime crio");

    let podman = |args: &[&str]| {
        let storage = home.path().join("storage");
        let run = home.path().join("run");
        Command::new("podman")
            .env("HOME", home.path())
            .args(["--root", storage.to_str().unwrap()])
            .args(["--runroot", run.to_str().unwrap()])
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .output()
            .unwrap()
    };
    let image = "docker.io/library/app:2.0";
    assert_success(&podman(&["pull", image]), "podman pull");
    let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", image]);
    assert_success(&digest, "podman image inspect");
    assert_eq!(
        String::from_utf8_lossy(&digest.stdout).trim(),
        img.manifest_digest
    );
    let log = server.log_contents();
    assert!(
        log.contains("/v2/docker.io/library/app/manifests/2.0"),
        "podman asked the mirror in the in-path form:\n{log}"
    );
}
