//! The control plane tests run against.
//!
//! Reused, in this order: `SESSIONGUARD_CLUSTER_DIR` (a state dir with `cluster.json`),
//! then a running `make dev-up` cluster (`.dev/cluster`). Otherwise the first test of a
//! binary starts a private one in a temp dir; it is stopped when the binary exits (an
//! atexit hook, and PR_SET_PDEATHSIG if the binary is killed), and its directory with
//! all logs is kept if any test failed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::controlplane::{ClusterInfo, ControlPlane, Lifetime, StartOptions};
use crate::{Error, Result, paths};

/// A running control plane shared by the tests of one binary.
#[derive(Debug)]
pub struct SharedCluster {
    pub info: ClusterInfo,
    /// Started elsewhere (dev-up, SESSIONGUARD_CLUSTER_DIR) rather than by this binary.
    pub reused: bool,
    pub started_in: Option<Duration>,
}

static SHARED: OnceLock<std::result::Result<SharedCluster, String>> = OnceLock::new();
static OWNED: Mutex<Option<ControlPlane>> = Mutex::new(None);
static FAILED: AtomicBool = AtomicBool::new(false);

/// The shared control plane, started on first use.
pub fn shared() -> Result<&'static SharedCluster> {
    SHARED
        .get_or_init(|| init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Invalid(format!("control plane unavailable: {e}")))
}

/// Keeps the private control plane's directory (logs) when the binary exits.
pub fn mark_failed() {
    FAILED.store(true, Ordering::SeqCst);
}

fn init() -> Result<SharedCluster> {
    let candidates = std::env::var_os("SESSIONGUARD_CLUSTER_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([paths::dev_dir().join("cluster")]);
    for dir in candidates {
        if let Ok(info) = ClusterInfo::load(&dir)
            && info.is_running()
        {
            // `make dev-up` runs a sessionguard controller watching every
            // namespace: it would protect and release the tests' pods beside
            // the controllers the tests run themselves.
            if let Some(pid) = running_dev_controller(&dir) {
                eprintln!(
                    "e2e: not reusing {}: its sessionguard controller (pid {pid}) would act on test pods; starting a private control plane (use SG_DEV_COMPONENTS=0 make dev-up to share one)",
                    dir.display()
                );
                continue;
            }
            eprintln!("e2e: reusing control plane {}", dir.display());
            return Ok(SharedCluster {
                info,
                reused: true,
                started_in: None,
            });
        }
    }
    start_private()
}

/// The pid of the controller `e2e/dev.sh` started for this cluster, if it runs.
fn running_dev_controller(dir: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("pids/controller.pid")).ok()?;
    let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

fn start_private() -> Result<SharedCluster> {
    // Simulated nodes of an earlier run that was killed (no Drop ran) leave their
    // cgroups, and stand-ins reparented to init. Live nodes' are left alone.
    if let Ok(root) = crate::simnode::CgroupRoot::detect() {
        match crate::simnode::sweep_orphaned_cgroups(&root) {
            Ok(swept) if !swept.is_empty() => {
                eprintln!("e2e: removed cgroups orphaned by an earlier run: {swept:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("e2e: could not sweep orphaned cgroups: {e}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("sessionguard-e2e-{}", std::process::id()));
    let opts = StartOptions {
        dir: dir.clone(),
        lifetime: Lifetime::Tied,
        timeout: Duration::from_secs(120),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // PR_SET_PDEATHSIG fires when the spawning *thread* ends, and test threads end with
    // each test: the components are spawned from a thread that lives until exit.
    std::thread::Builder::new()
        .name("sg-control-plane".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            match rt.block_on(ControlPlane::start(&opts)) {
                Ok(cp) => {
                    let info = (cp.info().clone(), cp.started_in());
                    *OWNED.lock().expect("control plane lock") = Some(cp);
                    let _ = tx.send(Ok(info));
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e} (logs kept in {})", opts.dir.display())));
                }
            }
        })
        .map_err(|e| Error::Invalid(format!("spawning the control-plane thread: {e}")))?;
    let (info, took) = rx
        .recv()
        .map_err(|_| Error::Invalid("control-plane thread died".into()))?
        .map_err(Error::Invalid)?;
    // SAFETY: registering a plain extern "C" fn.
    unsafe {
        libc::atexit(stop_at_exit);
    }
    eprintln!(
        "e2e: started control plane in {:.1}s ({})",
        took.as_secs_f64(),
        dir.display()
    );
    Ok(SharedCluster {
        info,
        reused: false,
        started_in: Some(took),
    })
}

extern "C" fn stop_at_exit() {
    let cp = OWNED.lock().ok().and_then(|mut g| g.take());
    if let Some(mut cp) = cp {
        let dir = cp.info().dir.clone();
        cp.stop();
        if FAILED.load(Ordering::SeqCst) {
            eprintln!(
                "e2e: a test failed; control plane logs kept in {}",
                dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
