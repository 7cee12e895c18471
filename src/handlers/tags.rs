//! `GET /v2/<name>/tags/list[?n=&last=]`: forwarded to the upstream, one
//! page at a time, with the next page's `Link` pointing back at this
//! mirror in the form the client used, each page in lexical order; when
//! the upstream cannot be asked
//! (air-gapped, unreachable, timed out), the tags the cache knows for that
//! repository, sorted and paginated here, with `X-Cache: STALE`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use ociregistry_actors::coordinator::ListUpstreamTags;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::metrics::CacheOutcome;
use ociregistry_actors::names::Tag;
use ociregistry_actors::storage::CachedTags;
use ociregistry_actors::upstream::{ListTags, TagPage};

use super::pagination::{cut, Query};
use super::within;
use crate::access_log::{Access, Outcome};
use crate::error::{api_version, ApiError, Content};
use crate::namespace::Target;
use crate::state::AppState;

/// Answers one page of `target`'s tags; `name` is the repository as the
/// client named it.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    target: Target,
    name: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string())?;
    let n = query.count()?;
    let last = query.last.as_deref().map(Tag::parse).transpose()?;
    let policy = state.policy();
    let asked = match policy.air_gapped {
        true => Err(ApiError::NotCached(Content::Manifest)),
        false => {
            let list = ListTags {
                repo: target.repo.clone(),
                n,
                last: last.clone(),
            };
            let fut = state.coordinator.send(ListUpstreamTags {
                registry: target.registry.clone(),
                list,
            });
            let flat = async { fut.await.map_err(FetchError::from)? };
            within(&policy, flat, Content::Manifest).await
        }
    };
    let page = match asked {
        Ok(mut upstream) => {
            access.outcome = Outcome::Cache(CacheOutcome::Miss);
            // In lexical order, as the spec says, and paginated here too:
            // upstreams that ignore `n` and `last` send everything.
            upstream.tags.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            let page = paginate(upstream.tags, n, last.as_ref());
            TagPage {
                more: page.more || upstream.more,
                ..page
            }
        }
        Err(e) if offline(&e) => {
            access.outcome = Outcome::Cache(CacheOutcome::Stale);
            let known = state
                .storage
                .send(CachedTags {
                    registry: target.registry.clone(),
                    repo: target.repo.clone(),
                })
                .await?;
            paginate(known, n, last.as_ref())
        }
        Err(e) => return Err(e),
    };
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version());
    if let (Some(n), Some(last), true) = (n, page.tags.last(), page.more) {
        let ns = query.ns.map(|ns| format!("&ns={ns}")).unwrap_or_default();
        let next = format!("</v2/{name}/tags/list?n={n}&last={last}{ns}>; rel=\"next\"");
        res.insert_header((header::LINK, next));
    }
    let tags: Vec<&str> = page.tags.iter().map(Tag::as_str).collect();
    Ok(res.json(serde_json::json!({ "name": name, "tags": tags })))
}

/// Whether `e` means the upstream could not be asked, so that what the
/// cache knows answers instead.
fn offline(e: &ApiError) -> bool {
    match e {
        ApiError::NotCached(_) | ApiError::PullTimeout(_) => true,
        ApiError::Upstream { source, .. } => matches!(
            source,
            FetchError::Unreachable(_) | FetchError::Timeout(_) | FetchError::Busy(_)
        ),
        _ => false,
    }
}

/// The page of sorted `tags` after `last`, at most `n` long.
fn paginate(tags: Vec<Tag>, n: Option<usize>, last: Option<&Tag>) -> TagPage {
    let (shown, more) = cut(&tags, n, last.map(Tag::as_str), Tag::as_str);
    TagPage {
        tags: shown.to_vec(),
        more,
    }
}
