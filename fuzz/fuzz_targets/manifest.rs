//! `Manifest::verify` and the reference readers on arbitrary bytes.
//! Input: the manifest bytes; their first line (when it is text) also
//! serves as an announced digest.
//!
//! Invariants: bytes verify exactly when they are a manifest or index of a
//! known type, and then against their own digest and only against it, by
//! digest and by tag; the media type is the one the bytes declare (or
//! their shape implies); every referenced digest is valid; nothing panics.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ociregistry_actors::error::FetchError;
use ociregistry_actors::manifest::{media_type_of, Manifest, MAX_MANIFEST_BYTES};
use ociregistry_actors::names::{Digest, Reference, Tag};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_MANIFEST_BYTES {
        return;
    }
    let bytes = Bytes::copy_from_slice(data);
    let digest = Digest::of(data);
    let by_digest = Reference::Digest(digest.clone());
    let by_tag = Reference::Tag(Tag::parse("latest").expect("tag"));

    // Only manifests and indexes of known types verify.
    let kind = media_type_of(data);
    let verified = Manifest::verify(&by_digest, bytes.clone(), None);
    let Ok(kind) = kind else {
        assert!(matches!(verified, Err(FetchError::BadResponse(_))));
        return;
    };

    // By digest: its own digest verifies, any other does not.
    let m = verified.expect("own digest");
    assert_eq!(m.digest, digest);
    assert_eq!(m.bytes, bytes);
    assert_eq!(m.media_type, kind);
    let other = Digest::of(&[data, b"x"].concat());
    assert!(matches!(
        Manifest::verify(&Reference::Digest(other), bytes.clone(), None),
        Err(FetchError::DigestMismatch { .. })
    ));

    // By tag: the announced digest must be the right one.
    let announced = Manifest::verify(&by_tag, bytes.clone(), Some(digest.as_str()));
    assert_eq!(announced.map(|m| m.digest), Ok(digest.clone()));
    let first_line = std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.lines().next());
    if let Some(line) = first_line {
        let r = Manifest::verify(&by_tag, bytes.clone(), Some(line));
        assert_eq!(r.is_ok(), line == digest.as_str(), "announced {line:?}");

    }

    // What it points to: valid digests, blobs then index entries.
    let blobs = m.blobs();
    let children = m.children();
    for d in blobs.iter().chain(children.iter().map(|c| &c.digest)) {
        assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(d));
    }
    let mut all = blobs;
    all.extend(children.into_iter().map(|c| c.digest));
    assert_eq!(m.info().references().cloned().collect::<Vec<_>>(), all);
});
