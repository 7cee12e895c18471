//! `GET /v2/_catalog[?n=&last=]`: the repositories in the cache,
//! registry-qualified as the in-path form names them
//! (`docker.io/library/alpine`), sorted and paginated as the distribution
//! spec says; off with `catalog: false`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ociregistry_actors::storage::Repositories;

use crate::error::{api_version, ApiError};
use crate::state::AppState;

/// Most repositories in one answer, whatever `n` asks.
const MAX_PAGE: usize = 10_000;

/// The pagination parameters, as sent.
#[derive(Debug, serde::Deserialize)]
struct Page {
    /// Most entries.
    n: Option<String>,
    /// Entries after this one.
    last: Option<String>,
}

/// Answers the catalog.
pub async fn serve(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    if !state.policy().catalog {
        return Err(ApiError::Unsupported {
            why: "the catalog is switched off on this mirror (catalog: false)",
            allow: "",
        });
    }
    let page = web::Query::<Page>::from_query(req.query_string())
        .map_err(|_| ApiError::PaginationInvalid("unreadable query".into()))?
        .into_inner();
    let n = match page.n.as_deref() {
        None => MAX_PAGE,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| ApiError::PaginationInvalid(format!("n={n:?} is not a count")))?
            .min(MAX_PAGE),
    };
    let all = state.storage.send(Repositories).await?;
    let after =
        all.partition_point(|r| page.last.as_deref().is_some_and(|last| r.as_str() <= last));
    let rest = &all[after..];
    let shown = &rest[..n.min(rest.len())];
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version());
    if let (Some(last), true) = (shown.last(), rest.len() > shown.len()) {
        let next = format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"");
        res.insert_header((header::LINK, next));
    }
    Ok(res.json(serde_json::json!({ "repositories": shown })))
}
