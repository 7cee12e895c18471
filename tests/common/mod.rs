//! Shared support for the integration tests: a real upstream registry, the
//! server under test, generated images, and real clients (containerd, skopeo).
//!
//! Everything listens on 127.0.0.1 only.
#![allow(dead_code, unused_imports)]

pub mod balancer;
pub mod containerd;
pub mod fault;
pub mod freezer;
pub mod image;
pub mod pki;
pub mod push;
pub mod raw_http;
pub mod referrers;
pub mod rng;
pub mod s3;
pub mod server;
pub mod skopeo;
pub mod token;
pub mod upstream;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use containerd::Containerd;
pub use fault::{Fault, FaultUpstream};
pub use image::{Blob, TestImage, TestIndex};
pub use pki::{htpasswd, Pki};
pub use push::{push_blob, push_image, push_index, put_manifest};
pub use raw_http::RawConn;
pub use rng::Rng;
pub use server::Server;
pub use skopeo::{
    dir_blob_digests, dir_manifest_digests, read_dir_manifest, skopeo, skopeo_copy,
    skopeo_copy_from_mirror,
};
pub use token::TokenServer;
pub use upstream::{AccessLogEntry, Upstream};

/// How long helpers wait for a process to become ready.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// How long a fetch may take to store a blob once its clients have it.
pub const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// Interval between two readiness probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// `POST <admin_url>/prune` of every image (not a dry run): the names the
/// report says it removed.
pub async fn prune_everything(admin_url: &str) -> serde_json::Value {
    let prune = serde_json::json!({"type": "pattern", "expr": ".*", "dryRun": false});
    let mut report = client()
        .post(format!("{admin_url}/prune"))
        .send_json(&prune)
        .await
        .unwrap();
    let report: serde_json::Value = report.json().await.unwrap();
    report["images"].clone()
}

/// An HTTP client with a 60 s response timeout.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
}

/// A server config: `extra` top-level lines, then one `docker.io` entry
/// reached at `upstream_url`.
pub fn docker_io_config(upstream_url: &str, extra: &str) -> String {
    format!("{extra}registries:\n  - name: docker.io\n    urls: [{upstream_url}]\n")
}

/// Serves `state` on `listener` with the routes `configure` adds, from a
/// thread with its own actix system (one worker, no signal handling).
pub fn serve_in_thread<T: Send + Sync + 'static>(
    listener: TcpListener,
    state: std::sync::Arc<T>,
    configure: fn(&mut actix_web::web::ServiceConfig),
) -> actix_web::dev::ServerHandle {
    serve_in_thread_tls(listener, None, state, configure)
}

/// Like [`serve_in_thread`], over HTTPS when `tls` is given.
pub fn serve_in_thread_tls<T: Send + Sync + 'static>(
    listener: TcpListener,
    tls: Option<ociregistry_actors::upstream::ServerTlsConfig>,
    state: std::sync::Arc<T>,
    configure: fn(&mut actix_web::web::ServiceConfig),
) -> actix_web::dev::ServerHandle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(actix_web::web::Data::from(std::sync::Arc::clone(&state)))
                    .configure(configure)
            })
            .workers(1)
            .disable_signals();
            let server = match tls {
                Some(tls) => server.listen_rustls_0_23(listener, tls),
                None => server.listen(listener),
            };
            let server = server.expect("listen").run();
            tx.send(server.handle()).expect("send handle");
            server.await
        })
    });
    rx.recv().expect("test server started")
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// OCI digest (`sha256:<hex>`) of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// What the end-to-end tests that pull with real clients drive: the
/// upstream registry, skopeo, containerd (whose mounts are undone with
/// umount).
pub const REAL_CLIENTS: &[&str] = &["docker-registry", "skopeo", "ctr", "containerd", "umount"];

/// The environment variable that makes missing end-to-end tools fail the
/// tests instead of skipping them; `.ci/run` sets it to `required`.
pub const E2E_ENV: &str = "OCIREGISTRY_E2E";

/// Whether an end-to-end test can run: every program in `tools` is on
/// `PATH` and, with `root`, the tests run as root (containerd needs it).
/// If not, the test must return at once: a line on stderr (written past
/// the harness's capture, so `cargo test` shows it) says what is missing,
/// and with `OCIREGISTRY_E2E=required` the test fails instead.
pub fn e2e(tools: &[&str], root: bool) -> bool {
    let mut missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_in_path(tool).is_none())
        .collect();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let is_root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if root && !is_root {
        missing.push("root");
    }
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    assert!(
        std::env::var(E2E_ENV).as_deref() != Ok("required"),
        "{test} needs {} ({E2E_ENV}=required; Debian: apt-get install docker-registry skopeo containerd podman openssl apache2-utils curl haproxy; pip install moto[server])",
        missing.join(", ")
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED end-to-end test {test}: needs {}",
        missing.join(", ")
    );
    false
}

fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Panics with `what`, the exit status, stdout and stderr unless `out` succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `GET path` to `host_port` over plain HTTP/1.0 and returns the status
/// code, or `None` if there was no well-formed answer.
pub fn http_get_status(host_port: &str, path: &str) -> Option<u16> {
    let addr: SocketAddr = host_port.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let line = std::str::from_utf8(&head[..len]).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// [`wait_until`] for async tests whose own runtime must keep running
/// (clients, or a server, on the test's thread): sleeps asynchronously.
pub async fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while !ready() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    true
}

/// Polls `ready` every [`POLL_INTERVAL`] until it returns true or `deadline`
/// passes. Returns whether it became ready.
pub fn wait_until(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Where the cache under `cache` keeps the complete blob `digest`.
pub fn stored_blob(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Waits until the blob `digest` is stored under `cache`: a fetch fsyncs and
/// renames it just after its clients have the last byte. Returns whether it
/// was within [`STORE_DEADLINE`].
pub fn wait_stored(cache: &Path, digest: &str) -> bool {
    let path = stored_blob(cache, digest);
    wait_until(STORE_DEADLINE, || path.exists())
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGKILLs and reaps the child, if any.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Opens `path` for appending (creating it), for a child's stdout/stderr.
fn append_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}
