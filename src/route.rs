//! Splits a `/v2/...` path into the endpoint it names. Repository names may
//! have any number of segments, so the endpoint is found from the right.

/// An endpoint of the distribution API.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`: the API version check.
    Base,
    /// `/health`: the process answers (liveness).
    Health,
    /// `/ready`: the cache is loaded and answers (readiness).
    Ready,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository path as sent (may start with a registry host).
        name: &'a str,
        /// Tag or digest as sent.
        reference: &'a str,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository path as sent.
        name: &'a str,
        /// Digest as sent.
        digest: &'a str,
    },
    /// `/v2/_catalog`: the repositories in the cache.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository path as sent.
        name: &'a str,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository path as sent.
        name: &'a str,
        /// The subject digest as sent.
        digest: &'a str,
    },
    /// An endpoint of the API this pull-only mirror does not offer.
    Unsupported(&'static str),
    /// Not an endpoint of the API.
    Unknown,
}

impl Route<'_> {
    /// The metrics label of this endpoint.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Health | Route::Ready => "health",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Referrers { .. } => "referrers",
            Route::Unsupported(_) | Route::Unknown => "other",
        }
    }
}

/// Parses the raw (not percent-decoded) request path.
pub fn parse(path: &str) -> Route<'_> {
    match path {
        "/health" => return Route::Health,
        "/ready" => return Route::Ready,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        return Route::Unknown;
    };
    let rest = match rest {
        "" | "/" => return Route::Base,
        r => match r.strip_prefix('/') {
            Some(r) => r,
            None => return Route::Unknown,
        },
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        if !name.is_empty() {
            return Route::Tags { name };
        }
    }
    if rest.contains("/blobs/uploads") {
        return Route::Unsupported("this registry is pull-only: uploads are refused");
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Route::Unknown;
    };
    match head.rsplit_once('/') {
        Some((name, "manifests")) if !name.is_empty() => Route::Manifest {
            name,
            reference: last,
        },
        Some((name, "blobs")) if !name.is_empty() => Route::Blob { name, digest: last },
        Some((name, "referrers")) if !name.is_empty() => Route::Referrers { name, digest: last },
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(parse("/v2/"), Route::Base);
        assert_eq!(parse("/v2"), Route::Base);
        assert_eq!(
            parse("/v2/group/sub/project/image/manifests/v1.0"),
            Route::Manifest {
                name: "group/sub/project/image",
                reference: "v1.0"
            }
        );
        assert_eq!(
            parse("/v2/quay.io/org/app/blobs/sha256:abc"),
            Route::Blob {
                name: "quay.io/org/app",
                digest: "sha256:abc"
            }
        );
        assert_eq!(
            parse("/v2/a/manifests/manifests"),
            Route::Manifest {
                name: "a",
                reference: "manifests"
            }
        );
        assert!(matches!(
            parse("/v2/a/blobs/uploads/"),
            Route::Unsupported(_)
        ));
        assert!(matches!(
            parse("/v2/a/blobs/uploads/uuid"),
            Route::Unsupported(_)
        ));
        assert_eq!(parse("/v2/a/tags/list"), Route::Tags { name: "a" });
        assert_eq!(parse("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            parse("/v2/ghcr.io/a/b/referrers/sha256:abc"),
            Route::Referrers {
                name: "ghcr.io/a/b",
                digest: "sha256:abc"
            }
        );
        assert_eq!(parse("/v2/manifests/x"), Route::Unknown);
        assert_eq!(parse("/v2/a/b"), Route::Unknown);
        assert_eq!(parse("/v2x"), Route::Unknown);
        assert_eq!(parse("/other"), Route::Unknown);
        assert_eq!(parse("/health"), Route::Health);
        assert_eq!(parse("/ready"), Route::Ready);
    }
}
