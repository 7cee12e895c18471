//! Prune requests as operators write them (CLI flags, the admin API's JSON,
//! the `pruneConfig` block), turned into what Storage executes.

use std::time::Duration;

use ociregistry_actors::storage::PruneBy;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::units::Span;

/// Which images a prune chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PruneKind {
    /// Not pulled for `duration`.
    Accessed,
    /// Cached more than `duration` ago.
    Created,
    /// Whose name matches `expr`.
    Pattern,
}

/// A prune request: `type` with its `duration` or `expr`, an optional
/// `count` limit, and `dryRun`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    /// Which images.
    #[serde(rename = "type")]
    pub kind: PruneKind,
    /// For `accessed` and `created`.
    #[serde(default)]
    pub duration: Option<Span>,
    /// For `pattern`: a regular expression on `registry/repo:tag`.
    #[serde(default)]
    pub expr: Option<String>,
    /// At most this many images per run.
    #[serde(default)]
    pub count: Option<usize>,
    /// Only report.
    #[serde(default, alias = "dryrun")]
    pub dry_run: bool,
}

impl PruneSpec {
    /// What to prune, checked: a duration (not `never`) for `accessed` and
    /// `created`, an expression that compiles for `pattern`.
    pub fn by(&self) -> Result<PruneBy, String> {
        let duration = || -> Result<Duration, String> {
            let span = self.duration.ok_or("duration is required")?;
            span.0.ok_or_else(|| "duration cannot be never".to_string())
        };
        match self.kind {
            PruneKind::Accessed => Ok(PruneBy::Accessed(duration()?)),
            PruneKind::Created => Ok(PruneBy::Created(duration()?)),
            PruneKind::Pattern => {
                let expr = self.expr.as_deref().ok_or("expr is required")?;
                Regex::new(expr)
                    .map(PruneBy::Pattern)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let spec: PruneSpec = serde_json::from_value(
            serde_json::json!({"type": "accessed", "duration": "7d", "dryrun": true}),
        )
        .unwrap();
        assert!(spec.dry_run);
        assert!(
            matches!(spec.by(), Ok(PruneBy::Accessed(d)) if d == Duration::from_secs(7 * 86_400))
        );
        let spec: PruneSpec =
            serde_json::from_value(serde_json::json!({"type": "pattern", "expr": "^docker.io/"}))
                .unwrap();
        assert!(matches!(spec.by(), Ok(PruneBy::Pattern(_))));
        for bad in [
            serde_json::json!({"type": "accessed"}),
            serde_json::json!({"type": "created", "duration": "never"}),
            serde_json::json!({"type": "pattern", "expr": "("}),
        ] {
            let spec: PruneSpec = serde_json::from_value(bad.clone()).unwrap();
            assert!(spec.by().is_err(), "{bad}");
        }
        for malformed in [
            serde_json::json!({"type": "size"}),
            serde_json::json!({"type": "accessed", "duration": "7x"}),
        ] {
            assert!(
                serde_json::from_value::<PruneSpec>(malformed.clone()).is_err(),
                "{malformed}"
            );
        }
    }
}
