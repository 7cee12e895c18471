//! Configuration reloads without a restart: a password rotated in a
//! Kubernetes-style mounted Secret (a `..data` symlink swap) against a real
//! registry in Basic-auth + TLS mode, a broken configuration refused while
//! the running one keeps serving, SIGHUP, and a setting kept until a restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use awc::http::StatusCode;
use common::{
    client, docker_io_config, free_port, htpasswd, push_image, FaultUpstream, Pki, Server,
    TestImage, Upstream,
};

const USER: &str = "puller";

/// How long a reload may take to be noticed (files are compared every 2 s).
const NOTICED: Duration = Duration::from_secs(15);

/// A Secret mounted as the kubelet does it: each file `<name>` →
/// `..data/<name>`, `..data` → `..v<N>`; an update writes `..v<N+1>` whole
/// and swaps `..data` in one rename.
struct MountedSecret {
    dir: PathBuf,
    version: u32,
}

impl MountedSecret {
    fn new(dir: &Path, files: &[(&str, &[u8])]) -> MountedSecret {
        let mut secret = MountedSecret {
            dir: dir.to_owned(),
            version: 0,
        };
        secret.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        secret
    }

    /// The path of file `name` as a configuration names it.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn update(&mut self, files: &[(&str, &[u8])]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&version).join(name), content).unwrap();
        }
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(staged, self.dir.join("..data")).unwrap();
    }
}

/// The status of `GET /v2/<repo>/manifests/1.0?ns=docker.io` through `server`.
async fn manifest_status(server: &Server, repo: &str) -> StatusCode {
    let url = format!("{}/v2/{repo}/manifests/1.0?ns=docker.io", server.url());
    client().get(url).send().await.unwrap().status()
}

/// Waits until the server's log has `line` `times` times.
fn logged(server: &Server, line: &str, times: usize) -> bool {
    common::wait_until(NOTICED, || {
        server.log_contents().matches(line).count() >= times
    })
}

/// Pulls `repo:1.0` through `url`: the manifest, then every blob, each
/// checked.
async fn pull(url: &str, repo: &str, image: &TestImage) -> Result<(), String> {
    let manifest = format!("{url}/v2/{repo}/manifests/1.0?ns=docker.io");
    let got = match client().get(&manifest).send().await {
        Ok(mut res) if res.status() == StatusCode::OK => res.body().await.map(|b| b.to_vec()).ok(),
        _ => None,
    };
    if got.as_deref() != Some(&image.manifest[..]) {
        return Err("manifest".into());
    }
    for blob in image.blobs() {
        let blob_url = format!("{url}/v2/{repo}/blobs/{}?ns=docker.io", blob.digest);
        let mut res = client()
            .get(&blob_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = res.body().limit(1 << 20).await.map_err(|e| e.to_string())?;
        if common::digest_of(&body) != blob.digest {
            return Err(format!("{}: {}", blob.digest, res.status()));
        }
    }
    Ok(())
}

/// [`pull`] again and again until `done`: the number of pulls and the
/// failures.
async fn pull_loop(
    url: &str,
    repo: &str,
    image: &TestImage,
    done: &AtomicBool,
) -> (usize, Vec<String>) {
    let (mut pulls, mut failures) = (0, Vec::new());
    while !done.load(Ordering::SeqCst) {
        pulls += 1;
        if let Err(e) = pull(url, repo, image).await {
            failures.push(format!("pull {pulls}: {e}"));
        }
    }
    (pulls, failures)
}

#[actix_web::test]
async fn a_password_and_a_ca_rotated_in_a_swapped_secret_apply_without_a_restart() {
    if !common::e2e(&["docker-registry", "htpasswd"], false) {
        return;
    }
    let (pki, renewed) = (Pki::generate(), Pki::generate());
    let plain = Upstream::start();
    let (first, second) = (TestImage::oci(1, &[40_000]), TestImage::oci(2, &[40_000]));
    push_image(&client(), &plain.url(), "library/first", "1.0", &first).await;
    push_image(&client(), &plain.url(), "library/second", "1.0", &second).await;
    let users = htpasswd(pki.dir(), USER, "old-Pa55");
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        users.display()
    );
    let registry = plain.secured(&format!("{}{auth}", pki.registry_tls(false)), true);
    let mounted = tempfile::tempdir().unwrap();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let mut secret = MountedSecret::new(
        mounted.path(),
        &[("password", b"old-Pa55"), ("ca.pem", &ca)],
    );
    let entry = format!(
        "    tls:\n      ca: {}\n    auth:\n      user: {USER}\n      passwordFile: {}\n",
        secret.path("ca.pem").display(),
        secret.path("password").display()
    );
    // tagTtl 0: every pull asks the registry, so every pull uses the
    // credentials and the CA (a failing answer serves the cached digest).
    let config = format!(
        "tagTtl: 0s\nregistries:\n  - name: docker.io\n    urls: [{}]\n{entry}",
        registry.url()
    );
    let server = Server::start(&config, &[]);
    // Cached once, the image is served whatever the registry says.
    assert_eq!(pull(&server.url(), "library/first", &first).await, Ok(()));

    // Clients pull all along while the registry's password and certificate
    // change and the Secret follows, as the kubelet updates it.
    let done = Arc::new(AtomicBool::new(false));
    let url = server.url();
    let pulling = pull_loop(&url, "library/first", &first, &done);
    let stop = Arc::clone(&done);
    let (pki_dir, renewed_dir) = (pki.dir().to_owned(), renewed.dir().to_owned());
    let log = server.log_path();
    let rotate = actix_web::rt::task::spawn_blocking(move || {
        let mut registry = registry;
        let reloads = |n| {
            common::wait_until(NOTICED, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .matches("configuration reloaded")
                    .count()
                    >= n
            })
        };
        // 1. The password.
        htpasswd(&pki_dir, USER, "new-Pa55");
        registry.restart();
        secret.update(&[("password", b"new-Pa55"), ("ca.pem", &ca)]);
        let first_reload = reloads(1);
        // 2. The registry's certificate, from a new CA.
        for file in ["server.pem", "server-key.pem"] {
            std::fs::copy(renewed_dir.join(file), pki_dir.join(file)).unwrap();
        }
        registry.restart();
        let new_ca = std::fs::read(renewed_dir.join("ca.pem")).unwrap();
        secret.update(&[("password", b"new-Pa55"), ("ca.pem", &new_ca)]);
        let second_reload = reloads(2);
        stop.store(true, Ordering::SeqCst);
        (registry, secret, first_reload && second_reload)
    });
    let ((pulls, failures), rotated) = futures::future::join(pulling, rotate).await;
    let (_registry, _secret, reloaded) = rotated.unwrap();
    eprintln!(
        "password and CA rotation: {pulls} pulls, {} failed",
        failures.len()
    );
    assert!(reloaded, "{}", server.log_contents());
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(pulls > 1, "{pulls} pulls");
    // The new password and CA fetch what was never cached.
    assert_eq!(
        manifest_status(&server, "library/second").await,
        StatusCode::OK
    );
    assert!(
        !server.log_contents().contains("new-Pa55"),
        "secrets never logged"
    );
}

#[actix_web::test]
async fn a_broken_configuration_is_refused_and_the_running_one_keeps_serving() {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
    let upstream = FaultUpstream::start(blob, manifest.to_vec());
    let metrics_port = free_port();
    let server = Server::start(
        &docker_io_config(upstream.url(), ""),
        &["--metrics", &metrics_port.to_string()],
    );
    assert_eq!(
        manifest_status(&server, "library/app").await,
        StatusCode::OK
    );

    // Bad YAML, an unknown scheme, a CA file that cannot be read.
    let broken = [
        "registries: [unclosed\n".to_string(),
        docker_io_config(upstream.url(), "").replace("    urls:", "    scheme: ftp\n    urls:"),
        docker_io_config(upstream.url(), "") + "    tls:\n      ca: /nonexistent/ca.pem\n",
    ];
    for (n, config) in broken.iter().enumerate() {
        std::fs::write(server.config_path(), config).unwrap();
        assert!(logged(&server, "configuration refused", n + 1), "{config}");
    }
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut res = client().get(metrics_url).send().await.unwrap();
    let metrics = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        metrics.contains("ociregistry_config_reload_failures_total 3"),
        "{metrics}"
    );
    // The previous configuration serves, its upstream included.
    let blob_url = format!(
        "{}/v2/library/app/blobs/{}?ns=docker.io",
        server.url(),
        upstream.blob_digest()
    );
    let mut res = client().get(&blob_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        common::digest_of(&res.body().await.unwrap()),
        upstream.blob_digest()
    );

    // Fixed, it applies; SIGHUP reloads even when no file changed.
    std::fs::write(
        server.config_path(),
        docker_io_config(upstream.url(), "tagTtl: 1m\n"),
    )
    .unwrap();
    assert!(logged(&server, "configuration reloaded", 1));
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(logged(&server, "configuration reloaded", 2));
    assert!(server.log_contents().contains("SIGHUP"));
}

/// The admin port keeps the token it started with: a rotated
/// `adminTokenFile` takes effect at the next restart, and the reload says so.
#[test]
fn a_rotated_admin_token_file_is_reported_as_kept_until_a_restart() {
    let mounted = tempfile::tempdir().unwrap();
    let mut secret = MountedSecret::new(mounted.path(), &[("token", b"first-token")]);
    let extra = format!("adminTokenFile: {}\n", secret.path("token").display());
    let server = Server::start(&docker_io_config("http://127.0.0.1:9", &extra), &[]);
    secret.update(&[("token", b"second-token")]);
    let noticed = logged(&server, "configuration reloaded", 1);
    let log = server.log_contents();
    assert!(noticed, "{log}");
    let reloaded = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        reloaded.contains("until a restart") && reloaded.contains("adminToken"),
        "{reloaded}"
    );
}

/// `serial=…` of a certificate: the one `127.0.0.1:port` presents, or the
/// one in `pem`.
fn serial(port: Option<u16>, pem: &Path) -> String {
    let script = match port {
        Some(port) => format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ),
        None => format!("openssl x509 -noout -serial -in {}", pem.display()),
    };
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[actix_web::test]
async fn a_renewed_server_certificate_is_presented_without_a_restart() {
    if !common::e2e(&["openssl"], false) {
        return;
    }
    let (old, new) = (Pki::generate(), Pki::generate());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(old.path("server.pem"), &cert).unwrap();
    std::fs::copy(old.path("server-key.pem"), &key).unwrap();
    let config = format!(
        "serverTlsConfig:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    );
    let server = Server::start(&config, &[]);
    let port: u16 = server
        .host_port()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let before = serial(Some(port), &cert);
    assert_eq!(before, serial(None, &old.path("server.pem")));

    // A broken pair (a new certificate, the old key) is refused.
    std::fs::copy(new.path("server.pem"), &cert).unwrap();
    assert!(logged(&server, "configuration refused", 1));
    assert_eq!(
        serial(Some(port), &cert),
        before,
        "the old one still serves"
    );

    // With its key, the renewed certificate serves the next connection.
    std::fs::copy(new.path("server-key.pem"), &key).unwrap();
    assert!(logged(&server, "configuration reloaded", 1));
    assert_eq!(
        serial(Some(port), &cert),
        serial(None, &new.path("server.pem"))
    );
}
