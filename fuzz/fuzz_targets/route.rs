//! `ociregistry::route::parse` and `ociregistry::namespace::resolve` on
//! arbitrary request paths. Input: the path, then optionally a line feed
//! and an `?ns=` value.
//!
//! A path routes to a manifest or blob only if it is exactly
//! `/v2/<name>/manifests|blobs/<last>`; a resolved target is a valid
//! registry and repository.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::namespace::resolve;
use ociregistry::route::{parse, Route};
use ociregistry_actors::names::{RegistryName, RepoName};

/// Checks what `resolve` answers for `name`.
fn check_resolve(name: &str, ns: Option<&str>, default: Option<&RegistryName>) {
    let Ok(target) = resolve(name, ns, default) else {
        return;
    };
    let registry = target.registry.as_str();
    let repo = target.repo.as_str();
    assert!(
        registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')),
        "{name:?} {ns:?} -> registry {registry:?}"
    );
    assert_eq!(
        RegistryName::parse(registry).map(|r| r.as_str().to_string()),
        Ok(registry.to_string())
    );
    assert!(!repo.contains(".."), "{name:?} {ns:?} -> {repo:?}");
    assert!(!repo.starts_with('/') && !repo.ends_with('/'), "{repo:?}");
    assert!(!repo.contains("//"), "{repo:?}");
    // The repository is the name (or its tail after an in-path host),
    // with Docker Hub's `library/` at most added.
    assert!(name.ends_with(repo.strip_prefix("library/").unwrap_or(repo)));
    if !target.registry.is_docker_hub() {
        assert!(RepoName::parse(repo).is_ok(), "{repo:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let (path, ns) = match input.split_once('\n') {
        Some((path, ns)) => (path, Some(ns)),
        None => (&*input, None),
    };
    let route = parse(path);
    match route {
        Route::Manifest { name, reference } => {
            assert!(!name.is_empty());
            assert!(!reference.contains('/'));
            assert_eq!(format!("/v2/{name}/manifests/{reference}"), path);
        }
        Route::Blob { name, digest } => {
            assert!(!name.is_empty());
            assert!(!digest.contains('/'));
            assert_eq!(format!("/v2/{name}/blobs/{digest}"), path);
        }
        Route::Base => assert!(path == "/v2" || path == "/v2/"),
        Route::Health => assert_eq!(path, "/health"),
        Route::Ready => assert_eq!(path, "/ready"),
        Route::Catalog => assert_eq!(path, "/v2/_catalog"),
        Route::Tags { name } => assert!(path.ends_with("/tags/list") && !name.is_empty()),
        Route::Referrers { name, digest } => {
            assert!(!name.is_empty());
            assert!(!digest.contains('/'));
            assert_eq!(format!("/v2/{name}/referrers/{digest}"), path);
        }
        Route::Unsupported(_) => assert!(path.starts_with("/v2/")),
        Route::Unknown => {}
    }
    if let Route::Manifest { name, .. } | Route::Blob { name, .. } | Route::Referrers { name, .. } =
        route
    {
        let hub = RegistryName::parse("docker.io").expect("docker.io");
        check_resolve(name, ns, None);
        check_resolve(name, ns, Some(&hub));
    }
    // The name resolver on its own, with the whole path as a name.
    check_resolve(path, ns, None);
});
