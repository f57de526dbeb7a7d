//! The cap on how long a login keeps a pod protected: `--max-protection`,
//! lowered (never raised) by a namespace's `sessionguard.io/max-protection`
//! annotation, with a warning at a fraction of it before protection ends.
//!
//! A forgotten session would otherwise block a drain for ever; the warning
//! gives the person (and whoever waits on the drain) notice first.

use std::time::Duration;

use jiff::Timestamp;

use crate::duration;
use crate::interaction::plus;

/// The cap that applies to a pod, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub limit: Duration,
    pub from: CapFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapFrom {
    /// `--max-protection`.
    Flag,
    /// The namespace's `sessionguard.io/max-protection` annotation.
    Namespace,
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = duration::format(self.limit);
        match self.from {
            CapFrom::Flag => write!(f, "--max-protection {limit}"),
            CapFrom::Namespace => write!(
                f,
                "the namespace's {} annotation {limit}",
                crate::keys::MAX_PROTECTION
            ),
        }
    }
}

/// The cap for a pod: the flag's, or the namespace's where that is lower (a
/// namespace may set one where the flag is off). An unreadable or zero
/// annotation is ignored and explained in the second value; one above the
/// flag is ignored silently, as documented (it may only lower).
pub fn effective(flag: Option<Duration>, namespace: Option<&str>) -> (Option<Cap>, Option<String>) {
    let flag_cap = flag.map(|limit| Cap {
        limit,
        from: CapFrom::Flag,
    });
    let Some(raw) = namespace else {
        return (flag_cap, None);
    };
    let ns = match duration::parse(raw) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            return (
                flag_cap,
                Some(format!(
                    "namespace annotation {}={raw:?} ignored: a cap must be longer than 0s",
                    crate::keys::MAX_PROTECTION
                )),
            );
        }
        Err(e) => {
            return (
                flag_cap,
                Some(format!(
                    "namespace annotation {}={raw:?} ignored: {e}",
                    crate::keys::MAX_PROTECTION
                )),
            );
        }
    };
    match flag {
        Some(f) if f <= ns => (flag_cap, None),
        _ => (
            Some(Cap {
                limit: ns,
                from: CapFrom::Namespace,
            }),
            None,
        ),
    }
}

/// `--max-protection-warn-at`: a fraction of the cap as a whole percentage,
/// written `80%` or `0.8`; `0` turns the warning off. Used as clap's
/// `value_parser`.
pub fn warn_at_flag(input: &str) -> Result<u8, String> {
    let t = input.trim();
    let bad = || {
        format!(
            "invalid fraction {input:?}: use a percentage such as 80% or a fraction such as 0.8 (0 turns the warning off; it must stay below 100%)"
        )
    };
    let percent = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map_err(|_| bad())?
    } else {
        t.parse::<f64>().map_err(|_| bad())? * 100.0
    };
    if !percent.is_finite() || !(0.0..100.0).contains(&percent) {
        return Err(bad());
    }
    Ok(percent.round().min(99.0) as u8)
}

/// Where a protected pod stands against its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Before the warning (if any): look again at `next`.
    Before { next: Timestamp },
    /// Past the warning, protection ends at `end`.
    Warning { end: Timestamp },
    /// The cap is reached: release.
    Expired,
}

/// `since`: when protection started; `warn_percent` of the cap (0: no warning).
pub fn stage(since: Timestamp, cap: Duration, warn_percent: u8, now: Timestamp) -> Stage {
    let end = plus(since, cap);
    if now >= end {
        return Stage::Expired;
    }
    if warn_percent == 0 {
        return Stage::Before { next: end };
    }
    let warn = plus(since, cap.mul_f64(f64::from(warn_percent) / 100.0));
    if now >= warn {
        Stage::Warning { end }
    } else {
        Stage::Before { next: warn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn a_namespace_lowers_the_cap_but_never_raises_it() {
        let flag = Some(2 * H);
        assert_eq!(
            effective(flag, Some("30m")).0,
            Some(Cap {
                limit: H / 2,
                from: CapFrom::Namespace
            })
        );
        assert_eq!(
            effective(flag, Some("3h")),
            (
                Some(Cap {
                    limit: 2 * H,
                    from: CapFrom::Flag
                }),
                None
            ),
            "higher than the flag: the flag wins"
        );
        assert_eq!(
            effective(None, Some("1h")).0.map(|c| c.from),
            Some(CapFrom::Namespace),
            "no flag: the namespace may still set one"
        );
        assert_eq!(effective(None, None), (None, None));
    }

    #[test]
    fn an_unreadable_annotation_is_ignored_and_explained() {
        let (cap, why) = effective(Some(H), Some("forever"));
        assert_eq!(cap.map(|c| c.from), Some(CapFrom::Flag));
        let why = why.unwrap();
        assert!(
            why.contains("sessionguard.io/max-protection=\"forever\""),
            "{why}"
        );
        let (cap, why) = effective(None, Some("0s"));
        assert_eq!(cap, None, "zero would release every login at once");
        assert!(why.unwrap().contains("longer than 0s"));
    }

    #[test]
    fn warn_at_reads_percent_and_fraction() {
        assert_eq!(warn_at_flag("80%"), Ok(80));
        assert_eq!(warn_at_flag("0.8"), Ok(80));
        assert_eq!(warn_at_flag("0"), Ok(0));
        for bad in ["100%", "1", "1.5", "-0.1", "eighty", "NaN", ""] {
            let e = warn_at_flag(bad).unwrap_err();
            assert!(e.contains("percentage"), "{bad}: {e}");
        }
    }

    #[test]
    fn stages_before_warning_and_expired() {
        let since = ts("2026-12-02T13:00:00Z");
        assert_eq!(
            stage(since, H, 80, ts("2026-12-02T13:10:00Z")),
            Stage::Before {
                next: ts("2026-12-02T13:48:00Z")
            }
        );
        assert_eq!(
            stage(since, H, 80, ts("2026-12-02T13:48:00Z")),
            Stage::Warning {
                end: ts("2026-12-02T14:00:00Z")
            }
        );
        assert_eq!(
            stage(since, H, 80, ts("2026-12-02T14:00:00Z")),
            Stage::Expired
        );
        assert_eq!(
            stage(since, H, 0, ts("2026-12-02T13:59:00Z")),
            Stage::Before {
                next: ts("2026-12-02T14:00:00Z")
            },
            "no warning: only the release"
        );
    }
}
