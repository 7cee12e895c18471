//! `GET /v2/<name>/tags/list[?n=&last=]`: the upstream's whole list (all
//! its pages), kept fresh like tags (`listing.rs`), in lexical order and
//! paginated here, the next page's `Link` pointing back at this mirror in
//! the form the client used; when the upstream cannot be asked and never
//! answered (air-gapped, unreachable, timed out), the tags the cache knows
//! for that repository, with `X-Cache: STALE`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::listing::{tags_of, Listed, ListingKey};
use ociregistry_actors::names::Tag;
use ociregistry_actors::storage::CachedTags;

use super::listing;
use super::pagination::{cut, Query};
use crate::access_log::Access;
use crate::error::{api_version, ApiError};
use crate::namespace::Target;
use crate::state::{AppState, Policy};

/// Answers one page of `target`'s tags; `name` is the repository as the
/// client named it.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    policy: &Policy,
    target: Target,
    name: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let n = query.count()?;
    let last = query.last.as_deref().map(Tag::parse).transpose()?;
    let key = ListingKey {
        registry: target.registry.clone(),
        repo: target.repo.clone(),
        listed: Listed::Tags,
    };
    let tags = match listing::get(state, policy, key, access).await? {
        Some(listing) => tags_of(&listing.body),
        None => {
            let known = CachedTags {
                registry: target.registry,
                repo: target.repo,
            };
            state.storage.send(known).await?
        }
    };
    let (shown, more) = cut(&tags, n, last.as_ref().map(Tag::as_str), Tag::as_str);
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version());
    if let (Some(n), Some(last), true) = (n, shown.last(), more) {
        let ns = query.ns.map(|ns| format!("&ns={ns}")).unwrap_or_default();
        let next = format!("</v2/{name}/tags/list?n={n}&last={last}{ns}>; rel=\"next\"");
        res.insert_header((header::LINK, next));
    }
    let tags: Vec<&str> = shown.iter().map(Tag::as_str).collect();
    Ok(res.json(serde_json::json!({ "name": name, "tags": tags })))
}
