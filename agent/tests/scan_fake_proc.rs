//! `sessionguard-agent scan` end to end through the binary, on fake proc
//! trees written by the test.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use sessionguard_agent::testing::{FakeProc, containerd_cgroup, pts};

const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const POD2: &str = "11111111-2222-3333-4444-555555555555";
const BTIME: u64 = 1_764_000_000;

fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

fn scan(fake: &FakeProc, output: &str) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionguard-agent"))
        .args(["--log-format", "json", "scan", "--proc-root"])
        .arg(fake.root())
        .args(["--output", output])
        .output()
        .expect("run agent");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

fn sessions(fake: &FakeProc) -> Vec<Value> {
    let (stdout, stderr, ok) = scan(fake, "json");
    assert!(ok, "scan failed: {stderr}");
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON {e}: {stdout}"));
    doc["sessions"].as_array().expect("sessions array").clone()
}

/// `kind → count` from the scan's "skipped unreadable or malformed proc
/// entries" log lines.
fn skipped(stderr: &str) -> BTreeMap<String, u64> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "skipped unreadable or malformed proc entries")
        .map(|v| {
            (
                v["fields"]["kind"].as_str().unwrap().to_string(),
                v["fields"]["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn tree() -> (tempfile::TempDir, FakeProc) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    (dir, fake)
}

#[test]
fn a_shell_and_its_children_are_one_session() {
    let (_d, fake) = tree();
    let a = cid('a');
    // The container's own first process: the login below is not its init.
    fake.process(90)
        .comm("app")
        .container_init()
        .started_at_tick(100)
        .in_container(POD, &a)
        .write()
        .unwrap();
    fake.process(100)
        .comm("bash")
        .argv(&["/bin/bash", "-l"])
        .tty(pts(3))
        .leads_session()
        .uid(1000)
        .started_at_tick(500)
        .in_container(POD, &a)
        .write()
        .unwrap();
    fake.process(101)
        .comm("vim")
        .parent(100)
        .tty(pts(3))
        .session(100)
        .in_container(POD, &a)
        .write()
        .unwrap();
    fake.process(102)
        .comm("less")
        .parent(100)
        .tty(pts(3))
        .session(100)
        .in_container(POD, &a)
        .write()
        .unwrap();
    // Background process in the same container without a terminal: not a session.
    fake.process(103)
        .comm("sleep")
        .in_container(POD, &a)
        .write()
        .unwrap();

    let s = sessions(&fake);
    assert_eq!(s.len(), 1, "{s:#?}");
    let s = &s[0];
    assert_eq!(s["pod_uid"], POD);
    assert_eq!(s["container_id"], a.as_str());
    assert_eq!(s["tty"], "pts/3");
    assert_eq!(s["pid"], 100);
    assert_eq!(s["command"], "bash");
    assert_eq!(s["argv"], serde_json::json!(["/bin/bash", "-l"]));
    assert_eq!(s["uid"], 1000);
    assert_eq!(s["processes"], 3);
    assert_eq!(s["console"], false);
    // btime + 500 ticks at the host's clock rate (100 Hz on Linux).
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let want = jiff::Timestamp::from_nanosecond(
        (BTIME as i128) * 1_000_000_000 + 500 * 1_000_000_000 / hz as i128,
    )
    .unwrap();
    assert_eq!(
        s["started_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        want
    );
}

#[test]
fn consoles_are_reported_but_not_logins() {
    let (_d, fake) = tree();
    fake.process(200)
        .comm("sh")
        .tty(pts(0))
        .leads_session()
        .container_init()
        .in_container(POD, &cid('b'))
        .write()
        .unwrap();
    let s = sessions(&fake);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (&s[0]["console"], &s[0]["init"]),
        (&true.into(), &true.into())
    );
}

/// `init` is "first process of its container", not "PID 1 of a namespace":
/// with shareProcessNamespace the pause process is PID 1 and a console's init
/// is not, and an exec'd shell beside it is never first.
#[test]
fn init_is_the_first_process_of_the_container_under_a_shared_pid_namespace() {
    let (_d, fake) = tree();
    let shim = 100;
    fake.process(shim).comm("containerd-shim").write().unwrap();
    // pause: PID 1 of the pod's namespace, in its own (sandbox) container.
    fake.process(101)
        .comm("pause")
        .parent(shim)
        .container_init()
        .in_container(POD, &cid('0'))
        .write()
        .unwrap();
    // The tty: true container's init: pid 2 of the pod's namespace.
    fake.process(102)
        .comm("sh")
        .parent(shim)
        .tty(pts(0))
        .leads_session()
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    // `kubectl exec -it` into the same container, later, also a child of the shim.
    fake.process(150)
        .comm("bash")
        .parent(shim)
        .tty(pts(1))
        .leads_session()
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    // A shell that sshd (in the container) started: its parent is older and inside.
    fake.process(160)
        .comm("sshd")
        .parent(102)
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    fake.process(161)
        .comm("bash")
        .parent(160)
        .tty(pts(2))
        .leads_session()
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    // `kubectl debug -it`: a shell that is PID 1 of its own ephemeral container.
    fake.process(170)
        .comm("sh")
        .parent(shim)
        .tty(pts(3))
        .leads_session()
        .container_init()
        .in_container(POD, &cid('d'))
        .write()
        .unwrap();
    let s = sessions(&fake);
    let init: Vec<(u64, bool)> = s
        .iter()
        .map(|s| (s["pid"].as_u64().unwrap(), s["init"].as_bool().unwrap()))
        .collect();
    let mut init = init;
    init.sort();
    // 170 is first in its container too: the controller, which knows it is
    // ephemeral, counts it as a login.
    assert_eq!(init, [(102, true), (150, false), (161, false), (170, true)]);
}

/// An older process of the container whose cgroup cannot be read is passed
/// over; one that can be read still decides.
#[test]
fn an_unreadable_older_process_does_not_decide() {
    let (_d, fake) = tree();
    fake.process(300)
        .comm("worker")
        .in_container(POD, &cid('e'))
        .write()
        .unwrap();
    fake.write_raw(300, "cgroup", b"garbage").unwrap();
    fake.process(301)
        .comm("sh")
        .tty(pts(4))
        .leads_session()
        .in_container(POD, &cid('e'))
        .write()
        .unwrap();
    let s = sessions(&fake);
    assert_eq!(s[0]["init"], true);
    fake.process(300)
        .comm("worker")
        .in_container(POD, &cid('e'))
        .write()
        .unwrap();
    let s = sessions(&fake);
    assert_eq!(s[0]["init"], false);
}

#[test]
fn processes_outside_pods_are_not_sessions() {
    let (_d, fake) = tree();
    // ssh login on the node, a plain `docker run -it`, a kernel thread, a pod process without a tty.
    fake.process(300)
        .comm("bash")
        .tty(pts(1))
        .leads_session()
        .cgroup("0::/user.slice/user-0.slice/session-1.scope\n")
        .write()
        .unwrap();
    fake.process(301)
        .comm("sh")
        .tty(pts(2))
        .leads_session()
        .cgroup(&format!("0::/system.slice/docker-{}.scope\n", cid('c')))
        .write()
        .unwrap();
    fake.process(2)
        .comm("kthreadd")
        .parent(0)
        .cgroup("0::/\n")
        .write()
        .unwrap();
    fake.process(303)
        .comm("nginx")
        .in_container(POD, &cid('d'))
        .write()
        .unwrap();
    assert!(sessions(&fake).is_empty());
}

#[test]
fn two_containers_and_two_pods_with_the_same_pts_number() {
    let (_d, fake) = tree();
    for (pid, pod, c) in [(400, POD, 'e'), (410, POD, 'f'), (420, POD2, 'e')] {
        fake.process(pid)
            .comm("sh")
            .tty(pts(0))
            .leads_session()
            .in_container(pod, &cid(c))
            .write()
            .unwrap();
    }
    let s = sessions(&fake);
    assert_eq!(s.len(), 3, "{s:#?}");
}

#[test]
fn bad_entries_are_skipped_and_the_rest_is_found() {
    let (_d, fake) = tree();
    let g = cid('9');
    // Each container's init, older than the terminals below (logins, not consoles).
    for (pid, pod) in [(90, POD), (91, POD2)] {
        fake.process(pid)
            .comm("app")
            .container_init()
            .in_container(pod, &g)
            .write()
            .unwrap();
    }
    fake.process(500)
        .comm("bash (login) \t)x")
        .tty(pts(7))
        .leads_session()
        .in_container(POD, &g)
        .argv(&[])
        .write()
        .unwrap();
    // Malformed, empty, truncated, vanished, non-numeric and zombie entries.
    fake.write_raw(501, "stat", b"501 (broken S 1").unwrap();
    fake.write_raw(502, "stat", b"").unwrap();
    fake.write_raw(503, "stat", b"503 (sh) S 1 503 503")
        .unwrap();
    std::fs::create_dir_all(fake.root().join("504")).unwrap(); // directory left, files gone
    std::fs::create_dir_all(fake.root().join("self")).unwrap();
    std::fs::write(fake.root().join("12ab"), "").unwrap();
    fake.process(505)
        .comm("defunct")
        .tty(pts(8))
        .leads_session()
        .zombie()
        .in_container(POD, &g)
        .write()
        .unwrap();
    // A terminal leader whose status is garbage: still a session, with fallbacks.
    fake.process(506)
        .comm("sh")
        .tty(pts(9))
        .leads_session()
        .in_container(POD2, &g)
        .write()
        .unwrap();
    fake.write_raw(506, "status", b"Name:\tsh\n").unwrap();
    // A terminal process whose cgroup file is garbage (not `id:controllers:path`).
    fake.process(507)
        .comm("sh")
        .tty(pts(10))
        .leads_session()
        .write()
        .unwrap();
    fake.write_raw(507, "cgroup", &[0xff, 0xfe, b':', b':'])
        .unwrap();

    let (stdout, stderr, ok) = scan(&fake, "json");
    assert!(ok, "{stderr}");
    let s: Value = serde_json::from_str(&stdout).unwrap();
    let s = s["sessions"].as_array().unwrap();
    let pids: Vec<u64> = s.iter().map(|s| s["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, [500, 506], "{s:#?}");
    // No cmdline: the command falls back to the name in stat, parentheses and all.
    assert_eq!(s[0]["command"], "bash (login) \t)x");
    // No status: the uid is the owner of /proc/506, and it counts as a login.
    assert_eq!(s[1]["uid"], nix::unistd::Uid::effective().as_raw());
    assert_eq!(s[1]["console"], false);
    // 501 and 503 are malformed; 502 and 504 vanished (churn); 506's status
    // and 507's cgroup are malformed.
    let want = BTreeMap::from([
        ("stat".to_string(), 2),
        ("status".to_string(), 1),
        ("cgroup".to_string(), 1),
    ]);
    assert_eq!(skipped(&stderr), want, "{stderr}");
}

#[test]
fn cgroup_layouts_through_the_binary() {
    let (_d, fake) = tree();
    let u = POD.replace('-', "_");
    let id = cid('7');
    let layouts = [
        containerd_cgroup(POD, &id),
        format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{id}.scope/container\n"),
        format!("12:pids:/kubepods/besteffort/pod{POD}/{id}\n0::/\n"),
        format!(
            "0::/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{u}.slice/cri-containerd-{id}.scope\n",
            cid('1')
        ),
        format!("0::/kubepods-burstable-pod{u}.slice:cri-containerd:{id}\n"),
    ];
    for (i, cg) in layouts.iter().enumerate() {
        let pid = 600 + i as u32;
        fake.process(pid)
            .tty(pts(20 + i as u32))
            .leads_session()
            .cgroup(cg)
            .write()
            .unwrap();
    }
    let s = sessions(&fake);
    assert_eq!(s.len(), layouts.len(), "{s:#?}");
    assert!(
        s.iter()
            .all(|s| s["pod_uid"] == POD && s["container_id"] == id.as_str())
    );
}

#[test]
fn table_output_for_people() {
    let (_d, fake) = tree();
    fake.process(90)
        .comm("app")
        .container_init()
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
    fake.process(700)
        .comm("bash")
        .argv(&["bash"])
        .tty(pts(4))
        .leads_session()
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
    let (stdout, _, ok) = scan(&fake, "table");
    assert!(ok);
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("POD"));
    let row = lines.next().unwrap();
    assert!(
        row.contains(POD)
            && row.contains("pts/4")
            && row.contains("aaaaaaaaaaaa")
            && row.contains("login"),
        "{row}"
    );
}

#[test]
fn a_missing_proc_root_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionguard-agent"))
        .args(["scan", "--proc-root", "/nonexistent/proc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a proc filesystem root") && err.contains("--proc-root"),
        "{err}"
    );
}
