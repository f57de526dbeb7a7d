//! Is a session's leader the first process of its container?
//!
//! The controller calls a session a console only when its leader is the
//! container's init on a `tty: true` container (it knows the spec, we know the
//! processes). "PID 1 of its namespace" is wrong both ways: with
//! `shareProcessNamespace` the pause process is PID 1 and a console's init is
//! not, and a `kubectl debug` shell is PID 1 of its own namespace. What holds
//! under every runtime is time: the init started before every other process of
//! its container, and every exec'd or forked process started after it. So a
//! leader is first when no process of the same container is older.
//!
//! Proving that costs the `cgroup` of every older process, so the answer is
//! asked once per leader (pid and start time) and kept for its life: no older
//! process can appear later, and one that was older stays so.

/// A process as the scanner last read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    pub ppid: u32,
    pub starttime: u64,
}

/// The processes strictly older than `leader`, in the order most likely to
/// hold an older process of its container: its parent (a shell started by
/// sshd or tmux inside the container), its parent's other children (the
/// runtime's shim is the parent of both the init and `kubectl exec`
/// processes), then the rest youngest first (a container's processes started
/// with it, usually not long before). A process of the same tick is not
/// older: ticks are 10 ms, and an exec that close to the start is not told apart.
pub fn older_in_order(leader: Seen, known: impl IntoIterator<Item = Seen>) -> Vec<u32> {
    let mut older: Vec<(u8, std::cmp::Reverse<u64>, u32)> = known
        .into_iter()
        .filter(|p| p.pid != leader.pid && p.starttime < leader.starttime)
        .map(|p| {
            let rank = if p.pid == leader.ppid {
                0
            } else if p.ppid == leader.ppid {
                1
            } else {
                2
            };
            (rank, std::cmp::Reverse(p.starttime), p.pid)
        })
        .collect();
    older.sort_unstable();
    older.into_iter().map(|(_, _, pid)| pid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pid: u32, ppid: u32, starttime: u64) -> Seen {
        Seen {
            pid,
            ppid,
            starttime,
        }
    }

    #[test]
    fn parent_then_siblings_then_the_rest_youngest_first() {
        let leader = seen(50, 10, 500);
        let known = [
            seen(1, 0, 1),
            seen(10, 1, 100),
            seen(20, 10, 200),
            seen(30, 1, 300),
            seen(40, 1, 400),
            leader,
            seen(60, 10, 600),
        ];
        assert_eq!(older_in_order(leader, known), vec![10, 20, 40, 30, 1]);
    }

    #[test]
    fn same_tick_and_younger_processes_are_not_older() {
        let leader = seen(50, 10, 500);
        let known = [seen(49, 10, 500), seen(51, 10, 501), leader];
        assert!(older_in_order(leader, known).is_empty());
    }
}
