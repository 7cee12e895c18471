//! The journal: an append-only JSON-lines file recording each stored
//! manifest's media type, each tag's digest and the listings upstreams
//! answered.
//!
//! A record is appended (and synced) only after the content it names is in
//! place, so a crash at any instant leaves at worst a torn last line, which
//! loading skips. Start-up rewrites the journal compactly.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::layout::write_atomically;
use crate::manifest::{Descriptor, ManifestInfo};
use crate::names::Digest;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Record {
    /// A manifest stored under `manifests/sha256/<hex>`.
    #[serde(rename_all = "camelCase")]
    Manifest {
        /// Its digest.
        digest: String,
        /// The media type it is served with.
        media_type: String,
        /// Registry it was first fetched from.
        #[serde(default)]
        registry: String,
        /// Repository it was first fetched from.
        #[serde(default)]
        repo: String,
        /// When it was stored (unix seconds).
        #[serde(default)]
        stored: u64,
        /// Its size; with `blobs` and `children`, what the index keeps of
        /// it, so that start-up reads no manifest body. Absent in journals
        /// of earlier versions (start-up then reads the body once).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// Blobs of an image manifest.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        blobs: Vec<String>,
        /// Entries of an index.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<Child>,
    },
    /// `registry/repo:tag` pointed at `digest` when seen (unix seconds).
    Tag {
        /// Registry host.
        registry: String,
        /// Repository name.
        repo: String,
        /// Tag.
        tag: String,
        /// Manifest digest.
        digest: String,
        /// When the upstream was seen answering this (unix seconds).
        seen: u64,
    },
    /// A blob stored in a shared store: how the other replicas learn its
    /// size (a store lists its blobs at start-up; these are not kept by
    /// compaction).
    Blob {
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A listing the upstream answered: a repository's tags, or the
    /// referrers of a manifest (see [`crate::listing`]).
    #[serde(rename_all = "camelCase")]
    Listing {
        /// Registry host.
        registry: String,
        /// Repository name.
        repo: String,
        /// The subject digest of a referrers listing; none for tags.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        referrers_of: Option<String>,
        /// The listing's body (JSON text).
        body: String,
        /// When the upstream answered it (unix seconds).
        seen: u64,
    },
    /// `registry/repo:tag` was removed from the cache (pruned or evicted).
    Untag {
        /// Registry host.
        registry: String,
        /// Repository name.
        repo: String,
        /// Tag.
        tag: String,
        /// When (unix seconds).
        seen: u64,
    },
}

/// An index entry as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// The entry's digest.
    digest: String,
    /// `os/architecture[/variant]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
}

impl Record {
    /// The record of a stored manifest.
    pub fn manifest(
        digest: &Digest,
        info: &ManifestInfo,
        registry: String,
        repo: String,
        stored: u64,
    ) -> Self {
        let children = info.children.iter().map(|c| Child {
            digest: c.digest.to_string(),
            platform: c.platform.clone(),
        });
        Self::Manifest {
            digest: digest.to_string(),
            media_type: info.media_type.clone(),
            registry,
            repo,
            stored,
            size: Some(info.size),
            blobs: info.blobs.iter().map(Digest::to_string).collect(),
            children: children.collect(),
        }
    }

    /// What a manifest record says of the manifest, when it says it all
    /// (records of earlier versions do not) and every digest is valid.
    pub fn info(&self) -> Option<ManifestInfo> {
        let Self::Manifest {
            media_type,
            size,
            blobs,
            children,
            ..
        } = self
        else {
            return None;
        };
        let children = children.iter().map(|c| {
            Some(Descriptor {
                digest: Digest::parse(&c.digest).ok()?,
                platform: c.platform.clone(),
            })
        });
        Some(ManifestInfo {
            media_type: media_type.clone(),
            size: (*size)?,
            blobs: blobs
                .iter()
                .map(|b| Digest::parse(b).ok())
                .collect::<Option<_>>()?,
            children: children.collect::<Option<_>>()?,
        })
    }
}

/// The journal file, appended to under a lock from blocking tasks.
#[derive(Debug)]
pub struct Journal {
    /// Where it is.
    path: PathBuf,
    /// The file opened for append (once something was appended), and
    /// how many of its bytes the last `load` read.
    file: Mutex<(Option<File>, u64)>,
}

impl Journal {
    /// The journal at `path` (nothing is opened yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new((None, 0)),
        }
    }

    /// Reads every well-formed record (none if the file is absent).
    pub fn load(&self) -> std::io::Result<Vec<Record>> {
        let mut state = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = read_from(&self.path, 0)?;
        state.1 = bytes.len() as u64;
        Ok(decode(&bytes))
    }

    /// Reads the records appended since the last `load` or `more`.
    pub fn more(&self) -> std::io::Result<Vec<Record>> {
        let mut state = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = read_from(&self.path, state.1)?;
        // Up to the last complete line: a line being appended is read next time.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        state.1 += complete as u64;
        Ok(decode(&bytes[..complete]))
    }

    /// Replaces the records the last `load` read with `records`
    /// (compaction), atomically; records appended since follow them.
    pub fn replace(&self, records: &[Record]) -> std::io::Result<()> {
        let mut state = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = encode(records);
        let compact = bytes.len() as u64;
        bytes.extend(read_from(&self.path, state.1)?);
        write_atomically(&self.path, &bytes)?;
        *state = (None, compact);
        Ok(())
    }

    /// Appends `records` in one write and syncs them to disk.
    pub fn append(&self, records: &[Record]) -> std::io::Result<()> {
        let buf = encode(records);
        let mut state = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let file = match &mut state.0 {
            Some(f) => f,
            none => none.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(&buf)?;
        file.sync_data()
    }
}

/// The bytes of the file at `path` from `offset` on (none if it is absent).
fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Every well-formed record of JSON lines; torn or unreadable lines are
/// skipped.
pub fn decode(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect()
}

/// Serialises records as JSON lines.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in records {
        // Serialising these plain structs cannot fail.
        serde_json::to_writer(&mut buf, r).expect("journal record serialises");
        buf.push(b'\n');
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("index.jsonl");
        let info = ManifestInfo {
            media_type: "m".into(),
            size: 7,
            blobs: vec![Digest::of(b"config"), Digest::of(b"layer")],
            children: vec![Descriptor {
                digest: Digest::of(b"child"),
                platform: Some("linux/arm64".into()),
            }],
        };
        let digest = Digest::of(b"manifest");
        let rec = Record::manifest(&digest, &info, "docker.io".into(), "library/a".into(), 1);
        assert_eq!(rec.info(), Some(info), "a record says all the index keeps");
        let j = Journal::new(path.clone());
        j.replace(std::slice::from_ref(&rec)).unwrap();
        j.append(std::slice::from_ref(&rec)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"kind":"tag","regis"#).unwrap();
        assert_eq!(j.load().unwrap(), vec![rec.clone(), rec]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_manifest_record_of_an_earlier_version_says_too_little() {
        let old = r#"{"kind":"manifest","digest":"sha256:aa","mediaType":"m","registry":"docker.io","repo":"a","stored":1}"#;
        let rec: Record = serde_json::from_str(old).unwrap();
        assert_eq!(rec.info(), None, "its body must be read once");
    }
}
