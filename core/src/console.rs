//! Which terminal sessions are a container's own console rather than a login.
//!
//! A `tty: true` container always has a terminal: the one its init runs on.
//! Counting it would protect such a pod forever (or drift-evict it every TTL),
//! so it is a console. Everything else on a terminal is a login, and so is
//! every terminal of an ephemeral container: `kubectl debug -it` starts its
//! shell as that container's init, and it is a person at a prompt.
//!
//! The agent knows the processes (`Session::init`: the leader is its
//! container's first process), the controller knows the spec; this decides
//! from both, so neither `shareProcessNamespace` (the pause process is PID 1)
//! nor a debug container's own PID namespace can fool it.

use crate::{ContainerId, Session};

/// What the pod's spec and status say about the container a session is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// In `spec.containers` (or an init container), with its `tty` flag.
    Regular { tty: bool },
    /// In `spec.ephemeralContainers`: `kubectl debug`.
    Ephemeral,
    /// Not (yet) in the pod's status: taken for a login, since calling a
    /// login a console would leave its pod unprotected.
    Unknown,
}

/// A console is the init of a regular `tty: true` container's terminal.
pub fn is_console(session_init: bool, container: Container) -> bool {
    session_init && container == Container::Regular { tty: true }
}

/// Decides `console` on every session again, from the agent's `init` and the
/// container each one is in (`container` looks it up in the pod).
pub fn classify(sessions: &mut [Session], container: impl Fn(&ContainerId) -> Container) {
    for s in sessions {
        s.console = is_console(s.init, container(&s.container_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::session;

    #[test]
    fn only_the_init_of_a_tty_container_is_a_console() {
        let tty = Container::Regular { tty: true };
        let plain = Container::Regular { tty: false };
        assert!(is_console(true, tty));
        // An exec'd shell beside a console, e.g. under shareProcessNamespace.
        assert!(!is_console(false, tty));
        // An init on a terminal without tty: true (`script`, a tool that opens a pty).
        assert!(!is_console(true, plain));
        // `kubectl debug -it`: the debug shell is its container's init.
        assert!(!is_console(true, Container::Ephemeral));
        assert!(!is_console(true, Container::Unknown));
    }

    #[test]
    fn the_agent_console_flag_is_decided_again() {
        let main = session().build().container_id;
        let debug = ContainerId::parse(&"d".repeat(64)).unwrap();
        let mut all = vec![
            // What an older agent called a console (PID 1 of a namespace), no `init`.
            session().console().build(),
            session().init().build(),
            {
                let mut s = session().init().build();
                s.container_id = debug;
                s
            },
        ];
        classify(&mut all, |id| {
            if *id == main {
                Container::Regular { tty: true }
            } else {
                Container::Ephemeral
            }
        });
        let consoles: Vec<bool> = all.iter().map(|s| s.console).collect();
        assert_eq!(consoles, vec![false, true, false]);
    }
}
