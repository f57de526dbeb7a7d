//! Text that reaches a person (events, log lines, the agent's and the
//! plugin's tables) made safe to show.
//!
//! Process names, argv, terminal names and user names are chosen by whoever
//! runs the process or holds the credentials. Written raw into a terminal, an
//! ANSI escape can repaint the screen, hide a line or retitle the window, and
//! a bidi override can make `rm -rf /` read as something else. Every such
//! character is shown escaped (`\u{1b}`), and the text is cut to a bound.

/// `s` with control characters (C0, DEL, C1) and bidirectional formatting
/// characters escaped, cut to at most `max_chars` characters (the last one
/// `…` when cut).
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if out.chars().count() <= max_chars {
        return out;
    }
    let mut cut: String = out.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(printable("bash", 60), "bash");
        assert_eq!(
            printable("vim\u{1b}]0;pwned\u{7}", 60),
            "vim\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(printable("a\nb\tc\r", 60), "a\\u{a}b\\u{9}c\\u{d}");
        assert_eq!(printable("\u{9b}31m", 60), "\\u{9b}31m", "C1 CSI");
        assert_eq!(
            printable("ls \u{202e}fdp.exe", 60),
            "ls \\u{202e}fdp.exe",
            "bidi override"
        );
        assert_eq!(printable("café ünïcode", 60), "café ünïcode");
    }

    #[test]
    fn cuts_to_the_bound_with_a_marker() {
        assert_eq!(printable("abcdef", 6), "abcdef", "exactly fits");
        assert_eq!(printable("abcdefg", 6), "abcde…");
        assert_eq!(printable("ééééééé", 4), "ééé…");
        let cut = printable(&"\u{1b}".repeat(100), 20);
        assert!(cut.chars().count() <= 20, "{cut}");
        assert!(cut.ends_with('…'));
        assert!(!cut.contains('\u{1b}'));
        assert_eq!(printable("abc", 0), "…");
    }
}
