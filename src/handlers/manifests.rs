//! `GET/HEAD /v2/<name>/manifests/<reference>`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::coordinator::FetchManifest;
use ociregistry_actors::manifest::{Manifest, DEFAULT_ACCEPT};
use ociregistry_actors::names::Reference;
use ociregistry_actors::storage::LookupManifest;

use super::{api_version, within, AppState};
use crate::access_log::Access;
use crate::error::{ApiError, Content};
use crate::namespace::Target;

/// Serves a manifest from memory, or fetches it once from upstream.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    target: Target,
    reference: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let reference = Reference::parse(reference)?;
    let policy = &state.policy;
    let cached = state
        .storage
        .send(LookupManifest {
            registry: target.registry.clone(),
            repo: target.repo.clone(),
            reference: reference.clone(),
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let revalidate = policy.always_pull_latest
        && matches!(&reference, Reference::Tag(t) if t.as_str() == "latest");
    match cached {
        Some(m) if !revalidate || policy.air_gapped => {
            access.outcome = "hit";
            return Ok(respond(&m));
        }
        None if policy.air_gapped => return Err(ApiError::NotCached(Content::Manifest)),
        _ => {}
    }
    let accept = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let fetch = FetchManifest {
        registry: target.registry,
        repo: target.repo,
        reference,
        accept: if accept.is_empty() {
            DEFAULT_ACCEPT.to_string()
        } else {
            accept
        },
    };
    let fetched = async {
        state
            .coordinator
            .send(fetch)
            .await
            .map_err(|e| ociregistry_actors::error::FetchError::Storage(e.to_string()))?
    };
    match (within(policy, fetched, Content::Manifest).await, cached) {
        (Ok(j), _) => {
            access.outcome = if j.joined { "coalesced" } else { "miss" };
            Ok(respond(&j.value))
        }
        (Err(e), Some(m)) => {
            slog::warn!(state.log, "serving cached manifest, upstream failed"; "digest" => %m.digest, "error" => %e);
            access.outcome = "stale";
            Ok(respond(&m))
        }
        (Err(e), None) => Err(e),
    }
}

/// The manifest's exact bytes with its media type and digest.
/// (For HEAD the HTTP layer sends the headers, `Content-Length` included, and no body.)
fn respond(m: &Arc<Manifest>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(api_version())
        .insert_header((header::CONTENT_TYPE, m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header((header::ETAG, format!("\"{}\"", m.digest)))
        .body(m.bytes.clone())
}
