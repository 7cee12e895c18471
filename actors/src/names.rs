//! Validated OCI names: registry hosts, repository names, tags and digests.
//!
//! Every value here has passed the OCI distribution grammar, so code that
//! builds file paths or upstream URLs from them cannot be steered outside the
//! cache root or to an unintended URL.

use std::fmt;

/// Longest repository name accepted (the OCI spec recommends 255 for host + name).
const MAX_REPO_LEN: usize = 255;
/// Longest tag accepted by the OCI grammar.
const MAX_TAG_LEN: usize = 128;
/// Longest registry host (with port) accepted.
const MAX_HOST_LEN: usize = 253;

/// Why a name, tag or digest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name is outside `[a-z0-9]+([._-][a-z0-9]+)*(/...)*`.
    #[error("invalid repository name {0:?}")]
    Repository(String),
    /// The tag is outside `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// The digest is not `sha256:<64 lower-case hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    Digest(String),
    /// The registry host is not `host[:port]`.
    #[error("invalid registry host {0:?}")]
    Registry(String),
}

/// A `sha256:<hex>` content digest (the only algorithm this server verifies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lower-case hex>`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| NameError::Digest(s.to_string()))?;
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::Digest(s.to_string()))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: sha2::Sha256) -> Self {
        use sha2::Digest as _;
        Self(format!("sha256:{:x}", hasher.finalize()))
    }

    /// The hex part, used as a file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registry host as clients name it (`docker.io`, `quay.io`, `127.0.0.1:5000`).
/// Deserializes from text through [`RegistryName::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct RegistryName(String);

impl TryFrom<String> for RegistryName {
    type Error = NameError;

    fn try_from(text: String) -> Result<Self, NameError> {
        Self::parse(&text)
    }
}

impl RegistryName {
    /// Parses `host[:port]`, lower-cases it and folds Docker Hub's aliases
    /// (`index.docker.io`, `registry-1.docker.io`) into `docker.io`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = || NameError::Registry(s.to_string());
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty() || s.len() > MAX_HOST_LEN {
            return Err(err());
        }
        let host_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        // One spelling per port: digits only, no sign, no leading zero.
        let port_ok = port.is_none_or(|p| {
            p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0') && p.parse::<u16>().is_ok()
        });
        if !host_ok || !port_ok {
            return Err(err());
        }
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "index.docker.io" | "registry-1.docker.io" => Self(DOCKER_HUB.to_string()),
            _ => Self(lower),
        })
    }

    /// True for Docker Hub, whose one-segment repositories live under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }

    /// The host as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Docker Hub's canonical registry name.
const DOCKER_HUB: &str = "docker.io";

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository path inside a registry (`library/alpine`, `group/sub/project/image`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Parses a repository name following the OCI grammar: `/`-separated
    /// components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, any depth.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_REPO_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::Repository(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// Applies Docker Hub's rule that one-segment names live under
    /// `library/`. The result must be a valid name too (so that everything
    /// stored parses back after a restart): a one-segment Docker Hub name
    /// longer than 247 characters is refused.
    pub fn for_registry(self, registry: &RegistryName) -> Result<Self, NameError> {
        if registry.is_docker_hub() && !self.0.contains('/') {
            Self::parse(&format!("library/{}", self.0))
        } else {
            Ok(self)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag (`latest`, `3.20`, `v1.0-RC1`): case is kept, case matters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Parses `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::Tag(s.to_string()))
        }
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable name, resolved through the tag index.
    Tag(Tag),
    /// An immutable content address.
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Digest::parse(s).map(Self::Digest)
        } else {
            Tag::parse(s).map(Self::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.hex(), HEX);
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_err());
        assert!(Digest::parse(&format!("sha512:{HEX}")).is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", &HEX[1..])).is_err());
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "library/alpine",
            "my.org/app",
            "a/b/c/d/e/f",
            "a__b",
            "a---b",
            "a_b.c-d",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "..", "a/../b", "a..b", "-a", "a-", "a___b", "a b",
            "a%2fb",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "3.20", "V1.0-RC_1", "_x", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(&format!("sha256:{HEX}")),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(NameError::Digest(_))
        ));
    }

    #[test]
    fn registries_and_docker_hub() {
        for alias in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "Docker.IO",
        ] {
            assert_eq!(RegistryName::parse(alias).unwrap().as_str(), "docker.io");
        }
        assert_eq!(
            RegistryName::parse("127.0.0.1:5000").unwrap().as_str(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            RegistryName::parse("localhost").unwrap().as_str(),
            "localhost"
        );
        for bad in [
            "", "a/b", "h:port", "h:99999", "-a.com", "a..b", "a@b", "http://x", "h:+443",
            "h:0443", "h:0", "h:",
        ] {
            assert!(RegistryName::parse(bad).is_err(), "{bad}");
        }
        let hub = RegistryName::parse("docker.io").unwrap();
        let quay = RegistryName::parse("quay.io").unwrap();
        let alpine = RepoName::parse("alpine").unwrap();
        let on = |r: &RepoName, reg| r.clone().for_registry(reg).map(|n| n.0);
        assert_eq!(on(&alpine, &hub).as_deref(), Ok("library/alpine"));
        assert_eq!(on(&alpine, &quay).as_deref(), Ok("alpine"));
        let org = RepoName::parse("org/app").unwrap();
        assert_eq!(on(&org, &hub).as_deref(), Ok("org/app"));
        // A name that `library/` would push past the limit is refused, so
        // every stored name parses back.
        let longest = RepoName::parse(&"a".repeat(MAX_REPO_LEN - 8)).unwrap();
        assert_eq!(on(&longest, &hub).map(|n| n.len()), Ok(MAX_REPO_LEN));
        let long = RepoName::parse(&"a".repeat(MAX_REPO_LEN - 7)).unwrap();
        assert!(on(&long, &hub).is_err());
        assert!(on(&long, &quay).is_ok());
    }
}
