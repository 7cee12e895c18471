//! One access line per request: method, path and query, status, time to
//! response headers, client address, registry and cache outcome.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// What a handler tells the access log about its request.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The upstream registry the request was for.
    pub registry: Option<String>,
    /// `hit`, `miss`, `coalesced`, `upstream-error`, `error`.
    pub outcome: &'static str,
}

/// Middleware body: logs after the handler produced its response head.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let log = req
        .app_data::<actix_web::web::Data<crate::handlers::AppState>>()
        .map(|s| s.log.clone());
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let client = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let res = next.call(req).await?;
    if let Some(log) = log {
        let access = res
            .response()
            .extensions()
            .get::<Access>()
            .cloned()
            .unwrap_or_default();
        slog::info!(log, "request";
            "method" => method,
            "path" => path,
            "status" => res.status().as_u16(),
            "ms" => started.elapsed().as_millis() as u64,
            "client" => client,
            "registry" => access.registry.unwrap_or_default(),
            "cache" => access.outcome);
    }
    Ok(res)
}
