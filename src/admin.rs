//! The admin API, on its own listener (never the registry port): list
//! images and the tag history, prune, and statistics. When a token is
//! configured, every request must carry `Authorization: Bearer <token>`.

use actix::Addr;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use ociregistry_actors::coordinator::{PullCoordinator, UpstreamsHealth};
use ociregistry_actors::metrics::{CacheOutcome, METRICS};
use ociregistry_actors::storage::{GetStats, History, ListImages, Prune, Storage};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::prune::PruneSpec;

/// What the admin handlers need.
pub struct AdminState {
    /// The cache.
    pub storage: Addr<Storage>,
    /// Upstream fetches (for upstream health).
    pub coordinator: Addr<PullCoordinator>,
    /// The bearer token required, if any.
    pub token: Option<String>,
}

/// The admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/images", web::get().to(images))
        .route("/admin/images/history", web::get().to(history))
        .route("/admin/prune", web::post().to(prune))
        .route("/admin/stats", web::get().to(stats));
}

/// A JSON error.
fn error(status: actix_web::http::StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.to_string() }))
}

/// Middleware: refuses requests without the configured bearer token
/// (compared in constant time).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AdminState>>()
        .and_then(|s| s.token.clone());
    let Some(token) = expected else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Digests compared in constant time: neither the content nor the
    // length of the token leaks through timing.
    let (given, token) = (Sha256::digest(given), Sha256::digest(token));
    let same = given
        .iter()
        .zip(token.iter())
        .fold(0, |acc, (a, b)| acc | (a ^ b))
        == 0;
    if same {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let refusal = HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer"))
        .json(serde_json::json!({ "error": "a valid bearer token is required" }));
    Ok(req.into_response(refusal).map_into_right_body())
}

/// `?pattern=REGEX`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only images whose name matches.
    pattern: Option<String>,
}

async fn images(state: web::Data<AdminState>, q: web::Query<ListQuery>) -> HttpResponse {
    let pattern = match q.pattern.as_deref().map(Regex::new).transpose() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match state.storage.send(ListImages(pattern)).await {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn history(state: web::Data<AdminState>) -> HttpResponse {
    match state.storage.send(History).await {
        Ok(Ok(records)) => HttpResponse::Ok().json(records),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The prune body: a [`PruneSpec`] whose `dryRun` defaults to true here.
async fn prune(state: web::Data<AdminState>, body: web::Json<serde_json::Value>) -> HttpResponse {
    let mut body = body.into_inner();
    if let Some(map) = body.as_object_mut() {
        if !map.contains_key("dryRun") && !map.contains_key("dryrun") {
            map.insert("dryRun".into(), true.into());
        }
    }
    let spec: PruneSpec = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let by = match spec.by() {
        Ok(by) => by,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let msg = Prune {
        by,
        count: spec.count,
        dry_run: spec.dry_run,
    };
    match state.storage.send(msg).await {
        Ok(Ok(report)) => HttpResponse::Ok().json(report),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn stats(state: web::Data<AdminState>) -> HttpResponse {
    let cache = match state.storage.send(GetStats { images: true }).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let upstreams = state
        .coordinator
        .send(UpstreamsHealth)
        .await
        .unwrap_or_default();
    let [hits, misses, coalesced, stale] = CacheOutcome::ALL.map(|o| METRICS.outcome_count(o));
    let served = hits + misses + coalesced + stale;
    let ratio = if served == 0 {
        0.0
    } else {
        (hits + stale) as f64 / served as f64
    };
    HttpResponse::Ok().json(serde_json::json!({
        "cache": cache,
        "requests": {"hits": hits, "misses": misses, "coalesced": coalesced, "stale": stale},
        "hitRatio": ratio,
        "upstreams": upstreams,
    }))
}
