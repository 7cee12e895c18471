//! Listings: a repository's tag list and a manifest's referrers, as asked
//! of upstreams and kept by the cache (not content-addressed: they change,
//! and are kept fresh like tags).
//!
//! A tag list is kept as the JSON array of every tag, sorted; a referrers
//! list as the upstream's OCI image index, byte for byte (pages merged
//! into one when the upstream paginates), or empty when the upstream has
//! no referrers API (it answered 404: clients then fall back to the tag
//! schema).

use std::time::SystemTime;

use bytes::Bytes;
use serde_json::Value;

use crate::error::FetchError;
use crate::manifest::OCI_INDEX;
use crate::names::{Digest, RegistryName, RepoName, Tag};

/// What a listing lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listed {
    /// The repository's tags.
    Tags,
    /// The manifests whose `subject` is this digest.
    Referrers(Digest),
}

/// Which listing: of what, in which repository of which registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingKey {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository.
    pub repo: RepoName,
    /// Tags, or the referrers of a digest.
    pub listed: Listed,
}

/// A listing as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The body (see the module documentation).
    pub body: Bytes,
    /// When the upstream last answered it.
    pub seen: SystemTime,
}

/// Largest listing accepted from an upstream, all pages together.
pub const MAX_LISTING_BYTES: usize = 4 << 20;

/// The body of a tag list: every tag, sorted, as a JSON array.
pub fn tags_body(mut tags: Vec<Tag>) -> Bytes {
    tags.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    tags.dedup();
    let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
    Bytes::from(serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec()))
}

/// The tags of a tag-list body (invalid names dropped).
pub fn tags_of(body: &[u8]) -> Vec<Tag> {
    let names: Vec<String> = serde_json::from_slice(body).unwrap_or_default();
    names.iter().filter_map(|t| Tag::parse(t).ok()).collect()
}

/// Checks that an upstream's referrers answer is an OCI image index whose
/// entries are descriptors (a media type and a valid digest each).
pub fn check_referrers(body: &[u8]) -> Result<Value, FetchError> {
    let bad = |why: &str| FetchError::BadResponse(format!("referrers answer: {why}"));
    let index: Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    if let Some(media_type) = index.get("mediaType") {
        if media_type.as_str() != Some(OCI_INDEX) {
            return Err(bad("not an OCI image index"));
        }
    }
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no manifests array"))?;
    for entry in manifests {
        let digest = entry.get("digest").and_then(Value::as_str).unwrap_or("");
        if Digest::parse(digest).is_err() || !entry.get("mediaType").is_some_and(Value::is_string) {
            return Err(bad("an entry is not a descriptor"));
        }
    }
    Ok(index)
}

/// One index of the entries of several pages of referrers: the first
/// page's bytes when there is one page, else the first page with every
/// page's entries.
pub fn merge_referrer_pages(pages: Vec<(Bytes, Value)>) -> Bytes {
    if pages.len() == 1 {
        return pages.into_iter().next().map(|(b, _)| b).unwrap_or_default();
    }
    let mut pages = pages.into_iter().map(|(_, v)| v);
    let Some(mut first) = pages.next() else {
        return Bytes::new();
    };
    let rest: Vec<Value> = pages.flat_map(entries).collect();
    if let Some(Value::Array(all)) = first.get_mut("manifests") {
        all.extend(rest);
    }
    Bytes::from(serde_json::to_vec(&first).unwrap_or_default())
}

/// The entries of a referrers index.
fn entries(index: Value) -> Vec<Value> {
    match index {
        Value::Object(mut o) => match o.remove("manifests") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The digests a referrers index lists.
pub fn referrer_digests(body: &[u8]) -> Vec<Digest> {
    let index: Value = serde_json::from_slice(body).unwrap_or_default();
    entries(index)
        .iter()
        .filter_map(|e| e.get("digest")?.as_str())
        .filter_map(|d| Digest::parse(d).ok())
        .collect()
}

/// The referrers index keeping only entries of one of `artifact_types`.
pub fn filter_referrers(body: &[u8], artifact_types: &[String]) -> Bytes {
    let mut index: Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(Value::Array(all)) = index.get_mut("manifests") {
        all.retain(|e| {
            let kind = e.get("artifactType").and_then(Value::as_str);
            artifact_types.iter().any(|t| Some(t.as_str()) == kind)
        });
    }
    Bytes::from(serde_json::to_vec(&index).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, artifact_type: &str) -> Value {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
            "size": 10,
            "artifactType": artifact_type,
        })
    }

    fn index(entries: Vec<Value>) -> Bytes {
        let v =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        Bytes::from(serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn referrers_are_checked_merged_and_filtered() {
        let one = index(vec![entry(1, "sig"), entry(2, "sbom")]);
        let parsed = check_referrers(&one).unwrap();
        assert_eq!(merge_referrer_pages(vec![(one.clone(), parsed)]), one);
        let two = index(vec![entry(3, "sig")]);
        let pages = vec![
            (one.clone(), check_referrers(&one).unwrap()),
            (two.clone(), check_referrers(&two).unwrap()),
        ];
        let merged = merge_referrer_pages(pages);
        assert_eq!(referrer_digests(&merged).len(), 3);
        let sigs = filter_referrers(&merged, &["sig".into()]);
        assert_eq!(referrer_digests(&sigs).len(), 2);
        let both = filter_referrers(&merged, &["sig".into(), "sbom".into()]);
        assert_eq!(referrer_digests(&both).len(), 3);
        assert_eq!(
            referrer_digests(&filter_referrers(&merged, &["none".into()])),
            vec![]
        );

        for bad in [
            &b"[]"[..],
            b"{}",
            b"not json",
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#,
            br#"{"manifests":[{"mediaType":"x","digest":"sha256:short"}]}"#,
        ] {
            assert!(matches!(
                check_referrers(bad),
                Err(FetchError::BadResponse(_))
            ));
        }
    }

    #[test]
    fn tag_bodies_are_sorted_and_round_trip() {
        let tags = ["v2", "latest", "v1", "v1"].map(|t| Tag::parse(t).unwrap());
        let body = tags_body(tags.to_vec());
        assert_eq!(&body[..], br#"["latest","v1","v2"]"#);
        assert_eq!(tags_of(&body).len(), 3);
        assert_eq!(tags_of(b"garbage"), vec![]);
    }
}
