//! The in-memory index of the cache, and the retention logic on it: which
//! images exist, what pruning or eviction would remove, and what stays.
//!
//! An *image* is a root of the manifest graph: a tag, or a manifest pulled
//! by digest that nothing references. Removing images removes what only
//! they reach: their manifests (an index cascades to its platform
//! manifests) and the blobs no kept manifest references.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde::Serialize;

use super::journal::Record;
use super::listings::Listings;
use crate::error::FetchError;
use crate::manifest::ManifestInfo;
use crate::names::{Digest, RegistryName, RepoName, Tag};

/// A tag's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagKey {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository name.
    pub repo: RepoName,
    /// Tag.
    pub tag: Tag,
}

/// What a tag points at.
#[derive(Debug, Clone)]
pub struct TagEntry {
    /// The manifest digest.
    pub digest: Digest,
    /// When the tag was first stored with this digest.
    pub created: SystemTime,
    /// When the upstream last answered this digest for the tag.
    pub checked: SystemTime,
}

/// Where a manifest came from and when it was stored.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Registry host.
    pub registry: String,
    /// Repository name.
    pub repo: String,
    /// When it was stored.
    pub stored: SystemTime,
}

/// Most manifests on one chain of nested indexes (an index counts, and so
/// does the image manifest at the end). Real images use two or three.
pub const MAX_INDEX_DEPTH: usize = 8;
/// Most entries in one index. Real indexes list a few platforms and their
/// attestations.
pub const MAX_INDEX_ENTRIES: usize = 1024;

/// The whole in-memory state of the cache.
#[derive(Debug, Default)]
pub struct Index {
    /// Complete blobs and their sizes.
    pub blobs: HashMap<Digest, u64>,
    /// What is known of every stored manifest (not its bytes); added with
    /// [`Index::insert_manifest`].
    pub manifests: HashMap<Digest, ManifestInfo>,
    /// The stored indexes listing each manifest digest (the reverse of
    /// [`Manifest::children`]), kept for the nesting bound.
    parents: HashMap<Digest, Vec<Digest>>,
    /// Where each manifest came from.
    pub origins: HashMap<Digest, Origin>,
    /// Tag index.
    pub tags: HashMap<TagKey, TagEntry>,
    /// Tag records in journal order where a tag changed (history).
    pub history: Vec<Record>,
    /// Last time each manifest was served (memory; persisted in batches).
    pub pulled: HashMap<Digest, SystemTime>,
    /// Tag lists and referrers the upstreams answered.
    pub listings: Listings,
}

/// One image as `list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// `registry/repo:tag`, or `registry/repo@digest` for untagged roots.
    pub name: String,
    /// Root manifest digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Bytes of every manifest and blob it reaches (shared ones included).
    pub size: u64,
    /// When it was cached (serialized as unix seconds).
    #[serde(serialize_with = "as_unix")]
    pub created: SystemTime,
    /// When it was last pulled, if ever since caching (unix seconds).
    #[serde(serialize_with = "as_unix_opt")]
    pub last_pulled: Option<SystemTime>,
    /// Whether a pin protects it.
    pub pinned: bool,
}

impl ImageInfo {
    /// Last pull, or caching when never pulled: the eviction order.
    pub fn last_used(&self) -> SystemTime {
        self.last_pulled.unwrap_or(self.created)
    }
}

/// Serializes a time as unix seconds.
fn as_unix<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(unix(*t))
}

/// Serializes an optional time as unix seconds.
fn as_unix_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix(*t)),
        None => s.serialize_none(),
    }
}

/// What to prune.
#[derive(Debug, Clone)]
pub enum PruneBy {
    /// Images not pulled for this long.
    Accessed(Duration),
    /// Images cached longer ago than this.
    Created(Duration),
    /// Images whose name matches.
    Pattern(Regex),
    /// Least recently pulled images until the cache holds at most this many bytes.
    Size(u64),
}

/// What a prune removed, or would remove in a dry run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// True when nothing was removed.
    pub dry_run: bool,
    /// Images removed.
    pub images: Vec<String>,
    /// Manifests removed.
    pub manifests: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// The removals a prune decided on.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Tags to drop.
    pub tags: Vec<TagKey>,
    /// Manifests to delete.
    pub manifests: Vec<Digest>,
    /// Blobs to delete.
    pub blobs: Vec<Digest>,
    /// The report.
    pub report: PruneReport,
}

/// A root of the manifest graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Root {
    /// A tag.
    Tag(TagKey),
    /// An untagged manifest nothing references.
    Manifest(Digest),
}

/// Unix seconds of a time.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Index {
    /// Total bytes of blobs and manifests.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().sum::<u64>() + self.manifests.values().map(|m| m.size).sum::<u64>()
    }

    /// The journal records describing the current state (for compaction).
    pub fn records(&self) -> Vec<Record> {
        let manifests = self.manifests.iter().map(|(digest, m)| {
            let origin = self.origins.get(digest);
            let registry = origin.map(|o| o.registry.clone()).unwrap_or_default();
            let repo = origin.map(|o| o.repo.clone()).unwrap_or_default();
            let stored = origin.map_or(0, |o| unix(o.stored));
            Record::manifest(digest, m, registry, repo, stored)
        });
        manifests
            .chain(self.history.iter().cloned())
            .chain(self.listings.records())
            .collect()
    }

    /// Indexes a manifest (a no-op when it is indexed already).
    pub fn insert_manifest(&mut self, digest: &Digest, info: ManifestInfo, origin: Origin) {
        let Entry::Vacant(slot) = self.manifests.entry(digest.clone()) else {
            return;
        };
        for child in &info.children {
            let parents = self.parents.entry(child.digest.clone()).or_default();
            parents.push(digest.clone());
        }
        self.origins.insert(digest.clone(), origin);
        slot.insert(info);
    }

    /// The repositories with cached content (`registry/repo`), sorted.
    pub fn repositories(&self) -> Vec<String> {
        let tagged = self
            .tags
            .keys()
            .map(|k| format!("{}/{}", k.registry, k.repo));
        let stored = self
            .origins
            .values()
            .filter(|o| !o.registry.is_empty())
            .map(|o| format!("{}/{}", o.registry, o.repo));
        let all: std::collections::BTreeSet<String> = tagged.chain(stored).collect();
        all.into_iter().collect()
    }

    /// Removes a manifest from the index.
    pub fn remove_manifest(&mut self, digest: &Digest) {
        let Some(manifest) = self.manifests.remove(digest) else {
            return;
        };
        for child in manifest.children {
            if let Entry::Occupied(mut parents) = self.parents.entry(child.digest) {
                parents.get_mut().retain(|p| p != digest);
                if parents.get().is_empty() {
                    parents.remove();
                }
            }
        }
        self.origins.remove(digest);
        self.pulled.remove(digest);
    }

    /// Refuses a manifest that would exceed [`MAX_INDEX_ENTRIES`], or make a
    /// chain of nested indexes through it longer than [`MAX_INDEX_DEPTH`],
    /// counting what is stored above and below it.
    pub fn admit(&self, digest: &Digest, manifest: &ManifestInfo) -> Result<(), FetchError> {
        let children = &manifest.children;
        if children.len() > MAX_INDEX_ENTRIES {
            return Err(FetchError::BadResponse(format!(
                "index of {} entries exceeds the limit of {MAX_INDEX_ENTRIES}",
                children.len()
            )));
        }
        let longest = |starts: Vec<Digest>, dir: Direction| {
            let mut memo = HashMap::new();
            starts
                .into_iter()
                .map(|d| self.longest_chain(d, dir, &mut memo))
                .max()
                .unwrap_or(0)
        };
        let below = children.iter().map(|c| &c.digest);
        let below = below.filter(|d| self.manifests.contains_key(*d)).cloned();
        let below = longest(below.collect(), Direction::Down);
        let above = self.parents.get(digest).cloned().unwrap_or_default();
        let depth = longest(above, Direction::Up) + 1 + below;
        if depth > MAX_INDEX_DEPTH {
            return Err(FetchError::BadResponse(format!(
                "indexes nested {depth} deep exceed the limit of {MAX_INDEX_DEPTH}"
            )));
        }
        Ok(())
    }

    /// The stored manifests one step from `digest`: the entries of an
    /// index (down), or the indexes listing it (up).
    fn neighbours(&self, digest: &Digest, dir: Direction) -> Vec<Digest> {
        match dir {
            Direction::Down => self.manifests.get(digest).map_or_else(Vec::new, |m| {
                let children = m.children.iter().map(|c| &c.digest);
                let stored = children.filter(|c| self.manifests.contains_key(*c));
                stored.cloned().collect()
            }),
            Direction::Up => self.parents.get(digest).cloned().unwrap_or_default(),
        }
    }

    /// Manifests on the longest chain from the stored manifest `start` in
    /// `dir` (itself included). Iterative, each manifest visited once.
    fn longest_chain(
        &self,
        start: Digest,
        dir: Direction,
        memo: &mut HashMap<Digest, usize>,
    ) -> usize {
        let mut stack = vec![(start.clone(), false)];
        let mut open = HashSet::new();
        while let Some((digest, expanded)) = stack.pop() {
            if memo.contains_key(&digest) {
                continue;
            }
            let next = self.neighbours(&digest, dir);
            if expanded {
                let best = next.iter().filter_map(|n| memo.get(n)).max();
                memo.insert(digest.clone(), 1 + best.copied().unwrap_or(0));
                open.remove(&digest);
            } else if open.insert(digest.clone()) {
                stack.push((digest, true));
                let unseen = next
                    .into_iter()
                    .filter(|n| !memo.contains_key(n) && !open.contains(n));
                stack.extend(unseen.map(|n| (n, false)));
            }
        }
        memo.get(&start).copied().unwrap_or(0)
    }

    /// Every manifest reachable from `start` (itself included). Iterative:
    /// no stored graph can exhaust the stack.
    fn reach(&self, start: &Digest, seen: &mut HashSet<Digest>) {
        let mut stack = vec![start.clone()];
        while let Some(digest) = stack.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            if let Some(m) = self.manifests.get(&digest) {
                let next = m.references();
                let next = next.filter(|c| self.manifests.contains_key(*c) && !seen.contains(*c));
                stack.extend(next.cloned());
            }
        }
    }

    /// Every image root.
    fn roots(&self) -> Vec<(Root, Digest)> {
        let referenced: HashSet<Digest> = self
            .manifests
            .values()
            .flat_map(|m| m.references().cloned())
            .collect();
        let tagged: HashSet<&Digest> = self.tags.values().map(|e| &e.digest).collect();
        let tags = self
            .tags
            .iter()
            .map(|(k, e)| (Root::Tag(k.clone()), e.digest.clone()));
        let untagged = self
            .manifests
            .keys()
            .filter(|d| !referenced.contains(*d) && !tagged.contains(d))
            .map(|d| (Root::Manifest(d.clone()), d.clone()));
        tags.chain(untagged).collect()
    }

    /// The name an image is listed and matched by.
    fn name(&self, root: &Root) -> String {
        match root {
            Root::Tag(k) => format!("{}/{}:{}", k.registry, k.repo, k.tag),
            Root::Manifest(d) => match self.origins.get(d) {
                Some(o) if !o.registry.is_empty() => format!("{}/{}@{d}", o.registry, o.repo),
                _ => format!("@{d}"),
            },
        }
    }

    /// Size, creation and last pull of an image.
    fn describe(&self, root: &Root, digest: &Digest, pins: &[Regex]) -> ImageInfo {
        let mut tree = HashSet::new();
        self.reach(digest, &mut tree);
        let mut blobs = HashSet::new();
        let mut size = 0;
        for d in &tree {
            if let Some(m) = self.manifests.get(d) {
                size += m.size;
                blobs.extend(m.references().filter(|b| self.blobs.contains_key(*b)));
            }
        }
        size += blobs.iter().map(|b| self.blobs[b]).sum::<u64>();
        let created = match root {
            Root::Tag(k) => self.tags[k].created,
            Root::Manifest(d) => self.origins.get(d).map_or(UNIX_EPOCH, |o| o.stored),
        };
        let last_pulled = tree
            .iter()
            .filter_map(|d| self.pulled.get(d))
            .max()
            .copied();
        let name = self.name(root);
        ImageInfo {
            pinned: pins.iter().any(|p| p.is_match(&name)),
            name,
            digest: digest.to_string(),
            media_type: self
                .manifests
                .get(digest)
                .map(|m| m.media_type.clone())
                .unwrap_or_default(),
            size,
            created,
            last_pulled,
        }
    }

    /// How many images there are (without describing each).
    pub fn image_count(&self) -> usize {
        self.roots().len()
    }

    /// Every image, sorted by name.
    pub fn images(&self, pins: &[Regex]) -> Vec<ImageInfo> {
        let mut list: Vec<ImageInfo> = self
            .roots()
            .iter()
            .map(|(r, d)| self.describe(r, d, pins))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Decides what `by` removes (at most `count` images; pinned ones never).
    pub fn plan(
        &self,
        by: &PruneBy,
        count: Option<usize>,
        pins: &[Regex],
        now: SystemTime,
    ) -> Plan {
        let mut candidates: Vec<(Root, Digest, ImageInfo)> = self
            .roots()
            .into_iter()
            .map(|(r, d)| {
                let info = self.describe(&r, &d, pins);
                (r, d, info)
            })
            .filter(|(_, _, info)| !info.pinned)
            .collect();
        // Least recently used first.
        candidates.sort_by_key(|(_, _, i)| (i.last_used(), i.name.clone()));
        let older_than =
            |t: SystemTime, age: Duration| now.checked_sub(age).is_some_and(|limit| t < limit);
        let mut chosen: Vec<(Root, ImageInfo)> = Vec::new();
        let mut remaining = self.total_bytes();
        for (root, _, info) in candidates {
            if count.is_some_and(|c| chosen.len() >= c) {
                break;
            }
            let take = match by {
                PruneBy::Accessed(age) => older_than(info.last_used(), *age),
                PruneBy::Created(age) => older_than(info.created, *age),
                PruneBy::Pattern(re) => re.is_match(&info.name),
                PruneBy::Size(limit) => remaining > *limit,
            };
            if take {
                remaining = remaining.saturating_sub(info.size);
                chosen.push((root, info));
            }
        }
        self.removal(chosen)
    }

    /// The manifests and blobs only the chosen images reach.
    fn removal(&self, chosen: Vec<(Root, ImageInfo)>) -> Plan {
        let removed: HashSet<&Root> = chosen.iter().map(|(r, _)| r).collect();
        let mut kept = HashSet::new();
        for (root, digest) in self.roots() {
            if !removed.contains(&root) {
                self.reach(&digest, &mut kept);
            }
        }
        let kept_blobs: HashSet<Digest> = kept
            .iter()
            .filter_map(|d| self.manifests.get(d))
            .flat_map(|m| m.references().cloned())
            .collect();
        let mut plan = Plan::default();
        for (root, _) in &chosen {
            if let Root::Tag(k) = root {
                plan.tags.push(k.clone());
            }
        }
        let mut removed_blobs = HashSet::new();
        for (d, m) in &self.manifests {
            if kept.contains(d) {
                continue;
            }
            plan.manifests.push(d.clone());
            plan.report.bytes += m.size;
            for b in m.references() {
                if !kept_blobs.contains(b)
                    && self.blobs.contains_key(b)
                    && removed_blobs.insert(b.clone())
                {
                    plan.report.bytes += self.blobs[b];
                    plan.blobs.push(b.clone());
                }
            }
        }
        plan.report.manifests = plan.manifests.len();
        plan.report.blobs = plan.blobs.len();
        plan.report.images = chosen.into_iter().map(|(_, i)| i.name).collect();
        plan
    }

    /// Removes a plan's entries from memory; returns the journal records
    /// saying which tags went.
    pub fn forget(&mut self, plan: &Plan, now: SystemTime) -> Vec<Record> {
        for d in &plan.manifests {
            self.remove_manifest(d);
        }
        for b in &plan.blobs {
            self.blobs.remove(b);
        }
        let mut untags = Vec::new();
        for k in &plan.tags {
            self.tags.remove(k);
            untags.push(Record::Untag {
                registry: k.registry.to_string(),
                repo: k.repo.to_string(),
                tag: k.tag.to_string(),
                seen: unix(now),
            });
        }
        self.history.extend(untags.iter().cloned());
        untags
    }
}

/// Which way a chain of nested indexes is followed.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// From an index to its entries.
    Down,
    /// From a manifest to the indexes listing it.
    Up,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use bytes::Bytes;
    use serde_json::json;

    fn manifest(
        index: &mut Index,
        json: serde_json::Value,
        pulled_secs_ago: Option<u64>,
    ) -> Digest {
        let m = unstored(&json);
        let d = m.digest.clone();
        let origin = Origin {
            registry: "docker.io".into(),
            repo: "library/x".into(),
            stored: UNIX_EPOCH + Duration::from_secs(1_000),
        };
        if let Some(ago) = pulled_secs_ago {
            index
                .pulled
                .insert(d.clone(), SystemTime::now() - Duration::from_secs(ago));
        }
        index.insert_manifest(&d, m.info(), origin);
        d
    }

    /// A manifest of these JSON bytes, not in any index.
    fn unstored(json: &serde_json::Value) -> Manifest {
        let bytes = Bytes::from(serde_json::to_vec(json).unwrap());
        Manifest {
            digest: Digest::of(&bytes),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes,
        }
    }

    fn blob(index: &mut Index, name: &str, size: u64) -> Digest {
        let d = Digest::of(name.as_bytes());
        index.blobs.insert(d.clone(), size);
        d
    }

    fn image(index: &mut Index, layers: &[&Digest], pulled_secs_ago: Option<u64>) -> Digest {
        let layers: Vec<_> = layers
            .iter()
            .map(|d| json!({"digest": d.as_str()}))
            .collect();
        manifest(index, json!({"layers": layers}), pulled_secs_ago)
    }

    fn tag(index: &mut Index, name: &str, digest: &Digest) {
        let key = TagKey {
            registry: RegistryName::parse("docker.io").unwrap(),
            repo: RepoName::parse(&format!("library/{name}")).unwrap(),
            tag: Tag::parse("1").unwrap(),
        };
        let created = UNIX_EPOCH + Duration::from_secs(1_000);
        let entry = TagEntry {
            digest: digest.clone(),
            created,
            checked: created,
        };
        index.tags.insert(key, entry);
    }

    /// An index listing `child` (one platform entry).
    fn nest(index: &mut Index, child: &Digest) -> Digest {
        let entry =
            json!({"digest": child.as_str(), "platform": {"os": "linux", "architecture": "amd64"}});
        manifest(index, json!({"manifests": [entry]}), None)
    }

    #[test]
    fn graph_walks_survive_a_chain_of_fifty_thousand_indexes() {
        let mut index = Index::default();
        let layer = blob(&mut index, "layer", 10);
        let mut top = image(&mut index, &[&layer], None);
        for _ in 0..50_000 {
            top = nest(&mut index, &top);
        }
        tag(&mut index, "deep", &top);
        assert_eq!(index.image_count(), 1);
        let images = index.images(&[]);
        assert_eq!(images.len(), 1);
        assert!(images[0].size > 10);
        let plan = index.plan(&PruneBy::Size(0), None, &[], SystemTime::now());
        assert_eq!(plan.manifests.len(), 50_001);
        assert_eq!(plan.blobs, vec![layer]);
    }

    #[test]
    fn nesting_is_bounded_from_above_and_below() {
        let mut index = Index::default();
        let layer = blob(&mut index, "layer", 10);
        // Stored bottom-up: each new index sits on everything below it.
        let mut top = image(&mut index, &[&layer], None);
        for _ in 1..MAX_INDEX_DEPTH {
            top = nest(&mut index, &top);
        }
        let over = json!({"manifests": [{"digest": top.as_str()}]});
        let over = unstored(&over);
        assert!(matches!(
            index.admit(&over.digest, &over.info()),
            Err(FetchError::BadResponse(_))
        ));

        // Stored top-down: each new manifest sits under what lists it.
        let mut index = Index::default();
        let leaf = json!({"layers": [{"digest": layer.as_str()}]});
        let leaf = unstored(&leaf);
        let mut chain = vec![leaf];
        for _ in 1..=MAX_INDEX_DEPTH {
            let below = &chain[chain.len() - 1];
            chain.push(unstored(
                &json!({"manifests": [{"digest": below.digest.as_str()}]}),
            ));
        }
        let origin = || Origin {
            registry: String::new(),
            repo: String::new(),
            stored: UNIX_EPOCH,
        };
        let (bottom, rest) = chain.split_first().unwrap();
        for m in rest.iter().rev() {
            index.admit(&m.digest, &m.info()).unwrap();
            index.insert_manifest(&m.digest, m.info(), origin());
        }
        assert!(matches!(
            index.admit(&bottom.digest, &bottom.info()),
            Err(FetchError::BadResponse(_))
        ));
        // One level less fits.
        index.remove_manifest(&rest[rest.len() - 1].digest);
        index.admit(&bottom.digest, &bottom.info()).unwrap();
    }

    #[test]
    fn an_index_with_too_many_entries_is_refused() {
        let entries: Vec<_> = (0..=MAX_INDEX_ENTRIES)
            .map(|i| json!({"digest": Digest::of(&i.to_be_bytes()).as_str()}))
            .collect();
        let wide = unstored(&json!({"manifests": entries}));
        assert!(matches!(
            Index::default().admit(&wide.digest, &wide.info()),
            Err(FetchError::BadResponse(_))
        ));
    }

    #[test]
    fn pruning_keeps_shared_blobs_and_cascades_through_an_index() {
        let mut index = Index::default();
        let (base, a_only, b_only) = (
            blob(&mut index, "base", 100),
            blob(&mut index, "a", 10),
            blob(&mut index, "b", 20),
        );
        let a = image(&mut index, &[&base, &a_only], Some(10_000));
        let b = image(&mut index, &[&base, &b_only], Some(5));
        let multi = manifest(
            &mut index,
            json!({"manifests": [{"digest": a.as_str()}]}),
            None,
        );
        tag(&mut index, "multi", &multi);
        tag(&mut index, "b", &b);
        assert_eq!(
            index.images(&[]).len(),
            2,
            "the index's platform manifest is not an image of its own"
        );

        let pattern = PruneBy::Pattern(Regex::new("multi").unwrap());
        let plan = index.plan(&pattern, None, &[], SystemTime::now());
        assert_eq!(
            plan.report.images,
            vec!["docker.io/library/multi:1".to_string()]
        );
        assert_eq!(
            plan.manifests.len(),
            2,
            "the index and its platform manifest"
        );
        assert_eq!(
            plan.blobs,
            vec![a_only.clone()],
            "the shared base layer stays"
        );

        let pins = [Regex::new("multi").unwrap()];
        assert!(
            index
                .plan(&pattern, None, &pins, SystemTime::now())
                .report
                .images
                .is_empty(),
            "pinned"
        );

        index.forget(&plan, SystemTime::now());
        assert!(index.blobs.contains_key(&base) && !index.blobs.contains_key(&a_only));
        assert_eq!(index.images(&[]).len(), 1);
    }

    #[test]
    fn accessed_created_count_and_size() {
        let mut index = Index::default();
        let (x, y) = (blob(&mut index, "x", 1_000), blob(&mut index, "y", 1_000));
        let old = image(&mut index, &[&x], Some(7_200));
        let recent = image(&mut index, &[&y], Some(60));
        tag(&mut index, "old", &old);
        tag(&mut index, "recent", &recent);
        let now = SystemTime::now();

        let hour = PruneBy::Accessed(Duration::from_secs(3_600));
        assert_eq!(
            index.plan(&hour, None, &[], now).report.images,
            vec!["docker.io/library/old:1".to_string()]
        );
        let created = PruneBy::Created(Duration::from_secs(3_600));
        assert_eq!(
            index.plan(&created, None, &[], now).report.images.len(),
            2,
            "both cached long ago"
        );
        assert_eq!(
            index.plan(&created, Some(1), &[], now).report.images.len(),
            1,
            "count limits a run"
        );
        let size = PruneBy::Size(1_500);
        let plan = index.plan(&size, None, &[], now);
        assert_eq!(
            plan.report.images,
            vec!["docker.io/library/old:1".to_string()],
            "least recently pulled first"
        );
        assert!(plan.report.bytes >= 1_000);
    }
}
