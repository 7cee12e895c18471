//! `GET /v2/<name>/referrers/<digest>[?artifactType=]`: the upstream's
//! referrers index of a manifest, kept fresh like tags (`listing.rs`) and
//! served byte-exact, or filtered here by `artifactType` (with
//! `OCI-Filters-Applied`: the cache keeps the whole index, so every filter
//! is applied by this mirror, also on cached and offline answers). An
//! upstream without the referrers API, or none to ask and none kept: 404,
//! so clients fall back to the tag schema (`sha256-<hex>` tags, ordinary
//! manifests here).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ociregistry_actors::error::FetchError;
use ociregistry_actors::listing::{filter_referrers, Listed, ListingKey};
use ociregistry_actors::manifest::OCI_INDEX;
use ociregistry_actors::names::Digest;

use super::listing;
use crate::access_log::Access;
use crate::error::{api_version, ApiError, Content};
use crate::namespace::Target;
use crate::state::{AppState, Policy};

/// Answers the referrers of `digest` in `target`.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    policy: &Policy,
    target: Target,
    digest: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let subject = Digest::parse(digest)?;
    // Each `artifactType` sent: entries of any of them are kept.
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let wanted: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "artifactType")
        .map(|(_, v)| v)
        .collect();
    let key = ListingKey {
        registry: target.registry,
        repo: target.repo,
        listed: Listed::Referrers(subject),
    };
    let body = match listing::get(state, policy, key, access).await? {
        Some(listing) if !listing.body.is_empty() => listing.body,
        _ => {
            return Err(ApiError::Upstream {
                source: FetchError::NotFound,
                content: Content::Manifest,
            })
        }
    };
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version())
        .insert_header((header::CONTENT_TYPE, OCI_INDEX));
    let body = match wanted.is_empty() {
        true => body,
        false => {
            res.insert_header(("OCI-Filters-Applied", "artifactType"));
            filter_referrers(&body, &wanted)
        }
    };
    Ok(res.body(body))
}
