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
