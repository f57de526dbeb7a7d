//! A session leader's command: its argv as read (cut at the read cap) and the
//! name reports show.

use sessionguard_core::CUT_MARKER;

use crate::proc::Parsers;
use crate::proc::cmdline::CMDLINE_READ_MAX;

/// argv from a `cmdline` read up to [`CMDLINE_READ_MAX`]: a read that hit
/// the cap ends mid-argument, so that argument carries the cut marker.
pub(super) fn capped_argv(
    parsers: Parsers,
    bytes: &[u8],
) -> Result<Vec<String>, crate::proc::ParseError> {
    let mut argv = (parsers.cmdline)(bytes)?;
    if bytes.len() >= CMDLINE_READ_MAX
        && let Some(last) = argv.last_mut()
    {
        last.push_str(CUT_MARKER);
    }
    Ok(argv)
}

/// The leader's command: the basename of `argv[0]`, unless the process
/// rewrote its title (`sshd: ops@pts/0`, `postgres: writer`). A title has
/// whitespace, and its "basename" would be a fragment such as `0`, so such a
/// leader (and one with no argv) gets the kernel's name from `stat`.
pub fn command_name(argv: &[String], comm: &str) -> String {
    match argv.first().map(|a| basename(a)) {
        Some(a) if !a.is_empty() && !argv[0].contains(char::is_whitespace) => a.to_string(),
        _ => comm.to_string(),
    }
}

fn basename(arg0: &str) -> &str {
    arg0.rsplit('/').next().unwrap_or(arg0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_is_the_basename_of_a_path() {
        assert_eq!(command_name(&argv(&["/bin/bash", "-l"]), "bash"), "bash");
        assert_eq!(command_name(&argv(&["-bash"]), "bash"), "-bash");
        assert_eq!(command_name(&argv(&["vim"]), "vi"), "vim");
    }

    #[test]
    fn rewritten_titles_use_the_name_from_stat() {
        assert_eq!(command_name(&argv(&["sshd: ops@pts/0"]), "sshd"), "sshd");
        assert_eq!(
            command_name(&argv(&["postgres: writer process", "", ""]), "postgres"),
            "postgres"
        );
        assert_eq!(command_name(&argv(&["tab\ttitle/x"]), "t"), "t");
        assert_eq!(command_name(&[], "bash (login)"), "bash (login)");
        assert_eq!(command_name(&argv(&[""]), "sh"), "sh");
        assert_eq!(command_name(&argv(&["/usr/bin/"]), "sh"), "sh");
    }
}
