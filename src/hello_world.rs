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
        let layer = one_file_tar(
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

/// A ustar archive holding one executable regular file. Every header field
/// is fixed (mode 0755, uid and gid 0, mtime 0), so the layer, and with it
/// every digest of the image, is the same in every build.
fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(content.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let mut archive = tar::Builder::new(Vec::new());
    archive
        .append_data(&mut header, name, content)
        .and_then(|()| archive.into_inner())
        .expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_layer_is_one_fixed_file() {
        let layer = one_file_tar("hello", b"hi\n");
        assert_eq!(
            layer.len(),
            512 * 4,
            "header, one data block, end of archive"
        );
        let mut archive = tar::Archive::new(layer.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let header = entry.header();
        assert_eq!(header.entry_type(), tar::EntryType::Regular);
        assert_eq!(&*header.path_bytes(), b"hello");
        assert_eq!(header.mode().unwrap(), 0o755);
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), 0);
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert_eq!(content, b"hi\n");
        assert!(entries.next().is_none());
        assert_eq!(one_file_tar("hello", b"hi\n"), layer, "deterministic");
    }
}
