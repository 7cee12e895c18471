//! The server under test, run as a child process.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{append_file, kill_child, log_tail, wait_until, STARTUP_DEADLINE};

/// Prefix of the single stdout line the server prints once it accepts
/// connections.
const LISTENING_PREFIX: &str = "ociregistry listening on ";

/// How long a graceful shutdown may take once the server's transfers ended.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// How long a server that failed to start gets to exit on its own before it
/// is killed, so that its exit status can be reported.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// A running `ociregistry serve` on 127.0.0.1 with a kernel-chosen port. Its
/// stderr goes to [`Server::log_path`]; the config and (by default) the image
/// cache live in a temporary directory.
pub struct Server {
    dir: TempDir,
    cache_dir: PathBuf,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    url: String,
    /// The port it listens on (0: any free one, new at each start).
    port: u16,
}

impl Server {
    /// Writes `config_yaml` to `<tempdir>/config.yaml` and starts the server
    /// with its cache in `<tempdir>/cache`, appending `extra_args` to
    /// `serve --port 0 --host 127.0.0.1`. Returns once it listens.
    pub fn start(config_yaml: &str, extra_args: &[&str]) -> Server {
        Self::start_inner(config_yaml, None, extra_args, &[], 0)
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_env(config_yaml: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_inner(config_yaml, None, extra_args, envs, 0)
    }

    /// Like [`Server::start`], with the image cache in `cache_dir`.
    pub fn start_with_cache(config_yaml: &str, cache_dir: &Path, extra_args: &[&str]) -> Server {
        Self::start_inner(config_yaml, Some(cache_dir), extra_args, &[], 0)
    }

    fn start_inner(
        config_yaml: &str,
        cache_dir: Option<&Path>,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        port: u16,
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ociregistry-server-")
            .tempdir()
            .expect("create server temp dir");
        fs::write(dir.path().join("config.yaml"), config_yaml).expect("write server config");
        let cache_dir = cache_dir.map_or_else(|| dir.path().join("cache"), Path::to_path_buf);
        let mut server = Server {
            dir,
            cache_dir,
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
            envs: envs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            child: None,
            url: String::new(),
            port,
        };
        server.spawn();
        server
    }

    /// Like [`Server::start`], listening on `port` at every start (behind a
    /// load balancer that names it).
    pub fn start_on_port(config_yaml: &str, port: u16) -> Server {
        Self::start_inner(config_yaml, None, &[], &[], port)
    }

    fn spawn(&mut self) {
        let mut child = server_command()
            .arg("--config-file")
            .arg(self.config_path())
            .arg("--image-path")
            .arg(&self.cache_dir)
            .args([
                "serve",
                "--port",
                &self.port.to_string(),
                "--host",
                "127.0.0.1",
            ])
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append_file(&self.log_path()))
            .spawn()
            .expect("spawn ociregistry");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        match wait_for_listening(stdout) {
            Some(url) => self.url = url,
            None => {
                // stdout may close a moment before the process is reaped.
                let mut exited = None;
                wait_until(EXIT_GRACE, || {
                    exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    exited.is_some()
                });
                kill_child(&mut self.child);
                let state = exited.map_or_else(
                    || format!("did not report listening within {STARTUP_DEADLINE:?}"),
                    |status| format!("exited ({status}) before listening"),
                );
                panic!(
                    "ociregistry {state}; stderr:\n{}",
                    log_tail(&self.log_path(), 40)
                );
            }
        }
    }

    /// Runs another `ociregistry` subcommand (`list`, `prune`, ...) with this
    /// server's config file and cache.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .arg("--config-file")
            .arg(self.config_path())
            .arg("--image-path")
            .arg(&self.cache_dir)
            .args(args)
            .output()
            .expect("run ociregistry")
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        let url = &self.url;
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        rest.to_owned()
    }

    /// The image cache directory (`--image-path`).
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone()
    }

    /// The config file passed as `--config-file`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The file receiving the server's stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server wrote to stderr so far.
    pub fn log_contents(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILLs the server and waits for it to exit.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Shuts the server down gracefully (SIGTERM: fetches in flight are
    /// stored first) and asserts that it exits successfully.
    pub fn shut_down(&mut self) {
        self.terminate();
        self.wait_clean_exit("after SIGTERM");
    }

    /// Asserts that the server exits with status 0 within
    /// [`SHUTDOWN_DEADLINE`]; `when` completes the failure message.
    pub fn wait_clean_exit(&mut self, when: &str) {
        let status = self
            .wait_exit(SHUTDOWN_DEADLINE)
            .unwrap_or_else(|| panic!("no exit within {SHUTDOWN_DEADLINE:?} {when}"));
        assert!(status.success(), "exit status {status} {when}");
    }

    /// Waits up to `deadline` for the server to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(deadline, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Kills the server (if it still runs), then starts it again with the
    /// same config, arguments and cache directory, on a new port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Reads the server's stdout on a thread until the listening line appears
/// (returning its URL) or the deadline passes or stdout closes (`None`). The
/// thread keeps draining stdout afterwards.
fn wait_for_listening(stdout: ChildStdout) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Once the URL has been received nobody listens; keep draining.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = rx.recv_timeout(left).ok()?;
        if let Some(url) = line.trim().strip_prefix(LISTENING_PREFIX) {
            return Some(url.trim().to_owned());
        }
    }
}

/// Runs `ociregistry --config-file <dir>/config.yaml --image-path
/// <dir>/cache ARGS...` (a subcommand: `load`, `list`, `prune`), the
/// config written first from `config`.
pub fn cli_in(dir: &Path, config: &str, args: &[&str]) -> std::process::Output {
    fs::write(dir.join("config.yaml"), config).expect("write the config");
    server_command()
        .arg("--config-file")
        .arg(dir.join("config.yaml"))
        .arg("--image-path")
        .arg(dir.join("cache"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ociregistry")
}

/// The server binary as a command, without the egress-proxy variables of
/// the test's environment (a test sets the ones it means).
pub fn server_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ociregistry"));
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs `serve` on `image_path` with `var=value` set, to its exit (for
/// settings that stop start-up).
pub fn serve_with_env(
    image_path: &std::path::Path,
    var: &str,
    value: &str,
) -> std::process::Output {
    server_command()
        .arg("--image-path")
        .arg(image_path)
        .args(["serve", "--port", "0", "--host", "127.0.0.1"])
        .env(var, value)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
