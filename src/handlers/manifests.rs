//! `GET/HEAD /v2/<name>/manifests/<reference>`.

use std::sync::Arc;

use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::coordinator::FetchManifest;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::{Manifest, DEFAULT_ACCEPT};
use ociregistry_actors::metrics::{KindLabel, METRICS};
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
    // A cached tag past its TTL is revalidated: `stale` is what the cache
    // holds, served if the upstream cannot answer.
    let stale = match (cached, &reference) {
        (None, _) if policy.air_gapped => return Err(ApiError::NotCached(Content::Manifest)),
        (None, _) => None,
        (Some(c), Reference::Tag(tag)) if !policy.air_gapped => {
            let tags = policy.tags.for_tag(&target.registry, tag);
            if c.checked.is_some_and(|t| tags.is_fresh(t)) {
                access.outcome = "hit";
                return Ok(respond(req, &c.manifest));
            }
            if tags.stale_while_revalidate {
                state.coordinator.do_send(fetch_message(
                    req,
                    target,
                    reference,
                    Some(Arc::clone(&c.manifest)),
                ));
                access.outcome = "stale";
                return Ok(respond(req, &c.manifest));
            }
            Some(c.manifest)
        }
        (Some(c), _) => {
            access.outcome = "hit";
            return Ok(respond(req, &c.manifest));
        }
    };
    let fetch = fetch_message(req, target, reference, stale.clone());
    let fetched = async {
        state
            .coordinator
            .send(fetch)
            .await
            .map_err(|e| FetchError::Storage(e.to_string()))?
    };
    match (within(policy, fetched, Content::Manifest).await, stale) {
        (Ok(j), stale) => {
            access.outcome = match (j.joined, stale) {
                (true, _) => "coalesced",
                (false, Some(_)) => "revalidated",
                (false, None) => "miss",
            };
            Ok(respond(req, &j.value))
        }
        (Err(e), Some(m)) => {
            slog::warn!(state.log, "serving a cached tag: the upstream could not revalidate it";
                "digest" => %m.digest, "error" => %e);
            access.outcome = "stale";
            Ok(respond(req, &m))
        }
        (Err(e), None) => Err(e),
    }
}

/// The fetch of `reference` with the client's `Accept` (or every manifest type).
fn fetch_message(
    req: &HttpRequest,
    target: Target,
    reference: Reference,
    cached: Option<Arc<Manifest>>,
) -> FetchManifest {
    let accept = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    FetchManifest {
        registry: target.registry,
        repo: target.repo,
        reference,
        accept: if accept.is_empty() {
            DEFAULT_ACCEPT.to_string()
        } else {
            accept
        },
        cached,
    }
}

/// The manifest's exact bytes with its media type and digest.
/// (For HEAD the HTTP layer sends the headers, `Content-Length` included, and no body.)
fn respond(req: &HttpRequest, m: &Arc<Manifest>) -> HttpResponse {
    if req.method() == Method::GET {
        METRICS
            .served_bytes
            .get_or_create(&KindLabel { kind: "manifest" })
            .inc_by(m.bytes.len() as u64);
    }
    HttpResponse::Ok()
        .insert_header(api_version())
        .insert_header((header::CONTENT_TYPE, m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header((header::ETAG, format!("\"{}\"", m.digest)))
        .body(m.bytes.clone())
}
