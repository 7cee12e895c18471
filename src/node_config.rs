//! `ociregistry node-config`: points a node's container runtime at the
//! mirror by writing its registry configuration: containerd's
//! `certs.d/<registry>/hosts.toml` (`_default`: every registry), a CRI-O and
//! podman `registries.conf.d` drop-in, or k3s/RKE2's `registries.yaml`.
//!
//! Every file it writes starts with [`MARKER`]; it changes or removes only
//! such files. A file without the marker belongs to the node's owner and is
//! left alone (reported) unless `--overwrite`. Files are replaced
//! atomically, so the runtime never reads half of one. Paths are the
//! node's, under `--root` (where the DaemonSet mounts the node's `/`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{NodeConfigArgs, NodeRuntime, WaitArgs};

/// The first line of every file node-config writes.
pub const MARKER: &str =
    "# Written by ociregistry node-config (removed on uninstall): change the chart's nodeConfig, not this file.";

/// containerd's name for "every registry without a directory of its own".
const DEFAULT_HOST: &str = "_default";

/// What applying or removing did, file by file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files written (new or changed).
    pub written: Vec<PathBuf>,
    /// Files already as they should be.
    pub unchanged: Vec<PathBuf>,
    /// Files of the node's owner, not touched.
    pub left_alone: Vec<PathBuf>,
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// What the operator should know (e.g. containerd's `config_path`).
    pub warnings: Vec<String>,
}

/// The node configuration asked for.
#[derive(Debug)]
pub struct NodeConfig<'a> {
    /// The command line.
    args: &'a NodeConfigArgs,
}

impl<'a> NodeConfig<'a> {
    /// Checks the arguments.
    pub fn new(args: &'a NodeConfigArgs) -> Result<Self, String> {
        let (scheme, rest) = args
            .mirror
            .split_once("://")
            .ok_or_else(|| format!("--mirror {:?}: not http(s)://host[:port]", args.mirror))?;
        let host = rest.trim_end_matches('/');
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(format!(
                "--mirror {:?}: not http(s)://host[:port]",
                args.mirror
            ));
        }
        for r in &args.registry {
            let valid = r == DEFAULT_HOST
                || ociregistry_actors::names::RegistryName::parse(r)
                    .is_ok_and(|n| n.to_string() == *r);
            if !valid {
                return Err(format!("--registry {r:?}: not a registry host or _default"));
            }
        }
        Ok(Self { args })
    }

    /// The mirror as `host[:port]`, and whether it is plain HTTP.
    fn mirror_host(&self) -> (&str, bool) {
        let (scheme, rest) = self.args.mirror.split_once("://").unwrap_or(("http", ""));
        (rest.trim_end_matches('/'), scheme == "http")
    }

    /// A node path under `--root`.
    fn on_node(&self, path: &Path) -> PathBuf {
        self.args.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Writes (or repairs) every file of the runtime, and removes owned
    /// files of registries no longer listed.
    pub fn apply(&self) -> std::io::Result<Report> {
        let mut report = Report::default();
        let wanted = self.files(&mut report);
        for owned in self.owned_files()? {
            if !wanted.iter().any(|(p, _)| *p == owned) {
                remove_owned(&owned, &mut report)?;
            }
        }
        for (path, text) in wanted {
            write_owned(&path, &text, self.args.overwrite, &mut report)?;
        }
        if self.args.runtime == NodeRuntime::Containerd {
            report.warnings.extend(self.check_containerd());
        }
        Ok(report)
    }

    /// Removes every file this command owns.
    pub fn remove(&self) -> std::io::Result<Report> {
        let mut report = Report::default();
        for owned in self.owned_files()? {
            remove_owned(&owned, &mut report)?;
        }
        Ok(report)
    }

    /// The files of the runtime, with their text.
    fn files(&self, report: &mut Report) -> Vec<(PathBuf, String)> {
        match self.args.runtime {
            NodeRuntime::Containerd => self
                .args
                .registry
                .iter()
                .map(|r| {
                    let dir = self.on_node(&self.args.certs_dir).join(r);
                    (dir.join("hosts.toml"), self.hosts_toml(r))
                })
                .collect(),
            NodeRuntime::Crio => {
                let named: Vec<&String> = self
                    .args
                    .registry
                    .iter()
                    .filter(|r| *r != DEFAULT_HOST)
                    .collect();
                if named.len() < self.args.registry.len() {
                    report.warnings.push(
                        "CRI-O and podman have no catch-all registry: list each registry with --registry"
                            .into(),
                    );
                }
                let path = self
                    .on_node(&self.args.crio_dir)
                    .join("50-ociregistry.conf");
                vec![(path, self.registries_conf(&named))]
            }
            NodeRuntime::K3s => {
                let path = self.on_node(&self.args.k3s_file);
                vec![(path, self.registries_yaml())]
            }
        }
    }

    /// Every file under the runtime's paths that carries the marker.
    fn owned_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let candidates = match self.args.runtime {
            NodeRuntime::Containerd => {
                let dir = self.on_node(&self.args.certs_dir);
                match std::fs::read_dir(&dir) {
                    Ok(entries) => entries
                        .flatten()
                        .map(|e| e.path().join("hosts.toml"))
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
            NodeRuntime::Crio => vec![self
                .on_node(&self.args.crio_dir)
                .join("50-ociregistry.conf")],
            NodeRuntime::K3s => vec![self.on_node(&self.args.k3s_file)],
        };
        Ok(candidates.into_iter().filter(|p| owned(p)).collect())
    }

    /// containerd's `hosts.toml` for `registry`: the mirror first (pull
    /// and resolve only); with fallback, the registry itself after it
    /// (containerd's default server), the mirror skipped after
    /// `--dial-timeout`; without, the mirror is the server too.
    fn hosts_toml(&self, registry: &str) -> String {
        let mirror = &self.args.mirror;
        let server = match (self.args.fallback, registry) {
            (false, _) => format!("server = \"{mirror}\"\n"),
            (true, DEFAULT_HOST) => String::new(),
            (true, "docker.io") => "server = \"https://registry-1.docker.io\"\n".into(),
            (true, r) => format!("server = \"https://{r}\"\n"),
        };
        let dial = match self.args.fallback {
            true => format!(
                "  dial_timeout = \"{}ms\"\n",
                self.args.dial_timeout.as_millis()
            ),
            false => String::new(),
        };
        format!(
            "{MARKER}\n{server}\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{dial}"
        )
    }

    /// The CRI-O/podman drop-in: each registry's mirror is this server in
    /// the in-path form (`host:port/<registry>`); without fallback the
    /// mirror replaces the registry.
    fn registries_conf(&self, registries: &[&String]) -> String {
        let (host, insecure) = self.mirror_host();
        let mut text = format!("{MARKER}\n");
        for r in registries {
            let location = format!("{host}/{r}");
            text.push_str(&format!("\n[[registry]]\nprefix = \"{r}\"\n"));
            if self.args.fallback {
                text.push_str(&format!(
                    "location = \"{r}\"\n\n[[registry.mirror]]\nlocation = \"{location}\"\ninsecure = {insecure}\n"
                ));
            } else {
                text.push_str(&format!(
                    "location = \"{location}\"\ninsecure = {insecure}\n"
                ));
            }
        }
        text
    }

    /// k3s/RKE2's `registries.yaml` (`"*"` for `_default`). Whether k3s
    /// falls back to the registry is its own flag
    /// (`--disable-default-registry-endpoint`), not this file's.
    fn registries_yaml(&self) -> String {
        let mut text = format!("{MARKER}\nmirrors:\n");
        for r in &self.args.registry {
            let name = if r == DEFAULT_HOST { "*" } else { r.as_str() };
            text.push_str(&format!(
                "  \"{name}\":\n    endpoint:\n      - \"{}\"\n",
                self.args.mirror
            ));
        }
        text
    }

    /// What is wrong with containerd's configuration for these files, if
    /// anything: `config_path` unset (containerd 1.x, a version 2 config),
    /// empty, or not naming the certs directory.
    fn check_containerd(&self) -> Vec<String> {
        let file = &self.args.containerd_config;
        let certs = self.args.certs_dir.display().to_string();
        let Ok(text) = std::fs::read_to_string(self.on_node(file)) else {
            return vec![format!(
                "{} not found: containerd 2.x reads {certs} by default; containerd 1.x needs \
                 config_path = \"{certs}\" under [plugins.\"io.containerd.grpc.v1.cri\".registry]",
                file.display()
            )];
        };
        let values: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("config_path"))
            .filter_map(|l| l.trim_start().strip_prefix('='))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect();
        let version3 = text
            .lines()
            .any(|l| l.trim().replace(' ', "") == "version=3");
        let section = match version3 {
            true => "[plugins.'io.containerd.cri.v1.images'.registry]",
            false => "[plugins.\"io.containerd.grpc.v1.cri\".registry]",
        };
        let fix = format!(
            "set config_path = \"{certs}\" under {section} in {} and restart containerd",
            file.display()
        );
        match values.as_slice() {
            [] if version3 => Vec::new(),
            [] => vec![format!("containerd's config_path is not set: {fix}")],
            [v] if v.is_empty() => vec![format!("containerd's config_path is empty: {fix}")],
            vs if vs.iter().any(|v| {
                v.split(':')
                    .any(|p| p.trim_end_matches('/') == certs.trim_end_matches('/'))
            }) =>
            {
                Vec::new()
            }
            vs => vec![format!(
                "containerd's config_path is {:?}, which does not name {certs}: {fix}",
                vs.join(", ")
            )],
        }
    }
}

/// Whether `path` is a file this command wrote.
fn owned(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = vec![0; MARKER.len()];
    file.read_exact(&mut head).is_ok() && head == MARKER.as_bytes()
}

/// Writes `text` to `path` unless it is there already or the file is the
/// node owner's (then only with `overwrite`).
fn write_owned(
    path: &Path,
    text: &str,
    overwrite: bool,
    report: &mut Report,
) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        // Whatever is there and is not ours (a symbolic link never is,
        // unreadable text neither) stays, unless asked.
        Ok(meta) if !overwrite && (meta.file_type().is_symlink() || !owned(path)) => {
            report.left_alone.push(path.to_path_buf());
            return Ok(());
        }
        Ok(_) if std::fs::read(path).is_ok_and(|now| now == text.as_bytes()) => {
            report.unchanged.push(path.to_path_buf());
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".ociregistry-node-config.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    report.written.push(path.to_path_buf());
    Ok(())
}

/// Removes an owned file, and its directory when that leaves it empty
/// (containerd's `certs.d/<registry>`).
fn remove_owned(path: &Path, report: &mut Report) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    report.removed.push(path.to_path_buf());
    if let Some(dir) = path.parent().filter(|d| d.file_name().is_some()) {
        if path.file_name() == Some("hosts.toml".as_ref()) {
            let _ = std::fs::remove_dir(dir); // fails when not empty: kept
        }
    }
    Ok(())
}

/// Answers `GET /ready` with 200 on `port`, from a thread, for as long as
/// the process lives (a DaemonSet pod's readiness once its work is done).
pub fn serve_ready(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok(())
}

/// Rounds (a second apart) in which every address must answer ready, so
/// that pods still getting an address are waited for too.
const READY_ROUNDS: usize = 5;

/// Waits until every address `endpoint` (`host:port`, a headless Service
/// that publishes pods before they are ready) resolves to answers
/// `GET /ready` with 200, five times in a row (a second apart), or `timeout`
/// passes.
pub fn wait(args: &WaitArgs) -> Result<usize, String> {
    let end = Instant::now() + args.timeout;
    let mut ready_rounds = 0;
    loop {
        let addrs: Vec<_> = args
            .endpoint
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        let all_ready = !addrs.is_empty() && addrs.iter().all(answers_ready);
        ready_rounds = if all_ready { ready_rounds + 1 } else { 0 };
        if ready_rounds == READY_ROUNDS {
            return Ok(addrs.len());
        }
        if Instant::now() >= end {
            return Err(format!(
                "{}: {} of its addresses ready after {:?}",
                args.endpoint,
                addrs.iter().filter(|a| answers_ready(a)).count(),
                args.timeout
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether `addr` answers `GET /ready` with 200.
fn answers_ready(addr: &std::net::SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /ready HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut head = [0; 12];
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && &head[9..12] == b"200"
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, NodeConfigAction, WaitArgs};

    /// `node-config apply` flags with `--root dir` and `extra`.
    fn args(root: &Path, extra: &[&str]) -> NodeConfigArgs {
        let mut line = vec!["ociregistry", "node-config", "apply", "--root"];
        line.push(root.to_str().unwrap());
        line.extend_from_slice(extra);
        match Cli::parse_from(line).command {
            Command::NodeConfig(NodeConfigAction::Apply(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn read(root: &Path, path: &str) -> String {
        std::fs::read_to_string(root.join(path)).unwrap()
    }

    #[test]
    fn containerd_files_are_written_once_repaired_and_only_owned_ones_removed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let certs = root.join("etc/containerd/certs.d");
        std::fs::create_dir_all(certs.join("quay.io")).unwrap();
        let users = "server = \"https://quay.io\"\n";
        std::fs::write(certs.join("quay.io/hosts.toml"), users).unwrap();

        let a = args(
            root,
            &["--registry", "_default,docker.io,quay.io", "--fallback"],
        );
        let report = NodeConfig::new(&a).unwrap().apply().unwrap();
        assert_eq!(report.written.len(), 2);
        assert_eq!(report.left_alone, [certs.join("quay.io/hosts.toml")]);
        let default = read(root, "etc/containerd/certs.d/_default/hosts.toml");
        assert!(default.starts_with(MARKER));
        assert!(
            !default.contains("server ="),
            "containerd's own default: the registry"
        );
        assert!(default.contains("[host.\"http://localhost:31080\"]"));
        assert!(default.contains("capabilities = [\"pull\", \"resolve\"]"));
        assert!(default.contains("dial_timeout = \"500ms\""));
        let hub = read(root, "etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(hub.contains("server = \"https://registry-1.docker.io\""));
        assert_eq!(
            read(root, "etc/containerd/certs.d/quay.io/hosts.toml"),
            users
        );

        // Again: nothing to do. A damaged file is repaired.
        let again = NodeConfig::new(&a).unwrap().apply().unwrap();
        assert_eq!((again.written.len(), again.unchanged.len()), (0, 2));
        std::fs::write(
            certs.join("_default/hosts.toml"),
            format!("{MARKER}\nbroken"),
        )
        .unwrap();
        let repaired = NodeConfig::new(&a).unwrap().apply().unwrap();
        assert_eq!(repaired.written, [certs.join("_default/hosts.toml")]);

        // Without fallback the mirror is the server too; a registry no
        // longer listed loses its file; --overwrite takes the user's.
        let b = args(root, &["--registry", "_default,quay.io", "--overwrite"]);
        let report = NodeConfig::new(&b).unwrap().apply().unwrap();
        assert_eq!(report.removed, [certs.join("docker.io/hosts.toml")]);
        assert!(!certs.join("docker.io").exists());
        let default = read(root, "etc/containerd/certs.d/_default/hosts.toml");
        assert!(default.contains("server = \"http://localhost:31080\""));
        assert!(!default.contains("dial_timeout"));
        assert!(read(root, "etc/containerd/certs.d/quay.io/hosts.toml").starts_with(MARKER));

        // A user's symbolic link or non-UTF-8 file is left alone too.
        std::fs::create_dir_all(certs.join("ghcr.io")).unwrap();
        let link = certs.join("ghcr.io/hosts.toml");
        std::os::unix::fs::symlink("/elsewhere/hosts.toml", &link).unwrap();
        std::fs::create_dir_all(certs.join("gcr.io")).unwrap();
        std::fs::write(certs.join("gcr.io/hosts.toml"), b"# caf\xe9\n").unwrap();
        let c = args(root, &["--registry", "_default,quay.io,ghcr.io,gcr.io"]);
        let report = NodeConfig::new(&c).unwrap().apply().unwrap();
        assert_eq!(
            report.left_alone,
            [link.clone(), certs.join("gcr.io/hosts.toml")]
        );
        assert!(link.is_symlink());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(certs.join("gcr.io")).unwrap();

        // Removal takes only owned files.
        std::fs::create_dir_all(certs.join("ghcr.io")).unwrap();
        std::fs::write(certs.join("ghcr.io/hosts.toml"), users).unwrap();
        let removed = NodeConfig::new(&b).unwrap().remove().unwrap();
        assert_eq!(removed.removed.len(), 2);
        assert!(certs.join("ghcr.io/hosts.toml").exists());
        assert!(!certs.join("_default").exists());
    }

    #[test]
    fn containerds_config_path_is_checked() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let a = args(root, &[]);
        let warnings = |config: Option<&str>| {
            let file = root.join("etc/containerd/config.toml");
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            match config {
                Some(text) => std::fs::write(&file, text).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
            NodeConfig::new(&a).unwrap().apply().unwrap().warnings
        };
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n";
        assert!(warnings(Some(v2))[0].contains("config_path is not set"));
        let empty = format!("{v2}  config_path = \"\"\n");
        assert!(warnings(Some(&empty))[0].contains("config_path is empty"));
        let elsewhere = format!("{v2}  config_path = \"/etc/docker/certs.d\"\n");
        assert!(warnings(Some(&elsewhere))[0].contains("does not name"));
        let set = format!("{v2}  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n");
        assert_eq!(warnings(Some(&set)), Vec::<String>::new());
        let commented = format!("{v2}  # config_path = \"/etc/containerd/certs.d\"\n");
        assert!(warnings(Some(&commented))[0].contains("not set"));
        assert_eq!(warnings(Some("version = 3\n")), Vec::<String>::new());
        assert!(warnings(None)[0].contains("not found"));
    }

    #[test]
    fn crio_and_k3s_files() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let crio = args(
            root,
            &[
                "--runtime",
                "crio",
                "--registry",
                "_default,docker.io",
                "--fallback",
            ],
        );
        let report = NodeConfig::new(&crio).unwrap().apply().unwrap();
        assert!(report.warnings[0].contains("no catch-all"));
        let conf = read(root, "etc/containers/registries.conf.d/50-ociregistry.conf");
        assert!(conf.contains("prefix = \"docker.io\"\nlocation = \"docker.io\""));
        assert!(conf.contains(
            "[[registry.mirror]]\nlocation = \"localhost:31080/docker.io\"\ninsecure = true"
        ));
        let strict = args(
            root,
            &[
                "--runtime",
                "crio",
                "--registry",
                "quay.io",
                "--mirror",
                "https://m.example",
            ],
        );
        NodeConfig::new(&strict).unwrap().apply().unwrap();
        let conf = read(root, "etc/containers/registries.conf.d/50-ociregistry.conf");
        assert!(conf
            .contains("prefix = \"quay.io\"\nlocation = \"m.example/quay.io\"\ninsecure = false"));
        assert!(!conf.contains("docker.io"));

        let k3s = args(
            root,
            &["--runtime", "k3s", "--registry", "_default,quay.io"],
        );
        NodeConfig::new(&k3s).unwrap().apply().unwrap();
        let yaml = read(root, "etc/rancher/k3s/registries.yaml");
        assert!(yaml.contains("\"*\":\n    endpoint:\n      - \"http://localhost:31080\""));
        assert!(yaml.contains("\"quay.io\":"));
        let removed = NodeConfig::new(&k3s).unwrap().remove().unwrap();
        assert_eq!(
            removed.removed,
            [root.join("etc/rancher/k3s/registries.yaml")]
        );
    }

    #[test]
    fn wait_returns_once_every_address_answers_ready() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let wait_for = |timeout| WaitArgs {
            endpoint: format!("127.0.0.1:{port}"),
            timeout,
        };
        // Nothing listens yet.
        assert!(wait(&wait_for(Duration::ZERO)).is_err());
        serve_ready(port).unwrap();
        assert_eq!(wait(&wait_for(Duration::from_secs(30))), Ok(1));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for extra in [
            &["--mirror", "localhost:31080"][..],
            &["--mirror", "ftp://x"],
            &["--mirror", "http://x/path"],
            &["--registry", "../etc"],
            &["--registry", "Docker.IO"],
        ] {
            assert!(
                NodeConfig::new(&args(root.path(), extra)).is_err(),
                "{extra:?}"
            );
        }
    }
}
