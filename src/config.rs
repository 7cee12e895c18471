//! Configuration: built-in defaults < config file < `OCIREGISTRY_*`
//! environment variables < command-line flags.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use config::{File, FileFormat};
use ociregistry_actors::coordinator::FetchLimits;
use ociregistry_actors::names::{NameError, RegistryName};
use ociregistry_actors::storage::Retention;
use ociregistry_actors::upstream::guard::{HostRules, Network, DEFAULT_DENY_NETWORKS};
use ociregistry_actors::upstream::{
    default_endpoint, Credentials, ProxyRules, ServerTlsSettings, Timeouts, TlsSettings,
    UpstreamSettings,
};
use regex::Regex;
use serde::Deserialize;

use crate::cli::Cli;
use crate::freshness::{TagPolicies, TagPolicy};
use crate::prune::PruneSpec;
use crate::units::{Size, Span};

/// The built-in defaults (`config/defaults.yaml`).
const DEFAULTS: &str = include_str!("../config/defaults.yaml");
/// Upstream TCP connect and TLS handshake limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Top-level keys, each settable by `OCIREGISTRY_<UPPER_SNAKE>` too.
const KEYS: &[&str] = &[
    "imagePath",
    "logLevel",
    "port",
    "host",
    "pullTimeout",
    "defaultNs",
    "airGapped",
    "alwaysPullLatest",
    "registries",
    "upstreamMirror",
    "tagTtl",
    "staleWhileRevalidate",
    "maxCacheSize",
    "maxImportSize",
    "pins",
    "pruneConfig",
    "adminPort",
    "adminHost",
    "adminToken",
    "adminTokenFile",
    "logFormat",
    "metrics",
    "health",
    "serverTlsConfig",
    "upstreams",
    "drainTimeout",
    "maxConnections",
    "maxConnectionsPerClient",
    "headerTimeout",
    "keepAlive",
    "idleTimeout",
    "maxBlobSize",
    "maxFetches",
    "maxFetchesPerRegistry",
];

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
    /// `upstreamMirror` is not a base URL.
    #[error("upstreamMirror {0:?} is not http(s)://host[:port]")]
    UpstreamMirror(String),
    /// A cache-management key is invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `defaultNs` is not a registry host.
    #[error("defaultNs: {0}")]
    DefaultNs(NameError),
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
    pub default_ns: Option<String>,
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
    pub upstream_mirror: Option<String>,
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
    pub pins: Vec<String>,
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
}

/// `serverTlsConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsEntry {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates are verified against.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `none` or `verify` (clients must present a certificate from `ca`).
    #[serde(default, alias = "client_auth")]
    pub client_auth: ClientAuth,
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

/// `serverTlsConfig.clientAuth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Any client may connect.
    #[default]
    None,
    /// Clients must present a certificate from `ca`.
    Verify,
}

/// `registries[].scheme`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (the default).
    #[default]
    Https,
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

/// Limits toward clients.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one client address.
    pub max_per_client: usize,
    /// Time to receive a request's headers (from the first byte, on a
    /// connection's later requests).
    pub header_timeout: Duration,
    /// Idle keep-alive time.
    pub keep_alive: Duration,
    /// Time in-flight transfers get on shutdown.
    pub drain: Duration,
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

/// One `registries` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryEntry {
    /// Registry name clients use.
    pub name: String,
    /// Endpoints, tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// `http` or `https` (default) when `urls` is absent.
    #[serde(default)]
    pub scheme: Scheme,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<AuthEntry>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsEntry>,
    /// HTTP proxy (`http://[user:password@]host[:port]`) for this
    /// registry, instead of the `HTTP(S)_PROXY` environment; any other
    /// scheme stops start-up.
    #[serde(default)]
    pub proxy: Option<ProxyUrl>,
    /// This registry's `tagTtl`.
    #[serde(default, rename = "tagTtl", alias = "tag_ttl")]
    pub tag_ttl: Option<Span>,
    /// This registry's `staleWhileRevalidate`.
    #[serde(
        default,
        rename = "staleWhileRevalidate",
        alias = "stale_while_revalidate"
    )]
    pub stale_while_revalidate: Option<bool>,
}

/// `registries[].auth`.
#[derive(Clone, Deserialize)]
pub struct AuthEntry {
    /// User name.
    pub user: String,
    /// Inline password.
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default, rename = "passwordFromEnv", alias = "password_from_env")]
    pub password_from_env: Option<String>,
    /// File holding the password (e.g. a mounted Secret).
    #[serde(default, rename = "passwordFile", alias = "password_file")]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// `registries[].proxy` as written. `Debug` never shows it: it may hold a
/// password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ProxyUrl(pub String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyUrl(<redacted>)")
    }
}

/// `registries[].tls`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsEntry {
    /// Extra CA certificates (PEM).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Accept any server certificate.
    #[serde(default, rename = "insecureSkipVerify", alias = "insecure_skip_verify")]
    pub insecure_skip_verify: bool,
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
        for key in KEYS.iter().filter(|k| **k != "registries") {
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
        if let Some(url) = &config.upstream_mirror {
            endpoint(url).ok_or_else(|| ConfigError::UpstreamMirror(url.clone()))?;
        }
        config.retention()?;
        config.scheduled_prune()?;
        config.admin_token()?;
        config.client_limits()?;
        config.timeouts()?;
        config.fetch_limits()?;
        config.host_rules()?;
        config.server_tls()?;
        if let Some(ns) = &config.default_ns {
            RegistryName::parse(ns).map_err(ConfigError::DefaultNs)?;
        }
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
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        let pins = self
            .pins
            .iter()
            .map(|p| Regex::new(p).map_err(|e| invalid("pins", e.to_string())))
            .collect::<Result<_, _>>()?;
        let max_size = self.max_cache_size.map(|s| s.0);
        Ok(Retention { pins, max_size })
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

    /// The admin API's token, from `adminToken` or `adminTokenFile`. An
    /// empty or blank token is an error (it would open the API by
    /// mistake); without a token the admin API may listen on loopback only.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        let (key, token) = match (&self.admin_token, &self.admin_token_file) {
            (Some(t), _) => ("adminToken", Some(t.trim().to_string())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid("adminTokenFile", format!("{}: {e}", path.display())))?;
                ("adminTokenFile", Some(text.trim().to_string()))
            }
            (None, None) => ("adminToken", None),
        };
        match token {
            Some(t) if t.is_empty() => Err(invalid(
                key,
                "is empty: set a token, or unset it to keep the admin API on loopback".into(),
            )),
            None if self.admin_port.is_some() && !is_loopback(&self.admin_host) => Err(invalid(
                "adminHost",
                format!(
                    "{}: without adminToken the admin API listens on loopback only",
                    self.admin_host
                ),
            )),
            token => Ok(token),
        }
    }

    /// Connection limits and timeouts toward clients.
    pub fn client_limits(&self) -> Result<ClientLimits, ConfigError> {
        Ok(ClientLimits {
            max_connections: at_least_one("maxConnections", self.max_connections)?,
            max_per_client: at_least_one(
                "maxConnectionsPerClient",
                self.max_connections_per_client,
            )?,
            header_timeout: positive("headerTimeout", self.header_timeout)?,
            keep_alive: positive("keepAlive", self.keep_alive)?,
            drain: positive("drainTimeout", self.drain_timeout)?,
        })
    }

    /// The server-side TLS settings, if HTTPS is configured; files are read
    /// by [`ServerTlsSettings::server_config`] at start-up.
    pub fn server_tls(&self) -> Result<Option<ServerTlsSettings>, ConfigError> {
        let Some(t) = &self.server_tls_config else {
            return Ok(None);
        };
        let verify_clients = t.client_auth == ClientAuth::Verify;
        if verify_clients && t.ca.is_none() {
            return Err(ConfigError::Invalid {
                key: "serverTlsConfig",
                reason: "clientAuth: verify needs ca".into(),
            });
        }
        Ok(Some(ServerTlsSettings {
            cert: t.cert.clone(),
            key: t.key.clone(),
            client_ca: t.ca.clone().filter(|_| verify_clients),
        }))
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

    /// The parsed `defaultNs`.
    pub fn default_ns(&self) -> Option<RegistryName> {
        self.default_ns
            .as_deref()
            .and_then(|n| RegistryName::parse(n).ok())
    }
}

impl RegistryEntry {
    /// Resolves endpoints, secrets and TLS into actor settings.
    fn settings(
        &self,
        timeouts: Timeouts,
        env_proxy: &ProxyRules,
    ) -> Result<UpstreamSettings, ConfigError> {
        let err = |reason: String| ConfigError::Registry {
            name: self.name.clone(),
            reason,
        };
        let name = RegistryName::parse(&self.name).map_err(|e| err(e.to_string()))?;
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let endpoints = if self.urls.is_empty() {
            vec![default_endpoint(&name, scheme)]
        } else {
            self.urls
                .iter()
                .map(|u| {
                    endpoint(u)
                        .ok_or_else(|| err(format!("url {u:?} is not http(s)://host[:port]")))
                })
                .collect::<Result<_, _>>()?
        };
        let credentials = self
            .auth
            .as_ref()
            .map(|a| a.credentials())
            .transpose()
            .map_err(err)?;
        let tls = self.tls.clone().unwrap_or_default();
        let proxy = match &self.proxy {
            Some(ProxyUrl(url)) => {
                ProxyRules::single(url).map_err(|e| err(format!("proxy: {e}")))?
            }
            None => env_proxy.clone(),
        };
        Ok(UpstreamSettings {
            name,
            endpoints,
            credentials,
            tls: TlsSettings {
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
                insecure_skip_verify: tls.insecure_skip_verify,
            },
            timeouts,
            proxy,
            ns: None,
            unlisted: false,
            guard: None,
        })
    }
}

impl AuthEntry {
    /// The password from the first source that is set: inline, env, file.
    fn credentials(&self) -> Result<Credentials, String> {
        let password = if let Some(p) = &self.password {
            p.clone()
        } else if let Some(var) = &self.password_from_env {
            std::env::var(var).map_err(|_| {
                format!("auth.passwordFromEnv: environment variable {var} is not set")
            })?
        } else if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.passwordFile {}: {e}", path.display()))?;
            text.trim_end_matches(['\r', '\n']).to_string()
        } else {
            return Err("auth needs password, passwordFromEnv or passwordFile".into());
        };
        Ok(Credentials {
            user: self.user.clone(),
            password,
        })
    }
}

/// Whether a listen address is loopback only (`localhost`, 127/8, `::1`).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// A URL reduced to `scheme://host[:port]` (a trailing `/` is dropped).
fn endpoint(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://")?;
    let ok = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@']);
    ok.then(|| trimmed.to_string())
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
mod tests {
    use super::*;

    #[test]
    fn example_config_loads_without_warnings() {
        use clap::Parser;
        let cli = Cli::parse_from([
            "ociregistry",
            "--config-file",
            "config/example.yaml",
            "serve",
            "--port",
            "9",
        ]);
        let loaded = Config::load(&cli).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config.port, 9, "flags override the file");
        assert_eq!(loaded.config.pull_timeout, 60_000);
        assert_eq!(
            loaded
                .config
                .upstreams(&ProxyRules::default())
                .unwrap()
                .len(),
            1
        );
    }

    /// A configuration from YAML text on top of the defaults.
    fn parsed(yaml: &str) -> Config {
        config::Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Yaml))
            .add_source(File::from_str(yaml, FileFormat::Yaml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    #[test]
    fn an_empty_admin_token_or_a_tokenless_admin_api_off_loopback_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        for bad in [
            "adminPort: 9\nadminToken: ''".to_string(),
            "adminPort: 9\nadminToken: '  '".to_string(),
            format!("adminPort: 9\nadminTokenFile: {}", empty.display()),
            "adminPort: 9\nadminHost: 0.0.0.0".to_string(),
            "adminPort: 9\nadminHost: 10.1.2.3".to_string(),
        ] {
            assert!(parsed(&bad).admin_token().is_err(), "{bad}");
        }
        for good in [
            "adminPort: 9",
            "adminPort: 9\nadminHost: '::1'",
            "adminPort: 9\nadminHost: localhost",
            "adminPort: 9\nadminHost: 0.0.0.0\nadminToken: s3cret",
            "adminHost: 0.0.0.0",
        ] {
            assert!(parsed(good).admin_token().is_ok(), "{good}");
        }
    }

    #[test]
    fn deny_networks_default_and_a_bad_one_stops_start_up() {
        use clap::Parser;
        let load = |yaml: &str| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("config.yaml");
            std::fs::write(&file, yaml).unwrap();
            let file = file.to_str().unwrap().to_string();
            Config::load(&Cli::parse_from([
                "ociregistry",
                "--config-file",
                &file,
                "serve",
            ]))
        };
        let defaults = load("port: 1\n").unwrap().config;
        assert_eq!(defaults.upstreams.deny_networks, default_deny_networks());
        let set = load("upstreams:\n  denyNetworks: [127.0.0.2/32, 'fd00::/8']\n").unwrap();
        assert_eq!(set.config.upstreams.deny_networks.len(), 2);
        assert_eq!(
            set.config.upstreams.allow,
            allow_all(),
            "the other keys keep their defaults"
        );
        for (bad, says) in [
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("10.0.0.0/40", "prefix is longer"),
            ("intranet", "not an IP address or CIDR network"),
        ] {
            let err = load(&format!("upstreams:\n  denyNetworks: ['{bad}']\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("upstreams.denyNetworks: "), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn nonsensical_limits_stop_start_up() {
        for bad in [
            "pullTimeout: 0",
            "maxConnections: 0",
            "headerTimeout: 0s",
            "maxFetches: 0",
            "maxFetchesPerRegistry: 0",
            "idleTimeout: never",
        ] {
            let c = parsed(bad);
            let checks = [
                c.timeouts().err(),
                c.client_limits().err(),
                c.fetch_limits().err(),
            ];
            assert!(checks.iter().any(Option::is_some), "{bad}");
        }
        let defaults = parsed("{}");
        assert!(defaults.timeouts().is_ok() && defaults.client_limits().is_ok());
        assert!(defaults.fetch_limits().is_ok());
    }

    #[test]
    fn connection_limits_default_and_must_be_at_least_one() {
        let limits = parsed("port: 1\n").client_limits().unwrap();
        assert_eq!(
            (limits.max_connections, limits.max_per_client),
            (10_000, 1000)
        );
        for key in ["maxConnections", "maxConnectionsPerClient"] {
            let err = parsed(&format!("{key}: 0\n")).client_limits().unwrap_err();
            assert_eq!(err.to_string(), format!("{key}: must be at least 1"));
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("pullTimeout"), "OCIREGISTRY_PULL_TIMEOUT");
        assert_eq!(env_name("port"), "OCIREGISTRY_PORT");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("http://127.0.0.1:5000/").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            endpoint("https://r.example.com").as_deref(),
            Some("https://r.example.com")
        );
        for bad in ["ftp://x", "x", "http://", "http://u:p@x", "http://x/path"] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }

    /// Loads `yaml` as the config file, with the usual precedence.
    fn load(yaml: &str) -> Result<Loaded, ConfigError> {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        Config::load(&Cli::parse_from([
            "ociregistry",
            "--config-file",
            file.to_str().unwrap(),
            "serve",
        ]))
    }

    #[test]
    fn unknown_keys_are_reported_at_every_level_and_aliases_are_known() {
        let loaded = load(
            "colour: red\nregistries:\n  - name: a.example\n    mirror: 1\n    tls: {insecure_skip_verify: true, caa: x}\nupstreams: {denyNetwork: []}\n",
        )
        .unwrap();
        let mut warnings = loaded.warnings;
        warnings.sort();
        assert_eq!(
            warnings,
            [
                "unknown key colour ignored",
                "unknown key registries[0].mirror ignored",
                "unknown key registries[0].tls.caa ignored",
                "unknown key upstreams.denyNetwork ignored",
            ]
        );
    }

    #[test]
    fn sizes_durations_and_choices_are_typed_when_loaded() {
        let loaded =
            load("maxBlobSize: 2Gi\nmaxCacheSize: 1000\ntagTtl: never\nkeepAlive: 5\n").unwrap();
        let c = loaded.config;
        assert_eq!(
            (c.max_blob_size, c.max_cache_size),
            (Size(2 << 30), Some(Size(1000)))
        );
        assert_eq!(
            (c.tag_ttl, c.keep_alive),
            (Span(None), Span(Some(Duration::from_secs(5))))
        );
        for (bad, path) in [
            ("maxBlobSize: lots", "maxBlobSize"),
            ("drainTimeout: 3x", "drainTimeout"),
            ("keepAlive: -1", "keepAlive"),
            ("logFormat: xml", "logFormat"),
            (
                "serverTlsConfig: {cert: c, key: k, clientAuth: maybe}",
                "serverTlsConfig.clientAuth",
            ),
            (
                "registries:\n  - name: r.example\n    scheme: ftp\n",
                "registries[0].scheme",
            ),
        ] {
            let err = load(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{path}: ")), "{err}");
        }
    }

    #[test]
    fn a_bad_value_names_its_path() {
        let err = load("registries:\n  - name: a.example\n    tls: {insecureSkipVerify: maybe}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("registries[0].tls.insecureSkipVerify: "),
            "{err}"
        );
    }

    #[test]
    fn password_sources_and_snake_case() {
        let entry: RegistryEntry = serde_json::from_value(serde_json::json!({
            "name": "r.example.com",
            "auth": {"user": "u", "password_from_env": "OCIREGISTRY_TEST_UNSET_VARIABLE"},
            "tls": {"insecure_skip_verify": true}
        }))
        .unwrap();
        assert!(entry.tls.as_ref().unwrap().insecure_skip_verify);
        let err = entry
            .settings(test_timeouts(), &ProxyRules::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("OCIREGISTRY_TEST_UNSET_VARIABLE"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let auth = AuthEntry {
            user: "u".into(),
            password: None,
            password_from_env: None,
            password_file: Some(file),
        };
        assert_eq!(auth.credentials().unwrap().password, "s3cret");
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn registry_proxies_are_http_and_never_shown() {
        let entry = |proxy: &str| -> RegistryEntry {
            serde_json::from_value(serde_json::json!({"name": "r.example", "proxy": proxy}))
                .unwrap()
        };
        let https = entry("https://u:s3cret@proxy.example:3128");
        let err = https
            .settings(test_timeouts(), &ProxyRules::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "registries[r.example]: proxy: proxy scheme \"https\" is not supported"
            ),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let http = entry("http://u:s3cret@proxy.example:3128");
        let settings = http
            .settings(test_timeouts(), &ProxyRules::default())
            .unwrap();
        for shown in [format!("{http:?}"), format!("{settings:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    fn test_timeouts() -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            response: CONNECT_TIMEOUT,
            idle: Duration::from_secs(60),
        }
    }
}
