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

/// A descriptor inside a manifest: what it points to, and for the entries
/// of an index, the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The content's digest.
    pub digest: Digest,
    /// `os/architecture[/variant]` of an index entry.
    pub platform: Option<String>,
}

/// The parts of a manifest that point elsewhere.
#[derive(serde::Deserialize)]
struct Shape {
    /// An image manifest's config.
    config: Option<RawDescriptor>,
    /// An image manifest's layers.
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    /// An index's platform manifests.
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
}

/// A descriptor as written in JSON.
#[derive(serde::Deserialize)]
struct RawDescriptor {
    /// `sha256:...`.
    digest: String,
    /// For index entries.
    platform: Option<RawPlatform>,
}

/// A platform as written in JSON.
#[derive(serde::Deserialize)]
struct RawPlatform {
    /// e.g. `linux`.
    os: String,
    /// e.g. `arm64`.
    architecture: String,
    /// e.g. `v8`.
    variant: Option<String>,
}

impl Manifest {
    /// Blobs of an image manifest (config first, then layers).
    pub fn blobs(&self) -> Vec<Digest> {
        let Ok(shape) = serde_json::from_slice::<Shape>(&self.bytes) else {
            return Vec::new();
        };
        let all = shape.config.into_iter().chain(shape.layers);
        all.filter_map(|d| Digest::parse(&d.digest).ok()).collect()
    }

    /// Platform manifests of an index.
    pub fn children(&self) -> Vec<Descriptor> {
        let Ok(shape) = serde_json::from_slice::<Shape>(&self.bytes) else {
            return Vec::new();
        };
        shape
            .manifests
            .into_iter()
            .filter_map(|d| {
                let platform = d.platform.map(|p| match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                });
                Some(Descriptor {
                    digest: Digest::parse(&d.digest).ok()?,
                    platform,
                })
            })
            .collect()
    }

    /// Everything it references: config, layers and platform manifests.
    pub fn references(&self) -> Vec<Digest> {
        let mut all = self.blobs();
        all.extend(self.children().into_iter().map(|d| d.digest));
        all
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
    fn references_blobs_and_platforms() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let image = serde_json::json!({"config": {"digest": a.as_str()}, "layers": [{"digest": b.as_str()}]});
        let index = serde_json::json!({"manifests": [
            {"digest": c.as_str(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]});
        let m = |v: serde_json::Value| {
            Manifest::verify(
                &Reference::Tag(Tag::parse("t").unwrap()),
                Bytes::from(v.to_string()),
                None,
                None,
            )
            .unwrap()
        };
        assert_eq!(m(image).references(), vec![a, b]);
        let index = m(index);
        assert_eq!(
            index.children()[0].platform.as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(index.references(), vec![c]);
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
