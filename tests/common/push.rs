//! Uploading blobs, manifests and whole test images with the OCI
//! distribution push API.

use awc::http::header;
use bytes::Bytes;

use super::image::{Blob, TestImage, TestIndex};

/// Status, `Location` header and body of a registry reply.
struct Reply {
    status: u16,
    location: Option<String>,
    body: Bytes,
}

/// Sends `request` (with `body`, if any) and collects the reply; panics on
/// transport errors.
async fn send(request: awc::ClientRequest, body: Option<Vec<u8>>, what: &str) -> Reply {
    let sent = match body {
        Some(body) => request.send_body(body).await,
        None => request.send().await,
    };
    let mut response = sent.unwrap_or_else(|e| panic!("{what}: {e}"));
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
    Reply {
        status: response.status().as_u16(),
        location,
        body,
    }
}

fn expect_status(reply: &Reply, expected: u16, what: &str) {
    assert_eq!(
        reply.status,
        expected,
        "{what}: unexpected status, body: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

/// Uploads `blob` to `repo` (monolithic POST + PUT upload).
pub async fn push_blob(client: &awc::Client, registry_url: &str, repo: &str, blob: &Blob) {
    let start = format!("{registry_url}/v2/{repo}/blobs/uploads/");
    let what = format!("POST {start}");
    let reply = send(client.post(start.as_str()), None, &what).await;
    expect_status(&reply, 202, &what);
    let location = reply
        .location
        .unwrap_or_else(|| panic!("{what}: 202 without Location"));
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else if location.starts_with('/') {
        format!("{registry_url}{location}")
    } else {
        format!("{registry_url}/{location}")
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&blob.digest);
    let what = format!("PUT {url}");
    let request = client
        .put(url.as_str())
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"));
    let reply = send(request, Some(blob.bytes.clone()), &what).await;
    expect_status(&reply, 201, &what);
}

/// Uploads a manifest (or index) under `reference`, a tag or digest.
pub async fn put_manifest(
    client: &awc::Client,
    registry_url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) {
    let url = format!("{registry_url}/v2/{repo}/manifests/{reference}");
    let what = format!("PUT {url}");
    let request = client
        .put(url.as_str())
        .insert_header((header::CONTENT_TYPE, media_type));
    let reply = send(request, Some(bytes.to_vec()), &what).await;
    expect_status(&reply, 201, &what);
}

/// Pushes the blobs of `img`, then its manifest as `repo:tag`.
pub async fn push_image(
    client: &awc::Client,
    registry_url: &str,
    repo: &str,
    tag: &str,
    img: &TestImage,
) {
    for blob in img.blobs() {
        push_blob(client, registry_url, repo, blob).await;
    }
    put_manifest(
        client,
        registry_url,
        repo,
        tag,
        &img.media_type,
        &img.manifest,
    )
    .await;
}

/// Pushes every image of `index` by digest, then the index as `repo:tag`.
pub async fn push_index(
    client: &awc::Client,
    registry_url: &str,
    repo: &str,
    tag: &str,
    index: &TestIndex,
) {
    for img in &index.images {
        push_image(client, registry_url, repo, &img.manifest_digest, img).await;
    }
    put_manifest(
        client,
        registry_url,
        repo,
        tag,
        &index.media_type,
        &index.bytes,
    )
    .await;
}
