//! Loading the cache at start-up: leftover partial files and import
//! scratch space are removed from the local directory, the backend's
//! blobs and manifests listed, its records replayed (no manifest body is
//! read unless its record comes from an earlier version).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;

use super::backend::{Backend, Kind};
use super::index::{Index, Origin, TagEntry, TagKey};
use super::journal::Record;
use super::layout::{Layout, PARTIAL_SUFFIX};
use super::listings;
use crate::manifest::{media_type_of, Manifest, ManifestInfo, MAX_MANIFEST_BYTES};
use crate::names::{Digest, RegistryName, RepoName, Tag};

/// Reads what `backend` stores into an index. No manifest body is read
/// unless its record comes from an earlier version.
pub async fn load(backend: &dyn Backend, log: &slog::Logger) -> std::io::Result<Index> {
    let mut index = Index::default();
    index.blobs = backend.list(Kind::Blob).await?;
    let stored = backend.list(Kind::Manifest).await?;
    let records = backend.records().await?;
    let earlier = read_earlier(backend, &records).await;
    for record in records {
        replay(&mut index, Some(&stored), &earlier, record, log);
    }
    let manifests = &index.manifests;
    index.tags.retain(|_, e| manifests.contains_key(&e.digest));
    index.pulled = backend.pulled().await?;
    Ok(index)
}

/// Deletes what a crash left half-written in a local cache directory:
/// partial files and import scratch space.
pub fn clean(layout: &Layout) -> std::io::Result<()> {
    remove_scratch(layout)?;
    remove_partials(layout.root())?;
    remove_partials(&layout.blob_dir())?;
    remove_partials(&layout.manifest_dir())
}

/// What the index keeps of the manifests whose records come from an
/// earlier version (which say too little): each read and verified once.
async fn read_earlier(
    backend: &dyn Backend,
    records: &[Record],
) -> HashMap<Digest, Result<ManifestInfo, String>> {
    let mut earlier = HashMap::new();
    for record in records {
        if let (Record::Manifest { digest, .. }, None) = (record, record.info()) {
            if let Ok(d) = Digest::parse(digest) {
                let info = read_manifest(backend, &d).await.map(|m| m.info());
                earlier.insert(d, info);
            }
        }
    }
    earlier
}

/// Applies one record. A manifest record of this version says all the
/// index keeps, and its content only has to be stored with the recorded
/// size (`sizes`: what the backend listed; `None` trusts the record, for
/// records another writer appended after the listing); one of an earlier
/// version takes what `earlier` read.
pub fn replay(
    index: &mut Index,
    sizes: Option<&HashMap<Digest, u64>>,
    earlier: &HashMap<Digest, Result<ManifestInfo, String>>,
    record: Record,
    log: &slog::Logger,
) {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    match &record {
        Record::Manifest {
            digest,
            registry,
            repo,
            stored,
            ..
        } => {
            let known = match Digest::parse(digest) {
                Err(e) => Err(e.to_string()),
                Ok(d) => match record.info() {
                    Some(info) if sizes.is_none_or(|s| s.get(&d) == Some(&info.size)) => {
                        Ok((d, info))
                    }
                    Some(_) => Err("it is missing or has another size".into()),
                    None => match earlier.get(&d) {
                        Some(read) => read.clone().map(|info| (d, info)),
                        None => Err("its record says too little".into()),
                    },
                },
            };
            match known {
                Ok((digest, info)) => {
                    let origin = Origin {
                        registry: registry.clone(),
                        repo: repo.clone(),
                        stored: at(*stored),
                    };
                    index.insert_manifest(&digest, info, origin);
                }
                Err(e) => {
                    slog::warn!(log, "dropping cached manifest"; "digest" => digest, "reason" => e)
                }
            }
        }
        Record::Tag {
            registry,
            repo,
            tag,
            digest,
            seen,
        } => {
            let (Some(key), Ok(digest)) = (tag_key(registry, repo, tag), Digest::parse(digest))
            else {
                return;
            };
            if index.tags.get(&key).is_none_or(|e| e.digest != digest) {
                index.history.push(record.clone());
            }
            let entry = TagEntry {
                digest,
                created: at(*seen),
                checked: at(*seen),
            };
            index.tags.insert(key, entry);
        }
        Record::Blob { digest, size } => {
            // The listing at start-up is authoritative; after it, a record
            // says another replica stored the blob.
            if let (None, Ok(d)) = (sizes, Digest::parse(digest)) {
                index.blobs.insert(d, *size);
            }
        }
        Record::Listing {
            registry,
            repo,
            referrers_of,
            body,
            seen,
        } => {
            let listing =
                listings::from_record(registry, repo, referrers_of.as_deref(), body, *seen);
            if let Some((key, listing)) = listing {
                index.listings.insert(key, listing);
            }
        }
        Record::Untag {
            registry,
            repo,
            tag,
            ..
        } => {
            if let Some(key) = tag_key(registry, repo, tag) {
                index.tags.remove(&key);
                index.history.push(record.clone());
            }
        }
    }
}

/// A tag key from journal text, if valid.
fn tag_key(registry: &str, repo: &str, tag: &str) -> Option<TagKey> {
    Some(TagKey {
        registry: RegistryName::parse(registry).ok()?,
        repo: RepoName::parse(repo).ok()?,
        tag: Tag::parse(tag).ok()?,
    })
}

/// Reads a stored manifest and checks that it still hashes to its digest
/// and is a manifest. Its media type comes from its bytes, not from a
/// record (which earlier versions filled from an upstream's
/// `Content-Type`).
pub async fn read_manifest(backend: &dyn Backend, digest: &Digest) -> Result<Manifest, String> {
    let stored = match backend.open(Kind::Manifest, digest).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err("it is missing".into()),
        Err(e) => return Err(e.to_string()),
    };
    // Never more than a manifest can be, whatever the store holds.
    let too_large = || format!("larger than {MAX_MANIFEST_BYTES} bytes");
    if stored.size > MAX_MANIFEST_BYTES as u64 {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(stored.size as usize);
    let mut chunks = stored.bytes;
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
    }
    let bytes = Bytes::from(bytes);
    if Digest::of(&bytes) != *digest {
        return Err("content does not match its digest".into());
    }
    let media_type = media_type_of(&bytes).map_err(|e| e.to_string())?;
    Ok(Manifest {
        digest: digest.clone(),
        media_type: media_type.to_string(),
        bytes,
    })
}

/// Deletes the import scratch space, and the `.import-<pid>` directories
/// that imports of earlier versions could leave in the root.
fn remove_scratch(layout: &Layout) -> std::io::Result<()> {
    let scratch = layout.scratch();
    let prefix = scratch.file_name().unwrap_or_default().to_string_lossy();
    for entry in std::fs::read_dir(layout.root())? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&*prefix) && entry.file_type()?.is_dir()
        {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Deletes the `*.partial` files a crash left in `dir`.
fn remove_partials(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(PARTIAL_SUFFIX)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
