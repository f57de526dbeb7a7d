//! `sessionguard-agent run` on a fake proc tree: endpoints, metrics, and the
//! incremental scanner following processes that start and exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionguard_agent::testing::{FakeProc, pts};

const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

struct Agent {
    child: Child,
    addr: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(fake: &FakeProc) -> Agent {
    start_with(fake, &[])
}

fn start_with(fake: &FakeProc, extra: &[&str]) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionguard-agent"))
        .args([
            "--log-format",
            "json",
            "run",
            "--report=false",
            "--node-name",
            "node-a",
            "--listen-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--interval",
            "50ms",
            "--resync-every",
            "1000",
            "--proc-root",
        ])
        .arg(fake.root())
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("agent exited before listening")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Agent { child, addr }
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn await_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sessions(addr: &str) -> Vec<serde_json::Value> {
    let (code, body) = get(addr, "/sessions");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], "node-a");
    v["sessions"].as_array().unwrap().clone()
}

#[test]
fn serves_sessions_and_metrics_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), 1_764_000_000).unwrap();
    for pid in 1..50 {
        fake.process(pid).write().unwrap();
    }
    let agent = start(&fake);
    await_until("ready", || get(&agent.addr, "/readyz").0 == 200);
    assert_eq!(get(&agent.addr, "/healthz").0, 200);
    assert!(sessions(&agent.addr).is_empty());

    // A login appears: a new pid the incremental scan has never seen, in a
    // container whose own (older) process is its init, so it is no console.
    let c = "c".repeat(64);
    fake.process(60)
        .comm("sleep")
        .container_init()
        .in_container(POD, &c)
        .write()
        .unwrap();
    fake.process(900)
        .comm("bash")
        .argv(&["bash"])
        .tty(pts(5))
        .leads_session()
        .in_container(POD, &c)
        .write()
        .unwrap();
    await_until("the login", || sessions(&agent.addr).len() == 1);
    let s = &sessions(&agent.addr)[0];
    assert_eq!(
        (s["pid"].as_u64(), s["tty"].as_str()),
        (Some(900), Some("pts/5"))
    );

    let (code, metrics) = get(&agent.addr, "/metrics");
    assert_eq!(code, 200);
    let want = format!(
        "sessionguard_agent_sessions{{namespace=\"\",pod=\"\",container=\"\",pod_uid=\"{POD}\",container_id=\"{c}\"}} 1"
    );
    assert!(metrics.contains(&want), "{metrics}");
    assert!(
        metrics.contains("sessionguard_agent_session_start_time_seconds{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionguard_agent_scan_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionguard_agent_processes_scanned 51"), // 49 + the init + the login
        "{metrics}"
    );

    // The shell exits: its pid disappears from readdir.
    fake.kill(900).unwrap();
    await_until("the logout", || sessions(&agent.addr).is_empty());
    let (_, metrics) = get(&agent.addr, "/metrics");
    assert!(
        !metrics.contains(&want),
        "stale session series left behind:\n{metrics}"
    );
    assert_eq!(get(&agent.addr, "/nope").0, 404);
}

fn filtered_gauge(metrics: &str, reason: &str) -> Option<u32> {
    let series = format!("sessionguard_agent_proc_filtered{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// A proc mounted with `hidepid=invisible` lists no pid 1 to an unprivileged
/// agent: not ready, the cause named in /readyz and the gauge; when pid 1 is
/// visible again it is ready, and a filter that comes back keeps the last
/// trusted sessions instead of serving the partial view.
#[test]
fn a_filtered_proc_makes_the_agent_unready_and_keeps_the_last_trusted_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), 1_764_000_000).unwrap();
    let root = fake.root().canonicalize().unwrap();
    fake.write_top(
        "self/mountinfo",
        &format!(
            "22 1 253:1 / / rw - ext4 /dev/vda1 rw\n\
             88 22 0:21 / {} rw,relatime - proc proc rw,hidepid=invisible\n",
            root.display()
        ),
    )
    .unwrap();
    let c = "c".repeat(64);
    let login = || {
        fake.process(900)
            .comm("bash")
            .argv(&["bash"])
            .tty(pts(5))
            .leads_session()
            .in_container(POD, &c)
            .write()
            .unwrap()
    };
    login();
    fake.kill(1).unwrap();
    let agent = start(&fake);

    await_until("unready for hidepid", || {
        let (code, body) = get(&agent.addr, "/readyz");
        code == 503 && body.contains("proc filtered (hidepid)")
    });
    let (_, body) = get(&agent.addr, "/readyz");
    assert!(body.contains("hidepid=invisible"), "{body}");
    let (_, metrics) = get(&agent.addr, "/metrics");
    assert_eq!(filtered_gauge(&metrics, "hidepid"), Some(1), "{metrics}");
    assert_eq!(filtered_gauge(&metrics, "no_pid1"), Some(0), "{metrics}");
    assert!(sessions(&agent.addr).is_empty(), "nothing trusted yet");

    fake.process(1).comm("init").write().unwrap();
    await_until("ready", || get(&agent.addr, "/readyz").0 == 200);
    assert_eq!(sessions(&agent.addr).len(), 1);
    let (_, metrics) = get(&agent.addr, "/metrics");
    assert_eq!(filtered_gauge(&metrics, "hidepid"), Some(0), "{metrics}");

    // Filtered again, and the view now lacks the login too.
    fake.kill(1).unwrap();
    fake.kill(900).unwrap();
    await_until("unready again", || get(&agent.addr, "/readyz").0 == 503);
    let s = sessions(&agent.addr);
    assert_eq!(s.len(), 1, "the partial view replaced the last trusted one");
    assert_eq!(s[0]["pid"].as_u64(), Some(900));
}

#[test]
fn sessions_shows_argv_only_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), 1_764_000_000).unwrap();
    for pid in 1..5 {
        fake.process(pid).write().unwrap();
    }
    let c = "d".repeat(64);
    fake.process(700)
        .comm("mysql")
        .argv(&["mysql", "-uroot", "-phunter2"])
        .tty(pts(3))
        .leads_session()
        .in_container(POD, &c)
        .write()
        .unwrap();
    for (extra, want) in [
        (&[][..], serde_json::json!([])),
        (
            &["--sessions-argv", "true"][..],
            serde_json::json!(["mysql", "-uroot", "-phunter2"]),
        ),
    ] {
        let agent = start_with(&fake, extra);
        await_until("the login", || sessions(&agent.addr).len() == 1);
        let s = &sessions(&agent.addr)[0];
        assert_eq!(s["command"], "mysql", "{extra:?}");
        assert_eq!(s["argv"], want, "{extra:?}");
        let (_, body) = get(&agent.addr, "/sessions");
        assert_eq!(
            body.contains("hunter2"),
            !extra.is_empty(),
            "{extra:?}: {body}"
        );
    }
}
