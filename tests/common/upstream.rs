//! A real CNCF Distribution registry (`docker-registry` 2.8) used as upstream.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::{
    append_file, free_port, http_get_status, kill_child, log_tail, wait_until, STARTUP_DEADLINE,
};

/// A `docker-registry serve` process on 127.0.0.1 with filesystem storage in a
/// temporary directory. Its access log (combined log format) and its other
/// log lines go to [`Upstream::log_path`].
pub struct Upstream {
    dir: TempDir,
    /// Registry storage: its own, or that of the plain registry it shares.
    storage: PathBuf,
    /// Extra configuration (TLS under `http:`, then top-level `auth:`).
    extra: String,
    /// Whether it serves HTTPS.
    tls: bool,
    port: u16,
    child: Option<Child>,
}

/// One line of the upstream's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request target: path plus query.
    pub path: String,
    /// Response status code.
    pub status: u16,
}

impl Upstream {
    /// Starts a registry on a free port and waits until `GET /v2/` answers 200.
    pub fn start() -> Upstream {
        Self::launch(None, String::new(), false)
    }

    /// Starts a second registry serving this one's storage, configured with
    /// `extra` (lines under `http:` indented two spaces, e.g. `tls:`, then
    /// top-level keys such as `auth:`), over HTTPS when `tls` is set. Images
    /// pushed to the plain registry are then pulled from the secured one.
    pub fn secured(&self, extra: &str, tls: bool) -> Upstream {
        Self::launch(Some(self.storage.clone()), extra.to_owned(), tls)
    }

    fn launch(storage: Option<PathBuf>, extra: String, tls: bool) -> Upstream {
        let dir = tempfile::Builder::new()
            .prefix("ociregistry-upstream-")
            .tempdir()
            .expect("create upstream temp dir");
        let storage = storage.unwrap_or_else(|| dir.path().join("storage"));
        fs::create_dir_all(&storage).expect("create upstream storage dir");
        let mut upstream = Upstream {
            dir,
            storage,
            extra,
            tls,
            port: 0,
            child: None,
        };
        // Another process may take the free port before the registry binds it.
        let mut retries = 2;
        loop {
            upstream.port = free_port();
            upstream.write_config();
            match upstream.spawn() {
                Ok(()) => return upstream,
                Err(log) if retries > 0 && log.contains("address already in use") => retries -= 1,
                Err(log) => panic!(
                    "docker-registry did not come up on {}:\n{log}",
                    upstream.host_port()
                ),
            }
        }
    }

    fn write_config(&self) {
        let config = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: ociregistry-tests-upstream
{extra}",
            storage = self.storage.display(),
            port = self.port,
            extra = self.extra,
        );
        fs::write(self.dir.path().join("config.yml"), config).expect("write upstream config");
    }

    /// Spawns the registry and waits for it; on failure returns the log tail.
    fn spawn(&mut self) -> Result<(), String> {
        let log = append_file(&self.log_path());
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        // distribution reads every REGISTRY_* variable as a config override.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn docker-registry"));
        let host_port = self.host_port();
        let ready = wait_until(STARTUP_DEADLINE, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return true;
            }
            // Any HTTP answer means it listens (HTTPS ports answer 400, auth 401).
            http_get_status(&host_port, "/v2/").is_some()
        });
        let exited = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))));
        if ready && !exited {
            return Ok(());
        }
        kill_child(&mut self.child);
        Err(log_tail(&self.log_path(), 30))
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_port())
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Path of the registry's log file (access log included).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The whole log file.
    pub fn log_contents(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Empties the log file, so later counts only see later requests.
    pub fn clear_log(&self) {
        fs::write(self.log_path(), b"").expect("truncate upstream log");
    }

    /// Every request in the access log, oldest first.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        self.log_contents()
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// Number of access-log lines for `method` whose request target contains
    /// `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Kills the registry and waits for it to exit; storage is kept.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Restarts the registry on the same port with the same storage.
    ///
    /// Keep-alive connections an `awc::Client` pooled to the old process are
    /// dead, and awc may still pick one (`Connect(Disconnected)`): use a new
    /// client for requests to the restarted registry.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!(
                "docker-registry did not come back on {}:\n{log}",
                self.host_port()
            );
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Parses `127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 123 "" "agent"`.
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?;
    let path = parts.next()?;
    if !parts.next()?.starts_with("HTTP/") || !path.starts_with('/') {
        return None;
    }
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(AccessLogEntry {
        method: method.to_owned(),
        path: path.to_owned(),
        status,
    })
}
