//! `registries` entries as written, and how each becomes the settings of
//! an upstream actor (endpoints, secrets, TLS, proxy).

use std::path::PathBuf;

use ociregistry_actors::names::RegistryName;
use ociregistry_actors::upstream::{
    default_endpoint, Credentials, ParallelFetch, ProxyRules, Timeouts, TlsSettings,
    UpstreamSettings,
};
use serde::Deserialize;

use super::ConfigError;
use crate::units::{Size, Span};

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
    /// Large blobs of this registry fetched over several connections.
    #[serde(default, rename = "parallelFetch", alias = "parallel_fetch")]
    pub parallel_fetch: Option<ParallelFetchEntry>,
}

/// `registries[].parallelFetch`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ParallelFetchEntry {
    /// Blobs up to this size use one connection (`32Mi`).
    #[serde(rename = "minSize", alias = "min_size")]
    pub min_size: Size,
    /// Connections per larger blob, 2 to 32.
    pub connections: usize,
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

impl RegistryEntry {
    /// Resolves endpoints, secrets and TLS into actor settings.
    pub(super) fn settings(
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
            parallel: self
                .parallel_fetch
                .map(|p| p.settings())
                .transpose()
                .map_err(err)?,
        })
    }
}

impl ParallelFetchEntry {
    /// The upstream actor's settings; `connections` within 2..=32 and a
    /// `minSize` of at least 1 MiB.
    fn settings(self) -> Result<ParallelFetch, String> {
        if !(2..=32).contains(&self.connections) {
            return Err(format!(
                "parallelFetch.connections: {} is not within 2 to 32",
                self.connections
            ));
        }
        if self.min_size.0 < 1 << 20 {
            return Err("parallelFetch.minSize: at least 1Mi".into());
        }
        Ok(ParallelFetch {
            min_size: self.min_size.0,
            connections: self.connections,
        })
    }
}

impl AuthEntry {
    /// The password from the first source that is set: inline, env, file.
    pub(super) fn credentials(&self) -> Result<Credentials, String> {
        let password = super::secret(
            "auth.password",
            &self.password,
            &self.password_from_env,
            &self.password_file,
        )?
        .ok_or("auth needs password, passwordFromEnv or passwordFile")?;
        Ok(Credentials {
            user: self.user.clone(),
            password,
        })
    }
}

/// A base URL, `http(s)://host[:port]` (a trailing `/` is dropped), as
/// `upstreamMirror` names one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BaseUrl(pub String);

impl TryFrom<String> for BaseUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        endpoint(&text)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is not http(s)://host[:port]"))
    }
}

/// A URL reduced to `scheme://host[:port]` (a trailing `/` is dropped).
pub(super) fn endpoint(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://")?;
    let ok = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@']);
    ok.then(|| trimmed.to_string())
}
