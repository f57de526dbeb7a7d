//! The one retry policy: exponential backoff with a floor and a cap.
//!
//! Every loop that retries a failed API call (the agent's report writer, the
//! controller's evictions) asks this for its next wait, so "how long until it
//! tries again" has a single answer that tests can pin down.

use std::time::Duration;

/// Doubles from `initial` per failed attempt, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait after the `attempt`-th consecutive failure (1-based; 0 is
    /// treated as 1, so a caller that forgot to count still waits).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.clamp(1, 32) - 1;
        self.initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_floor_and_stops_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(b.delay(0), Duration::from_secs(2));
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(3), Duration::from_secs(8));
        assert_eq!(b.delay(8), Duration::from_secs(256));
        assert_eq!(b.delay(9), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300), "no overflow");
    }
}
