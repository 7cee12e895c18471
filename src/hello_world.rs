//! A tiny embedded image, `docker.io/library/hello-world:latest`: an OCI
//! index over linux/amd64 and linux/arm64 images, each with one small
//! uncompressed tar layer. It lets the server show its work with no upstream.

use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::Manifest;
use ociregistry_actors::names::{Digest, RegistryName, RepoName, Tag};
use ociregistry_actors::storage::{CommitManifest, PutBlob, Storage};
use serde_json::json;

/// Where the image is published.
const REGISTRY: &str = "docker.io";
/// Its repository.
const REPO: &str = "library/hello-world";
/// Its tag.
const TAG: &str = "latest";
/// OCI media types used by the image.
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Platforms the index lists.
const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// Puts the image into the cache (through the same verified paths as
/// fetched content) and tags it.
pub async fn install(storage: &Addr<Storage>) -> Result<(), FetchError> {
    let registry = RegistryName::parse(REGISTRY).expect("valid registry");
    let repo = RepoName::parse(REPO).expect("valid repository");
    let mut entries = Vec::new();
    for arch in ARCHITECTURES {
        let layer = tar(
            "hello",
            format!("Hello from ociregistry ({arch})\n").as_bytes(),
        );
        let layer_digest = put_blob(storage, layer.clone()).await?;
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.as_str()]},
        }))
        .expect("json serialises");
        let config_len = config.len();
        let config_digest = put_blob(storage, config).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest.as_str(), "size": config_len},
            "layers": [{"mediaType": LAYER, "digest": layer_digest.as_str(), "size": layer.len()}],
        });
        let m = put_manifest(storage, &registry, &repo, None, manifest).await?;
        entries.push(json!({
            "mediaType": MANIFEST,
            "digest": m.digest.as_str(),
            "size": m.bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries});
    let tag = Tag::parse(TAG).expect("valid tag");
    put_manifest(storage, &registry, &repo, Some(tag), index).await?;
    Ok(())
}

/// Stores a blob and returns its digest.
async fn put_blob(storage: &Addr<Storage>, bytes: Vec<u8>) -> Result<Digest, FetchError> {
    let digest = Digest::of(&bytes);
    storage
        .send(PutBlob {
            digest: digest.clone(),
            bytes: Bytes::from(bytes),
        })
        .await??;
    Ok(digest)
}

/// Stores a manifest (optionally tagged) and returns it.
async fn put_manifest(
    storage: &Addr<Storage>,
    registry: &RegistryName,
    repo: &RepoName,
    tag: Option<Tag>,
    json: serde_json::Value,
) -> Result<Arc<Manifest>, FetchError> {
    let bytes = Bytes::from(serde_json::to_vec(&json).expect("json serialises"));
    let manifest = Arc::new(Manifest {
        digest: Digest::of(&bytes),
        media_type: json["mediaType"].as_str().unwrap_or(MANIFEST).to_string(),
        bytes,
    });
    storage
        .send(CommitManifest {
            registry: registry.clone(),
            repo: repo.clone(),
            tag,
            manifest: Arc::clone(&manifest),
        })
        .await??;
    Ok(manifest)
}

/// A ustar archive holding one regular file.
fn tar(name: &str, content: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 512;
    let mut header = [0u8; BLOCK];
    let mut field = |at: usize, value: &[u8]| header[at..at + value.len()].copy_from_slice(value);
    field(0, name.as_bytes());
    field(100, b"0000755\0");
    field(108, b"0000000\0");
    field(116, b"0000000\0");
    field(124, format!("{:011o}\0", content.len()).as_bytes());
    field(136, b"00000000000\0");
    field(148, b"        ");
    field(156, b"0");
    field(257, b"ustar\0");
    field(263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let padded = content.len().div_ceil(BLOCK) * BLOCK;
    let mut out = Vec::with_capacity(BLOCK + padded + 2 * BLOCK);
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    out.resize(BLOCK + padded + 2 * BLOCK, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_is_well_formed() {
        let t = tar("hello", b"hi\n");
        assert_eq!(t.len(), 512 * 4);
        assert_eq!(&t[124..136], b"00000000003\0");
        let sum: u32 = t[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let stored = u32::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        assert_eq!(sum, stored);
        assert_eq!(&t[512..515], b"hi\n");
    }
}
