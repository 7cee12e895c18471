//! A real CNCF Distribution registry (`docker-registry` 2.8) used as upstream.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::{append_file, free_port, http_get_status, kill_child, log_tail, wait_until};

/// A `docker-registry serve` process on 127.0.0.1 with filesystem storage in a
/// temporary directory. Its access log (combined log format) and its other
/// log lines go to [`Upstream::log_path`].
pub struct Upstream {
    dir: TempDir,
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
        let dir = tempfile::Builder::new()
            .prefix("ociregistry-upstream-")
            .tempdir()
            .expect("create upstream temp dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create upstream storage dir");
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
",
            storage = storage.display()
        );
        fs::write(dir.path().join("config.yml"), config).expect("write upstream config");
        let mut upstream = Upstream {
            dir,
            port,
            child: None,
        };
        upstream.spawn();
        upstream
    }

    fn spawn(&mut self) {
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
        let child = cmd.spawn().expect("spawn docker-registry");
        self.child = Some(child);
        let host_port = self.host_port();
        let ready = wait_until(super::STARTUP_DEADLINE, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return true;
            }
            http_get_status(&host_port, "/v2/") == Some(200)
        });
        let exited = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))));
        if !ready || exited {
            kill_child(&mut self.child);
            panic!(
                "docker-registry did not come up on {host_port}:\n{}",
                log_tail(&self.log_path(), 30)
            );
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host_port())
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
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
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
