//! The secret in the webhooks' path: only a caller that can read the webhook
//! configurations (the API server; cluster admins) knows where the webhooks
//! are. `/validate/connect` is served as `/s/<token>/validate/connect`; a
//! request without a token this replica accepts gets 404, records nothing,
//! and is counted (`sessionguard_webhook_unauthenticated_requests_total`).
//!
//! Tokens come from the certificate Secret (generated mode: made, rotated
//! and published by the policy in `sessionguard_core::certs`) or from a
//! mounted file (`--webhook-path-token-file`, cert-manager mode: the chart
//! renders the same token into the configurations). The file holds one token
//! a line: the first is the configurations' own, the others are accepted too,
//! so a rotation can hand every replica the next token before the
//! configurations' path changes to it (chart: `certManager.nextPathToken`).

use std::path::Path;
use std::sync::RwLock;

use crate::error::{Error, Result};

/// What precedes the token in a path.
pub const PREFIX: &str = "/s/";

/// Shortest token accepted from a file: 128 bits of hex or base64.
const MIN_FILE_TOKEN: usize = 32;
/// Most tokens a file may hold: the current one and the next, with room for
/// an operator's overlap; more is a mistake, not a rotation.
const MAX_FILE_TOKENS: usize = 4;

/// Why a request was refused (the metric's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The path has no token at all (`/validate/connect`).
    NoToken,
    /// A token this replica does not accept.
    WrongToken,
    /// `--webhook-client-ca` is set and the caller offered no client
    /// certificate (one the CA did not sign fails the TLS handshake).
    NoClientCert,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::NoToken => "no_token",
            Refused::WrongToken => "wrong_token",
            Refused::NoClientCert => "no_client_cert",
        }
    }
}

/// `path` (with or without an earlier token) carrying `token`.
pub fn with_token(path: &str, token: &str) -> String {
    format!("{PREFIX}{token}{}", without_token(path))
}

/// `path` without its token, if it has one.
pub fn without_token(path: &str) -> &str {
    match path.strip_prefix(PREFIX) {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
        None => path,
    }
}

/// A webhook URL (`https://host:port/path`) whose path carries `token`.
pub fn url_with_token(url: &str, token: &str) -> String {
    let authority_end = url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url[start..].find('/').map(|j| start + j));
    match authority_end {
        Some(i) => format!("{}{}", &url[..i], with_token(&url[i..], token)),
        None => format!("{url}{}", with_token("", token)),
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tokens this replica accepts, swapped at runtime like the certificate.
#[derive(Debug, Default)]
pub struct Tokens {
    accepted: RwLock<Vec<String>>,
    /// The file's tokens as last read (mounted mode).
    last_file: std::sync::Mutex<Vec<String>>,
}

// === impl Tokens ===

impl Tokens {
    /// Accepts exactly these (the Secret's list).
    pub fn set(&self, tokens: Vec<String>) {
        *self.accepted.write().expect("tokens lock") = tokens;
    }

    /// The tokens read from a file: they and the ones read before them are
    /// accepted, so the API server's calls keep landing while its path is
    /// updated. Returns true if they changed.
    pub fn observe(&self, tokens: Vec<String>) -> bool {
        let mut last = self.last_file.lock().expect("tokens lock");
        if *last == tokens {
            return false;
        }
        let mut accepted: Vec<String> = last.clone();
        for t in &tokens {
            if !accepted.contains(t) {
                accepted.push(t.clone());
            }
        }
        *self.accepted.write().expect("tokens lock") = accepted;
        *last = tokens;
        true
    }

    pub fn is_set(&self) -> bool {
        !self.accepted.read().expect("tokens lock").is_empty()
    }

    /// The webhook path a request names, once its token is checked.
    pub fn route<'p>(&self, path: &'p str) -> std::result::Result<&'p str, Refused> {
        let rest = path.strip_prefix(PREFIX).ok_or(Refused::NoToken)?;
        let (token, route) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let accepted = self.accepted.read().expect("tokens lock");
        // Every candidate is compared, so timing does not say which matched.
        let hits = accepted
            .iter()
            .filter(|t| same(t.as_bytes(), token.as_bytes()))
            .count();
        if hits > 0 && !route.is_empty() {
            Ok(route)
        } else {
            Err(Refused::WrongToken)
        }
    }
}

/// The tokens of a token file, one a line (blank lines and surrounding
/// whitespace ignored), the configurations' own first; refuses a short or
/// non-path-safe token rather than serving behind a guessable one.
pub fn read_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Webhook(format!("reading {}: {e}", path.display())))?;
    parse_file(&text).map_err(|why| Error::Webhook(format!("{}: {why}", path.display())))
}

fn parse_file(text: &str) -> std::result::Result<Vec<String>, String> {
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() || tokens.len() > MAX_FILE_TOKENS {
        return Err(format!(
            "holds {} webhook path tokens; it must hold 1 to {MAX_FILE_TOKENS}, one a line",
            tokens.len()
        ));
    }
    for (i, token) in tokens.iter().enumerate() {
        let safe = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if token.len() < MIN_FILE_TOKEN || !safe {
            return Err(format!(
                "line {}: the webhook path token must be at least {MIN_FILE_TOKEN} characters of [A-Za-z0-9_-]",
                i + 1
            ));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_gain_and_swap_their_token() {
        assert_eq!(
            with_token("/validate/connect", T),
            format!("/s/{T}/validate/connect")
        );
        let once = with_token("/validate/connect", "old");
        assert_eq!(with_token(&once, T), format!("/s/{T}/validate/connect"));
        assert_eq!(without_token(&once), "/validate/connect");
        assert_eq!(
            url_with_token("https://127.0.0.1:9443/mutate/pods", T),
            format!("https://127.0.0.1:9443/s/{T}/mutate/pods")
        );
        let u = url_with_token("https://h:1/s/old/mutate/pods", T);
        assert_eq!(u, format!("https://h:1/s/{T}/mutate/pods"));
        assert_eq!(url_with_token(&u, T), u, "idempotent");
    }

    #[test]
    fn only_an_accepted_token_routes() {
        let t = Tokens::default();
        assert_eq!(t.route("/validate/connect"), Err(Refused::NoToken));
        assert_eq!(
            t.route(&format!("/s/{T}/validate/connect")),
            Err(Refused::WrongToken),
            "nothing accepted before the first token is known"
        );
        t.set(vec![T.into()]);
        assert_eq!(
            t.route(&format!("/s/{T}/validate/connect")),
            Ok("/validate/connect")
        );
        assert_eq!(t.route("/validate/connect"), Err(Refused::NoToken));
        for wrong in [
            "/s/0123456789abcdef0123456789abcdee/validate/connect".to_string(),
            format!("/s/{T}x/validate/connect"),
            format!("/s/{}/validate/connect", &T[1..]),
            "/s//validate/connect".into(),
            format!("/s/{T}"),
            format!("/x/{T}/validate/connect"),
        ] {
            assert!(t.route(&wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_file_token_keeps_its_predecessor_accepted() {
        let t = Tokens::default();
        assert!(t.observe(vec!["a".repeat(32)]));
        assert!(!t.observe(vec!["a".repeat(32)]));
        assert!(t.observe(vec!["b".repeat(32)]));
        assert!(t.observe(vec!["c".repeat(32)]));
        let p = |s: String| format!("/s/{s}/validate/pods");
        assert!(t.route(&p("a".repeat(32))).is_err());
        assert!(t.route(&p("b".repeat(32))).is_ok());
        assert!(t.route(&p("c".repeat(32))).is_ok());
    }

    #[test]
    fn a_weak_token_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("sg-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, format!("{T}\n")).unwrap();
        assert_eq!(read_file(&f).unwrap(), [T]);
        for bad in [
            "short",
            &format!("{T}/.."),
            &format!("{T} {T}"),
            &format!("{T}\nshort"),
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = read_file(&f).unwrap_err().to_string();
            assert!(e.contains("at least 32 characters"), "{bad}: {e}");
        }
        for bad in ["", "\n\n", &format!("{T}\n").repeat(5)] {
            let e = parse_file(bad).unwrap_err();
            assert!(e.contains("1 to 4"), "{bad:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The rotation the chart's `nextPathToken` makes: every replica accepts
    /// the next token before the configurations' path moves to it, and the
    /// old one until the file changes again.
    #[test]
    fn a_rotation_through_the_file_never_refuses_either_path() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let p = |s: &str| format!("/s/{s}/validate/connect");
        let t = Tokens::default();
        assert!(t.observe(parse_file(&format!("{old}\n")).unwrap()));
        assert!(t.route(&p(&new)).is_err());
        // Step 1: the next token joins; the configurations still use the old.
        assert!(t.observe(parse_file(&format!("{old}\n\n{new}\n")).unwrap()));
        assert!(t.route(&p(&old)).is_ok() && t.route(&p(&new)).is_ok());
        // Step 2: the new one is the configurations' own; the old still passes.
        assert!(t.observe(parse_file(&format!("{new}\n")).unwrap()));
        assert!(t.route(&p(&old)).is_ok() && t.route(&p(&new)).is_ok());
        // Any later change drops it.
        assert!(t.observe(parse_file(&format!("{new}\n{}\n", "x".repeat(32))).unwrap()));
        assert!(t.route(&p(&old)).is_err() && t.route(&p(&new)).is_ok());
    }
}
