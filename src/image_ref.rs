//! Image references as list files, `--resolve-ref` and tarballs spell
//! them: `[registry/]repo[:tag][@sha256:<hex>]`, read the way docker and
//! containerd read them.

use std::fmt;

use ociregistry_actors::names::{Digest, NameError, Reference, RegistryName, RepoName, Tag};

use crate::namespace::split_host;

/// The registry of a reference that names none.
const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of a reference that names neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";

/// An image named by reference: `[registry/]repo[:tag][@digest]`.
///
/// With both a tag and a digest (`alpine:3.20@sha256:…`) the digest wins,
/// as with docker and containerd: the digest is what is pulled, and the tag
/// is kept only to name the image in messages ([`fmt::Display`]). It is
/// neither asked of the upstream nor set in the cache (a tarball import
/// named by such a reference sets no tag either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (Docker Hub when none is named).
    pub registry: RegistryName,
    /// Repository (Docker Hub's `library/` added).
    pub repo: RepoName,
    /// What is pulled: the digest when one is written, else the tag
    /// (`latest` when none).
    pub reference: Reference,
    /// The tag written beside a digest, for naming only (see above); `None`
    /// whenever `reference` is a tag.
    pub tag_with_digest: Option<Tag>,
}

/// Why a text is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {source}")]
pub struct ImageRefError {
    /// The reference as written.
    pub text: String,
    /// The part that is not valid.
    pub source: NameError,
}

impl ImageRef {
    /// Parses a reference the way docker and containerd do: the first path
    /// segment is the registry when [`split_host`] says it is a host (the
    /// same rule as request paths), else the image is on Docker Hub; a
    /// `:tag` follows the last segment; an `@` is followed by a digest.
    pub fn parse(text: &str) -> Result<Self, ImageRefError> {
        let bad = |source| ImageRefError {
            text: text.to_string(),
            source,
        };
        let (named, digest) = match text.split_once('@') {
            Some((named, digest)) => (named, Some(Digest::parse(digest).map_err(bad)?)),
            None => (text, None),
        };
        let (name, tag) = match named.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((name, tag)) => (name, Some(Tag::parse(tag).map_err(bad)?)),
            None => (named, None),
        };
        let (registry, repo) = split_host(name).unwrap_or((DEFAULT_REGISTRY, name));
        let registry = RegistryName::parse(registry).map_err(bad)?;
        let repo = RepoName::parse(repo)
            .and_then(|r| r.for_registry(&registry))
            .map_err(bad)?;
        let (reference, tag_with_digest) = match (digest, tag) {
            (Some(digest), tag) => (Reference::Digest(digest), tag),
            (None, Some(tag)) => (Reference::Tag(tag), None),
            (None, None) => (
                Reference::Tag(Tag::parse(DEFAULT_TAG).expect("valid tag")),
                None,
            ),
        };
        Ok(Self {
            registry,
            repo,
            reference,
            tag_with_digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(tag) = &self.tag_with_digest {
            write!(f, ":{tag}")?;
        }
        match &self.reference {
            Reference::Tag(tag) => write!(f, ":{tag}"),
            Reference::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn references_like_docker() {
        assert_eq!(parsed("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(parsed("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(
            parsed("index.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(parsed("org/app"), "docker.io/org/app:latest");
        assert_eq!(parsed("quay.io/org/app:v1"), "quay.io/org/app:v1");
        assert_eq!(parsed("localhost/x"), "localhost/x:latest");
        assert_eq!(parsed("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(parsed("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b:1");
        // No slash: the colon starts a tag, as with docker.
        assert_eq!(parsed("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn a_digest_wins_over_a_tag_which_only_names() {
        let digest = Digest::of(b"x");
        assert_eq!(
            parsed(&format!("ghcr.io/a/b@{digest}")),
            format!("ghcr.io/a/b@{digest}")
        );
        for (text, name, tag) in [
            (
                format!("alpine:3.20@{digest}"),
                "docker.io/library/alpine",
                "3.20",
            ),
            (
                format!("localhost:5000/x:1.0@{digest}"),
                "localhost:5000/x",
                "1.0",
            ),
        ] {
            let image = ImageRef::parse(&text).unwrap();
            assert_eq!(image.reference, Reference::Digest(digest.clone()), "{text}");
            assert_eq!(image.tag_with_digest, Some(Tag::parse(tag).unwrap()));
            assert_eq!(image.to_string(), format!("{name}:{tag}@{digest}"));
        }
        assert_eq!(
            ImageRef::parse("alpine:3.20").unwrap().tag_with_digest,
            None
        );
    }

    #[test]
    fn refused_spellings() {
        let digest = Digest::of(b"x");
        for bad in [
            String::new(),
            "UPPER/case".into(),
            "a:bad tag".into(),
            "/alpine".into(),
            "alpine/".into(),
            "bad host!/x".into(),
            // After `@` only a digest.
            "alpine@latest".into(),
            "alpine@sha256:abc".into(),
            "alpine@".into(),
            format!("alpine:@{digest}"),
            format!("alpine@{digest}@{digest}"),
            format!("@{digest}"),
            format!("alpine:3.20@{digest}:x"),
        ] {
            assert!(ImageRef::parse(&bad).is_err(), "{bad:?} was accepted");
        }
        let e = ImageRef::parse("alpine@latest").unwrap_err();
        assert_eq!(e.source, NameError::Digest("latest".into()));
        assert!(e.to_string().starts_with("\"alpine@latest\": "), "{e}");
    }
}
