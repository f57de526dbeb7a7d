//! Groups terminal processes into sessions: one controlling terminal inside
//! one container is one session, however many processes share it.

use std::collections::BTreeMap;

use crate::proc::PodContainer;

/// A process with a controlling terminal inside a pod's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    pub session: u32,
    pub tty_nr: u32,
    pub starttime: u64,
    /// utime + stime, clock ticks.
    pub cpu: u64,
    pub comm: String,
    pub at: PodContainer,
}

/// One terminal in one container and the process that leads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub at: PodContainer,
    pub tty_nr: u32,
    pub leader: Candidate,
    pub processes: u32,
    /// Every process on the terminal: (pid, start time, CPU ticks).
    pub members: Vec<(u32, u64, u64)>,
}

/// The leader is the process whose pid is its session id (the one that
/// called setsid and took the terminal); when it lives outside the container
/// (a terminal shared across the boundary) the oldest process stands in.
pub fn group_by_terminal(candidates: Vec<Candidate>) -> Vec<Group> {
    let mut by_key: BTreeMap<(String, String, u32), Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        let key = (
            c.at.pod_uid.to_string(),
            c.at.container_id.to_string(),
            c.tty_nr,
        );
        by_key.entry(key).or_default().push(c);
    }
    by_key
        .into_values()
        .map(|members| {
            let processes = members.len() as u32;
            let ids = members
                .iter()
                .map(|c| (c.pid, c.starttime, c.cpu))
                .collect();
            let leader = members
                .iter()
                .find(|c| c.pid == c.session)
                .or_else(|| members.iter().min_by_key(|c| (c.starttime, c.pid)))
                .cloned()
                .expect("groups are never empty");
            Group {
                at: leader.at.clone(),
                tty_nr: leader.tty_nr,
                leader,
                processes,
                members: ids,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionguard_core::{ContainerId, PodUid};

    fn at(pod: char, ctr: char) -> PodContainer {
        PodContainer {
            pod_uid: PodUid::parse(&format!(
                "{}-0000-0000-0000-000000000000",
                pod.to_string().repeat(8)
            ))
            .unwrap(),
            container_id: ContainerId::parse(&ctr.to_string().repeat(64)).unwrap(),
        }
    }

    fn proc(pid: u32, session: u32, tty: u32, start: u64, at: PodContainer) -> Candidate {
        Candidate {
            pid,
            session,
            tty_nr: tty,
            starttime: start,
            cpu: 0,
            comm: format!("p{pid}"),
            at,
        }
    }

    #[test]
    fn processes_on_one_terminal_count_once() {
        let a = at('a', '1');
        let groups = group_by_terminal(vec![
            proc(12, 10, 34816, 5, a.clone()),
            proc(10, 10, 34816, 3, a.clone()),
            proc(11, 10, 34816, 4, a.clone()),
        ]);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].leader.pid, groups[0].processes), (10, 3));
    }

    #[test]
    fn same_terminal_number_in_two_containers_is_two_sessions() {
        let groups = group_by_terminal(vec![
            proc(10, 10, 34816, 3, at('a', '1')),
            proc(20, 20, 34816, 3, at('a', '2')),
            proc(30, 30, 34816, 3, at('b', '3')),
            proc(40, 40, 34817, 3, at('b', '3')),
        ]);
        assert_eq!(groups.len(), 4);
    }

    #[test]
    fn leader_outside_the_container_falls_back_to_the_oldest() {
        let a = at('a', '1');
        let groups = group_by_terminal(vec![
            proc(31, 7, 34816, 9, a.clone()),
            proc(30, 7, 34816, 8, a),
        ]);
        assert_eq!(groups[0].leader.pid, 30);
    }
}
