//! `GET/HEAD /v2/<name>/blobs/<digest>`: from the cache file, or following
//! the single upstream download of that digest as its bytes land.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use ociregistry_actors::coordinator::FetchBlob;
use ociregistry_actors::download::BlobSource;
use ociregistry_actors::metrics::{CacheOutcome, KindLabel, METRICS};
use ociregistry_actors::names::Digest;
use ociregistry_actors::storage::LookupBlob;

use super::within;
use crate::access_log::{Access, Outcome};
use crate::error::{api_version, ApiError, Content};
use crate::namespace::Target;
use crate::range;
use crate::state::{AppState, Policy};

/// Serves a blob, fetching it once from upstream when it is not cached.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    policy: &Policy,
    target: Target,
    digest: &str,
    access: &mut Access,
) -> Result<HttpResponse, ApiError> {
    let digest = Digest::parse(digest)?;
    let cached = state.storage.send(LookupBlob(digest.clone())).await?;
    let source = if let Some(blob) = cached {
        access.outcome = Outcome::Cache(CacheOutcome::Hit);
        let file = std::fs::File::open(&blob.path).map_err(|e| ApiError::Upstream {
            source: e.into(),
            content: Content::Blob,
        })?;
        BlobSource::complete(Arc::new(file), blob.size)
    } else {
        // Air-gapped, only a shared store may fill the local directory.
        let air_gapped = policy.air_gapped;
        let joined = state
            .coordinator
            .send(FetchBlob {
                registry: target.registry,
                repo: target.repo,
                digest: digest.clone(),
                upstream: !air_gapped,
            })
            .await?;
        let ready = within(policy, joined.value.ready(), Content::Blob).await;
        let source = ready.map_err(|e| match e {
            ApiError::Upstream {
                source: ociregistry_actors::error::FetchError::NotFound,
                ..
            } if air_gapped => ApiError::NotCached(Content::Blob),
            e => e,
        })?;
        // A request that joins a fetch whose bytes are all verified (the
        // fsync and indexing may still run) is answered from local bytes.
        access.outcome = Outcome::Cache(match (joined.joined, source.downloading()) {
            (false, _) => CacheOutcome::Miss,
            (true, true) => CacheOutcome::Coalesced,
            (true, false) => CacheOutcome::Hit,
        });
        source
    };
    respond(req, source, &digest)
}

/// A 200, or a 206 for a satisfiable single `Range`, streaming the blob.
fn respond(
    req: &HttpRequest,
    source: BlobSource,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    let mut res = HttpResponse::Ok();
    res.insert_header(api_version())
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header((header::ETAG, format!("\"{digest}\"")))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let head = req.method() == Method::HEAD;
    let Some(size) = source.size() else {
        // The upstream announced no length: stream chunked, whole.
        return Ok(if head {
            res.finish()
        } else {
            res.streaming(counted(source.stream(0, None)))
        });
    };
    let requested = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (start, end) = match requested.map(|r| range::parse(r, size)) {
        Some(Err(range::Unsatisfiable)) => return Err(ApiError::RangeNotSatisfiable { size }),
        Some(Ok(Some((start, end)))) => {
            res.status(StatusCode::PARTIAL_CONTENT).insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            ));
            (start, end)
        }
        Some(Ok(None)) | None => (0, size),
    };
    if head {
        // The HTTP layer sends no body for HEAD but keeps the declared length.
        return Ok(res.body(SizedStream::new(
            end - start,
            futures::stream::empty::<std::io::Result<Bytes>>(),
        )));
    }
    Ok(res.body(SizedStream::new(
        end - start,
        counted(source.stream(start, Some(end))),
    )))
}

/// Counts the bytes of a blob body as they are sent.
fn counted(
    body: impl Stream<Item = std::io::Result<Bytes>>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    let served = METRICS
        .served_bytes
        .get_or_create(&KindLabel { kind: "blob" })
        .clone();
    body.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            served.inc_by(bytes.len() as u64);
        }
    })
}
