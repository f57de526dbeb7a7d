//! Fitting a report into what the API server stores: every field within the
//! SessionReport schema's bounds (the `session::*_MAX` constants the schema is
//! generated from) and the whole within `report::REPORT_BYTES_MAX`.
//!
//! A tenant controls the argv of the processes in their pod, so without this
//! one `bash -c '<long script>'` would make the node's whole report invalid
//! and, once the agent grace ran out, cost every pod on the node its
//! protection. Bounding degrades the odd session's own fields first; whole
//! sessions go only when the report still does not fit, consoles before
//! logins, and every cut is counted so it shows in metrics.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::report::{ReportLimits, encoded_len};
use crate::session::{
    ARG_MAX, ARGV_ITEMS_MAX, COMMAND_MAX, CONTAINER_NAME_MAX, NAMESPACE_MAX, POD_NAME_MAX, TTY_MAX,
};
use crate::{Report, Session};

/// Ends every string that was cut, and starts the item that stands for the
/// argv items that were dropped (`…12 more`).
pub const CUT_MARKER: &str = "…";

/// What an argument keeps when its session's argv is shortened to make the
/// report fit `report::REPORT_BYTES_MAX`: enough to recognise the command line.
pub const SHORT_ARG_MAX: usize = 128;

/// What bounding cut, counted by kind (the agent's metric label):
/// `command`, `tty`, `namespace`, `pod_name`, `container_name` (a string cut),
/// `arg` (one argv item cut), `argv_items` (argv items dropped),
/// `argv_short` (a session's argv shortened for the total size) and
/// `session` (a whole session dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cuts(BTreeMap<&'static str, u64>);

// === impl Cuts ===

impl Cuts {
    pub fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }

    fn add(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry(kind).or_default() += n;
        }
    }
}

// === impl Report ===

impl Report {
    /// The report cut down to `limits` and the schema's field bounds, and what
    /// was cut. The result always passes [`Report::validate`] with the same
    /// limits (as long as they leave room for an empty report).
    pub fn bounded(mut self, limits: ReportLimits) -> (Report, Cuts) {
        let mut cuts = Cuts::default();
        for s in &mut self.sessions {
            bound_fields(s, &mut cuts);
        }
        let over = self.sessions.len().saturating_sub(limits.max_sessions);
        drop_sessions(&mut self.sessions, &mut cuts, |_, dropped| dropped >= over);
        fit_bytes(&mut self, limits.max_bytes, &mut cuts);
        (self, cuts)
    }
}

/// Cuts each field of one session to the schema's bound for it.
fn bound_fields(s: &mut Session, cuts: &mut Cuts) {
    if s.argv.len() > ARGV_ITEMS_MAX {
        let keep = ARGV_ITEMS_MAX - 1;
        let dropped = s.argv.len() - keep;
        s.argv.truncate(keep);
        s.argv.push(more(dropped));
        cuts.add("argv_items", dropped as u64);
    }
    let cut_args = s
        .argv
        .iter_mut()
        .map(|a| cut(a, ARG_MAX))
        .filter(|c| *c)
        .count();
    cuts.add("arg", cut_args as u64);
    for (kind, field, max) in [
        ("command", &mut s.command, COMMAND_MAX),
        ("tty", &mut s.tty, TTY_MAX),
    ] {
        cuts.add(kind, u64::from(cut(field, max)));
    }
    for (kind, field, max) in [
        ("namespace", &mut s.namespace, NAMESPACE_MAX),
        ("pod_name", &mut s.pod_name, POD_NAME_MAX),
        ("container_name", &mut s.container_name, CONTAINER_NAME_MAX),
    ] {
        if let Some(v) = field {
            cuts.add(kind, u64::from(cut(v, max)));
        }
    }
}

/// Shortens argv, largest sessions first, then drops sessions until the
/// report's JSON fits `max_bytes`.
fn fit_bytes(report: &mut Report, max_bytes: usize, cuts: &mut Cuts) {
    let sessions = std::mem::take(&mut report.sessions);
    // Compact JSON of a list is `[` items joined by `,` `]`; the empty
    // report already holds the brackets.
    let base = encoded_len(report);
    report.sessions = sessions;
    let mut sizes: Vec<usize> = report.sessions.iter().map(encoded_len).collect();
    let total =
        |sizes: &[usize]| base + sizes.iter().sum::<usize>() + sizes.len().saturating_sub(1);
    if total(&sizes) <= max_bytes {
        return;
    }
    let mut largest: Vec<usize> = (0..sizes.len()).collect();
    largest.sort_by_key(|&i| Reverse(sizes[i]));
    for i in largest {
        if total(&sizes) <= max_bytes {
            return;
        }
        if shorten_argv(&mut report.sessions[i].argv) {
            sizes[i] = encoded_len(&report.sessions[i]);
            cuts.add("argv_short", 1);
        }
    }
    let mut left = total(&sizes);
    drop_sessions(&mut report.sessions, cuts, |s, _| {
        if left <= max_bytes {
            return true;
        }
        // Each dropped session takes one comma with it (exact while any
        // session is left).
        left -= encoded_len(s) + 1;
        false
    });
}

/// Drops sessions until `enough(next candidate, dropped so far)` says to stop:
/// consoles before logins (a console never protects a pod), the last listed
/// first within each.
fn drop_sessions(
    sessions: &mut Vec<Session>,
    cuts: &mut Cuts,
    mut enough: impl FnMut(&Session, usize) -> bool,
) {
    let mut order: Vec<usize> = (0..sessions.len()).rev().collect();
    order.sort_by_key(|&i| sessions[i].is_login());
    let mut dropped = vec![false; sessions.len()];
    let mut n = 0;
    for i in order {
        if enough(&sessions[i], n) {
            break;
        }
        dropped[i] = true;
        n += 1;
    }
    let mut flags = dropped.into_iter();
    sessions.retain(|_| !flags.next().unwrap_or(false));
    cuts.add("session", n as u64);
}

/// argv down to its first item (cut to [`SHORT_ARG_MAX`]) and a count of the
/// rest. False when that saves nothing.
fn shorten_argv(argv: &mut Vec<String>) -> bool {
    let Some(first) = argv.first() else {
        return false;
    };
    let rest = argv[1..].iter().map(|a| dropped_by(a)).sum::<usize>();
    if rest == 0 && first.len() <= SHORT_ARG_MAX {
        return false;
    }
    let mut first = first.clone();
    cut(&mut first, SHORT_ARG_MAX);
    argv.clear();
    argv.push(first);
    if rest > 0 {
        argv.push(more(rest));
    }
    true
}

/// How many original items one item stands for: 1, or the count in a
/// `…N more` item that an earlier cut left.
fn dropped_by(arg: &str) -> usize {
    arg.strip_prefix(CUT_MARKER)
        .and_then(|r| r.strip_suffix(" more"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn more(n: usize) -> String {
    format!("{CUT_MARKER}{n} more")
}

/// Cuts `s` to at most `max` bytes on a char boundary, ending in
/// [`CUT_MARKER`]. Bytes bound the schema's `maxLength` (which counts
/// characters) from above. True when it cut.
pub fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let marker = CUT_MARKER.len() <= max;
    let mut at = if marker { max - CUT_MARKER.len() } else { max };
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    if marker {
        s.push_str(CUT_MARKER);
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fixtures::{session, ts};
    use crate::report::{REPORT_BYTES_MAX, SESSIONS_MAX};

    fn report(sessions: Vec<Session>) -> Report {
        Report {
            node: "node-a".into(),
            generated_at: ts("2026-11-24T01:00:00Z"),
            sequence: 7,
            sessions,
        }
    }

    fn with_argv(pid: u32, argv: Vec<String>) -> Session {
        Session {
            pid,
            argv,
            ..session().build()
        }
    }

    fn json_len(r: &Report) -> usize {
        serde_json::to_vec(r).unwrap().len()
    }

    #[test]
    fn cuts_on_a_char_boundary_with_a_marker() {
        let cases = [
            ("short", 8, "short", false),
            ("exactly8", 8, "exactly8", false),
            ("abcdefghij", 8, "abcde…", true),
            // 2-byte é: 5 bytes of room end inside the third é.
            ("éééééé", 8, "éé…", true),
            // 3-byte 日: 5 bytes of room end inside the second.
            ("日本語です", 8, "日…", true),
            // 4-byte emoji straddling the cut.
            ("ab😀😀", 8, "ab…", true),
            // No room for the marker: cut only.
            ("abcdef", 2, "ab", true),
        ];
        for (input, max, want, was_cut) in cases {
            let mut s = input.to_string();
            assert_eq!(cut(&mut s, max), was_cut, "{input}");
            assert_eq!(s, want, "{input} cut to {max}");
            assert!(s.len() <= max, "{s:?} is {} bytes", s.len());
        }
    }

    #[test]
    fn long_argv_is_cut_and_counted() {
        let long_script = format!("set -e; {}", "echo é; ".repeat(400));
        let mut argv = vec!["bash".to_string(), "-c".into(), long_script];
        argv.extend((0..497).map(|i| format!("arg{i}")));
        let (r, cuts) = report(vec![with_argv(1, argv)]).bounded(ReportLimits::default());
        let argv = &r.sessions[0].argv;
        assert_eq!(argv.len(), ARGV_ITEMS_MAX);
        assert_eq!(argv[..2], ["bash", "-c"]);
        assert!(argv[2].len() <= ARG_MAX && argv[2].ends_with(CUT_MARKER));
        assert!(argv[2].starts_with("set -e; echo é; "));
        // 500 items: 63 kept, the 64th says how many of the other 437 went.
        assert_eq!(argv[63], "…437 more");
        assert_eq!(argv[62], "arg59");
        assert_eq!(cuts.get("argv_items"), 437);
        assert_eq!(cuts.get("arg"), 1);
        assert_eq!(cuts.get("session"), 0);
        r.validate(ReportLimits::default()).unwrap();
    }

    #[test]
    fn every_string_field_is_bounded() {
        let s = Session {
            command: "c".repeat(100),
            tty: "t".repeat(40),
            namespace: Some("n".repeat(70)),
            pod_name: Some("p".repeat(300)),
            container_name: Some("é".repeat(64)),
            ..session().build()
        };
        let unbounded = report(vec![s]);
        let err = unbounded
            .validate(ReportLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tty is 40 characters, over 32"), "{err}");
        let (r, cuts) = unbounded.bounded(ReportLimits::default());
        let s = &r.sessions[0];
        assert_eq!(s.command, format!("{}…", "c".repeat(61)));
        assert_eq!(s.tty.len(), TTY_MAX);
        assert_eq!(s.namespace.as_ref().unwrap().len(), NAMESPACE_MAX);
        assert_eq!(s.pod_name.as_ref().unwrap().len(), POD_NAME_MAX);
        // 63 bytes leave room for 30 two-byte é and the marker.
        assert_eq!(
            s.container_name.as_deref(),
            Some(format!("{}…", "é".repeat(30)).as_str())
        );
        for kind in ["command", "tty", "namespace", "pod_name", "container_name"] {
            assert_eq!(cuts.get(kind), 1, "{kind}");
        }
        r.validate(ReportLimits::default()).unwrap();
    }

    #[test]
    fn one_odd_session_degrades_only_its_own_fields() {
        let normal = with_argv(1, vec!["bash".into(), "-l".into()]);
        let odd = with_argv(2, vec!["x".repeat(5000); 200]);
        let (r, cuts) = report(vec![normal.clone(), odd]).bounded(ReportLimits::default());
        assert_eq!(r.sessions[0], normal);
        assert_eq!(r.sessions[1].argv.len(), ARGV_ITEMS_MAX);
        assert_eq!(cuts.get("arg"), 63);
        assert!(json_len(&r) <= REPORT_BYTES_MAX);
    }

    #[test]
    fn a_report_within_bounds_is_untouched() {
        let r = report(vec![session().build(), with_argv(9, vec!["vim".into()])]);
        let (bounded, cuts) = r.clone().bounded(ReportLimits::default());
        assert_eq!(bounded, r);
        assert!(cuts.is_empty());
    }

    #[test]
    fn total_size_shortens_argv_before_dropping_sessions() {
        // 20 sessions at the field bounds: about 1.3 MiB before the total bound.
        let full = || vec!["a".repeat(ARG_MAX); ARGV_ITEMS_MAX];
        let sessions: Vec<Session> = (0..20).map(|pid| with_argv(pid, full())).collect();
        let (r, cuts) = report(sessions).bounded(ReportLimits::default());
        assert_eq!(r.sessions.len(), 20, "no session dropped");
        assert_eq!(cuts.get("session"), 0);
        assert!(cuts.get("argv_short") >= 1);
        let short: Vec<&Session> = r.sessions.iter().filter(|s| s.argv.len() == 2).collect();
        assert_eq!(short.len() as u64, cuts.get("argv_short"));
        assert_eq!(short[0].argv[1], "…63 more");
        assert!(short[0].argv[0].len() <= SHORT_ARG_MAX);
        assert!(json_len(&r) <= REPORT_BYTES_MAX, "{}", json_len(&r));
        r.validate(ReportLimits::default()).unwrap();
    }

    #[test]
    fn shortened_argv_counts_items_dropped_earlier() {
        let mut argv: Vec<String> = (0..500).map(|i| format!("{i:04}")).collect();
        argv[0] = "é".repeat(200);
        let limits = ReportLimits {
            max_bytes: 1024,
            ..ReportLimits::default()
        };
        let (r, cuts) = report(vec![with_argv(1, argv)]).bounded(limits);
        assert_eq!(r.sessions[0].argv[1], "…499 more");
        assert_eq!(r.sessions[0].argv[0], format!("{}…", "é".repeat(62)));
        assert_eq!(cuts.get("argv_short"), 1);
        r.validate(limits).unwrap();
    }

    #[test]
    fn logins_are_kept_over_consoles() {
        let console = |pid| Session {
            pid,
            console: true,
            ..session().build()
        };
        let login = |pid| with_argv(pid, vec!["bash".into()]);
        let all = vec![console(1), login(2), console(3), login(4), login(5)];
        let limits = ReportLimits {
            max_sessions: 3,
            ..ReportLimits::default()
        };
        let (r, cuts) = report(all.clone()).bounded(limits);
        let pids: Vec<u32> = r.sessions.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [2, 4, 5]);
        assert_eq!(cuts.get("session"), 2);

        // By size: the report has room for about two sessions; the last login goes.
        let one = encoded_len(&all[1]);
        let limits = ReportLimits {
            max_bytes: encoded_len(&report(vec![])) + 2 * one + 1,
            ..ReportLimits::default()
        };
        let (r, cuts) = report(all).bounded(limits);
        let pids: Vec<u32> = r.sessions.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [2, 4]);
        assert_eq!(cuts.get("session"), 3);
        assert!(json_len(&r) <= limits.max_bytes);
    }

    #[test]
    fn the_default_bound_holds_many_plain_sessions() {
        let one = encoded_len(&with_argv(1, vec!["bash".into(), "-l".into()]));
        let fits = (REPORT_BYTES_MAX - encoded_len(&report(vec![]))) / (one + 1);
        assert!(fits >= 1500, "{fits} sessions of {one} bytes");
        assert!(SESSIONS_MAX > fits, "the byte bound is the tighter one");
    }

    // === properties ===

    /// A string up to `max` bytes or so, cheap to make long: a short piece
    /// (any chars, including multi-byte and control characters) repeated.
    fn text(max_repeat: usize) -> impl Strategy<Value = String> {
        (
            any::<String>().prop_map(|s| s.chars().take(6).collect::<String>()),
            0..max_repeat,
        )
            .prop_map(|(s, n)| s.repeat(n))
    }

    fn any_session() -> impl Strategy<Value = Session> {
        (
            (text(40), text(40), prop::collection::vec(text(400), 0..100)),
            (
                prop::option::of(text(60)),
                prop::option::of(text(150)),
                prop::option::of(text(40)),
            ),
            (any::<bool>(), any::<u32>()),
        )
            .prop_map(
                |((tty, command, argv), (namespace, pod_name, container_name), (console, pid))| {
                    Session {
                        tty,
                        command,
                        argv,
                        namespace,
                        pod_name,
                        container_name,
                        console,
                        pid,
                        ..session().build()
                    }
                },
            )
    }

    fn any_limits() -> impl Strategy<Value = ReportLimits> {
        prop_oneof![
            Just(ReportLimits::default()),
            (512usize..200_000, 0usize..50).prop_map(|(max_bytes, max_sessions)| ReportLimits {
                max_bytes,
                max_sessions
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_sessions_bound_to_a_valid_report(
            sessions in prop::collection::vec(any_session(), 0..24),
            limits in any_limits(),
        ) {
            let n = sessions.len();
            let logins = sessions.iter().filter(|s| s.is_login()).count();
            let (r, cuts) = report(sessions).bounded(limits);
            prop_assert!(r.validate(limits).is_ok(), "{:?}", r.validate(limits));
            prop_assert!(json_len(&r) <= limits.max_bytes);
            prop_assert_eq!(r.sessions.len() as u64 + cuts.get("session"), n as u64);
            // A console is dropped before any login.
            let kept_logins = r.sessions.iter().filter(|s| s.is_login()).count();
            if kept_logins < logins {
                prop_assert!(r.sessions.iter().all(Session::is_login));
            }
        }
    }
}
