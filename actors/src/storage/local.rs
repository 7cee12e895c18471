//! The local copies of blobs when the store of record is remote (a
//! bucket): the files a replica serves from its own disk, bounded by
//! `localCache.maxSize`, the least recently served leaving first. Losing
//! them loses nothing: they come back from the store when next asked.

use std::collections::HashMap;

use super::layout::{scan, Layout};
use crate::names::Digest;

/// Eviction frees space down to this share of the bound.
const LOW_WATER_PERCENT: u64 = 90;

/// Local blob files by digest. See the module documentation.
#[derive(Debug)]
pub struct LocalBlobs {
    /// Size and last use (a counter) of each local file.
    files: HashMap<Digest, (u64, u64)>,
    /// Bytes of all of them.
    bytes: u64,
    /// Most bytes kept.
    max: u64,
    /// Counts uses, ordering them.
    clock: u64,
}

impl LocalBlobs {
    /// The blob files already in `layout` (verified before they were put
    /// there), kept within `max` bytes.
    pub fn scan(layout: &Layout, max: u64) -> std::io::Result<Self> {
        let sizes = scan(&layout.blob_dir())?;
        Ok(Self {
            bytes: sizes.values().sum(),
            files: sizes.into_iter().map(|(d, size)| (d, (size, 0))).collect(),
            max,
            clock: 0,
        })
    }

    /// The size of the local copy of `digest`, if any, counting a use.
    pub fn get(&mut self, digest: &Digest) -> Option<u64> {
        self.clock += 1;
        let (size, used) = self.files.get_mut(digest)?;
        *used = self.clock;
        Some(*size)
    }

    /// Records a new local copy; returns the copies to delete to stay
    /// within the bound (never the new one).
    pub fn insert(&mut self, digest: Digest, size: u64) -> Vec<Digest> {
        self.clock += 1;
        if let Some((old, _)) = self.files.insert(digest.clone(), (size, self.clock)) {
            self.bytes -= old;
        }
        self.bytes += size;
        if self.bytes <= self.max {
            return Vec::new();
        }
        let mut by_age: Vec<(u64, Digest)> = self
            .files
            .iter()
            .filter(|(d, _)| **d != digest)
            .map(|(d, (_, used))| (*used, d.clone()))
            .collect();
        by_age.sort();
        let low_water = self.max / 100 * LOW_WATER_PERCENT;
        let mut evicted = Vec::new();
        for (_, d) in by_age {
            if self.bytes <= low_water {
                break;
            }
            self.remove(&d);
            evicted.push(d);
        }
        evicted
    }

    /// A new bound; it applies from the next copy on.
    pub fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// Forgets the local copy of `digest`.
    pub fn remove(&mut self, digest: &Digest) {
        if let Some((size, _)) = self.files.remove(digest) {
            self.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_served_copies_leave_first_and_never_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let mut local = LocalBlobs::scan(&layout, 1000).unwrap();
        let [a, b, c, d] = [b"a", b"b", b"c", b"d"].map(|x| Digest::of(x));
        assert!(local.insert(a.clone(), 300).is_empty());
        assert!(local.insert(b.clone(), 300).is_empty());
        assert!(local.insert(c.clone(), 300).is_empty());
        assert_eq!(
            local.get(&a),
            Some(300),
            "a is now the most recently served"
        );
        assert_eq!(local.insert(d.clone(), 300), vec![b.clone()]);
        assert_eq!(local.get(&b), None);
        assert_eq!(local.insert(c.clone(), 2000), vec![a, d], "oldest first");
        assert_eq!(local.get(&c), Some(2000), "over the bound alone, but kept");
    }
}
