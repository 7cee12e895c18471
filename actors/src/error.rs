//! The errors the actors hand back to the HTTP layer.
//!
//! `FetchError` is `Clone` because one upstream fetch answers many waiting
//! clients: every waiter receives the same error value.

use crate::names::Digest;

/// Why a manifest or blob could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The upstream (or the cache, when no upstream may be asked) has no such content.
    #[error("not found upstream")]
    NotFound,
    /// The upstream asked for credentials that were missing or wrong.
    #[error("upstream refused the credentials (401)")]
    Unauthorized,
    /// The upstream refused access (403).
    #[error("upstream denied access (403)")]
    Denied,
    /// The upstream rate-limited us (429); `retry_after` is its `Retry-After`.
    #[error("upstream rate limit (429)")]
    TooManyRequests {
        /// The upstream's `Retry-After` header, passed through to the client.
        retry_after: Option<String>,
    },
    /// No endpoint of the upstream could be reached (connect, TLS, DNS, 5xx).
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream did not start answering within the configured time,
    /// or a body stalled longer than the idle timeout.
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// The bytes received do not hash to the digest they were asked by or announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content must have.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// The upstream answered something this server will not store
    /// (oversize manifest, wrong length, unexpected status).
    #[error("bad upstream response: {0}")]
    BadResponse(String),
    /// The upstream guard refused a connection for a registry a client
    /// chose (a denied host or network, for the registry, a redirect or
    /// its token realm). What was refused is logged, never shown.
    #[error("refused by the upstream guard: this mirror does not connect there for registries it does not list (upstreams.deny, upstreams.denyNetworks)")]
    Guarded,
    /// The cache could not be written or read (an I/O error: disk full,
    /// permissions).
    #[error("storage: {0}")]
    Storage(String),
    /// A task of this server ended before answering (a bug, or a panic in it).
    #[error("internal: {0}")]
    Internal(String),
    /// Too many upstream fetches are in flight (in all, or for this
    /// registry); the client may retry shortly.
    #[error("too many upstream fetches in flight ({0}); retry shortly")]
    Busy(&'static str),
    /// An internal actor is gone: the server is stopping.
    #[error("server shutting down")]
    Stopping,
}

impl From<actix::MailboxError> for FetchError {
    fn from(_: actix::MailboxError) -> Self {
        Self::Stopping
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
