//! The policy on a fake PKI whose certificates are readable text: a check
//! of "would the API server accept this" reads issuer, names and expiry
//! back from the certificate and the bundle, not from the policy's state.
//! The controller's tests run the same rotations with real certificates.

use std::collections::BTreeSet;

use jiff::SignedDuration;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);
const HOST: &str = "sg-webhook.sg.svc";

/// CA: `FAKE-CA <name> until <t>`; serving: `FAKE-LEAF <sans> by <ca> until <t>`.
struct FakePki;

impl Pki for FakePki {
    type Error = String;

    fn new_ca(&self, validity: Duration, now: Timestamp) -> Result<Ca, String> {
        let name = format!("ca-{}", now.as_nanosecond());
        let not_after = plus(now, validity);
        Ok(Ca {
            cert_pem: format!("FAKE-CA {name} until {not_after}\n"),
            key_pem: format!("FAKE-KEY {name}"),
            name,
            not_after,
            trusted_at: None,
        })
    }

    fn sign(
        &self,
        ca: &Ca,
        sans: &[String],
        not_after: Timestamp,
        _now: Timestamp,
    ) -> Result<Leaf, String> {
        if ca.key_pem != format!("FAKE-KEY {}", ca.name) {
            return Err(format!("CA {} has not its own key", ca.name));
        }
        Ok(Leaf {
            cert_pem: format!(
                "FAKE-LEAF {} by {} until {not_after}",
                sans.join(","),
                ca.name
            ),
            key_pem: format!("FAKE-LEAF-KEY {not_after}"),
            not_after,
            sans: sans.to_vec(),
            issuer: ca.name.clone(),
        })
    }

    fn new_token(&self) -> Result<String, String> {
        let n = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(format!("token-{n}"))
    }
}

/// Tokens numbered in the order made (tests run in parallel: a global count).
static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fake webhook's caBundle: the CA certificates it holds.
impl Bundle for BTreeSet<String> {
    fn holds(&self, cert_pem: &str) -> bool {
        self.contains(cert_pem.trim())
    }
}

type View = Published<BTreeSet<String>>;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn names() -> Vec<String> {
    ["sg-webhook", "sg-webhook.sg", HOST, "127.0.0.1"]
        .map(String::from)
        .to_vec()
}

fn timing(ca_days: u32) -> Timing {
    Timing {
        leaf_validity: 90 * DAY,
        renew_before: 30 * DAY,
        ca_validity: DAY * ca_days,
        propagation: Duration::from_secs(30),
    }
}

fn policy(t: Timing) -> Policy<FakePki> {
    Policy {
        pki: FakePki,
        timing: t,
        sans: names(),
    }
}

/// Would the API server, trusting `bundle`, accept `leaf` at `now`?
fn verifies(leaf: &Leaf, bundle: &str, now: Timestamp) -> bool {
    let words: Vec<&str> = leaf.cert_pem.split(' ').collect();
    let ["FAKE-LEAF", sans, "by", issuer, "until", until] = words[..] else {
        return false;
    };
    let until: Timestamp = until.parse().unwrap();
    let trusted = bundle.lines().any(|line| {
        let words: Vec<&str> = line.split(' ').collect();
        matches!(words[..], ["FAKE-CA", name, "until", t]
            if name == issuer && t.parse::<Timestamp>().unwrap() > now)
    });
    trusted && until > now && sans.split(',').any(|s| s == HOST)
}

/// Both configurations (three webhooks) holding `s`'s bundle.
fn published(s: &State) -> View {
    let bundle: BTreeSet<String> = s.bundle().lines().map(str::to_string).collect();
    Published {
        bundles: vec![bundle; 3],
        generation: s.generation,
    }
}

fn first(t: Timing, now: Timestamp) -> State {
    policy(t).next(None, &View::default(), now).unwrap()
}

fn step(s: &State, p: &View, t: Timing, now: Timestamp) -> State {
    policy(t).next(Some(s), p, now).unwrap()
}

#[test]
fn renewing_the_serving_certificate_keeps_the_ca_bundle() {
    let t = timing(1825);
    let t0 = ts("2026-11-24T01:00:00Z");
    let s0 = first(t, t0);
    assert_eq!((s0.cas.len(), s0.generation), (1, 1));
    let leaf0 = s0.leaf.clone().unwrap();
    assert_eq!(leaf0.not_after, ts("2027-02-22T01:00:00Z"));
    assert!(verifies(&leaf0, &s0.bundle(), t0));

    // Published: trust is noted, nothing else moves.
    let s1 = step(&s0, &published(&s0), t, t0 + SignedDuration::from_mins(1));
    assert!(s1.cas[0].trusted_at.is_some());
    assert_eq!((s1.leaf.as_ref(), s1.generation), (Some(&leaf0), 1));

    // 29 days left: a new serving certificate from the same CA.
    let later = ts("2027-01-24T01:00:00Z");
    let s2 = step(&s1, &published(&s1), t, later);
    let leaf2 = s2.leaf.clone().unwrap();
    assert_ne!(leaf2.cert_pem, leaf0.cert_pem);
    assert_eq!(leaf2.issuer, leaf0.issuer);
    assert_eq!(
        (s2.bundle(), s2.generation),
        (s1.bundle(), 1),
        "bundle unchanged"
    );
    // Trusted by what the API server already has: safe to serve at once.
    assert!(verifies(&leaf2, &s1.bundle(), later));
    assert!(should_serve(&s2, &published(&s1), true));

    // New names: re-signed, same CA.
    let fewer = Policy {
        sans: names()[..2].to_vec(),
        ..policy(t)
    };
    let s3 = fewer.next(Some(&s2), &published(&s2), later).unwrap();
    assert_eq!(s3.leaf.as_ref().unwrap().sans, names()[..2]);
    assert_eq!(s3.bundle(), s2.bundle());
    // Nothing due: nothing changes (no write).
    assert_eq!(step(&s2, &published(&s2), t, later), s2);
}

#[test]
fn a_new_ca_is_trusted_everywhere_before_it_signs() {
    // CA 200 days: rotation starts with 100 days left.
    let t = timing(200);
    let t0 = ts("2026-01-01T00:00:00Z");
    let s = first(t, t0);
    let s = step(&s, &published(&s), t, t0 + SignedDuration::from_mins(1));
    let ca1 = s.cas[0].clone();

    let t1 = ts("2026-04-15T00:00:00Z"); // 99 days left on CA 1
    let old_view = published(&s);
    let s = step(&s, &old_view, t, t1);
    assert_eq!(s.cas.len(), 2, "new CA added to the bundle");
    assert_eq!(s.generation, 2);
    assert_eq!(
        s.leaf.as_ref().unwrap().issuer,
        ca1.name,
        "the serving certificate stays with the CA the API server trusts"
    );

    // The configurations have not taken the new bundle (yet): no move.
    let s = step(&s, &old_view, t, t1 + SignedDuration::from_mins(5));
    assert_eq!(s.leaf.as_ref().unwrap().issuer, ca1.name);
    assert!(s.cas[1].trusted_at.is_none());

    // They have it now; the move waits one propagation interval.
    let seen = t1 + SignedDuration::from_mins(6);
    let s = step(&s, &published(&s), t, seen);
    assert_eq!(s.cas[1].trusted_at, Some(seen));
    assert_eq!(s.leaf.as_ref().unwrap().issuer, ca1.name);
    let moved_at = seen + SignedDuration::from_secs(30);
    let old_leaf = s.leaf.clone().unwrap();
    let s = step(&s, &published(&s), t, moved_at);
    let leaf = s.leaf.clone().unwrap();
    assert_eq!(leaf.issuer, s.cas[1].name, "moved to the new CA");
    assert!(verifies(&leaf, &s.bundle(), moved_at));
    // The old CA stays: a replica still serving the old certificate is trusted.
    assert!(verifies(&old_leaf, &s.bundle(), moved_at));
    // 3, not 2: the path token of the certificate renewed at t1 went into the
    // configurations at `seen`; the move itself changed nothing published.
    assert_eq!(s.generation, 3, "the bundle did not change for the move");
    // A replica that sees a configuration without the new CA does not serve it.
    assert!(!should_serve(&s, &old_view, true));
    assert!(should_serve(&s, &published(&s), true));
    assert!(
        should_serve(&s, &old_view, false),
        "nothing valid served yet"
    );

    // CA 1 expires: it leaves the bundle.
    let gone = ts("2026-07-21T00:00:00Z");
    let s = step(&s, &published(&s), t, gone);
    assert_eq!(s.cas.len(), 1);
    assert_eq!(s.generation, 4);
    assert!(verifies(s.leaf.as_ref().unwrap(), &s.bundle(), gone));
}

#[test]
fn short_cas_do_not_churn() {
    // The e2e's settings: CA 60s, serving 30s renewed with 20s left.
    let t = Timing {
        leaf_validity: Duration::from_secs(30),
        renew_before: Duration::from_secs(20),
        ca_validity: Duration::from_secs(60),
        propagation: Duration::from_secs(1),
    };
    let mut now = ts("2026-01-01T00:00:00Z");
    let mut s = first(t, now);
    let (mut writes, mut max_cas) = (0, 0);
    for _ in 0..120 {
        now += SignedDuration::from_secs(1);
        let next = step(&s, &published(&s), t, now);
        writes += usize::from(next != s);
        s = next;
        max_cas = max_cas.max(s.cas.len());
        let leaf = s.leaf.as_ref().unwrap();
        assert!(leaf.not_after > now, "always a valid certificate");
        assert!(verifies(leaf, &s.bundle(), now));
    }
    assert!(writes < 40, "{writes} Secret writes in 120 s");
    assert!(max_cas <= 3, "{max_cas} CAs in the bundle");
}

#[test]
fn a_replica_with_an_older_secret_never_overwrites_a_newer_bundle() {
    use BundleAction::*;
    assert_eq!(bundle_action(2, Some(3), false), Stale);
    assert_eq!(bundle_action(2, Some(3), true), Stale);
    assert_eq!(bundle_action(3, Some(3), true), Current);
    assert_eq!(bundle_action(3, Some(2), false), Write);
    assert_eq!(bundle_action(3, Some(2), true), Write, "generation behind");
    // Reset by hand or by a re-install: ours again.
    assert_eq!(bundle_action(3, Some(3), false), Write);
    assert_eq!(bundle_action(1, None, false), Write);
    assert_eq!(bundle_action(1, None, true), Write, "no generation yet");
    // A Secret recreated from scratch starts above what is published.
    let p = View {
        bundles: vec![BTreeSet::new(); 3],
        generation: 7,
    };
    let s = policy(timing(1825))
        .next(None, &p, ts("2026-01-01T00:00:00Z"))
        .unwrap();
    assert_eq!(s.generation, 8);
}

#[test]
fn a_rolled_back_secret_is_published_again() {
    let t = timing(200);
    let t0 = ts("2026-01-01T00:00:00Z");
    let s = first(t, t0);
    let backup = step(&s, &published(&s), t, t0 + SignedDuration::from_mins(1));
    assert_eq!(backup.generation, 1);
    // A CA rotation starts and its bundle (generation 2) is published.
    let t1 = ts("2026-04-15T00:00:00Z");
    let newer = step(&backup, &published(&backup), t, t1);
    assert_eq!((newer.cas.len(), newer.generation), (2, 2));
    let view = published(&newer);

    // The Secret is restored from the backup (generation 1).
    // Before the token of t1's new certificate is due to be published.
    let later = t1 + SignedDuration::from_secs(30);
    let back_then = t0 + SignedDuration::from_mins(2);
    let restored = step(&backup, &view, t, back_then);
    assert_eq!(
        restored.generation, 3,
        "moved past the published generation"
    );
    assert_eq!(restored.cas, backup.cas, "only the generation moved");
    assert_eq!(restored.leaf, backup.leaf);
    assert!(
        describe(Some(&backup), &restored)
            .iter()
            .any(|d| d.contains("from 1 to 3")),
        "{:?}",
        describe(Some(&backup), &restored)
    );
    // So it is written, not held back as stale.
    assert_eq!(
        bundle_action(restored.generation, Some(view.generation), false),
        BundleAction::Write
    );
    // Once published, nothing moves (no write on every check).
    let republished = published(&restored);
    assert_eq!(step(&restored, &republished, t, back_then), restored);
    // Equal generations are not a rollback.
    assert_eq!(step(&newer, &view, t, later).generation, 2);
}

#[test]
fn every_change_is_described_for_the_log() {
    let t = timing(200);
    let t0 = ts("2026-01-01T00:00:00Z");
    let s0 = first(t, t0);
    assert_eq!(
        describe(None, &s0),
        ["generated the webhook CA and serving certificate"]
    );
    let s1 = step(&s0, &published(&s0), t, t0 + SignedDuration::from_mins(1));
    assert_eq!(
        describe(Some(&s0), &s1),
        ["noted that every webhook configuration trusts the new CA"]
    );
    // 99 days left on the CA, and the serving certificate has expired.
    let s2 = step(&s1, &published(&s1), t, ts("2026-04-15T00:00:00Z"));
    let lines = describe(Some(&s1), &s2);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with(&format!("added CA {}", s2.cas[1].name)));
    assert!(lines[1].starts_with(&format!(
        "renewed the webhook serving certificate with the same CA {}",
        s1.cas[0].name
    )));
    assert!(lines[2].starts_with("made a new webhook path token"));
    assert!(describe(Some(&s2), &s2).is_empty(), "no change, no line");
    let s3 = step(&s2, &published(&s2), t, ts("2026-04-15T00:01:00Z"));
    let lines = describe(Some(&s2), &s3);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("published the new webhook path token")),
        "{lines:?}"
    );
    // The log never shows a token.
    for l in describe(Some(&s1), &s2).iter().chain(&lines) {
        assert!(s3.tokens.iter().all(|t| !l.contains(&t.value)), "{l}");
    }
}

#[test]
fn path_tokens_rotate_with_the_serving_certificate_and_are_published_late() {
    let t = timing(1825);
    let t0 = ts("2026-11-24T01:00:00Z");
    // The first token is published at once: nobody reaches us with one yet.
    let s0 = step(&first(t, t0), &View::default(), t, t0);
    assert_eq!(s0.tokens.len(), 1);
    assert_eq!(s0.path_token.as_deref(), Some(s0.tokens[0].value.as_str()));
    let tok0 = s0.tokens[0].value.clone();
    let s0 = step(&s0, &published(&s0), t, t0 + SignedDuration::from_mins(1));
    assert_eq!(
        s0.accepted_tokens(),
        std::slice::from_ref(&tok0),
        "no rotation yet"
    );

    // The serving certificate is renewed: a new token, accepted at once by
    // every replica that reads the Secret, not yet in the configurations.
    let t1 = ts("2027-01-24T01:00:00Z");
    let s1 = step(&s0, &published(&s0), t, t1);
    assert_ne!(s1.leaf, s0.leaf);
    let tok1 = s1.tokens[1].value.clone();
    assert_ne!(tok1, tok0);
    assert_eq!(s1.accepted_tokens(), [tok0.clone(), tok1.clone()]);
    assert_eq!(s1.path_token.as_deref(), Some(tok0.as_str()));
    assert_eq!(s1.generation, s0.generation, "nothing new to publish yet");
    let s2 = step(&s1, &published(&s1), t, t1 + SignedDuration::from_secs(59));
    assert_eq!(
        s2.path_token.as_deref(),
        Some(tok0.as_str()),
        "one interval"
    );

    // Two check intervals later every replica has read it: published, with
    // a new generation; the previous token is still accepted.
    let s3 = step(&s2, &published(&s2), t, t1 + SignedDuration::from_secs(60));
    assert_eq!(s3.path_token.as_deref(), Some(tok1.as_str()));
    assert_eq!(s3.generation, s2.generation + 1);
    assert_eq!(s3.accepted_tokens(), [tok0.clone(), tok1.clone()]);

    // The next rotation drops the oldest once its successor is published.
    let t2 = ts("2027-03-26T01:00:00Z");
    let s4 = step(&s3, &published(&s3), t, t2);
    assert_eq!(s4.tokens.len(), 3);
    let s5 = step(&s4, &published(&s4), t, t2 + SignedDuration::from_mins(1));
    let tok2 = s4.tokens[2].value.clone();
    assert_eq!(s5.path_token.as_deref(), Some(tok2.as_str()));
    assert_eq!(s5.accepted_tokens(), [tok1, tok2]);
    assert!(!s5.accepted_tokens().contains(&tok0));
}
