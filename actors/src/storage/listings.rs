//! Listings (tag lists, referrers) the upstreams answered, in memory within
//! [`MAX_LISTINGS_BYTES`], journaled so that they answer after a restart
//! and air-gapped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::index::unix;
use super::journal::Record;
use crate::listing::{Listed, Listing, ListingKey};
use crate::names::{Digest, RegistryName, RepoName};

/// Most bytes of listings kept (bodies, and [`ENTRY_OVERHEAD`] each);
/// beyond them the least recently answered are dropped (and not kept by
/// the next compaction).
pub const MAX_LISTINGS_BYTES: usize = 32 << 20;
/// What one listing costs beside its body (key, times, map entry).
const ENTRY_OVERHEAD: usize = 256;
/// Largest listing body journaled; a larger one (a tag list of thousands
/// of tags) is kept in memory only, so that its changes do not grow the
/// journal between compactions.
const MAX_JOURNALED: usize = 256 << 10;

/// Every listing kept, by key.
#[derive(Debug, Default)]
pub struct Listings {
    /// The listings.
    map: HashMap<ListingKey, Listing>,
    /// Their bodies' bytes together.
    bytes: usize,
}

impl Listings {
    /// The listing of `key`, if kept.
    pub fn get(&self, key: &ListingKey) -> Option<&Listing> {
        self.map.get(key)
    }

    /// Keeps `listing` for `key`, dropping the least recently answered
    /// ones beyond [`MAX_LISTINGS_BYTES`].
    pub fn insert(&mut self, key: ListingKey, listing: Listing) {
        let size = listing.body.len() + ENTRY_OVERHEAD;
        let old = self.map.insert(key, listing);
        self.bytes = self.bytes + size - old.map_or(0, |o| o.body.len() + ENTRY_OVERHEAD);
        if self.bytes > MAX_LISTINGS_BYTES {
            self.drop_oldest();
        }
    }

    /// Drops the least recently answered listings, in one pass, until the
    /// rest fit in 90 % of [`MAX_LISTINGS_BYTES`] (as size eviction of the
    /// cache does), so that the next inserts do not each pay for a pass.
    fn drop_oldest(&mut self) {
        let mut by_age: Vec<(SystemTime, ListingKey)> =
            self.map.iter().map(|(k, l)| (l.seen, k.clone())).collect();
        by_age.sort_by_key(|(seen, _)| *seen);
        for (_, key) in by_age {
            if self.bytes <= MAX_LISTINGS_BYTES / 10 * 9 {
                break;
            }
            if let Some(gone) = self.map.remove(&key) {
                self.bytes -= gone.body.len() + ENTRY_OVERHEAD;
            }
        }
    }

    /// The records that restore every listing kept (for compaction).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.map
            .iter()
            .filter(|(key, l)| journaled(key, l))
            .map(|(key, l)| record(key, l))
    }
}

/// Whether a listing is worth a journal record: not too large, and not an
/// answer anyone can cause for any digest (a referrers 404, or an index of
/// no referrers), which would let clients grow the journal without bound.
pub fn journaled(key: &ListingKey, listing: &Listing) -> bool {
    let empty = match key.listed {
        Listed::Tags => false,
        Listed::Referrers(_) => crate::listing::referrer_digests(&listing.body).is_empty(),
    };
    !empty && listing.body.len() <= MAX_JOURNALED
}

/// The record of `listing`.
pub fn record(key: &ListingKey, listing: &Listing) -> Record {
    Record::Listing {
        registry: key.registry.to_string(),
        repo: key.repo.to_string(),
        referrers_of: match &key.listed {
            Listed::Tags => None,
            Listed::Referrers(d) => Some(d.to_string()),
        },
        body: String::from_utf8_lossy(&listing.body).into_owned(),
        seen: unix(listing.seen),
    }
}

/// The key and listing a [`Record::Listing`] holds, if its names are valid.
pub fn from_record(
    registry: &str,
    repo: &str,
    referrers_of: Option<&str>,
    body: &str,
    seen: u64,
) -> Option<(ListingKey, Listing)> {
    let listed = match referrers_of {
        None => Listed::Tags,
        Some(d) => Listed::Referrers(Digest::parse(d).ok()?),
    };
    let key = ListingKey {
        registry: RegistryName::parse(registry).ok()?,
        repo: RepoName::parse(repo).ok()?,
        listed,
    };
    let listing = Listing {
        body: Bytes::copy_from_slice(body.as_bytes()),
        seen: UNIX_EPOCH + Duration::from_secs(seen),
    };
    Some((key, listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes_oldest_dropped_and_records_round_trip() {
        let key = |repo: &str| ListingKey {
            registry: RegistryName::parse("docker.io").unwrap(),
            repo: RepoName::parse(repo).unwrap(),
            listed: Listed::Tags,
        };
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let big = Bytes::from(vec![b'x'; MAX_LISTINGS_BYTES / 2 - 4 * ENTRY_OVERHEAD]);
        let mut listings = Listings::default();
        let old = Listing {
            body: big.clone(),
            seen: at(1),
        };
        let at_seen = |body: &Bytes, s| Listing {
            body: body.clone(),
            seen: at(s),
        };
        listings.insert(key("a"), old);
        listings.insert(key("a"), at_seen(&big, 2));
        listings.insert(key("b"), at_seen(&big, 3));
        assert!(listings.get(&key("a")).is_some(), "within the bound");
        listings.insert(key("c"), at_seen(&big, 4));
        assert!(listings.get(&key("a")).is_none(), "the oldest went");
        assert!(listings.get(&key("c")).is_some());

        let Record::Listing {
            registry,
            repo,
            referrers_of,
            body,
            seen,
        } = record(&key("c"), listings.get(&key("c")).unwrap())
        else {
            panic!("a listing record");
        };
        let (k, l) = from_record(&registry, &repo, referrers_of.as_deref(), &body, seen).unwrap();
        assert_eq!((&k, &l), (&key("c"), listings.get(&key("c")).unwrap()));
    }

    #[test]
    fn only_listings_worth_keeping_are_journaled() {
        let key = |listed| ListingKey {
            registry: RegistryName::parse("docker.io").unwrap(),
            repo: RepoName::parse("library/app").unwrap(),
            listed,
        };
        let listing = |body: &[u8]| Listing {
            body: Bytes::copy_from_slice(body),
            seen: UNIX_EPOCH,
        };
        let referrers = key(Listed::Referrers(Digest::of(b"subject")));
        let one = format!(
            r#"{{"manifests":[{{"mediaType":"m","digest":"{}"}}]}}"#,
            Digest::of(b"sig")
        );
        assert!(journaled(&referrers, &listing(one.as_bytes())));
        assert!(!journaled(&referrers, &listing(b"")), "no referrers API");
        assert!(
            !journaled(&referrers, &listing(br#"{"manifests":[]}"#)),
            "none"
        );
        assert!(journaled(&key(Listed::Tags), &listing(b"[]")));
        let huge = vec![b' '; MAX_JOURNALED + 1];
        assert!(!journaled(&key(Listed::Tags), &listing(&huge)), "too large");
    }
}
