//! Loading the cache from disk at start-up: leftover partial files and
//! import scratch space are removed, blobs indexed, the journal replayed, every manifest re-verified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::index::{unix, Index, Origin, TagEntry, TagKey};
use super::journal::{Journal, Record};
use super::layout::{write_atomically, Layout, PARTIAL_SUFFIX};
use crate::manifest::{media_type_of, Manifest};
use crate::names::{Digest, RegistryName, RepoName, Tag};

/// Reads the cache at `layout` into memory. With `clean`, deletes what a
/// crash left half-written; without, only reads (safe beside a running server).
pub fn load(layout: &Layout, clean: bool, log: &slog::Logger) -> std::io::Result<Index> {
    if clean {
        remove_scratch(layout)?;
        remove_partials(layout.root())?;
        remove_partials(&layout.blob_dir())?;
        remove_partials(&layout.manifest_dir())?;
    }
    let mut index = Index::default();
    index.blobs = scan_blobs(layout, log)?;
    for record in Journal::load(&layout.journal())? {
        replay(&mut index, layout, record, log);
    }
    let manifests = &index.manifests;
    index.tags.retain(|_, e| manifests.contains_key(&e.digest));
    index.pulled = read_pulled(layout);
    Ok(index)
}

/// Applies one journal record.
fn replay(index: &mut Index, layout: &Layout, record: Record, log: &slog::Logger) {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    match &record {
        Record::Manifest {
            digest,
            registry,
            repo,
            stored,
            ..
        } => match load_manifest(layout, digest) {
            Ok(m) => {
                let origin = Origin {
                    registry: registry.clone(),
                    repo: repo.clone(),
                    stored: at(*stored),
                };
                index.insert_manifest(Arc::new(m), origin);
            }
            Err(e) => {
                slog::warn!(log, "dropping cached manifest"; "digest" => digest, "reason" => e)
            }
        },
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

/// Reads a manifest file and checks that it still hashes to its name. Its
/// media type comes from its bytes, not from the journal (which earlier
/// versions filled from an upstream's `Content-Type`).
fn load_manifest(layout: &Layout, digest: &str) -> Result<Manifest, String> {
    let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
    let bytes = Bytes::from(std::fs::read(layout.manifest(&digest)).map_err(|e| e.to_string())?);
    if Digest::of(&bytes) != digest {
        return Err("content does not match its digest".into());
    }
    let media_type = media_type_of(&bytes).map_err(|e| e.to_string())?;
    Ok(Manifest {
        digest,
        media_type: media_type.to_string(),
        bytes,
    })
}

/// Indexes the complete blobs.
fn scan_blobs(layout: &Layout, log: &slog::Logger) -> std::io::Result<HashMap<Digest, u64>> {
    let mut blobs = HashMap::new();
    for entry in std::fs::read_dir(layout.blob_dir())? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(PARTIAL_SUFFIX) {
            continue;
        }
        match Digest::parse(&format!("sha256:{name}")) {
            Ok(d) if entry.file_type()?.is_file() => {
                blobs.insert(d, entry.metadata()?.len());
            }
            _ => slog::warn!(log, "ignoring unexpected file in the blob store"; "file" => %name),
        }
    }
    Ok(blobs)
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

/// Last-pulled times saved by [`write_pulled`] (none if absent or unreadable).
fn read_pulled(layout: &Layout) -> HashMap<Digest, SystemTime> {
    let Ok(bytes) = std::fs::read(layout.pulled()) else {
        return HashMap::new();
    };
    let saved: HashMap<String, u64> = serde_json::from_slice(&bytes).unwrap_or_default();
    saved
        .into_iter()
        .filter_map(|(d, secs)| {
            Some((
                Digest::parse(&d).ok()?,
                UNIX_EPOCH + Duration::from_secs(secs),
            ))
        })
        .collect()
}

/// Saves last-pulled times (a batch, replacing the previous file atomically).
pub fn write_pulled(layout: &Layout, pulled: &HashMap<Digest, SystemTime>) -> std::io::Result<()> {
    let saved: HashMap<&str, u64> = pulled.iter().map(|(d, t)| (d.as_str(), unix(*t))).collect();
    let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    write_atomically(&layout.pulled(), &bytes)
}
