//! How to reach one upstream registry: endpoints, credentials, TLS, timeouts.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::names::RegistryName;

/// Docker Hub's registry endpoint (its name, `docker.io`, serves no API).
const DOCKER_HUB_ENDPOINT: &str = "https://registry-1.docker.io";

/// Everything needed to talk to one upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The registry name clients use.
    pub name: RegistryName,
    /// Base URLs (`scheme://host[:port]`), tried in order.
    pub endpoints: Vec<String>,
    /// Credentials for basic auth and for token realms.
    pub credentials: Option<Credentials>,
    /// TLS trust for HTTPS endpoints.
    pub tls: TlsSettings,
    /// Connection and transfer time limits.
    pub timeouts: Timeouts,
}

impl UpstreamSettings {
    /// Settings for a registry the config does not list: anonymous HTTPS,
    /// verified against the OS trust store.
    pub fn unlisted(name: RegistryName, timeouts: Timeouts) -> Self {
        Self {
            endpoints: vec![default_endpoint(&name, "https")],
            name,
            credentials: None,
            tls: TlsSettings::default(),
            timeouts,
        }
    }
}

/// `scheme://name`, or Docker Hub's real endpoint.
pub fn default_endpoint(name: &RegistryName, scheme: &str) -> String {
    if name.is_docker_hub() {
        DOCKER_HUB_ENDPOINT.to_string()
    } else {
        format!("{scheme}://{name}")
    }
}

/// A user and password. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Time limits toward an upstream.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// From sending a request to the response headers.
    pub response: Duration,
    /// Longest pause between two body chunks before a transfer counts as stalled.
    pub idle: Duration,
}

/// TLS trust settings of one upstream.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Extra CA certificates (PEM) trusted besides the OS store.
    pub ca: Option<PathBuf>,
}

/// Why TLS settings could not be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no certificate.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

impl TlsSettings {
    /// The rustls client configuration for these settings (ring provider only).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = native_roots().clone();
        if let Some(path) = &self.ca {
            let pem_err = |reason: String| TlsError::Pem {
                path: path.clone(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| pem_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(pem_err("no certificate in file".into()));
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The OS trust store, loaded once.
fn native_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(loaded.certs);
        roots
    })
}
