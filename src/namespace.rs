//! Which upstream registry and repository a request means.

use ociregistry_actors::names::{RegistryName, RepoName};

use crate::error::ApiError;

/// The upstream a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Registry host.
    pub registry: RegistryName,
    /// Repository in that registry (Docker Hub's `library/` added).
    pub repo: RepoName,
}

/// Resolves, in order: `?ns=` (containerd); a first path segment that is a
/// registry host (contains `.` or `:`, or is `localhost`); the configured
/// default registry. Anything else names no registry.
pub fn resolve(
    name: &str,
    ns: Option<&str>,
    default_ns: Option<&RegistryName>,
) -> Result<Target, ApiError> {
    let (registry, repo) = if let Some(ns) = ns {
        (RegistryName::parse(ns)?, name)
    } else if let Some((host, rest)) = split_host(name) {
        (RegistryName::parse(host)?, rest)
    } else if let Some(default) = default_ns {
        (default.clone(), name)
    } else {
        RepoName::parse(name)?;
        return Err(ApiError::NoRegistry(name.to_string()));
    };
    let repo = RepoName::parse(repo)?.for_registry(&registry)?;
    Ok(Target { registry, repo })
}

/// `host/rest` when the first segment of `name` is a registry host, by
/// Docker's rule for telling one from a repository component: it contains
/// `.` or `:`, or is `localhost`. Request paths and image references
/// (`crate::image_ref`) both split names here.
pub fn split_host(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
        .filter(|(host, _)| host.contains(['.', ':']) || *host == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        name: &str,
        ns: Option<&str>,
        default: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let default = default.map(|d| RegistryName::parse(d).unwrap());
        resolve(name, ns, default.as_ref()).map(|t| (t.registry.to_string(), t.repo.to_string()))
    }

    fn ok(registry: &str, repo: &str) -> (String, String) {
        (registry.to_string(), repo.to_string())
    }

    #[test]
    fn ns_parameter_wins() {
        assert_eq!(
            target("library/alpine", Some("docker.io"), Some("quay.io")).unwrap(),
            ok("docker.io", "library/alpine")
        );
        assert_eq!(
            target("alpine", Some("index.docker.io"), None).unwrap(),
            ok("docker.io", "library/alpine")
        );
        assert_eq!(
            target("my.org/app", Some("ghcr.io"), None).unwrap(),
            ok("ghcr.io", "my.org/app")
        );
    }

    #[test]
    fn in_path_host() {
        assert_eq!(
            target("quay.io/org/app", None, None).unwrap(),
            ok("quay.io", "org/app")
        );
        assert_eq!(
            target("docker.io/alpine", None, None).unwrap(),
            ok("docker.io", "library/alpine")
        );
        assert_eq!(
            target("localhost/a/b", None, None).unwrap(),
            ok("localhost", "a/b")
        );
        assert_eq!(
            target("127.0.0.1:5000/x", None, None).unwrap(),
            ok("127.0.0.1:5000", "x")
        );
    }

    #[test]
    fn default_namespace_and_none() {
        assert_eq!(
            target("alpine", None, Some("docker.io")).unwrap(),
            ok("docker.io", "library/alpine")
        );
        assert!(matches!(
            target("alpine", None, None),
            Err(ApiError::NoRegistry(_))
        ));
        assert!(matches!(
            target("Alpine", None, None),
            Err(ApiError::Name(_))
        ));
        assert!(matches!(
            target("x", Some("bad host!"), None),
            Err(ApiError::Name(_))
        ));
        assert!(matches!(
            target("quay.io/UPPER", None, None),
            Err(ApiError::Name(_))
        ));
    }
}
