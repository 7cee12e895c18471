//! HTTP handlers of the pull side of the distribution API. One entry point,
//! [`dispatch`], refuses writes, routes the path and turns every error into
//! an OCI error response.

mod blobs;
mod catalog;
mod listing;
mod manifests;
mod pagination;
mod referrers;
mod tags;

use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use ociregistry_actors::metrics::{OutcomeLabel, METRICS};

use crate::access_log::{Access, RequestId};
use crate::error::{api_version, ApiError};
use crate::namespace::{self, Target};
use crate::route::{self, Route};
use crate::state::{AppState, Policy};

/// Answers every request under the server's root.
pub async fn dispatch(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut access = Access::default();
    let mut res = match route_request(&req, &state, &mut access).await {
        Ok(res) => res,
        Err(e) => {
            access.outcome = e.outcome();
            if e.status_code().is_server_error() {
                let id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
                slog::warn!(state.log, "request failed"; "path" => %req.uri(), "error" => %e,
                    "request_id" => id.unwrap_or_default());
            }
            e.error_response()
        }
    };
    if let Some(outcome) = access.outcome.cache() {
        METRICS
            .cache_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-cache"),
            actix_web::http::header::HeaderValue::from_static(outcome.header()),
        );
    }
    res.extensions_mut().insert(access);
    res
}

/// Routes one request.
async fn route_request(
    req: &HttpRequest,
    state: &AppState,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let route = route::parse(req.uri().path());
    access.route = Some(route.label());
    // Endpoints this mirror does not offer serve no method, GET included.
    let allow = match route {
        Route::Unsupported(_) => "",
        _ => "GET, HEAD",
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::Unsupported {
            why: "this registry is pull-only: only GET and HEAD are served",
            allow,
        });
    }
    // One policy for the whole request, however a reload goes meanwhile.
    let policy = &state.policy();
    let mut target = |name: &str| -> Result<Target, ApiError> {
        let ns = web::Query::<NsQuery>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.into_inner().ns);
        let t = namespace::resolve(name, ns.as_deref(), policy.default_ns.as_ref())?;
        access.registry = Some(t.registry.to_string());
        if !policy.listed.contains(&t.registry) && !policy.hosts.permits(&t.registry) {
            METRICS.guard_refusals.inc();
            return Err(ApiError::RegistryNotAllowed(t.registry.to_string()));
        }
        Ok(t)
    };
    match route {
        Route::Base => Ok(HttpResponse::Ok()
            .insert_header(api_version())
            .json(serde_json::json!({}))),
        Route::Manifest { name, reference } => {
            let target = target(name)?;
            manifests::serve(req, state, policy, target, reference, access).await
        }
        Route::Blob { name, digest } => {
            let target = target(name)?;
            blobs::serve(req, state, policy, target, digest, access).await
        }
        Route::Health => Ok(crate::probes::health()),
        Route::Ready => crate::probes::ready(state).await,
        Route::Catalog => catalog::serve(req, policy, state).await,
        Route::Tags { name } => {
            let target = target(name)?;
            tags::serve(req, state, policy, target, name, access).await
        }
        Route::Referrers { name, digest } => {
            let target = target(name)?;
            referrers::serve(req, state, policy, target, digest, access).await
        }
        Route::Unsupported(why) => Err(ApiError::Unsupported { why, allow }),
        Route::Unknown => Err(ApiError::UnknownEndpoint),
    }
}

/// The query parameters this server reads.
#[derive(Debug, serde::Deserialize)]
struct NsQuery {
    /// The registry containerd asks the mirror to pull from.
    ns: Option<String>,
}

/// Waits for an upstream answer no longer than the pull timeout.
async fn within<T>(
    policy: &Policy,
    fut: impl std::future::Future<Output = Result<T, ociregistry_actors::error::FetchError>>,
    content: crate::error::Content,
) -> Result<T, ApiError> {
    match tokio::time::timeout(policy.pull_timeout, fut).await {
        Ok(r) => r.map_err(|source| ApiError::Upstream { source, content }),
        Err(_) => Err(ApiError::PullTimeout(policy.pull_timeout.as_millis() as u64)),
    }
}
