//! Talking to the binaries under test over plain HTTP on loopback: their
//! `/metrics`, `/readyz` and `/sessions`. Deliberately tiny (no client crate):
//! one GET per connection, chunked bodies decoded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Result};

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

/// A loopback address nobody listens on right now, for a child to bind.
pub fn free_addr() -> Result<SocketAddr> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| invalid(format!("bind: {e}")))?;
    l.local_addr()
        .map_err(|e| invalid(format!("local_addr: {e}")))
}

/// GET over plain HTTP/1.1; the body of a 200, else an error with the status line.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let (status, body) = http_get_any(addr, path).await?;
    if status != 200 {
        return Err(invalid(format!(
            "GET {addr}{path}: status {status}: {body}"
        )));
    }
    Ok(body)
}

/// GET over plain HTTP/1.1: the status code and the body, whatever the status
/// (`/readyz` says why it is not ready in a 503's body).
pub async fn http_get_any(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| invalid(format!("connect {addr}: {e}")))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| invalid(format!("write: {e}")))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| invalid(format!("read: {e}")))?;
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("GET {addr}{path}: no status line in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the first series of `name` whose labels include all of `labels`.
pub fn find_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

/// One series' value from a binary's `/metrics`; labels must all match (others are allowed).
pub async fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
    let text = http_get(addr, "/metrics").await?;
    Ok(find_metric(&text, name, labels))
}

/// Until the controller serving `addr` leads with every cache listed: its
/// `sessionguard_leader` is 1 and `/readyz` names it leader. `alive` is asked first
/// on every try, so a process that died ends the wait at once with its error.
pub async fn until_leader(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    crate::wait::until("the controller to lead with synced caches", timeout, || {
        let running = alive();
        async move {
            running?;
            let ready = http_get(addr, "/readyz").await.ok();
            let leader = metric(addr, "sessionguard_leader", &[])
                .await
                .ok()
                .flatten();
            Ok((leader == Some(1.0) && ready.is_some_and(|r| r.contains("leader"))).then_some(()))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lookup_and_chunks() {
        let text = "# HELP x\nsg_pod{namespace=\"a\",pod=\"p\"} 1\nsg_pod{namespace=\"b\",pod=\"p\"} 0\nsg_up 3\n";
        assert_eq!(
            find_metric(text, "sg_pod", &[("namespace", "b")]),
            Some(0.0)
        );
        assert_eq!(find_metric(text, "sg_up", &[]), Some(3.0));
        assert_eq!(find_metric(text, "sg_pod", &[("namespace", "c")]), None);
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
