//! Liveness, readiness and the Prometheus metrics: the handlers behind
//! `/health` and `/ready` (on the registry port and the health port) and
//! `/metrics` (on the metrics port).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use ociregistry_actors::metrics::METRICS;
use ociregistry_actors::storage::GetStats;

use crate::error::ApiError;
use crate::route::{self, Route};
use crate::state::AppState;

/// `/health`: the process answers.
pub fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `/ready`: the cache index is loaded and the Storage actor answers. A
/// full or read-only disk, or a shared store that fails, does not make the
/// server unready: cached content is still served (write failures are
/// counted in the metrics; the store's state is in the body, `cache.store`).
///
/// From the start of a shutdown it answers 503 `{"status": "stopping"}`,
/// while the server still serves for `shutdownDelay`.
pub async fn ready(state: &AppState) -> Result<HttpResponse, ApiError> {
    if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "stopping"}))
        );
    }
    let stats = state.storage.send(GetStats { images: false }).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "cache": stats})))
}

/// The health port's only handler: `/health` and `/ready`, 404 otherwise.
pub async fn probe(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match route::parse(req.path()) {
        Route::Health => health(),
        Route::Ready => ready(&state).await.unwrap_or_else(|e| e.error_response()),
        _ => ApiError::UnknownEndpoint.error_response(),
    }
}

/// `GET /metrics`: the cache gauges are read from the Storage actor, then
/// every metric is encoded (OpenMetrics text).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(stats) = state.storage.send(GetStats { images: false }).await {
        METRICS.cache_blobs.set(stats.blobs as i64);
        METRICS.cache_manifests.set(stats.manifests as i64);
        METRICS.cache_bytes.set(stats.bytes as i64);
    }
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
        .body(METRICS.encode())
}
