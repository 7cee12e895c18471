//! The actors of ociregistry and the messages they answer.
//!
//! Layout:
//! - [`names`]: validated registry hosts, repository names, tags, digests.
//! - [`manifest`]: a fetched manifest and its verification.
//! - [`coordinator`]: **PullCoordinator**, single-flight for upstream fetches.
//! - [`download`]: one blob fetch as clients follow it, and the reader that
//!   streams a blob from its (possibly growing) cache file.
//! - [`ranged`]: the parallel `Range` requests of a large blob's fetch.
//! - [`storage`]: **Storage**, the on-disk cache and its in-memory index.
//! - [`upstream`]: **UpstreamRegistry**, one per upstream: client, TLS, auth.
//! - [`listing`]: tag lists and referrers, as asked of upstreams and kept.
//! - [`error`]: what a fetch can fail with.
//! - [`metrics`]: every Prometheus metric, in one registry.

pub mod coordinator;
pub mod download;
pub mod error;
pub mod listing;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod ranged;
pub mod storage;
pub mod upstream;
