//! Loading images from a tarball: an OCI image layout (`index.json`,
//! `blobs/sha256/...`, as `skopeo copy oci-archive:` or newer `docker save`
//! write it) or a legacy `docker save` archive (`manifest.json` with
//! uncompressed layer tars). Every blob and manifest is verified on the way
//! into the cache, like anything fetched.

use std::io::Read;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

use actix::Addr;
use bytes::Bytes;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::Manifest;
use ociregistry_actors::names::{Digest, Reference};
use ociregistry_actors::storage::{BeginBlob, BlobStart, CommitBlob, CommitManifest, Storage};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::preload::ImageRef;

/// Read size when copying a layer into the cache.
const CHUNK: usize = 1 << 20;
/// Annotation naming an image in an OCI layout (containerd and docker).
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Annotation naming an image in an OCI layout (the OCI spec).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Whether `path` is a tar archive (by content: the `ustar` magic).
pub fn is_tarball(path: &Path) -> bool {
    let mut head = [0u8; 262];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[257..262] == b"ustar")
}

/// Imports every image of the tarball; returns their names. `resolve_ref`
/// names a single-image tarball that carries no name.
pub async fn import(
    storage: &Addr<Storage>,
    tarball: &Path,
    scratch: &Path,
    resolve_ref: Option<&ImageRef>,
) -> Result<Vec<String>, String> {
    let dir = scratch.join(format!(".import-{}", std::process::id()));
    let (src, dst) = (tarball.to_path_buf(), dir.clone());
    tokio::task::spawn_blocking(move || unpack(&src, &dst))
        .await
        .map_err(|e| e.to_string())??;
    let result = import_dir(storage, &dir, resolve_ref).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Unpacks the archive (the tar crate refuses entries that escape `dir`).
fn unpack(tarball: &Path, dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    tar::Archive::new(file)
        .unpack(dir)
        .map_err(|e| format!("{}: {e}", tarball.display()))
}

/// An `index.json` entry.
#[derive(Deserialize)]
struct IndexEntry {
    /// The manifest.
    digest: String,
    /// Names.
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// An OCI `index.json`.
#[derive(Deserialize)]
struct Layout {
    /// Images.
    manifests: Vec<IndexEntry>,
}

/// A legacy `docker save` `manifest.json` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Saved {
    /// Config file.
    config: String,
    /// Names.
    #[serde(default)]
    repo_tags: Vec<String>,
    /// Layer tar files.
    layers: Vec<String>,
}

/// Imports an unpacked tarball.
async fn import_dir(
    storage: &Addr<Storage>,
    dir: &Path,
    resolve_ref: Option<&ImageRef>,
) -> Result<Vec<String>, String> {
    if let Ok(text) = std::fs::read(dir.join("index.json")) {
        let layout: Layout =
            serde_json::from_slice(&text).map_err(|e| format!("index.json: {e}"))?;
        let single = layout.manifests.len() == 1;
        let mut names = Vec::new();
        for entry in layout.manifests {
            let name = match (resolve_ref, single) {
                (Some(r), true) => r.clone(),
                _ => entry_name(&entry.annotations)?,
            };
            let digest = Digest::parse(&entry.digest).map_err(|e| e.to_string())?;
            import_tree(storage, dir, &name, &digest, true)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            names.push(name.to_string());
        }
        return Ok(names);
    }
    let text = std::fs::read(dir.join("manifest.json"))
        .map_err(|_| "neither an OCI layout nor a docker save archive")?;
    let saved: Vec<Saved> =
        serde_json::from_slice(&text).map_err(|e| format!("manifest.json: {e}"))?;
    let single = saved.len() == 1;
    let mut names = Vec::new();
    for image in saved {
        let name = match (resolve_ref, single, image.repo_tags.first()) {
            (Some(r), true, _) => r.clone(),
            (_, _, Some(tag)) => ImageRef::parse(tag)?,
            _ => return Err("an image carries no name: use --resolve-ref".into()),
        };
        import_saved(storage, dir, &name, &image)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// The name an OCI layout entry carries.
fn entry_name(annotations: &std::collections::HashMap<String, String>) -> Result<ImageRef, String> {
    let name = annotations
        .get(CONTAINERD_NAME)
        .or_else(|| {
            annotations
                .get(OCI_REF_NAME)
                .filter(|n| n.contains('/') || n.contains(':'))
        })
        .ok_or("an image carries no name: use --resolve-ref")?;
    ImageRef::parse(name)
}

/// Imports a manifest from the layout's blobs (an index with its platform
/// manifests), its blobs, and tags the top one.
async fn import_tree(
    storage: &Addr<Storage>,
    dir: &Path,
    name: &ImageRef,
    digest: &Digest,
    top: bool,
) -> Result<(), FetchError> {
    let path = layout_blob(dir, digest);
    let bytes = Bytes::from(
        std::fs::read(&path)
            .map_err(|e| FetchError::Storage(format!("{}: {e}", path.display())))?,
    );
    let manifest = Manifest::verify(&Reference::Digest(digest.clone()), bytes, None, None)?;
    for child in manifest.children() {
        Box::pin(import_tree(storage, dir, name, &child.digest, false)).await?;
    }
    for blob in manifest.blobs() {
        import_file(storage, &blob, &layout_blob(dir, &blob)).await?;
    }
    put_manifest(storage, name, manifest, top).await
}

/// `blobs/sha256/<hex>` of a layout.
fn layout_blob(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Imports a legacy `docker save` image as a Docker v2 manifest over its
/// uncompressed layers.
async fn import_saved(
    storage: &Addr<Storage>,
    dir: &Path,
    name: &ImageRef,
    image: &Saved,
) -> Result<(), FetchError> {
    let config_path = dir.join(&image.config);
    let (config, config_size) = hash_file(&config_path)?;
    import_file(storage, &config, &config_path).await?;
    let mut layers = Vec::new();
    for layer in &image.layers {
        let path = dir.join(layer);
        let (digest, size) = hash_file(&path)?;
        import_file(storage, &digest, &path).await?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
            "digest": digest.as_str(),
            "size": size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config.as_str(),
            "size": config_size,
        },
        "layers": layers,
    });
    let bytes = Bytes::from(manifest.to_string());
    let manifest = Manifest::verify(&Reference::Digest(Digest::of(&bytes)), bytes, None, None)?;
    put_manifest(storage, name, manifest, true).await
}

/// Stores a verified manifest, tagged with `name`'s tag when `top`.
async fn put_manifest(
    storage: &Addr<Storage>,
    name: &ImageRef,
    manifest: Manifest,
    top: bool,
) -> Result<(), FetchError> {
    let tag = match (&name.reference, top) {
        (Reference::Tag(t), true) => Some(t.clone()),
        _ => None,
    };
    let put = CommitManifest {
        registry: name.registry.clone(),
        repo: name.repo.clone(),
        tag,
        manifest: Arc::new(manifest),
    };
    storage.send(put).await?
}

/// The digest and size of a file.
fn hash_file(path: &Path) -> Result<(Digest, u64), FetchError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| FetchError::Storage(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((Digest::from_hasher(hasher), size))
}

/// Copies a file into the cache as blob `digest`, verified like a download.
async fn import_file(
    storage: &Addr<Storage>,
    digest: &Digest,
    path: &Path,
) -> Result<(), FetchError> {
    let mut writer = match storage.send(BeginBlob(digest.clone())).await?? {
        BlobStart::Cached(_) => return Ok(()),
        BlobStart::Writer(w) => w,
    };
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| FetchError::Storage(format!("{}: {e}", path.display())))?;
    let mut len = 0;
    loop {
        let mut buf = vec![0; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        len += n as u64;
        writer.push(vec![Bytes::from(buf)]).await?;
    }
    let verified = writer.verify(Some(len)).await?;
    storage.send(CommitBlob(verified)).await??;
    Ok(())
}
