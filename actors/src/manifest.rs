//! A manifest as fetched: exact bytes, media type and verified digest.

use bytes::Bytes;

use crate::error::FetchError;
use crate::names::{Digest, Reference};

/// Largest manifest accepted (containerd rejects larger ones too).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Media types asked of an upstream when the client sent no `Accept`.
pub const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, */*";

/// A manifest whose bytes hash to `digest`; served byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The sha256 of `bytes`.
    pub digest: Digest,
    /// The `Content-Type` it is served with.
    pub media_type: String,
    /// The exact bytes the upstream sent.
    pub bytes: Bytes,
}

impl Manifest {
    /// Checks an upstream answer before anything trusts it: a by-digest
    /// request must hash to that digest, a by-tag answer must hash to the
    /// upstream's `Docker-Content-Digest` when it sent one.
    pub fn verify(
        reference: &Reference,
        bytes: Bytes,
        content_type: Option<&str>,
        announced: Option<&str>,
    ) -> Result<Self, FetchError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(FetchError::BadResponse(format!(
                "manifest of {} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let actual = Digest::of(&bytes);
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => match announced {
                Some(a) => Some(Digest::parse(a).map_err(|_| {
                    FetchError::BadResponse(format!("upstream sent Docker-Content-Digest {a:?}"))
                })?),
                None => None,
            },
        };
        if let Some(expected) = expected.filter(|e| *e != actual) {
            return Err(FetchError::DigestMismatch { expected, actual });
        }
        let media_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| !c.is_empty() && c != "application/octet-stream")
            .unwrap_or_else(|| media_type_of(&bytes));
        Ok(Self {
            digest: actual,
            media_type,
            bytes,
        })
    }
}

/// The media type a manifest declares, or the OCI type its shape implies.
pub fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Shape {
            manifests: Some(_), ..
        }) => "application/vnd.oci.image.index.v1+json".to_string(),
        _ => "application/vnd.oci.image.manifest.v1+json".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Tag;

    fn tag() -> Reference {
        Reference::Tag(Tag::parse("latest").unwrap())
    }

    #[test]
    fn by_digest_must_match() {
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let good = Reference::Digest(Digest::of(&body));
        let m = Manifest::verify(
            &good,
            body.clone(),
            Some("application/x; charset=utf-8"),
            None,
        )
        .unwrap();
        assert_eq!(m.media_type, "application/x");
        let other = Reference::Digest(Digest::of(b"other"));
        assert!(matches!(
            Manifest::verify(&other, body, None, None),
            Err(FetchError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn by_tag_checks_announced_digest() {
        let body = Bytes::from_static(br#"{"manifests":[]}"#);
        let m = Manifest::verify(&tag(), body.clone(), None, None).unwrap();
        assert_eq!(m.media_type, "application/vnd.oci.image.index.v1+json");
        let announced = Digest::of(b"x").to_string();
        assert!(matches!(
            Manifest::verify(&tag(), body.clone(), None, Some(&announced)),
            Err(FetchError::DigestMismatch { .. })
        ));
        assert!(Manifest::verify(&tag(), body, None, Some("garbage")).is_err());
    }

    #[test]
    fn oversize_is_refused() {
        let body = Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1]);
        assert!(matches!(
            Manifest::verify(&tag(), body, None, None),
            Err(FetchError::BadResponse(_))
        ));
    }

    #[test]
    fn declared_media_type_wins() {
        let body = br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            media_type_of(body),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            media_type_of(b"{}"),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
}
