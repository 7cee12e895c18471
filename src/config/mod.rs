//! Configuration: built-in defaults < config file < `OCIREGISTRY_*`
//! environment variables < command-line flags.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use config::{File, FileFormat};
use ociregistry_actors::coordinator::FetchLimits;
use ociregistry_actors::names::RegistryName;
use ociregistry_actors::storage::Retention;
use ociregistry_actors::upstream::guard::{HostRules, Network, DEFAULT_DENY_NETWORKS};
use ociregistry_actors::upstream::{ProxyRules, Timeouts, UpstreamSettings};
use regex::Regex;
use serde::Deserialize;

use crate::cli::Cli;
use crate::freshness::{TagPolicies, TagPolicy};
use crate::prune::PruneSpec;
use crate::units::{Size, Span};

mod ports;
mod registries;
mod storage;

pub use ports::{ClientAuth, ClientLimits, ServerTlsEntry};

pub use registries::{AuthEntry, BaseUrl, ProxyUrl, RegistryEntry, Scheme, TlsEntry};
pub use storage::{LocalCacheEntry, StorageEntry, StorageKind};

/// The built-in defaults (`config/defaults.yaml`).
const DEFAULTS: &str = include_str!("../../config/defaults.yaml");
/// Upstream TCP connect and TLS handshake limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a value could not be read or has the wrong type.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A value has the wrong type or form; `path` names it
    /// (`registries[0].tls.insecureSkipVerify`).
    #[error("{path}: {reason}")]
    Value {
        /// Where in the configuration.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A registry entry is unusable.
    #[error("registries[{name}]: {reason}")]
    Registry {
        /// The entry's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A cache-management key is invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An image-name pattern of `pins` (a regular expression, compiled when
/// the configuration is read).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Pin(pub Regex);

impl TryFrom<String> for Pin {
    type Error = regex::Error;

    fn try_from(text: String) -> Result<Self, regex::Error> {
        Regex::new(&text).map(Self)
    }
}

/// The server's settings after all sources are merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Cache root.
    pub image_path: PathBuf,
    /// Log level name.
    pub log_level: String,
    /// Listening port (0: any free port).
    pub port: u16,
    /// Listening address.
    pub host: String,
    /// Milliseconds a request waits for upstream response headers.
    pub pull_timeout: u64,
    /// Registry for requests that name none.
    #[serde(default)]
    pub default_ns: Option<RegistryName>,
    /// Never contact an upstream.
    pub air_gapped: bool,
    /// Re-resolve `:latest` upstream on every request.
    pub always_pull_latest: bool,
    /// Upstream registries with their own settings.
    pub registries: Vec<RegistryEntry>,
    /// Another ociregistry (`http(s)://host:port`) to fetch every registry
    /// through, naming the registry in `?ns=` (node-local caches in front
    /// of a cluster cache).
    #[serde(default)]
    pub upstream_mirror: Option<BaseUrl>,
    /// How long a fetched tag is answered without asking the upstream
    /// (`10m`, `0`: every time, `never`).
    pub tag_ttl: Span,
    /// Answer expired tags at once and revalidate them in the background.
    pub stale_while_revalidate: bool,
    /// Evict least recently pulled images above this size (`50Gi`).
    #[serde(default)]
    pub max_cache_size: Option<Size>,
    /// Most bytes `load` and `--preload-images` take from one tarball (`64Gi`).
    pub max_import_size: Size,
    /// Image-name patterns never pruned or evicted.
    #[serde(default)]
    pub pins: Vec<Pin>,
    /// A prune run on a schedule.
    #[serde(default)]
    pub prune_config: Option<PruneConfig>,
    /// Port of the admin API (off when unset).
    #[serde(default)]
    pub admin_port: Option<u16>,
    /// Address of the admin API.
    pub admin_host: String,
    /// Bearer token the admin API requires.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// File holding that token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Port of the Prometheus metrics endpoint (off when unset).
    #[serde(default)]
    pub metrics: Option<u16>,
    /// Port answering only `/health` and `/ready` (off when unset; the
    /// registry port answers them too).
    #[serde(default)]
    pub health: Option<u16>,
    /// HTTPS toward clients (plain HTTP when unset).
    #[serde(default)]
    pub server_tls_config: Option<ServerTlsEntry>,
    /// Which registries clients may make the server dial.
    #[serde(default)]
    pub upstreams: UpstreamRules,
    /// On SIGTERM/SIGINT, how long in-flight transfers may finish.
    pub drain_timeout: Span,
    /// On SIGTERM/SIGINT, how long the server keeps accepting, `/ready`
    /// already 503, before it drains (endpoint removal has to propagate).
    pub shutdown_delay: Span,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: Span,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive: Span,
    /// Longest pause between two chunks of an upstream body before the
    /// transfer counts as stalled.
    pub idle_timeout: Span,
    /// Largest blob fetched from an upstream (`64Gi`).
    pub max_blob_size: Size,
    /// Most upstream fetches in flight at once.
    pub max_fetches: usize,
    /// Most upstream fetches in flight at once from one registry.
    pub max_fetches_per_registry: usize,
    /// Serve `/v2/_catalog` (the repositories in the cache).
    pub catalog: bool,
    /// Where the cache is kept for good (default: `imagePath`).
    #[serde(default)]
    pub storage: StorageEntry,
    /// Bound on the local copies of a bucket's blobs.
    #[serde(default)]
    pub local_cache: LocalCacheEntry,
}

/// `logFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Terminal lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `upstreams`: the upstream guard for registries the configuration does
/// not list.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamRules {
    /// A registry clients name must match one of these.
    #[serde(default = "allow_all")]
    pub allow: Vec<String>,
    /// ... and none of these, nor may any host dialled for it.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Networks (CIDR) no connection for such a registry may reach.
    #[serde(
        default = "default_deny_networks",
        rename = "denyNetworks",
        alias = "deny_networks"
    )]
    pub deny_networks: Vec<String>,
}

impl Default for UpstreamRules {
    fn default() -> Self {
        Self {
            allow: allow_all(),
            deny: Vec::new(),
            deny_networks: default_deny_networks(),
        }
    }
}

/// `upstreams.allow` when absent.
fn allow_all() -> Vec<String> {
    vec!["*".into()]
}

/// `upstreams.denyNetworks` when absent.
fn default_deny_networks() -> Vec<String> {
    DEFAULT_DENY_NETWORKS
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// `pruneConfig`: a prune run every `frequency`.
#[derive(Debug, Clone, Deserialize)]
pub struct PruneConfig {
    /// Whether it runs.
    #[serde(default)]
    pub enabled: bool,
    /// How often (`1h`).
    #[serde(default = "default_prune_frequency")]
    pub frequency: Span,
    /// What each run prunes.
    #[serde(flatten)]
    pub spec: PruneSpec,
}

/// `pruneConfig.frequency` when absent.
fn default_prune_frequency() -> Span {
    Span(Some(Duration::from_secs(3600)))
}

/// A loaded configuration and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    /// The merged settings.
    pub config: Config,
    /// Unknown keys and similar, for the log once it exists.
    pub warnings: Vec<String>,
}

impl Config {
    /// Merges defaults, the file, the environment and the command line.
    pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Yaml));
        if let Some(path) = &cli.config_file {
            builder = builder.add_source(
                File::from(path.as_path())
                    .format(FileFormat::Yaml)
                    .required(true),
            );
        }
        // Every top-level key but `registries` (a list) has a variable,
        // named from the field list serde derives for `Config`.
        let keys = serde_aux::serde_introspection::serde_introspect::<Config>();
        for key in keys.iter().filter(|k| **k != "registries") {
            if let Ok(value) = std::env::var(env_name(key)) {
                builder = builder.set_override(*key, value)?;
            }
        }
        builder = cli.overrides(builder)?;
        let merged = builder.build()?;
        let mut warnings = Vec::new();
        let mut unknown = |path: serde_ignored::Path| {
            warnings.push(format!("unknown key {} ignored", key_path(&path)))
        };
        let config: Config = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            merged,
            &mut unknown,
        ))
        .map_err(|e| ConfigError::Value {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
        config.retention()?;
        config.scheduled_prune()?;
        config.admin_token()?;
        config.client_limits()?;
        config.timeouts()?;
        config.fetch_limits()?;
        config.host_rules()?;
        config.server_tls()?;
        Ok(Loaded { config, warnings })
    }

    /// The upstream actors' settings for every configured registry, given
    /// the proxy rules of the environment.
    pub fn upstreams(&self, env_proxy: &ProxyRules) -> Result<Vec<UpstreamSettings>, ConfigError> {
        self.registries
            .iter()
            .map(|e| e.settings(self.timeouts()?, env_proxy))
            .collect()
    }

    /// The tag freshness policies (global, per registry, `alwaysPullLatest`).
    pub fn tag_policies(&self) -> TagPolicies {
        let default = TagPolicy {
            ttl: self.tag_ttl.0,
            stale_while_revalidate: self.stale_while_revalidate,
        };
        let mut per_registry = HashMap::new();
        for entry in &self.registries {
            if entry.tag_ttl.is_none() && entry.stale_while_revalidate.is_none() {
                continue;
            }
            let Ok(name) = RegistryName::parse(&entry.name) else {
                continue; // reported by `upstreams()`
            };
            let policy = TagPolicy {
                ttl: entry.tag_ttl.map_or(default.ttl, |t| t.0),
                stale_while_revalidate: entry
                    .stale_while_revalidate
                    .unwrap_or(default.stale_while_revalidate),
            };
            per_registry.insert(name, policy);
        }
        TagPolicies {
            default,
            per_registry,
            always_pull_latest: self.always_pull_latest,
        }
    }

    /// Most bytes taken from one tarball.
    pub fn import_limit(&self) -> u64 {
        self.max_import_size.0
    }

    /// Pins and the size limit.
    pub fn retention(&self) -> Result<Retention, ConfigError> {
        let pins = self.pins.iter().map(|p| p.0.clone()).collect();
        let max_size = self.max_cache_size.map(|s| s.0);
        let local_max_size = self.local_cache.max_size.map(|s| s.0);
        Ok(Retention {
            pins,
            max_size,
            local_max_size,
        })
    }

    /// The scheduled prune, when enabled: how often, and what.
    pub fn scheduled_prune(&self) -> Result<Option<(Duration, PruneSpec)>, ConfigError> {
        let Some(p) = self.prune_config.as_ref().filter(|p| p.enabled) else {
            return Ok(None);
        };
        p.spec.by().map_err(|reason| ConfigError::Invalid {
            key: "pruneConfig",
            reason,
        })?;
        let every = positive("pruneConfig.frequency", p.frequency)?;
        Ok(Some((every, p.spec.clone())))
    }

    /// The upstream guard: name globs and denied networks.
    pub fn host_rules(&self) -> Result<HostRules, ConfigError> {
        let networks = self
            .upstreams
            .deny_networks
            .iter()
            .map(|n| n.parse::<Network>())
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::Invalid {
                key: "upstreams.denyNetworks",
                reason: e.to_string(),
            })?;
        let upstreams = &self.upstreams;
        HostRules::new(upstreams.allow.clone(), upstreams.deny.clone(), networks).map_err(
            |reason| ConfigError::Invalid {
                key: "upstreams",
                reason,
            },
        )
    }

    /// The names of the configured registries (trusted as written).
    pub fn registry_names(&self) -> Result<HashSet<RegistryName>, ConfigError> {
        self.registries
            .iter()
            .map(|e| {
                RegistryName::parse(&e.name).map_err(|e2| ConfigError::Registry {
                    name: e.name.clone(),
                    reason: e2.to_string(),
                })
            })
            .collect()
    }

    /// Upstream time limits.
    pub fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        if self.pull_timeout == 0 {
            return Err(ConfigError::Invalid {
                key: "pullTimeout",
                reason: "must be at least 1 (milliseconds)".into(),
            });
        }
        Ok(Timeouts {
            connect: CONNECT_TIMEOUT,
            response: self.pull_timeout(),
            idle: positive("idleTimeout", self.idle_timeout)?,
        })
    }

    /// Bounds on upstream fetches.
    pub fn fetch_limits(&self) -> Result<FetchLimits, ConfigError> {
        Ok(FetchLimits {
            max_blob_size: self.max_blob_size.0,
            max_fetches: at_least_one("maxFetches", self.max_fetches)?,
            max_fetches_per_registry: at_least_one(
                "maxFetchesPerRegistry",
                self.max_fetches_per_registry,
            )?,
        })
    }

    /// How long a client waits for an upstream to start answering.
    pub fn pull_timeout(&self) -> Duration {
        Duration::from_millis(self.pull_timeout)
    }
}

/// A key's path as errors spell it too: `registries[0].tls.caa`.
fn key_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// A count setting that must be at least 1.
fn at_least_one(key: &'static str, n: usize) -> Result<usize, ConfigError> {
    match n {
        0 => Err(ConfigError::Invalid {
            key,
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

/// A duration setting that must be positive (`30s`, `500ms`; not `0` or `never`).
fn positive(key: &'static str, span: Span) -> Result<Duration, ConfigError> {
    span.0
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::Invalid {
            key,
            reason: "must be a positive duration (not 0 or never)".into(),
        })
}

impl Config {
    /// Every file the configuration names (secrets, certificates, CAs):
    /// a change to one of them is a change of the configuration.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        for r in &self.registries {
            if let Some(f) = r.auth.as_ref().and_then(|a| a.password_file.clone()) {
                files.push(f);
            }
            if let Some(t) = &r.tls {
                files.extend([&t.ca, &t.cert, &t.key].into_iter().flatten().cloned());
            }
        }
        if let Some(t) = &self.server_tls_config {
            files.extend(
                [Some(&t.cert), Some(&t.key), t.ca.as_ref()]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        files.extend(self.admin_token_file.clone());
        files.extend(self.storage.secret_access_key_file.clone());
        files.extend(self.storage.ca_file.clone());
        files
    }
}

/// A secret from the first of its sources that is set: inline, an
/// environment variable, a file (trailing newlines dropped); `None` when
/// none is. `key` names it in errors (`auth.password`).
fn secret(
    key: &str,
    inline: &Option<String>,
    from_env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    if let Some(var) = from_env {
        let value = std::env::var(var)
            .map_err(|_| format!("{key}FromEnv: environment variable {var} is not set"))?;
        return Ok(Some(value));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{key}File {}: {e}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
    }
    Ok(None)
}

/// `pullTimeout` → `OCIREGISTRY_PULL_TIMEOUT`.
fn env_name(key: &str) -> String {
    let mut out = String::from("OCIREGISTRY_");
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests;
