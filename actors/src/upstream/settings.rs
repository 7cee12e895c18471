//! How to reach one upstream registry: endpoints, credentials, TLS, timeouts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::guard::HostRules;
use super::proxy::ProxyRules;
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
    /// Egress proxies for this registry's connections.
    pub proxy: ProxyRules,
    /// When the endpoint is another ociregistry: the registry to ask it for,
    /// sent as `?ns=`.
    pub ns: Option<RegistryName>,
    /// A registry a client chose rather than the configuration: its
    /// metrics count as `other`.
    pub unlisted: bool,
    /// The upstream guard every connection passes: set for unlisted
    /// registries reached directly, not for configured ones nor through a
    /// configured mirror (`ns` set).
    pub guard: Option<Arc<HostRules>>,
    /// Large blobs fetched over several connections at once, if set.
    pub parallel: Option<ParallelFetch>,
}

/// How large blobs are fetched with parallel `Range` requests: the first
/// request asks for `min_size` bytes; when the blob is larger, the rest is
/// split over `connections - 1` more requests, all written at their
/// offsets into the one partial file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelFetch {
    /// Blobs up to this size are fetched on one connection.
    pub min_size: u64,
    /// Connections per large blob (the first included), at least 2.
    pub connections: usize,
}

impl UpstreamSettings {
    /// Settings for a registry the config does not list: anonymous HTTPS,
    /// verified against the OS trust store, under `guard`.
    pub fn unlisted(
        name: RegistryName,
        timeouts: Timeouts,
        proxy: ProxyRules,
        guard: Arc<HostRules>,
    ) -> Self {
        Self {
            endpoints: vec![default_endpoint(&name, "https")],
            name,
            credentials: None,
            tls: TlsSettings::default(),
            timeouts,
            proxy,
            ns: None,
            unlisted: true,
            guard: Some(guard),
            parallel: None,
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
    /// TCP connect (and, separately, the TLS handshake).
    pub connect: Duration,
    /// From sending a request to the response headers.
    pub response: Duration,
    /// Longest pause between two body chunks before a transfer counts as stalled.
    pub idle: Duration,
}

/// TLS settings of one upstream.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Extra CA certificates (PEM) trusted besides the OS store.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS; needs `key`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, RSA or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// Accept any server certificate. Off unless configured.
    pub insecure_skip_verify: bool,
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
    /// The OS trust store holds no certificate.
    #[error("no trusted CA certificates could be loaded from the OS store: install ca-certificates or set SSL_CERT_FILE")]
    NoRoots,
    /// Only one of `cert` and `key` is set.
    #[error("tls.cert and tls.key must be given together")]
    IncompleteClientCert,
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

impl TlsSettings {
    /// The rustls client configuration for these settings (ring provider only).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        } else {
            let mut roots = native_roots().clone();
            if let Some(path) = &self.ca {
                for cert in read_certs(path)? {
                    roots.add(cert)?;
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
                builder.with_client_auth_cert(read_certs(cert)?, key)?
            }
            _ => return Err(TlsError::IncompleteClientCert),
        };
        Ok(Arc::new(config))
    }
}

/// HTTPS toward clients: the server's certificate, and the CA client
/// certificates must chain to when clients are verified (mTLS).
#[derive(Debug, Clone)]
pub struct ServerTlsSettings {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, RSA or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by these CAs.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsSettings {
    /// The rustls server configuration (TLS 1.2 and 1.3, ring provider) and
    /// the certificate and client verification it asks at each handshake,
    /// which [`ServerCerts::replace`] swaps; an unreadable or invalid file
    /// is an error, never a fall-back.
    pub fn server_config(&self) -> Result<(rustls::ServerConfig, Arc<ServerCerts>), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Arc::new(ServerCerts {
            current: RwLock::new(Arc::new(self.prepare()?)),
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::clone(&certs) as Arc<dyn ClientCertVerifier>)
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        Ok((config, certs))
    }

    /// The certificate, its key and the client verifier, read now, for
    /// [`ServerCerts::replace`].
    pub fn prepare(&self) -> Result<PreparedCerts, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = match &self.client_ca {
            None => None,
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| pem_error(ca, e))?;
                Some(verifier)
            }
        };
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| pem_error(&self.key, e))?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| pem_error(&self.key, e))?;
        let key = CertifiedKey::new(read_certs(&self.cert)?, key);
        key.keys_match().map_err(|e| pem_error(&self.key, e))?;
        Ok(PreparedCerts {
            key: Arc::new(key),
            clients,
        })
    }
}

/// A server certificate and the client verification, read and checked.
#[derive(Debug)]
pub struct PreparedCerts {
    /// Certificate chain and signing key.
    key: Arc<CertifiedKey>,
    /// Verifies client certificates; `None`: clients are not asked for one.
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

/// HTTPS toward clients as a reload may replace it: each handshake uses
/// the certificate and client CAs current when it starts.
#[derive(Debug)]
pub struct ServerCerts {
    /// What handshakes use now.
    current: RwLock<Arc<PreparedCerts>>,
    /// The signature schemes client certificates may use (the provider's,
    /// listed once rather than at every handshake).
    schemes: Vec<SignatureScheme>,
}

impl ServerCerts {
    /// Uses `prepared` from the next handshake on.
    pub fn replace(&self, prepared: PreparedCerts) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(prepared);
    }

    /// What handshakes use now.
    fn now(&self) -> Arc<PreparedCerts> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The client verifier now, or the error when clients are not verified.
    fn clients(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.now()
            .clients
            .clone()
            .ok_or_else(|| rustls::Error::General("client certificates are not asked for".into()))
    }
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.now().key))
    }
}

impl ClientCertVerifier for ServerCerts {
    fn offer_client_auth(&self) -> bool {
        self.now().clients.is_some()
    }

    /// No hints (they would have to outlive a swap): clients with one
    /// certificate, as registries' clients are, send it anyway.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.clients()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.clients()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.clients()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in file"));
    }
    Ok(certs)
}

/// A PEM problem, naming the file.
fn pem_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The verifier behind `insecureSkipVerify`: accepts any certificate but
/// still checks handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Fails when the OS trust store gave no certificate (HTTPS upstreams
/// could not be verified).
pub fn require_native_roots() -> Result<(), TlsError> {
    if native_roots().is_empty() {
        Err(TlsError::NoRoots)
    } else {
        Ok(())
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
