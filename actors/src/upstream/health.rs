//! Upstream health: after repeated connection failures a registry is not
//! dialled for a back-off period, so requests fail fast while it is offline
//! instead of each waiting for a dial timeout. When the period ends, the
//! next request probes it.

use std::time::{Duration, Instant};

/// Consecutive connection failures before a registry is backed off.
const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// First back-off period; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest back-off period.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Connection-failure bookkeeping of one registry.
#[derive(Debug, Default)]
pub struct Health {
    /// Consecutive requests on which every endpoint failed to connect.
    failures: u32,
    /// No dialling before this instant.
    down_until: Option<Instant>,
}

impl Health {
    /// How long the registry stays backed off, if it is.
    pub fn backing_off(&self) -> Option<Duration> {
        self.down_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Records a request on which no endpoint could be reached; returns the
    /// back-off period when the registry is now backed off.
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures += 1;
        let over = self.failures.checked_sub(FAILURES_BEFORE_BACKOFF)?;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << over.min(8))
            .min(MAX_BACKOFF);
        self.down_until = Some(Instant::now() + backoff);
        Some(backoff)
    }

    /// Consecutive requests on which no endpoint could be reached.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records that the registry answered.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.down_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_repeated_failures_and_recovers() {
        let mut h = Health::default();
        assert_eq!(h.failed(), None);
        assert_eq!(h.failed(), None);
        assert!(h.backing_off().is_none());
        assert_eq!(h.failed(), Some(FIRST_BACKOFF));
        assert!(h.backing_off().is_some());
        assert_eq!(h.failed(), Some(FIRST_BACKOFF * 2));
        for _ in 0..20 {
            h.failed();
        }
        assert!(h.backing_off().unwrap() <= MAX_BACKOFF);
        h.succeeded();
        assert!(h.backing_off().is_none());
    }
}
