//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use config::builder::DefaultState;
use config::ConfigBuilder;

use crate::prune::PruneKind;
use crate::units::Span;

/// Pull-only, pull-through caching OCI Distribution server.
#[derive(Debug, Clone, Parser)]
#[command(name = "ociregistry", version, about)]
pub struct Cli {
    /// YAML configuration file (see config/example.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Cache root [default: /var/lib/ociregistry].
    #[arg(long, global = true, value_name = "DIR")]
    pub image_path: Option<PathBuf>,
    /// error, warning, info, debug or trace [default: info].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the registry API.
    Serve(ServeArgs),
    /// List the cached images (safe while a server runs).
    List(ListArgs),
    /// Remove cached images; through the admin API when a server runs.
    Prune(PruneArgs),
    /// Pull images into the cache (no server may be using it).
    Load(LoadArgs),
    /// Point this node's container runtime at the mirror (the chart's
    /// nodeConfig DaemonSet runs it).
    #[command(subcommand)]
    NodeConfig(NodeConfigAction),
}

/// What `node-config` does.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeConfigAction {
    /// Write the runtime's registry files (again every `--every`, when
    /// given, until SIGTERM) and remove owned files of registries no
    /// longer listed.
    Apply(NodeConfigArgs),
    /// Remove every file `apply` wrote.
    Remove(NodeConfigArgs),
    /// Wait until every address of a headless Service answers `GET /ready`
    /// (the chart's uninstall hook: every node's files removed).
    Wait(WaitArgs),
}

/// The container runtime whose files `node-config` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRuntime {
    /// containerd: `certs.d/<registry>/hosts.toml`.
    Containerd,
    /// CRI-O and podman: a `registries.conf.d` drop-in.
    Crio,
    /// k3s and RKE2: `registries.yaml`.
    K3s,
}

/// Flags of `node-config apply` and `remove`.
#[derive(Debug, Clone, Args)]
pub struct NodeConfigArgs {
    /// The mirror as the node reaches it: `http(s)://host[:port]`.
    #[arg(long, default_value = "http://localhost:31080")]
    pub mirror: String,
    /// Registries sent to the mirror; `_default` (containerd, k3s): every
    /// registry without a file of its own.
    #[arg(long, value_delimiter = ',', default_value = "_default")]
    pub registry: Vec<String>,
    /// Let the runtime pull from the registry itself when the mirror does
    /// not answer (never for air-gapped clusters).
    #[arg(long)]
    pub fallback: bool,
    /// With `--fallback`: how long containerd waits to connect to the
    /// mirror before trying the registry.
    #[arg(long, value_parser = duration, default_value = "500ms")]
    pub dial_timeout: std::time::Duration,
    /// Which runtime's files to write.
    #[arg(long, value_enum, default_value_t = NodeRuntime::Containerd)]
    pub runtime: NodeRuntime,
    /// Where the node's `/` is mounted (the paths below are the node's).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// containerd's `config_path` directory.
    #[arg(long, default_value = "/etc/containerd/certs.d")]
    pub certs_dir: PathBuf,
    /// containerd's configuration file, checked for `config_path`.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    pub containerd_config: PathBuf,
    /// CRI-O's and podman's drop-in directory.
    #[arg(long, default_value = "/etc/containers/registries.conf.d")]
    pub crio_dir: PathBuf,
    /// k3s' or RKE2's registries file.
    #[arg(long, default_value = "/etc/rancher/k3s/registries.yaml")]
    pub k3s_file: PathBuf,
    /// Replace files the node's owner wrote (without the marker line).
    #[arg(long)]
    pub overwrite: bool,
    /// Keep running, doing it again at this interval, until SIGTERM.
    #[arg(long, value_parser = duration)]
    pub every: Option<std::time::Duration>,
    /// Once done, answer `GET /ready` with 200 on this port.
    #[arg(long)]
    pub ready_port: Option<u16>,
}

/// Flags of `node-config wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// `host:port` of the headless Service of the pods to wait for.
    #[arg(long)]
    pub endpoint: String,
    /// Give up after this long.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub timeout: std::time::Duration,
}

/// A duration flag (`500ms`, `30s`, `5m`); `never` is not one.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(text)?.ok_or_else(|| "a duration is needed, not never".into())
}

/// Flags of `load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// A list of image references, one per line (`#` comments allowed), or
    /// a tarball (OCI image layout or `docker save`), told apart by content.
    #[arg(long, value_name = "FILE")]
    pub image_file: PathBuf,
    /// Platforms to keep from multi-platform images, e.g.
    /// linux/amd64,linux/arm64 [default: all].
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Also load what refers to each image (signatures, SBOMs,
    /// attestations: the upstream's referrers API), with their referrers
    /// lists, so that they can be looked up air-gapped.
    #[arg(long)]
    pub referrers: bool,
    /// Images loaded at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The name of a single-image tarball that carries none.
    #[arg(long, value_name = "REF")]
    pub resolve_ref: Option<String>,
}

/// Flags of `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only images whose `registry/repo:tag` matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
    /// Show full digests.
    #[arg(long)]
    pub digests: bool,
    /// Show the tag history: every digest each tag pointed to, and when.
    #[arg(long)]
    pub history: bool,
}

/// Flags of `prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// accessed (not pulled for --duration), created (cached more than
    /// --duration ago) or pattern (name matches --expr).
    #[arg(long = "type", value_name = "TYPE", value_enum)]
    pub kind: PruneKind,
    /// For accessed and created, e.g. 7d, 12h.
    #[arg(long)]
    pub duration: Option<Span>,
    /// For pattern: a regular expression on registry/repo:tag.
    #[arg(long, value_name = "REGEX")]
    pub expr: Option<String>,
    /// At most this many images.
    #[arg(long)]
    pub count: Option<usize>,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on; 0 picks a free one [default: 8080].
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long)]
    pub host: Option<String>,
    /// Registry for requests that name none (e.g. docker.io).
    #[arg(long, value_name = "REGISTRY")]
    pub default_ns: Option<String>,
    /// Never contact an upstream; serve only the cache.
    #[arg(long)]
    pub air_gapped: bool,
    /// Re-resolve the tag "latest" upstream on every request.
    #[arg(long)]
    pub always_pull_latest: bool,
    /// Milliseconds to wait for an upstream to start answering [default: 60000].
    #[arg(long, value_name = "MS")]
    pub pull_timeout: Option<u64>,
    /// Serve an embedded docker.io/library/hello-world:latest, air-gapped.
    #[arg(long)]
    pub hello_world: bool,
    /// Load the images of FILE in the background (a list or a tarball, see `load`).
    #[arg(long, value_name = "FILE")]
    pub preload_images: Option<PathBuf>,
    /// Serve Prometheus metrics on this port (`/metrics`).
    #[arg(long, value_name = "PORT")]
    pub metrics: Option<u16>,
    /// Answer `/health` and `/ready` on this port too.
    #[arg(long, value_name = "PORT")]
    pub health: Option<u16>,
}

impl Cli {
    /// Applies the flags that were given as the highest-precedence source.
    pub fn overrides(
        &self,
        mut b: ConfigBuilder<DefaultState>,
    ) -> Result<ConfigBuilder<DefaultState>, config::ConfigError> {
        if let Some(p) = &self.image_path {
            b = b.set_override("imagePath", p.to_string_lossy().into_owned())?;
        }
        if let Some(l) = &self.log_level {
            b = b.set_override("logLevel", l.as_str())?;
        }
        if let Some(f) = &self.log_format {
            b = b.set_override("logFormat", f.as_str())?;
        }
        let Command::Serve(s) = &self.command else {
            return Ok(b);
        };
        if let Some(p) = s.port {
            b = b.set_override("port", p)?;
        }
        if let Some(h) = &s.host {
            b = b.set_override("host", h.as_str())?;
        }
        if let Some(ns) = &s.default_ns {
            b = b.set_override("defaultNs", ns.as_str())?;
        }
        if s.air_gapped || s.hello_world {
            b = b.set_override("airGapped", true)?;
        }
        if s.always_pull_latest {
            b = b.set_override("alwaysPullLatest", true)?;
        }
        if let Some(t) = s.pull_timeout {
            b = b.set_override("pullTimeout", t)?;
        }
        if let Some(p) = s.metrics {
            b = b.set_override("metrics", p)?;
        }
        if let Some(p) = s.health {
            b = b.set_override("health", p)?;
        }
        Ok(b)
    }
}
