//! A manifest as fetched: exact bytes, media type and verified digest.

use bytes::Bytes;

use crate::error::FetchError;
use crate::names::{Digest, Reference};

/// Largest manifest accepted (containerd rejects larger ones too).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The `Accept` of every manifest request upstream: every type this mirror
/// serves, whatever the client asked (what is cached answers every client;
/// each client is then answered by its own `Accept`).
pub const UPSTREAM_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (schema 2).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

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
    /// upstream's `Docker-Content-Digest` when it sent one, and either must
    /// be an image manifest or index of a known media type
    /// ([`media_type_of`]). Its media type is the one the bytes declare
    /// (or their shape implies), never an upstream's `Content-Type`: one
    /// registry cannot change how content another registry also serves is
    /// typed.
    pub fn verify(
        reference: &Reference,
        bytes: Bytes,
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
        let media_type = media_type_of(&bytes)
            .map_err(|e| FetchError::BadResponse(format!("the answer is not a manifest: {e}")))?;
        Ok(Self {
            digest: actual,
            media_type: media_type.to_string(),
            bytes,
        })
    }
}

/// What the cache keeps in memory of every stored manifest: enough to walk
/// the manifest graph and size images, not its bytes (those are read from
/// disk when served, through a bounded cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Blobs of an image manifest (config first, then layers).
    pub blobs: Vec<Digest>,
    /// Entries of an index.
    pub children: Vec<Descriptor>,
}

impl ManifestInfo {
    /// Everything it references: blobs, then index entries.
    pub fn references(&self) -> impl Iterator<Item = &Digest> {
        let children = self.children.iter().map(|c| &c.digest);
        self.blobs.iter().chain(children)
    }
}

impl Manifest {
    /// What the index keeps of it.
    pub fn info(&self) -> ManifestInfo {
        let (blobs, children) = self.pointers();
        ManifestInfo {
            media_type: self.media_type.clone(),
            size: self.bytes.len() as u64,
            blobs,
            children,
        }
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
        self.pointers().0
    }

    /// Platform manifests of an index.
    pub fn children(&self) -> Vec<Descriptor> {
        self.pointers().1
    }

    /// Blobs and index entries, from one parse of the bytes.
    fn pointers(&self) -> (Vec<Digest>, Vec<Descriptor>) {
        let Ok(shape) = serde_json::from_slice::<Shape>(&self.bytes) else {
            return (Vec::new(), Vec::new());
        };
        let blobs = shape.config.into_iter().chain(shape.layers);
        let blobs = blobs
            .filter_map(|d| Digest::parse(&d.digest).ok())
            .collect();
        let children = shape.manifests.into_iter().filter_map(|d| {
            let platform = d.platform.map(|p| match p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            });
            Some(Descriptor {
                digest: Digest::parse(&d.digest).ok()?,
                platform,
            })
        });
        (blobs, children.collect())
    }
}

/// Every manifest media type served and stored.
const KNOWN_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Why bytes are not a manifest this mirror serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAManifest {
    /// Not a JSON object of the manifest fields' types.
    #[error("not a JSON manifest document")]
    NotJson,
    /// `schemaVersion` is missing or not 2.
    #[error("schemaVersion is not 2")]
    SchemaVersion,
    /// A `mediaType` other than the OCI and Docker schema 2 manifests and indexes.
    #[error("its mediaType is not an image manifest or index")]
    MediaType,
    /// An index without `manifests`, or an image manifest without `config` and `layers`.
    #[error("it lacks the fields of a {0}")]
    Shape(&'static str),
    /// A descriptor (config, layer or index entry) without a valid
    /// `sha256:` digest: what it points to could not be kept track of.
    #[error("a descriptor has no valid sha256 digest")]
    Descriptor,
}

/// The media type of an image manifest or index: the `mediaType` it
/// declares (OCI or Docker schema 2), or for an OCI document that declares
/// none, the one its shape implies. Anything else is not a manifest.
pub fn media_type_of(bytes: &[u8]) -> Result<&'static str, NotAManifest> {
    /// The fields that tell what a document is (their types checked, their contents not).
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kind {
        schema_version: Option<u64>,
        media_type: Option<String>,
        manifests: Option<Vec<serde::de::IgnoredAny>>,
        config: Option<serde_json::Map<String, serde_json::Value>>,
        layers: Option<Vec<serde::de::IgnoredAny>>,
    }
    let kind: Kind = serde_json::from_slice(bytes).map_err(|_| NotAManifest::NotJson)?;
    if kind.schema_version != Some(2) {
        return Err(NotAManifest::SchemaVersion);
    }
    let media_type = match kind.media_type.as_deref() {
        Some(declared) => *KNOWN_TYPES
            .iter()
            .find(|k| **k == declared)
            .ok_or(NotAManifest::MediaType)?,
        None if kind.manifests.is_some() => OCI_INDEX,
        None => OCI_MANIFEST,
    };
    let shaped = match media_type {
        OCI_INDEX | DOCKER_LIST => kind.manifests.is_some(),
        _ => kind.config.is_some() && kind.layers.is_some(),
    };
    if !shaped {
        return Err(NotAManifest::Shape(media_type));
    }
    // What it points to must be readable, or prune and eviction could not
    // tell which blobs and manifests it keeps.
    let shape: Shape = serde_json::from_slice(bytes).map_err(|_| NotAManifest::Descriptor)?;
    let mut pointed = shape
        .config
        .iter()
        .chain(&shape.layers)
        .chain(&shape.manifests);
    match pointed.all(|d| Digest::parse(&d.digest).is_ok()) {
        true => Ok(media_type),
        false => Err(NotAManifest::Descriptor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Tag;

    fn tag() -> Reference {
        Reference::Tag(Tag::parse("latest").unwrap())
    }

    /// A minimal OCI image manifest.
    const IMAGE: &[u8] = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;

    #[test]
    fn by_digest_must_match() {
        let body = Bytes::from_static(IMAGE);
        let good = Reference::Digest(Digest::of(&body));
        let m = Manifest::verify(&good, body.clone(), None).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST, "the type the bytes imply");
        assert_eq!(m.bytes, body, "the bytes as fetched");
        let other = Reference::Digest(Digest::of(b"other"));
        assert!(matches!(
            Manifest::verify(&other, body, None),
            Err(FetchError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn by_tag_checks_announced_digest() {
        let body = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
        let m = Manifest::verify(&tag(), body.clone(), None).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        let announced = Digest::of(b"x").to_string();
        assert!(matches!(
            Manifest::verify(&tag(), body.clone(), Some(&announced)),
            Err(FetchError::DigestMismatch { .. })
        ));
        assert!(Manifest::verify(&tag(), body, Some("garbage")).is_err());
    }

    #[test]
    fn oversize_is_refused() {
        let body = Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1]);
        assert!(matches!(
            Manifest::verify(&tag(), body, None),
            Err(FetchError::BadResponse(_))
        ));
    }

    #[test]
    fn references_blobs_and_platforms() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let image = serde_json::json!({"schemaVersion": 2, "config": {"digest": a.as_str()}, "layers": [{"digest": b.as_str()}]});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"digest": c.as_str(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]});
        let m = |v: serde_json::Value| {
            Manifest::verify(
                &Reference::Tag(Tag::parse("t").unwrap()),
                Bytes::from(v.to_string()),
                None,
            )
            .unwrap()
        };
        let refs = |m: &Manifest| m.info().references().cloned().collect::<Vec<_>>();
        assert_eq!(refs(&m(image)), vec![a, b]);
        let index = m(index);
        assert_eq!(
            index.children()[0].platform.as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(refs(&index), vec![c]);
    }

    #[test]
    fn declared_media_type_wins() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
        assert_eq!(media_type_of(docker), Ok(DOCKER_MANIFEST));
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(media_type_of(list), Ok(DOCKER_LIST));
        assert_eq!(media_type_of(IMAGE), Ok(OCI_MANIFEST));
    }

    #[test]
    fn only_manifests_and_indexes_of_known_types_are_accepted() {
        for (body, why) in [
            (&b"<html>internal admin</html>"[..], NotAManifest::NotJson),
            (br#"{"access_token":"secret","expires_in":300}"#, NotAManifest::SchemaVersion),
            (b"{}", NotAManifest::SchemaVersion),
            (br#"[2]"#, NotAManifest::NotJson),
            (br#"{"schemaVersion":1,"fsLayers":[]}"#, NotAManifest::SchemaVersion),
            (br#"{"schemaVersion":2}"#, NotAManifest::Shape(OCI_MANIFEST)),
            (br#"{"schemaVersion":2,"layers":[]}"#, NotAManifest::Shape(OCI_MANIFEST)),
            (br#"{"schemaVersion":2,"config":{},"layers":{}}"#, NotAManifest::NotJson),
            (br#"{"schemaVersion":2,"config":{},"layers":[]}"#, NotAManifest::Descriptor),
            (
                br#"{"schemaVersion":2,"config":{"digest":"sha256:00"},"layers":[]}"#,
                NotAManifest::Descriptor,
            ),
            (br#"{"schemaVersion":2,"manifests":[{"size":1}]}"#, NotAManifest::Descriptor),
            (
                br#"{"schemaVersion":2,"mediaType":"application/json","config":{},"layers":[]}"#,
                NotAManifest::MediaType,
            ),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{},"layers":[]}"#,
                NotAManifest::Shape(OCI_INDEX),
            ),
        ] {
            assert_eq!(media_type_of(body), Err(why), "{}", String::from_utf8_lossy(body));
            let bytes = Bytes::copy_from_slice(body);
            let by_digest = Reference::Digest(Digest::of(body));
            assert!(matches!(
                Manifest::verify(&by_digest, bytes.clone(), None),
                Err(FetchError::BadResponse(_))
            ));
            assert!(matches!(
                Manifest::verify(&tag(), bytes, None),
                Err(FetchError::BadResponse(_))
            ));
        }
    }
}
