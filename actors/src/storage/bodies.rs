//! The manifest bytes kept in memory: least recently used first out, within
//! a byte budget. Everything else about a manifest stays in the index; a
//! body not kept here is read from disk (and verified) when served.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::manifest::Manifest;
use crate::names::Digest;

/// Manifest bodies, least recently used evicted first.
#[derive(Debug)]
pub struct Bodies {
    /// Most bytes kept.
    budget: u64,
    /// Bytes kept now.
    held: u64,
    /// Next use stamp.
    clock: u64,
    /// Each body and its last use.
    by_digest: HashMap<Digest, (Arc<Manifest>, u64)>,
    /// Digests by last use.
    by_use: BTreeMap<u64, Digest>,
}

impl Bodies {
    /// An empty cache keeping at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            held: 0,
            clock: 0,
            by_digest: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The body of `digest`, if kept (it becomes the most recently used).
    pub fn get(&mut self, digest: &Digest) -> Option<Arc<Manifest>> {
        let (manifest, used) = self.by_digest.get_mut(digest)?;
        self.by_use.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.by_use.insert(self.clock, digest.clone());
        Some(Arc::clone(manifest))
    }

    /// Keeps `manifest` as the most recently used, evicting others past
    /// the budget (a body larger than the whole budget is not kept).
    pub fn put(&mut self, manifest: Arc<Manifest>) {
        let size = manifest.bytes.len() as u64;
        self.remove(&manifest.digest);
        if size > self.budget {
            return;
        }
        while self.held + size > self.budget {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((gone, _)) = self.by_digest.remove(&oldest) {
                self.held -= gone.bytes.len() as u64;
            }
        }
        self.clock += 1;
        self.held += size;
        self.by_use.insert(self.clock, manifest.digest.clone());
        self.by_digest
            .insert(manifest.digest.clone(), (manifest, self.clock));
    }

    /// Forgets the body of `digest`.
    pub fn remove(&mut self, digest: &Digest) {
        if let Some((gone, used)) = self.by_digest.remove(digest) {
            self.by_use.remove(&used);
            self.held -= gone.bytes.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(n: u8, len: usize) -> Arc<Manifest> {
        let bytes = Bytes::from(vec![n; len]);
        Arc::new(Manifest {
            digest: Digest::of(&bytes),
            media_type: String::new(),
            bytes,
        })
    }

    #[test]
    fn least_recently_used_bodies_leave_first_within_the_budget() {
        let mut bodies = Bodies::new(300);
        let (a, b, c) = (body(1, 100), body(2, 100), body(3, 100));
        for m in [&a, &b, &c] {
            bodies.put(Arc::clone(m));
        }
        assert!(bodies.get(&a.digest).is_some(), "a is now the most recent");
        bodies.put(body(4, 100));
        assert!(bodies.get(&b.digest).is_none(), "b was the least recent");
        assert!(bodies.get(&a.digest).is_some() && bodies.get(&c.digest).is_some());
        bodies.put(body(5, 301));
        assert_eq!(bodies.held, 300, "a body over the budget is not kept");
        bodies.remove(&a.digest);
        assert_eq!(
            (bodies.held, bodies.by_digest.len(), bodies.by_use.len()),
            (200, 2, 2)
        );
    }
}
