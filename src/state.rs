//! What every handler shares: the actors' addresses and the serving policy.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Addr;
use ociregistry_actors::coordinator::PullCoordinator;
use ociregistry_actors::names::RegistryName;
use ociregistry_actors::storage::Storage;
use ociregistry_actors::upstream::guard::HostRules;
use ociregistry_actors::upstream::ServerCerts;

use crate::freshness::TagPolicies;

/// What every handler needs.
pub struct AppState {
    /// Set when shutdown begins: `/ready` answers 503 from then on.
    pub stopping: std::sync::atomic::AtomicBool,
    /// With HTTPS toward clients, the certificate and client CAs a reload
    /// replaces.
    pub certs: Option<Arc<ServerCerts>>,
    /// The cache index.
    pub storage: Addr<Storage>,
    /// Single-flight upstream fetches.
    pub coordinator: Addr<PullCoordinator>,
    /// How requests are answered; a reload swaps it (a request keeps the
    /// one it started with).
    pub policy: RwLock<Arc<Policy>>,
    /// Access and error log.
    pub log: slog::Logger,
}

impl AppState {
    /// The serving policy now.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves with `policy` from now on.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

/// The serving policy from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Registry for requests that name none.
    pub default_ns: Option<RegistryName>,
    /// Never contact an upstream.
    pub air_gapped: bool,
    /// When cached tags are revalidated.
    pub tags: TagPolicies,
    /// How long a request waits for upstream response headers.
    pub pull_timeout: Duration,
    /// Registries named in the configuration (trusted as written).
    pub listed: HashSet<RegistryName>,
    /// Which other registries clients may make the server dial.
    pub hosts: HostRules,
    /// Whether `/v2/_catalog` lists the cached repositories.
    pub catalog: bool,
}
