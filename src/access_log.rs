//! One access line per request (method, path and query, status, time to
//! response headers, client address, registry, cache outcome, request id),
//! the request counters of the metrics, and the `X-Request-Id` header.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use ociregistry_actors::metrics::{CacheOutcome, HttpLabels, METRICS};

/// Requests served since start.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Distinguishes this process's request ids from those of earlier runs.
static PROCESS: LazyLock<u32> = LazyLock::new(|| {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32)
});

/// What a handler tells the access log about its request.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The upstream registry the request was for.
    pub registry: Option<String>,
    /// How it was answered.
    pub outcome: Outcome,
    /// The endpoint's metrics label ([`crate::route::Route::label`]).
    pub route: Option<&'static str>,
}

/// How a request was answered, as its access line says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not a manifest or blob answer (the API root, probes, refusals).
    #[default]
    None,
    /// From the cache ([`CacheOutcome`]).
    Cache(CacheOutcome),
    /// A cached tag the upstream confirmed, or moved, just now (a hit).
    Revalidated,
    /// The upstream failed or did not answer in time.
    UpstreamError,
    /// Any other error.
    Error,
}

impl Outcome {
    /// The access line's `cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Cache(c) => c.label(),
            Self::Revalidated => "revalidated",
            Self::UpstreamError => "upstream-error",
            Self::Error => "error",
        }
    }

    /// For answers with content: `X-Cache` and the cache metrics' outcome.
    pub fn cache(self) -> Option<CacheOutcome> {
        match self {
            Self::Cache(c) => Some(c),
            Self::Revalidated => Some(CacheOutcome::Hit),
            Self::None | Self::UpstreamError | Self::Error => None,
        }
    }

    /// The outcome of a request answered by an upstream fetch: `joined`
    /// one already in flight, or revalidating what the cache held.
    pub fn fetched(joined: bool, cached: bool) -> Self {
        match (joined, cached) {
            (true, _) => Self::Cache(CacheOutcome::Coalesced),
            (false, true) => Self::Revalidated,
            (false, false) => Self::Cache(CacheOutcome::Miss),
        }
    }
}

/// The id of one request: in its access line, its error lines and its
/// `X-Request-Id` response header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The next id.
    fn next() -> Self {
        let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
        Self(format!("{:08x}-{n:x}", *PROCESS))
    }
}

/// Middleware body: logs after the handler produced its response head.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = RequestId::next();
    req.extensions_mut().insert(id.clone());
    let log = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|s| s.log.clone());
    let method = req.method().clone();
    let path = req.uri().to_string();
    let client = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut res = next.call(req).await?;
    let status = res.status();
    let access = res
        .response()
        .extensions()
        .get::<Access>()
        .cloned()
        .unwrap_or_default();
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            route: access.route.unwrap_or("other"),
            method: method_label(&method),
            status: status_class(status),
        })
        .inc();
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(log) = log {
        slog::info!(log, "request";
            "method" => %method,
            "path" => path,
            "status" => status.as_u16(),
            "ms" => started.elapsed().as_millis() as u64,
            "client" => client,
            "registry" => access.registry.unwrap_or_default(),
            "cache" => access.outcome.as_str(),
            "request_id" => id.0);
    }
    Ok(res)
}

/// The metrics label of a method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// `2xx`, `4xx`...
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
