//! A private containerd (CRI off, unix sockets only) driven through `ctr`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

use super::{append_file, kill_child, log_tail, wait_until, STARTUP_DEADLINE};

/// containerd namespace used for every `ctr` command.
const NAMESPACE: &str = "test";

/// A containerd daemon whose root, state, sockets, log and `hosts.toml` tree
/// all live in one temporary directory. Needs root.
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Writes the config, starts containerd and waits until `ctr version`
    /// succeeds.
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("ociregistry-ctd-")
            .tempdir()
            .expect("create containerd temp dir");
        let mut containerd = Containerd { dir, child: None };
        containerd.write_config();
        containerd.spawn();
        containerd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The gRPC socket `ctr --address` connects to.
    pub fn socket(&self) -> PathBuf {
        self.path("containerd.sock")
    }

    /// The `--hosts-dir` passed to `ctr images pull`.
    pub fn hosts_dir(&self) -> PathBuf {
        self.path("hosts")
    }

    /// containerd's configuration file (version 2, no `config_path`: `ctr`
    /// is given the hosts directory).
    pub fn config_path(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// containerd's own log file.
    pub fn log_path(&self) -> PathBuf {
        self.path("containerd.log")
    }

    fn write_config(&self) {
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = "{debug}"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
"#,
            root = self.path("root").display(),
            state = self.path("state").display(),
            sock = self.socket().display(),
            debug = self.path("debug.sock").display(),
            opt = self.path("opt").display(),
        );
        fs::write(self.config_path(), config).expect("write containerd config");
    }

    fn spawn(&mut self) {
        let log = append_file(&self.log_path());
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
        let socket = self.socket();
        let up = wait_until(STARTUP_DEADLINE, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return true;
            }
            run_ctr(&socket, &["version"]).status.success()
        });
        if !up || !run_ctr(&socket, &["version"]).status.success() {
            self.shutdown();
            panic!(
                "containerd did not come up:\n{}",
                log_tail(&self.log_path(), 30)
            );
        }
    }

    /// Runs `ctr --address SOCK --namespace test ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut full = vec!["--namespace", NAMESPACE];
        full.extend_from_slice(args);
        run_ctr(&self.socket(), &full)
    }

    /// Writes `<hosts_dir>/_default/hosts.toml` so that every registry is
    /// pulled through `mirror_url` only: the fallback `server` is a closed
    /// port, so a failing mirror fails the pull.
    pub fn write_mirror_hosts(&self, mirror_url: &str) {
        let dir = self.hosts_dir().join("_default");
        fs::create_dir_all(&dir).expect("create hosts dir");
        let hosts = format!(
            r#"server = "http://127.0.0.1:1"

[host."{mirror_url}"]
  capabilities = ["pull", "resolve"]
"#
        );
        fs::write(dir.join("hosts.toml"), hosts).expect("write hosts.toml");
    }

    /// `ctr images pull` of `image_ref` (for the host platform) through the
    /// hosts dir; unpacks with the default snapshotter.
    pub fn pull(&self, image_ref: &str) -> Output {
        self.pull_args(image_ref, &[])
    }

    /// Like [`Containerd::pull`] for `platform`, e.g. `linux/arm64`.
    pub fn pull_platform(&self, image_ref: &str, platform: &str) -> Output {
        self.pull_args(image_ref, &["--platform", platform])
    }

    /// `ctr images pull` of `image_ref` with `extra` flags (`--plain-http`).
    pub fn pull_args(&self, image_ref: &str, extra: &[&str]) -> Output {
        let hosts = self.hosts_dir();
        let hosts = hosts.to_str().expect("UTF-8 temp path");
        let mut args = vec!["images", "pull", "--hosts-dir", hosts];
        args.extend_from_slice(extra);
        args.push(image_ref);
        self.ctr(&args)
    }

    /// The digest `ctr images ls` shows for `image_ref`, if present.
    pub fn image_digest(&self, image_ref: &str) -> Option<String> {
        let out = self.ctr(&["images", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let mut columns = line.split_whitespace();
                if columns.next() != Some(image_ref) {
                    return None;
                }
                columns.nth(1).map(str::to_owned)
            })
    }

    /// Digests of everything in the content store.
    pub fn content_digests(&self) -> Vec<String> {
        let out = self.ctr(&["content", "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Removes every image (synchronous garbage collection) and any content
    /// left over, so the next pull is cold. Interrupted downloads stay in
    /// the ingest area; [`Containerd::reset`] clears those too.
    pub fn remove_all(&self) {
        let out = self.ctr(&["images", "ls", "-q"]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let images: Vec<&str> = listed.split_whitespace().collect();
        if !images.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(images);
            super::assert_success(&self.ctr(&args), "ctr images rm");
        }
        let content = self.content_digests();
        if !content.is_empty() {
            let mut args = vec!["content", "rm"];
            args.extend(content.iter().map(String::as_str));
            super::assert_success(&self.ctr(&args), "ctr content rm");
        }
    }

    /// Stops containerd, wipes its root and state (content, metadata,
    /// snapshots, partial downloads) and starts it again.
    pub fn reset(&mut self) {
        self.shutdown();
        for name in ["root", "state"] {
            let path = self.path(name);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
            }
        }
        self.spawn();
    }

    /// Kills containerd and unmounts whatever it left mounted under its
    /// directory.
    fn shutdown(&mut self) {
        kill_child(&mut self.child);
        unmount_below(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `ctr --address SOCKET ARGS...`.
fn run_ctr(socket: &Path, args: &[&str]) -> Output {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ctr")
}

/// Unmounts every mount point below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_unstable_by(|a, b| b.cmp(a));
    for point in points {
        let unmounted = Command::new("umount")
            .arg(point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}
