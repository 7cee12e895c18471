//! Loading images from a tarball: an OCI image layout (`index.json`,
//! `blobs/sha256/...`, as `skopeo copy oci-archive:` or newer `docker save`
//! write it) or a legacy `docker save` archive (`manifest.json` with
//! uncompressed layer tars). Every blob and manifest is verified on the way
//! into the cache, like anything fetched.
//!
//! The archive is untrusted. Its entries are read as a stream, and only
//! regular files with plain relative names are taken: links, devices,
//! sparse files, absolute names and `..` are refused, so nothing outside the
//! archive is ever read. Each file is copied to a numbered scratch file and
//! hashed on the blocking pool, within a size budget; names in
//! `index.json` and `manifest.json` are looked up among those entries only.
//! The scratch directory goes away with the import, whatever happens, and
//! at start-up.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::{Manifest, MAX_MANIFEST_BYTES};
use ociregistry_actors::names::{Digest, Reference};
use ociregistry_actors::storage::{
    BeginBlob, BlobStart, CommitBlob, CommitManifest, Storage, MAX_INDEX_DEPTH,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::image_ref::{ImageRef, ImageRefError};

/// Read size when copying an entry out of the archive or into the cache.
const CHUNK: usize = 1 << 20;
/// Most regular files taken from one archive (each becomes a scratch file;
/// empty ones cost nothing against `maxImportSize`). Image archives hold a
/// few per image.
const MAX_ENTRIES: usize = 10_000;
/// Annotation naming an image in an OCI layout (containerd and docker).
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Annotation naming an image in an OCI layout (the OCI spec).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why an archive could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive could not be read, or is not a tar archive.
    #[error("{path}: {source}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry this importer never takes (a link, a device, a sparse
    /// file, an absolute or `..` name).
    #[error("refused entry {name:?}: {why}")]
    Refused {
        /// The entry's name as the archive spells it.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The archive holds more than `maxImportSize`.
    #[error("the archive holds more than the {limit}-byte import limit (maxImportSize)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive holds more regular files than `MAX_ENTRIES` (10,000).
    #[error("the archive holds more than {MAX_ENTRIES} files")]
    TooManyEntries,
    /// A name in `index.json` or `manifest.json` that no regular entry has.
    #[error("the archive has no file {0:?}")]
    Missing(String),
    /// `index.json` or `manifest.json` is malformed, or names nothing.
    #[error("{0}")]
    Format(String),
    /// An image name in the archive is not an image reference.
    #[error("an image name in the archive: {0}")]
    Name(#[from] ImageRefError),
    /// Index nesting deeper than the cache keeps.
    #[error("indexes nested deeper than {MAX_INDEX_DEPTH}")]
    TooDeep,
    /// Storing content failed (or it failed verification).
    #[error(transparent)]
    Store(#[from] FetchError),
    /// The import was abandoned (the server is stopping).
    #[error("import cancelled")]
    Cancelled,
}

/// Whether `path` is a tar archive (by content: the `ustar` magic).
pub fn is_tarball(path: &Path) -> bool {
    let mut head = [0u8; 262];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[257..262] == b"ustar")
}

/// Imports every image of the tarball; returns their names. `resolve_ref`
/// names a single-image tarball that carries no name. `scratch` is a
/// directory for unpacked entries (the cache's, removed at start-up);
/// `limit` caps the bytes taken from the archive.
pub async fn import(
    storage: &Addr<Storage>,
    tarball: &Path,
    scratch: &Path,
    resolve_ref: Option<&ImageRef>,
    limit: u64,
) -> Result<Vec<String>, ImportError> {
    let dir = Scratch::create(scratch).map_err(|source| ImportError::Read {
        path: scratch.to_path_buf(),
        source,
    })?;
    let cancel = Cancel::default();
    let (src, dst, flag) = (tarball.to_path_buf(), dir.0.clone(), Arc::clone(&cancel.0));
    let files = tokio::task::spawn_blocking(move || unpack(&src, &dst, limit, &flag))
        .await
        .map_err(|_| ImportError::Cancelled)??;
    Archive { storage, files }.import(resolve_ref).await
}

/// A scratch directory of one import, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty directory under `parent`.
    fn create(parent: &Path) -> std::io::Result<Self> {
        static IMPORTS: AtomicU64 = AtomicU64::new(0);
        let n = IMPORTS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(parent)?;
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Set when the import is dropped (e.g. the server stops), so that the
/// unpacking thread stops at its next chunk.
#[derive(Default)]
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A regular file of the archive, copied to scratch and hashed.
#[derive(Debug)]
struct Unpacked {
    /// Its scratch copy.
    path: PathBuf,
    /// Its digest.
    digest: Digest,
    /// Its size.
    size: u64,
}

/// Copies every regular entry of the archive to `dir` (numbered files),
/// hashing each; refuses anything else. Keyed by the entry's normalised name.
fn unpack(
    tarball: &Path,
    dir: &Path,
    limit: u64,
    cancel: &AtomicBool,
) -> Result<HashMap<String, Unpacked>, ImportError> {
    let read = |source| ImportError::Read {
        path: tarball.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(tarball).map_err(read)?;
    let mut archive = tar::Archive::new(file);
    let mut files = HashMap::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |why| ImportError::Refused {
            name: raw.clone(),
            why,
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(refuse("links are not imported"))
            }
            tar::EntryType::GNUSparse => return Err(refuse("sparse files are not imported")),
            _ => return Err(refuse("only regular files are imported")),
        }
        let name = normalise(&raw).ok_or_else(|| refuse("absolute and '..' names are refused"))?;
        total = total.saturating_add(entry.size());
        if total > limit {
            return Err(ImportError::TooLarge { limit });
        }
        if files.len() >= MAX_ENTRIES {
            return Err(ImportError::TooManyEntries);
        }
        let path = dir.join(files.len().to_string());
        let (digest, size) = copy_hashed(&mut entry, &path, cancel).map_err(read)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(ImportError::Cancelled);
        }
        if size != entry.size() {
            return Err(refuse("shorter than its header says"));
        }
        files.insert(name, Unpacked { path, digest, size });
    }
    Ok(files)
}

/// A relative name made of plain components (`./a/b` is `a/b`), or `None`
/// for absolute names, `..` and empty names.
fn normalise(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Copies `src` to a new file at `path`, hashing it; stops when cancelled.
fn copy_hashed(
    src: &mut impl Read,
    path: &Path,
    cancel: &AtomicBool,
) -> std::io::Result<(Digest, u64)> {
    let mut out = std::fs::File::create_new(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut size = 0u64;
    while !cancel.load(Ordering::Relaxed) {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((Digest::from_hasher(hasher), size))
}

/// An `index.json` entry.
#[derive(Deserialize)]
struct IndexEntry {
    /// The manifest.
    digest: String,
    /// Names.
    #[serde(default)]
    annotations: HashMap<String, String>,
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

/// An unpacked archive being imported.
struct Archive<'a> {
    /// Where content goes.
    storage: &'a Addr<Storage>,
    /// Its regular files by name.
    files: HashMap<String, Unpacked>,
}

impl Archive<'_> {
    /// Imports every image the archive names.
    async fn import(&self, resolve_ref: Option<&ImageRef>) -> Result<Vec<String>, ImportError> {
        if self.files.contains_key("index.json") {
            let layout: Layout = self.json("index.json").await?;
            let single = layout.manifests.len() == 1;
            let mut names = Vec::new();
            for entry in layout.manifests {
                let name = match (resolve_ref, single) {
                    (Some(r), true) => r.clone(),
                    _ => entry_name(&entry.annotations)?,
                };
                let digest = Digest::parse(&entry.digest)
                    .map_err(|e| ImportError::Format(format!("index.json: {e}")))?;
                self.import_tree(&name, &digest, 1).await?;
                names.push(name.to_string());
            }
            return Ok(names);
        }
        if !self.files.contains_key("manifest.json") {
            return Err(ImportError::Format(
                "neither an OCI layout nor a docker save archive".into(),
            ));
        }
        let saved: Vec<Saved> = self.json("manifest.json").await?;
        let single = saved.len() == 1;
        let mut names = Vec::new();
        for image in saved {
            let name = match (resolve_ref, single, image.repo_tags.first()) {
                (Some(r), true, _) => r.clone(),
                (_, _, Some(tag)) => ImageRef::parse(tag)?,
                _ => return Err(no_name()),
            };
            self.import_saved(&name, &image).await?;
            names.push(name.to_string());
        }
        Ok(names)
    }

    /// The regular entry `name` (as `index.json` or `manifest.json` spell it).
    fn file(&self, name: &str) -> Result<&Unpacked, ImportError> {
        normalise(name)
            .and_then(|n| self.files.get(&n))
            .ok_or_else(|| ImportError::Missing(name.to_string()))
    }

    /// Reads a small entry whole (a manifest or a metadata file).
    async fn read(&self, name: &str) -> Result<Bytes, ImportError> {
        let file = self.file(name)?;
        if file.size > MAX_MANIFEST_BYTES as u64 {
            return Err(ImportError::Format(format!(
                "{name} exceeds {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let bytes = tokio::fs::read(&file.path)
            .await
            .map_err(|source| ImportError::Read {
                path: file.path.clone(),
                source,
            })?;
        Ok(Bytes::from(bytes))
    }

    /// Parses a metadata entry.
    async fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImportError> {
        serde_json::from_slice(&self.read(name).await?)
            .map_err(|e| ImportError::Format(format!("{name}: {e}")))
    }

    /// Imports a manifest from the layout's blobs (an index with its
    /// platform manifests, `depth` levels down), its blobs, and tags the top one.
    async fn import_tree(
        &self,
        name: &ImageRef,
        digest: &Digest,
        depth: usize,
    ) -> Result<(), ImportError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(ImportError::TooDeep);
        }
        let bytes = self.read(&blob_name(digest)).await?;
        let manifest = Manifest::verify(&Reference::Digest(digest.clone()), bytes, None)?;
        for child in manifest.children() {
            Box::pin(self.import_tree(name, &child.digest, depth + 1)).await?;
        }
        for blob in manifest.blobs() {
            self.import_file(&blob, self.file(&blob_name(&blob))?)
                .await?;
        }
        self.put_manifest(name, manifest, depth == 1).await
    }

    /// Imports a legacy `docker save` image as a Docker v2 manifest over
    /// its uncompressed layers.
    async fn import_saved(&self, name: &ImageRef, image: &Saved) -> Result<(), ImportError> {
        let config = self.file(&image.config)?;
        let files: Vec<&Unpacked> = image
            .layers
            .iter()
            .map(|l| self.file(l))
            .collect::<Result<_, _>>()?;
        self.import_file(&config.digest, config).await?;
        let mut layers = Vec::new();
        for file in files {
            self.import_file(&file.digest, file).await?;
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "digest": file.digest.as_str(),
                "size": file.size,
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config.digest.as_str(),
                "size": config.size,
            },
            "layers": layers,
        });
        let bytes = Bytes::from(manifest.to_string());
        let manifest = Manifest::verify(&Reference::Digest(Digest::of(&bytes)), bytes, None)?;
        self.put_manifest(name, manifest, true).await
    }

    /// Stores a verified manifest, tagged with `name`'s tag when `top`.
    async fn put_manifest(
        &self,
        name: &ImageRef,
        manifest: Manifest,
        top: bool,
    ) -> Result<(), ImportError> {
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
        Ok(self.storage.send(put).await.map_err(FetchError::from)??)
    }

    /// Copies an unpacked file into the cache as blob `digest`, verified
    /// like a download.
    async fn import_file(&self, digest: &Digest, file: &Unpacked) -> Result<(), ImportError> {
        let start = self.storage.send(BeginBlob(digest.clone()));
        let mut writer = match start.await.map_err(FetchError::from)?? {
            BlobStart::Cached(_) => return Ok(()),
            BlobStart::Writer(w) => w,
        };
        let read = |source| ImportError::Read {
            path: file.path.clone(),
            source,
        };
        let mut src = tokio::fs::File::open(&file.path).await.map_err(read)?;
        loop {
            let mut buf = vec![0; CHUNK];
            let n = src.read(&mut buf).await.map_err(read)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            writer
                .push(vec![Bytes::from(buf)])
                .await
                .map_err(FetchError::from)?;
        }
        let verified = writer.verify(Some(file.size)).await?;
        self.storage
            .send(CommitBlob(verified))
            .await
            .map_err(FetchError::from)??;
        Ok(())
    }
}

/// `blobs/sha256/<hex>` of a layout.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The error for an image without a name.
fn no_name() -> ImportError {
    ImportError::Format("an image carries no name: use --resolve-ref".into())
}

/// The name an OCI layout entry carries.
fn entry_name(annotations: &HashMap<String, String>) -> Result<ImageRef, ImportError> {
    let name = annotations
        .get(CONTAINERD_NAME)
        .or_else(|| {
            annotations
                .get(OCI_REF_NAME)
                .filter(|n| n.contains('/') || n.contains(':'))
        })
        .ok_or_else(no_name)?;
    Ok(ImageRef::parse(name)?)
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn names_stay_inside_the_archive() {
        assert_eq!(normalise("./a/b.tar").as_deref(), Some("a/b.tar"));
        assert_eq!(normalise("a//b").as_deref(), Some("a/b"));
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "/"] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }
}
