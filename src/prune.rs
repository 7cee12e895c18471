//! Prune requests as operators write them (CLI flags, the admin API's JSON,
//! the `pruneConfig` block), turned into what Storage executes.

use std::time::Duration;

use ociregistry_actors::storage::PruneBy;
use regex::Regex;
use serde::Deserialize;

use crate::units::parse_duration;

/// A prune request: `type` with its `duration` or `expr`, an optional
/// `count` limit, and `dryRun`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneSpec {
    /// `accessed` (not pulled for `duration`), `created` (cached more than
    /// `duration` ago) or `pattern` (name matches `expr`).
    #[serde(rename = "type")]
    pub kind: String,
    /// For `accessed` and `created`.
    #[serde(default)]
    pub duration: Option<String>,
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
    /// What to prune, checked.
    pub fn by(&self) -> Result<PruneBy, String> {
        let duration = || -> Result<Duration, String> {
            let text = self.duration.as_deref().ok_or("duration is required")?;
            parse_duration(text)?.ok_or_else(|| "duration cannot be never".to_string())
        };
        match self.kind.as_str() {
            "accessed" => Ok(PruneBy::Accessed(duration()?)),
            "created" => Ok(PruneBy::Created(duration()?)),
            "pattern" => {
                let expr = self.expr.as_deref().ok_or("expr is required")?;
                Regex::new(expr)
                    .map(PruneBy::Pattern)
                    .map_err(|e| e.to_string())
            }
            other => Err(format!(
                "unknown prune type {other:?} (accessed, created, pattern)"
            )),
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
            serde_json::json!({"type": "size"}),
        ] {
            let spec: PruneSpec = serde_json::from_value(bad.clone()).unwrap();
            assert!(spec.by().is_err(), "{bad}");
        }
    }
}
