//! Every Prometheus metric the server exports, in one registry.
//!
//! Label values are bounded: registries that the configuration does not
//! list are counted under `other` (clients choose `ns`), routes and methods
//! are fixed sets, statuses are folded into their class (`2xx`...).

use std::sync::LazyLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The registry label of every registry the configuration does not list.
pub const OTHER_REGISTRY: &str = "other";

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Labels of HTTP request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `base`, `manifest`, `blob`, `health`, `other`.
    pub route: &'static str,
    /// `GET`, `HEAD` or `other`.
    pub method: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

/// A single `registry` label (a configured name or [`OTHER_REGISTRY`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabel {
    /// The registry.
    pub registry: String,
}

/// Where the answer to a manifest or blob request came from, as
/// `X-Cache` and the `outcome` label say it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Every byte was local and verified when the answer started.
    Hit,
    /// Fetched from upstream for this request.
    Miss,
    /// Joined a fetch still receiving.
    Coalesced,
    /// A cached tag answered without the upstream's confirmation.
    Stale,
}

impl CacheOutcome {
    /// Every outcome.
    pub const ALL: [Self; 4] = [Self::Hit, Self::Miss, Self::Coalesced, Self::Stale];

    /// The metrics label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
        }
    }

    /// The `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Coalesced => "COALESCED",
            Self::Stale => "STALE",
        }
    }
}

impl EncodeLabelValue for CacheOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.label().encode(encoder)
    }
}

/// A single `outcome` label: `hit`, `miss`, `coalesced`, `stale`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The cache outcome.
    pub outcome: CacheOutcome,
}

/// A single `kind` label: `manifest` or `blob`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What was served.
    pub kind: &'static str,
}

/// A histogram constructor usable in a [`Family`].
type HistogramFn = fn() -> Histogram;

/// The metric families; each is a cheap handle onto the shared registry.
pub struct Metrics {
    /// The registry every metric below is registered in.
    registry: Registry,
    /// Requests by route, method and status class.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Manifest and blob requests by cache outcome.
    pub cache_requests: Family<OutcomeLabel, Counter>,
    /// Body bytes sent to clients.
    pub served_bytes: Family<KindLabel, Counter>,
    /// Body bytes received from upstreams.
    pub upstream_bytes: Family<RegistryLabel, Counter>,
    /// Time to upstream response headers.
    pub upstream_latency: Family<RegistryLabel, Histogram, HistogramFn>,
    /// Upstream fetches (manifests and blobs) in flight.
    pub fetches_in_flight: Gauge,
    /// Clients served by each finished upstream fetch (1 = no coalescing).
    pub fetch_waiters: Histogram,
    /// Blobs on disk.
    pub cache_blobs: Gauge,
    /// Manifests on disk.
    pub cache_manifests: Gauge,
    /// Bytes of blobs and manifests on disk.
    pub cache_bytes: Gauge,
    /// Images evicted to stay under `maxCacheSize`.
    pub evictions: Counter,
    /// Fetched content that could not be written to the cache (disk full,
    /// I/O errors); the fetch fails or is served uncached.
    pub cache_write_failures: Counter,
    /// Configuration reloads refused (the previous configuration kept serving).
    pub config_reload_failures: Counter,
    /// When a configuration was last loaded or reloaded (unix seconds).
    pub config_last_reload_success: Gauge,
    /// With a shared store (a bucket): 1 while its last check succeeded.
    pub store_up: Gauge,
    /// Failed operations on a shared store.
    pub store_errors: Counter,
    /// 1 while an upstream is dialled, 0 while it is backed off.
    pub upstream_up: Family<RegistryLabel, Gauge>,
    /// Bearer tokens fetched from token realms.
    pub token_refreshes: Family<RegistryLabel, Counter>,
    /// Client requests refused by the upstream guard.
    pub guard_refusals: Counter,
    /// Client connections open on the registry port.
    pub client_connections: Gauge,
    /// Client connections refused because their address had
    /// `maxConnectionsPerClient` open.
    pub client_connections_refused: Counter,
    /// Idle keep-alive client connections closed to make room for new ones.
    pub idle_connections_closed: Counter,
}

impl Metrics {
    /// Registers every metric.
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ociregistry");
        let m = Self {
            http_requests: Family::default(),
            cache_requests: Family::default(),
            served_bytes: Family::default(),
            upstream_bytes: Family::default(),
            upstream_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            fetches_in_flight: Gauge::default(),
            fetch_waiters: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            cache_blobs: Gauge::default(),
            cache_manifests: Gauge::default(),
            cache_bytes: Gauge::default(),
            evictions: Counter::default(),
            cache_write_failures: Counter::default(),
            config_reload_failures: Counter::default(),
            config_last_reload_success: Gauge::default(),
            store_up: Gauge::default(),
            store_errors: Counter::default(),
            upstream_up: Family::default(),
            token_refreshes: Family::default(),
            guard_refusals: Counter::default(),
            client_connections: Gauge::default(),
            client_connections_refused: Counter::default(),
            idle_connections_closed: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "Requests by route, method and status class",
            m.http_requests.clone(),
        );
        r.register(
            "cache_requests",
            "Manifest and blob requests by cache outcome",
            m.cache_requests.clone(),
        );
        r.register(
            "served_bytes",
            "Body bytes sent to clients",
            m.served_bytes.clone(),
        );
        r.register(
            "upstream_bytes",
            "Body bytes received from upstream registries",
            m.upstream_bytes.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time to upstream response headers",
            m.upstream_latency.clone(),
        );
        r.register(
            "upstream_fetches_in_flight",
            "Upstream fetches in flight",
            m.fetches_in_flight.clone(),
        );
        r.register(
            "upstream_fetch_waiters",
            "Clients served by each finished upstream fetch",
            m.fetch_waiters.clone(),
        );
        r.register("cache_blobs", "Blobs on disk", m.cache_blobs.clone());
        r.register(
            "cache_manifests",
            "Manifests on disk",
            m.cache_manifests.clone(),
        );
        r.register(
            "cache_size_bytes",
            "Bytes of blobs and manifests on disk",
            m.cache_bytes.clone(),
        );
        r.register(
            "cache_evictions",
            "Images evicted to stay under maxCacheSize",
            m.evictions.clone(),
        );
        r.register(
            "cache_write_failures",
            "Fetched content that could not be written to the cache",
            m.cache_write_failures.clone(),
        );
        r.register(
            "config_reload_failures",
            "Configuration reloads refused; the previous configuration kept serving",
            m.config_reload_failures.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When a configuration was last loaded or reloaded",
            m.config_last_reload_success.clone(),
        );
        r.register(
            "store_up",
            "With a shared store: 1 while its last check succeeded",
            m.store_up.clone(),
        );
        r.register(
            "store_errors",
            "Failed operations on a shared store",
            m.store_errors.clone(),
        );
        r.register(
            "upstream_up",
            "1 while an upstream is dialled, 0 while it is backed off",
            m.upstream_up.clone(),
        );
        r.register(
            "upstream_token_refreshes",
            "Bearer tokens fetched from token realms",
            m.token_refreshes.clone(),
        );
        r.register(
            "upstream_guard_refusals",
            "Upstreams refused by the upstream guard",
            m.guard_refusals.clone(),
        );
        r.register(
            "client_connections",
            "Client connections open on the registry port",
            m.client_connections.clone(),
        );
        r.register(
            "client_connections_refused",
            "Client connections refused: their address had maxConnectionsPerClient open",
            m.client_connections_refused.clone(),
        );
        r.register(
            "client_idle_connections_closed",
            "Idle keep-alive client connections closed to make room for new ones",
            m.idle_connections_closed.clone(),
        );
        Self { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The counter of one cache outcome (for the admin API's statistics).
    pub fn outcome_count(&self, outcome: CacheOutcome) -> u64 {
        self.cache_requests
            .get_or_create(&OutcomeLabel { outcome })
            .get()
    }
}

/// The `registry` label for `name`.
pub fn registry_label(name: &str) -> RegistryLabel {
    RegistryLabel {
        registry: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        METRICS.evictions.inc();
        METRICS
            .upstream_bytes
            .get_or_create(&registry_label(OTHER_REGISTRY))
            .inc_by(5);
        let text = METRICS.encode();
        assert!(text.contains("ociregistry_cache_evictions_total"), "{text}");
        assert!(
            text.contains("ociregistry_upstream_bytes_total{registry=\"other\"} 5"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
