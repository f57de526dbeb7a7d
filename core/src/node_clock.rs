//! Node times on the controller's clock.
//!
//! A session's `started_at` is the node's clock, and a node whose clock runs
//! behind would date a login early, and so evict the pod early. Its report says
//! when the node generated it (`generated_at`, the same clock) and the
//! controller knows when it heard it (its own clock, or the API server's for a
//! listed report): their difference is the node's lag plus the delivery
//! latency. A node time moved by it is on the controller's clock, and since the
//! latency only adds, never earlier than the truth: a skewed node can make
//! eviction a little late, never early. A clock that runs ahead is corrected
//! the same way (the offset is negative).

use jiff::{SignedDuration, Timestamp};

/// How far the controller's clock is ahead of the node's, from one report.
pub fn offset(heard_at: Timestamp, generated_at: Timestamp) -> SignedDuration {
    heard_at.duration_since(generated_at)
}

/// `t` (node clock) on the controller's clock; saturates at the ends of time.
pub fn on_controller_clock(t: Timestamp, offset: SignedDuration) -> Timestamp {
    t.checked_add(offset).unwrap_or(if offset.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    #[test]
    fn a_node_behind_dates_its_logins_later_not_earlier() {
        // The node's clock runs 30 minutes behind; the report took 2 s to arrive.
        let generated = ts("2026-11-24T00:30:00Z");
        let heard = ts("2026-11-24T01:00:02Z");
        let o = offset(heard, generated);
        assert_eq!(o, SignedDuration::from_secs(30 * 60 + 2));
        // A login the node dates 00:20 (ten minutes before its scan) began at 00:50.
        let started = on_controller_clock(ts("2026-11-24T00:20:00Z"), o);
        assert_eq!(started, ts("2026-11-24T00:50:02Z"));
    }

    #[test]
    fn a_node_ahead_is_corrected_too_and_extremes_saturate() {
        let o = offset(ts("2026-11-24T01:00:00Z"), ts("2026-11-24T02:00:00Z"));
        assert_eq!(
            on_controller_clock(ts("2026-11-24T01:59:00Z"), o),
            ts("2026-11-24T00:59:00Z")
        );
        assert_eq!(
            on_controller_clock(Timestamp::MAX, SignedDuration::MAX),
            Timestamp::MAX
        );
        assert_eq!(
            on_controller_clock(Timestamp::MIN, SignedDuration::MIN),
            Timestamp::MIN
        );
    }
}
