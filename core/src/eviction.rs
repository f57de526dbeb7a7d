//! What an eviction of a protected pod is told.
//!
//! The eviction webhook refuses an eviction while sessionguard protects the
//! pod, with 429 (what a PodDisruptionBudget answers, so `kubectl drain`
//! and autoscalers wait and retry) and a message naming the logins. That
//! also holds where the workload has its own PDB: two PDBs on one pod make
//! the eviction API answer 500, which aborts a drain, and the webhook runs
//! before that check.

use std::time::Duration;

use jiff::Timestamp;

use crate::Session;
use crate::duration;
use crate::printable::printable;

/// Longest message: the API server prefixes it and clients print it whole.
pub const MESSAGE_MAX: usize = 480;
/// Logins named in one message; the rest are counted.
const NAMED_MAX: usize = 3;

/// Why the eviction of `pod` (`namespace/name`) waits. `sessions` are the
/// pod's live logins (may be empty: protection can outlive them by the
/// release grace, or while its agent is silent).
pub fn refusal(pod: &str, sessions: &[Session], now: Timestamp) -> String {
    let mut logins: Vec<&Session> = sessions.iter().filter(|s| s.is_login()).collect();
    logins.sort_by_key(|s| s.started_at);
    let mut msg = if logins.is_empty() {
        format!(
            "{pod} is protected by sessionguard (a recent login; protection ends shortly after it)"
        )
    } else {
        let named: Vec<String> = logins
            .iter()
            .take(NAMED_MAX)
            .map(|s| login(s, now))
            .collect();
        let more = logins.len().saturating_sub(NAMED_MAX);
        format!(
            "{pod} has {} login{} ({}{}) and is protected by sessionguard",
            logins.len(),
            if logins.len() == 1 { "" } else { "s" },
            named.join("; "),
            if more > 0 {
                format!("; {more} more")
            } else {
                String::new()
            },
        )
    };
    msg.push_str("; the eviction is refused until they log out: retry later, or ask them to (kubectl sessions get)");
    printable(&msg, MESSAGE_MAX)
}

/// `uid 1000 on pts/0 running bash since 2026-12-02T13:00:00Z (12m0s, idle
/// 8m0s)`: the idle part only where the agent reports one (0 is "active or
/// not measured").
fn login(s: &Session, now: Timestamp) -> String {
    let age = now
        .duration_since(s.started_at)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let idle = if s.idle_seconds > 0 {
        format!(
            ", idle {}",
            duration::format(Duration::from_secs(u64::from(s.idle_seconds)))
        )
    } else {
        String::new()
    };
    format!(
        "uid {} on {} running {} since {} ({}{idle})",
        s.uid,
        printable(&s.tty, 16),
        printable(&s.command, 32),
        s.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        duration::format(Duration::from_secs(age.as_secs())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{session, ts};

    #[test]
    fn names_who_where_and_since_when() {
        let s = session()
            .tty("pts/3")
            .uid(1000)
            .at("2026-12-02T13:00:00Z")
            .build();
        let m = refusal("ops/bastion", &[s], ts("2026-12-02T13:12:00Z"));
        assert!(m.starts_with("ops/bastion has 1 login (uid 1000 on pts/3 running bash since 2026-12-02T13:00:00Z (12m0s))"), "{m}");
        assert!(m.contains("refused until they log out"), "{m}");
    }

    #[test]
    fn an_idle_login_says_for_how_long() {
        let s = session()
            .tty("pts/3")
            .uid(1000)
            .idle(720)
            .at("2026-12-02T13:00:00Z")
            .build();
        let m = refusal("ops/bastion", &[s], ts("2026-12-02T13:20:00Z"));
        assert!(
            m.starts_with("ops/bastion has 1 login (uid 1000 on pts/3 running bash since 2026-12-02T13:00:00Z (20m0s, idle 12m0s))"),
            "{m}"
        );
    }

    #[test]
    fn consoles_are_not_logins_and_many_logins_are_counted_not_listed() {
        let console = session().tty("pts/0").uid(0).console().build();
        let mut all = vec![console];
        for i in 1..=5 {
            let tty = format!("pts/{i}");
            all.push(
                session()
                    .tty(&tty)
                    .uid(1000 + i)
                    .at("2026-12-02T13:00:00Z")
                    .build(),
            );
        }
        let m = refusal("ops/bastion", &all, ts("2026-12-02T13:01:00Z"));
        assert!(m.contains("has 5 logins"), "{m}");
        assert!(m.contains("; 2 more)"), "{m}");
        assert!(!m.contains("pts/0"), "the console is not named: {m}");
    }

    #[test]
    fn hostile_names_are_escaped_and_the_message_bounded() {
        let command = format!("\u{1b}[2J{}", "x".repeat(4000));
        let s = session()
            .command(&command)
            .at("2026-12-02T13:00:00Z")
            .build();
        let m = refusal(&"p".repeat(600), &[s], ts("2026-12-02T13:00:00Z"));
        assert!(!m.contains('\u{1b}'), "{m}");
        assert!(m.chars().count() <= MESSAGE_MAX, "{}", m.chars().count());
    }

    #[test]
    fn protection_without_a_live_login_still_explains_itself() {
        let m = refusal("ops/bastion", &[], ts("2026-12-02T13:00:00Z"));
        assert!(m.contains("protected by sessionguard"), "{m}");
    }
}
