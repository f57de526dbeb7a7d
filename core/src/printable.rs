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

/// Controls, and the format characters that change how text around them
/// reads without showing themselves: Arabic letter mark, zero-width
/// space/joiners and direction marks, line and paragraph separators (a
/// terminal may break the line there), embeddings and overrides, isolates,
/// word joiner and invisible operators, and the byte-order mark.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
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
    fn escapes_every_invisible_or_reordering_format_character() {
        let table: &[(char, &str)] = &[
            ('\u{061c}', "arabic letter mark"),
            ('\u{200b}', "zero width space"),
            ('\u{200c}', "zero width non-joiner"),
            ('\u{200d}', "zero width joiner"),
            ('\u{200e}', "left-to-right mark"),
            ('\u{200f}', "right-to-left mark"),
            ('\u{2028}', "line separator"),
            ('\u{2029}', "paragraph separator"),
            ('\u{202a}', "left-to-right embedding"),
            ('\u{202b}', "right-to-left embedding"),
            ('\u{202c}', "pop directional formatting"),
            ('\u{202d}', "left-to-right override"),
            ('\u{202e}', "right-to-left override"),
            ('\u{2060}', "word joiner"),
            ('\u{2066}', "left-to-right isolate"),
            ('\u{2067}', "right-to-left isolate"),
            ('\u{2068}', "first strong isolate"),
            ('\u{2069}', "pop directional isolate"),
            ('\u{feff}', "byte order mark"),
        ];
        for (c, what) in table {
            let shown = printable(&format!("a{c}b"), 60);
            assert_eq!(shown, format!("a{}b", c.escape_unicode()), "{what}");
            assert!(!shown.contains(*c), "{what} shown raw");
        }
        // Neighbours that are visible text stay as they are.
        for c in ['\u{061b}', '\u{2027}', '\u{2030}', '\u{2070}', 'é', '中'] {
            assert_eq!(printable(&c.to_string(), 60), c.to_string(), "{c:?}");
        }
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
