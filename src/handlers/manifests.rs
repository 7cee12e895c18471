//! `GET/HEAD /v2/<name>/manifests/<reference>`.

use std::sync::Arc;

use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::coordinator::FetchManifest;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::Manifest;
use ociregistry_actors::metrics::{CacheOutcome, KindLabel, METRICS};
use ociregistry_actors::names::Reference;
use ociregistry_actors::storage::LookupManifest;

use super::within;
use crate::access_log::{Access, Outcome};
use crate::error::{api_version, ApiError, Content};
use crate::namespace::Target;
use crate::state::{AppState, Policy};

/// Serves a manifest from memory, or fetches it once from upstream.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    policy: &Policy,
    target: Target,
    reference: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    // Neither a tag nor a digest: no such manifest (the spec answers 404;
    // the upstream is not asked).
    let reference =
        Reference::parse(reference).map_err(|_| ApiError::BadReference(reference.to_string()))?;
    let cached = state
        .storage
        .send(LookupManifest {
            registry: target.registry.clone(),
            repo: target.repo.clone(),
            reference: reference.clone(),
        })
        .await?;
    // A cached tag past its TTL is revalidated: `stale` is what the cache
    // holds, served if the upstream cannot answer.
    let stale = match (cached, &reference) {
        (None, _) if policy.air_gapped => return Err(ApiError::NotCached(Content::Manifest)),
        (None, _) => None,
        (Some(c), Reference::Tag(tag)) if !policy.air_gapped => {
            let tags = policy.tags.for_tag(&target.registry, tag);
            if c.checked.is_some_and(|t| tags.is_fresh(t)) {
                access.outcome = Outcome::Cache(CacheOutcome::Hit);
                return respond(req, &c.manifest);
            }
            if tags.stale_while_revalidate {
                state.coordinator.do_send(fetch_message(
                    target,
                    reference,
                    Some(Arc::clone(&c.manifest)),
                ));
                access.outcome = Outcome::Cache(CacheOutcome::Stale);
                return respond(req, &c.manifest);
            }
            Some(c.manifest)
        }
        (Some(c), _) => {
            access.outcome = Outcome::Cache(CacheOutcome::Hit);
            return respond(req, &c.manifest);
        }
    };
    let fetch = fetch_message(target, reference, stale.clone());
    let fetched = async {
        state
            .coordinator
            .send(fetch)
            .await
            .map_err(FetchError::from)?
    };
    match (within(policy, fetched, Content::Manifest).await, stale) {
        (Ok(j), stale) => {
            access.outcome = Outcome::fetched(j.joined, stale.is_some());
            respond(req, &j.value)
        }
        (Err(e), Some(m)) => {
            slog::warn!(state.log, "serving a cached tag: the upstream could not revalidate it";
                "digest" => %m.digest, "error" => %e);
            access.outcome = Outcome::Cache(CacheOutcome::Stale);
            respond(req, &m)
        }
        (Err(e), None) => Err(e),
    }
}

/// The fetch of `reference` (upstream is always asked for every manifest
/// type: what is cached answers every client).
fn fetch_message(
    target: Target,
    reference: Reference,
    cached: Option<Arc<Manifest>>,
) -> FetchManifest {
    FetchManifest {
        registry: target.registry,
        repo: target.repo,
        reference,
        cached,
    }
}

/// Whether the request's `Accept` admits `media_type`: no `Accept` admits
/// everything; otherwise a listed type, `type/*` or `*/*` without `q=0`.
fn accepts(req: &HttpRequest, media_type: &str) -> bool {
    let mut ranges = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    ranges.any(|r| {
        let mut parts = r.split(';').map(str::trim);
        let range = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
            })
        });
        let kind = media_type.split('/').next().unwrap_or_default();
        let matches = range == "*/*"
            || range.eq_ignore_ascii_case(media_type)
            || range
                .strip_suffix("/*")
                .is_some_and(|t| t.eq_ignore_ascii_case(kind));
        matches && !refused
    })
}

/// The manifest's exact bytes with its media type and digest, if the
/// client accepts its type (never another document instead).
/// (For HEAD the HTTP layer sends the headers, `Content-Length` included, and no body.)
fn respond(req: &HttpRequest, m: &Arc<Manifest>) -> Result<HttpResponse, ApiError> {
    if !accepts(req, &m.media_type) {
        return Err(ApiError::NotAcceptable(m.media_type.clone()));
    }
    if req.method() == Method::GET {
        METRICS
            .served_bytes
            .get_or_create(&KindLabel { kind: "manifest" })
            .inc_by(m.bytes.len() as u64);
    }
    Ok(HttpResponse::Ok()
        .insert_header(api_version())
        .insert_header((header::CONTENT_TYPE, m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header((header::ETAG, format!("\"{}\"", m.digest)))
        .body(m.bytes.clone()))
}
