//! Where things live under the cache root. Every path is built from a
//! validated [`Digest`], so nothing outside the root can be named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::names::Digest;

/// Suffix of files still being written; such files are never served from
/// their name and are removed at start-up.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// The on-disk layout of a cache root.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The cache root (`imagePath`).
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of content-addressed blobs.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Directory of manifests, stored byte-exact by digest.
    pub fn manifest_dir(&self) -> PathBuf {
        self.root.join("manifests").join("sha256")
    }

    /// A complete, verified blob.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// A complete, verified manifest.
    pub fn manifest(&self, digest: &Digest) -> PathBuf {
        self.manifest_dir().join(digest.hex())
    }

    /// The journal of manifest media types and tags.
    pub fn journal(&self) -> PathBuf {
        self.root.join("index.jsonl")
    }

    /// Last-pulled times, saved in batches.
    pub fn pulled(&self) -> PathBuf {
        self.root.join("pulled.json")
    }

    /// Scratch space of tarball imports (emptied at start-up).
    pub fn scratch(&self) -> PathBuf {
        self.root.join(".import")
    }

    /// Creates the directories of the layout.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.blob_dir())?;
        std::fs::create_dir_all(self.manifest_dir())
    }
}

/// A partial file for `path` that no other writer uses:
/// `<path>.<n>.partial`, `n` counting the writers this process started.
/// Two writers of one name (two tags of one manifest, an import beside a
/// download) therefore never truncate or rename each other's file.
pub fn unique_partial(path: &Path) -> PathBuf {
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}{PARTIAL_SUFFIX}"));
    PathBuf::from(name)
}

/// The complete files of a content-addressed directory, with their sizes;
/// partial files and unexpected names are skipped.
pub fn scan(dir: &Path) -> std::io::Result<HashMap<Digest, u64>> {
    let mut found = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(PARTIAL_SUFFIX) || !entry.file_type()?.is_file() {
            continue;
        }
        if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
            found.insert(d, entry.metadata()?.len());
        }
    }
    Ok(found)
}

/// Writes `bytes` to `path` so that `path` either does not exist or holds all
/// of them: write a partial file of its own, fsync it, rename it into
/// place, fsync the directory. Writers of one path may run at once; the
/// last rename wins.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let partial = unique_partial(path);
    let mut f = std::fs::File::create_new(&partial)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    commit(&partial, path)
}

/// Renames a synced partial file into place and makes the rename durable.
pub fn commit(partial: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
