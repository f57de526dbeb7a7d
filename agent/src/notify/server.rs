//! `sessionguard-agent notifier`: the one process that writes into terminals,
//! so that the agent, which parses what every container puts in /proc and
//! talks to the API server, never holds the rights to.
//!
//! It does nothing else: no runtime, no network, no API client. It accepts
//! one connection at a time on a Unix socket (in a directory only the agent
//! pod's two containers mount), takes the caller's uid from the kernel
//! (`SO_PEERCRED`) and refuses any but `--client-uid`, reads one request of at
//! most `wire::REQUEST_MAX` bytes within a second, and answers with the
//! outcome of `terminal::write_line`. A caller that stalls costs one second.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use sessionguard_core::notice::terminal_bytes;

use super::terminal;
use super::wire::{REQUEST_MAX, Request};
use crate::error::Error;

const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds `socket` (replacing a stale socket left by a previous run, never any
/// other file) and serves until the process is stopped.
pub fn serve(socket: &Path, proc_root: &Path, client_uid: Option<u32>) -> Result<(), Error> {
    let listener = bind(socket)?;
    tracing::info!(socket = %socket.display(), proc_root = %proc_root.display(), ?client_uid, "notifier listening");
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let outcome = answer(s, proc_root, client_uid);
                tracing::debug!(outcome, "request answered");
            }
            Err(e) => tracing::warn!(error = %e, "accepting a connection"),
        }
    }
    Ok(())
}

pub fn bind(socket: &Path) -> Result<UnixListener, Error> {
    let io = |source| Error::Io {
        path: socket.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(socket).map_err(io)?,
        Ok(_) => {
            return Err(Error::Io {
                path: socket.to_path_buf(),
                source: std::io::Error::other(
                    "exists and is not a socket; point --socket at a socket path in an empty directory",
                ),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    // Any uid may connect; the peer's uid, from the kernel, decides.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    Ok(listener)
}

/// One connection: check, read, write the line, answer. The outcome.
fn answer(mut s: UnixStream, proc_root: &Path, client_uid: Option<u32>) -> &'static str {
    let outcome = handle(&mut s, proc_root, client_uid);
    let _ = s.write_all(format!("{outcome}\n").as_bytes());
    outcome
}

fn handle(s: &mut UnixStream, proc_root: &Path, client_uid: Option<u32>) -> &'static str {
    if s.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || s.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return "bad_request";
    }
    let peer = match getsockopt(&*s, PeerCredentials) {
        Ok(c) => c.uid(),
        Err(_) => return "bad_request",
    };
    if client_uid.is_some_and(|want| want != peer) {
        tracing::warn!(peer, ?client_uid, "refused a caller that is not the agent");
        return "bad_request";
    }
    let Some(req) = read_request(s) else {
        return "bad_request";
    };
    let outcome = terminal::write_line(proc_root, req.pid, &req.tty, &terminal_bytes(&req.line));
    if outcome == "written" {
        tracing::info!(pid = req.pid, tty = %req.tty, "told the session in its terminal");
    } else {
        tracing::warn!(pid = req.pid, tty = %req.tty, outcome, "could not write the notice into the session's terminal");
    }
    outcome
}

/// Bytes up to the first newline, at most `REQUEST_MAX` of them.
fn read_request(s: &mut UnixStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() + n > REQUEST_MAX {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.iter().position(|&b| b == b'\n')? + 1;
    Request::decode(&buf[..end])
}
