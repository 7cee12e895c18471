//! When a cached tag may be answered without asking the upstream.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use ociregistry_actors::names::{RegistryName, Tag};

/// How a registry's tags are kept fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPolicy {
    /// How long a confirmed tag is answered from the cache; `None`: forever.
    pub ttl: Option<Duration>,
    /// Answer an expired tag from the cache at once and revalidate it in
    /// the background.
    pub stale_while_revalidate: bool,
}

impl TagPolicy {
    /// Whether a tag last confirmed at `checked` may be answered without
    /// asking the upstream.
    pub fn is_fresh(&self, checked: SystemTime) -> bool {
        match self.ttl {
            None => true,
            Some(ttl) => checked.elapsed().is_ok_and(|age| age < ttl),
        }
    }
}

/// Tag policies: a default, per-registry overrides, and `alwaysPullLatest`.
#[derive(Debug, Clone)]
pub struct TagPolicies {
    /// For registries without their own.
    pub default: TagPolicy,
    /// Per-registry overrides.
    pub per_registry: HashMap<RegistryName, TagPolicy>,
    /// The tag `latest` is revalidated on every request.
    pub always_pull_latest: bool,
}

impl TagPolicies {
    /// The policy of `registry` (its tag lists and referrers follow it).
    pub fn for_registry(&self, registry: &RegistryName) -> TagPolicy {
        *self.per_registry.get(registry).unwrap_or(&self.default)
    }

    /// The policy for `tag` of `registry`.
    pub fn for_tag(&self, registry: &RegistryName, tag: &Tag) -> TagPolicy {
        let mut policy = self.for_registry(registry);
        if self.always_pull_latest && tag.as_str() == "latest" {
            policy.ttl = Some(Duration::ZERO);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_never_zero_and_latest() {
        let ten_min = TagPolicy {
            ttl: Some(Duration::from_secs(600)),
            stale_while_revalidate: false,
        };
        let now = SystemTime::now();
        assert!(ten_min.is_fresh(now));
        assert!(!ten_min.is_fresh(now - Duration::from_secs(601)));
        let never = TagPolicy {
            ttl: None,
            ..ten_min
        };
        assert!(never.is_fresh(now - Duration::from_secs(1_000_000)));
        let zero = TagPolicy {
            ttl: Some(Duration::ZERO),
            ..ten_min
        };
        assert!(!zero.is_fresh(now));

        let quay = RegistryName::parse("quay.io").unwrap();
        let policies = TagPolicies {
            default: ten_min,
            per_registry: HashMap::from([(quay.clone(), never)]),
            always_pull_latest: true,
        };
        let hub = RegistryName::parse("docker.io").unwrap();
        let v1 = Tag::parse("v1").unwrap();
        let latest = Tag::parse("latest").unwrap();
        assert_eq!(policies.for_tag(&hub, &v1), ten_min);
        assert_eq!(policies.for_tag(&quay, &v1), never);
        assert_eq!(policies.for_tag(&quay, &latest).ttl, Some(Duration::ZERO));
    }
}
