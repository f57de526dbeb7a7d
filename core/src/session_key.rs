//! A session's identity: the one key the agent and the controller use to tell
//! "the same session as last time" from "a new one".
//!
//! A pid alone is reused by the kernel; its start time makes it unique on a
//! node for the node's life. The container is part of it because the
//! controller compares sessions across a pod's containers.

use jiff::Timestamp;

use crate::{ContainerId, Session};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub container_id: ContainerId,
    pub pid: u32,
    pub started_at: Timestamp,
}

impl Session {
    pub fn key(&self) -> SessionKey {
        SessionKey {
            container_id: self.container_id.clone(),
            pid: self.pid,
            started_at: self.started_at,
        }
    }
}
