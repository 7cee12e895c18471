//! skopeo, isolated from the system's registries.conf, policy and auth files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Policy, registries.conf and auth files shared by every skopeo run of this
/// test process.
struct Files {
    policy: PathBuf,
    registries_conf: PathBuf,
    auth: PathBuf,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("ociregistry-tests-skopeo-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create skopeo config dir");
        let write = |name: &str, content: &str| {
            let path = dir.join(name);
            fs::write(&path, content).expect("write skopeo config file");
            path
        };
        Files {
            policy: write(
                "policy.json",
                r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
            ),
            registries_conf: write("registries.conf", "unqualified-search-registries = []\n"),
            auth: write("auth.json", r#"{"auths":{}}"#),
        }
    })
}

/// Runs `skopeo --policy POLICY ARGS...` with an empty registries.conf and
/// auth file.
pub fn skopeo(args: &[&str]) -> Output {
    let files = files();
    Command::new("skopeo")
        .arg("--policy")
        .arg(&files.policy)
        .args(args)
        .env("CONTAINERS_REGISTRIES_CONF", &files.registries_conf)
        .env("REGISTRY_AUTH_FILE", &files.auth)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo")
}

/// Runs `skopeo copy EXTRA_ARGS... SRC DEST`, e.g. with
/// `["--src-tls-verify=false"]`.
pub fn skopeo_copy(src: &str, dest: &str, extra_args: &[&str]) -> Output {
    let mut args = vec!["copy"];
    args.extend_from_slice(extra_args);
    args.extend([src, dest]);
    skopeo(&args)
}

/// Copies `docker://MIRROR/IMAGE` over plain HTTP into the `dir:` layout at
/// `dest_dir`, which must not exist yet or be empty. `image` names the
/// registry, e.g. `docker.io/library/x:tag`. With `all`, every platform of an
/// index is copied; otherwise only the host's platform (linux/amd64).
///
/// skopeo first tries HTTPS on the port, then falls back to HTTP.
pub fn skopeo_copy_from_mirror(
    mirror_host_port: &str,
    image: &str,
    dest_dir: &Path,
    all: bool,
) -> Output {
    let src = format!("docker://{mirror_host_port}/{image}");
    let dest = format!("dir:{}", dest_dir.display());
    let mut extra = vec!["--src-tls-verify=false"];
    if all {
        extra.push("--all");
    }
    skopeo_copy(&src, &dest, &extra)
}

/// The top-level manifest (or index) of a `dir:` copy.
pub fn read_dir_manifest(dest: &Path) -> Vec<u8> {
    let path = dest.join("manifest.json");
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `sha256:<hex>` of every blob in a `dir:` copy (files named by bare hex
/// digest), sorted.
pub fn dir_blob_digests(dest: &Path) -> Vec<String> {
    dir_digests(dest, "")
}

/// `sha256:<hex>` of every per-platform manifest in a `dir:` copy made with
/// `--all` (files named `<hex>.manifest.json`), sorted.
pub fn dir_manifest_digests(dest: &Path) -> Vec<String> {
    dir_digests(dest, ".manifest.json")
}

fn dir_digests(dest: &Path, suffix: &str) -> Vec<String> {
    let entries = fs::read_dir(dest).unwrap_or_else(|e| panic!("read {}: {e}", dest.display()));
    let mut digests: Vec<String> = entries
        .map(|entry| entry.expect("read dir entry").file_name())
        .filter_map(|name| {
            let hex = name.to_str()?.strip_suffix(suffix)?;
            let is_digest = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            is_digest.then(|| format!("sha256:{hex}"))
        })
        .collect();
    digests.sort();
    digests
}
