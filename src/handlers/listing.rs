//! Listings (tag lists, referrers) kept fresh like tags: from the cache
//! while fresh under the registry's tag policy (`tagTtl`,
//! `staleWhileRevalidate`), else asked of the upstream once for every
//! client asking at once; when the upstream cannot answer, the listing the
//! cache kept (`X-Cache: STALE`).

use ociregistry_actors::coordinator::FetchListing;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::listing::{Listing, ListingKey};
use ociregistry_actors::metrics::CacheOutcome;
use ociregistry_actors::storage::LookupListing;

use super::within;
use crate::access_log::{Access, Outcome};
use crate::error::{ApiError, Content};
use crate::state::{AppState, Policy};

/// The listing of `key`; `None` when the upstream cannot be asked (or
/// cannot be reached) and the cache has none.
pub async fn get(
    state: &AppState,
    policy: &Policy,
    key: ListingKey,
    access: &mut Access,
) -> Result<Option<Listing>, ApiError> {
    let cached = state.storage.send(LookupListing(key.clone())).await?;
    if policy.air_gapped {
        access.outcome = Outcome::Cache(CacheOutcome::Stale);
        return Ok(cached);
    }
    let tags = policy.tags.for_registry(&key.registry);
    if let Some(c) = &cached {
        if tags.is_fresh(c.seen) {
            access.outcome = Outcome::Cache(CacheOutcome::Hit);
            return Ok(cached);
        }
        if tags.stale_while_revalidate {
            state.coordinator.do_send(FetchListing(key));
            access.outcome = Outcome::Cache(CacheOutcome::Stale);
            return Ok(cached);
        }
    }
    let fetched = async {
        let fut = state.coordinator.send(FetchListing(key));
        fut.await.map_err(FetchError::from)?
    };
    match within(policy, fetched, Content::Manifest).await {
        Ok(j) => {
            access.outcome = Outcome::fetched(j.joined, cached.is_some());
            Ok(Some(j.value))
        }
        Err(e) if cached.is_some() => {
            slog::warn!(state.log, "serving a cached listing: the upstream could not answer";
                "error" => %e);
            access.outcome = Outcome::Cache(CacheOutcome::Stale);
            Ok(cached)
        }
        Err(e) if offline(&e) => {
            access.outcome = Outcome::Cache(CacheOutcome::Stale);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether `e` means the upstream could not be asked.
fn offline(e: &ApiError) -> bool {
    match e {
        ApiError::PullTimeout(_) => true,
        ApiError::Upstream { source, .. } => matches!(
            source,
            FetchError::Unreachable(_) | FetchError::Timeout(_) | FetchError::Busy(_)
        ),
        _ => false,
    }
}
