//! `GET /v2/_catalog[?n=&last=]`: the repositories in the cache,
//! registry-qualified as the in-path form names them
//! (`docker.io/library/alpine`), sorted and paginated as the distribution
//! spec says; off with `catalog: false`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::storage::Repositories;

use super::pagination::{cut, Query, MAX_PAGE};
use crate::error::{api_version, ApiError};
use crate::state::{AppState, Policy};

/// Answers the catalog.
pub async fn serve(
    req: &HttpRequest,
    policy: &Policy,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    if !policy.catalog {
        return Err(ApiError::Unsupported {
            why: "the catalog is switched off on this mirror (catalog: false)",
            allow: "",
        });
    }
    let query = Query::parse(req.query_string())?;
    let n = query.count()?;
    let all = state.storage.send(Repositories).await?;
    let (shown, more) = cut(&all, n, query.last.as_deref(), String::as_str);
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version());
    if let (Some(last), true) = (shown.last(), more) {
        let n = n.unwrap_or(MAX_PAGE);
        let next = format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"");
        res.insert_header((header::LINK, next));
    }
    Ok(res.json(serde_json::json!({ "repositories": shown })))
}
