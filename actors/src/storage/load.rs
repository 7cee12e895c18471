//! Loading the cache from disk at start-up: leftover partial files and
//! import scratch space are removed, blobs and manifest files listed, the
//! journal replayed (no manifest body is read unless its record comes from
//! an earlier version).

use std::collections::HashMap;
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
    index.blobs = scan(&layout.blob_dir(), log)?;
    let on_disk = scan(&layout.manifest_dir(), log)?;
    for record in Journal::load(&layout.journal())? {
        replay(&mut index, layout, &on_disk, record, log);
    }
    let manifests = &index.manifests;
    index.tags.retain(|_, e| manifests.contains_key(&e.digest));
    index.pulled = read_pulled(layout);
    Ok(index)
}

/// Applies one journal record. A manifest record of this version says all
/// the index keeps, and its file only has to exist with the recorded size;
/// one of an earlier version is read and verified once.
fn replay(
    index: &mut Index,
    layout: &Layout,
    on_disk: &HashMap<Digest, u64>,
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
            let known = Digest::parse(digest)
                .map_err(|e| e.to_string())
                .and_then(|d| match record.info() {
                    Some(info) if on_disk.get(&d) == Some(&info.size) => Ok((d, info)),
                    Some(_) => Err("its file is missing or has another size".into()),
                    None => load_manifest(layout, &d).map(|m| (d, m.info())),
                });
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

/// Reads a manifest file and checks that it still hashes to its name and
/// is a manifest. Its media type comes from its bytes, not from the
/// journal (which earlier versions filled from an upstream's
/// `Content-Type`).
pub fn load_manifest(layout: &Layout, digest: &Digest) -> Result<Manifest, String> {
    let bytes = Bytes::from(std::fs::read(layout.manifest(digest)).map_err(|e| e.to_string())?);
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

/// The complete files of a content-addressed directory, with their sizes.
fn scan(dir: &std::path::Path, log: &slog::Logger) -> std::io::Result<HashMap<Digest, u64>> {
    let mut blobs = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
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
            _ => {
                slog::warn!(log, "ignoring an unexpected file"; "file" => %name, "dir" => %dir.display())
            }
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
