//! The server's own ports as configured: limits toward clients, HTTPS
//! toward clients, and who may use the admin API.

use std::path::PathBuf;
use std::time::Duration;

use ociregistry_actors::upstream::ServerTlsSettings;
use serde::Deserialize;

use super::{at_least_one, positive, Config, ConfigError};

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
    /// Time the server keeps accepting on shutdown, unready, before it drains.
    pub shutdown_delay: Duration,
}

impl Config {
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
            shutdown_delay: self.shutdown_delay.0.ok_or(ConfigError::Invalid {
                key: "shutdownDelay",
                reason: "must be a duration (0 for none), not never".into(),
            })?,
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
}

/// Whether a listen address is loopback only (`localhost`, 127/8, `::1`).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
