//! `/proc/<pid>/cgroup` → the pod and container a process runs in.
//!
//! Each line is `hierarchy-id:controllers:path`; procfs-core splits them, and
//! what this module adds is reading a pod and container out of a path. On
//! hybrid hosts the pod path may appear in only some lines, so every line is
//! tried. Within a path the
//! *last* pod component wins and the container is the component right after
//! it: nested layouts (kind, k3s-in-docker) put an outer container's id in a
//! prefix such as `/system.slice/docker-<node id>.scope/kubelet.slice/...`,
//! and that id must never be taken for the container.
//!
//! Layouts understood:
//! - systemd driver: `kubepods-<qos>-pod<uid_with_underscores>.slice`, or
//!   `kubepods-pod<uid>.slice` for Guaranteed pods, then
//!   `cri-containerd-<id>.scope`, `crio-<id>.scope` (crun on v2 adds a
//!   `/container` child), `docker-<id>.scope` (cri-dockerd);
//! - cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>` (Guaranteed: no qos),
//!   `crio-<id>`;
//! - the unexpanded systemd form `...pod<uid>.slice:cri-containerd:<id>` that
//!   some runtimes write when the slice was never realised;
//! - static pods, whose "uid" is the kubelet's 32-hex config hash;
//! - paths relative to the reader's cgroup namespace (`/../../...`), which is
//!   what the agent sees of other pods when its own pod has a private one.
//!
//! A bare `pod<uid>` component (the cgroupfs spelling) counts only under a
//! `kubepods` ancestor, or at the top of a namespace-relative path that climbs
//! (`..`) through nothing but QoS levels, since there the kubepods ancestor
//! sits above the reader's namespace root and cannot be seen.

use procfs_core::{FromRead, ProcessCGroups};
use sessionguard_core::{ContainerId, PodUid};

use super::ParseError;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodContainer {
    pub pod_uid: PodUid,
    pub container_id: ContainerId,
}

/// The pod and container of the first line that names both; `Ok(None)` for
/// processes outside pods (node logins, plain `docker run`) or in a pod's own
/// cgroup without a container. A line that is not `id:controllers:path` is
/// an error.
pub fn parse_cgroup(bytes: &[u8]) -> Result<Option<PodContainer>, ParseError> {
    // A cgroup name is any bytes; one that is not UTF-8 must not hide the pod's line.
    let text = String::from_utf8_lossy(bytes);
    let groups = ProcessCGroups::from_read(text.as_bytes())
        .map_err(|e| ParseError::from_procfs_core("cgroup", e))?;
    Ok(groups.0.iter().find_map(|g| from_path(&g.pathname)))
}

/// Parses one cgroup path.
fn from_path(path: &str) -> Option<PodContainer> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, pod_uid) = comps
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| pod_in(c, &comps[..i]).map(|u| (i, u)))?;
    // Unexpanded form: `kubepods-...-pod<uid>.slice:cri-containerd:<id>`.
    if let Some((_, id)) = comps[at].rsplit_once(':') {
        return Some(PodContainer {
            pod_uid,
            container_id: ContainerId::parse(id).ok()?,
        });
    }
    let container_id = container_in(comps.get(at + 1)?)?;
    Some(PodContainer {
        pod_uid,
        container_id,
    })
}

/// A pod UID inside one path component, in any driver's spelling;
/// `ancestors` are the components above it.
fn pod_in(component: &str, ancestors: &[&str]) -> Option<PodUid> {
    let name = component.split(':').next()?;
    let name = name.strip_suffix(".slice").unwrap_or(name);
    let uid = if let Some(i) = name.rfind("-pod") {
        // systemd: kubepods-burstable-pod<uid>, kubepods-pod<uid>, kubelet-kubepods-...
        if !name[..i].contains("kubepods") {
            return None;
        }
        &name[i + 4..]
    } else {
        let uid = name.strip_prefix("pod")?;
        if !under_kubepods(ancestors) {
            return None;
        }
        uid
    };
    PodUid::parse(uid).ok()
}

/// Whether a cgroupfs `pod<uid>` component sits where the kubelet puts pods.
fn under_kubepods(ancestors: &[&str]) -> bool {
    if ancestors.iter().any(|c| c.contains("kubepods")) {
        return true;
    }
    // `/../../besteffort/pod<uid>/<id>` as seen from a private cgroup namespace.
    ancestors.first() == Some(&"..")
        && ancestors
            .iter()
            .all(|c| matches!(*c, ".." | "besteffort" | "burstable"))
}

/// A container ID inside the component after the pod's.
fn container_in(component: &str) -> Option<ContainerId> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // conmon runs beside the container in its own scope; it is not the container.
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = [
        "cri-containerd-",
        "crio-",
        "docker-",
        "containerd-",
        "libpod-",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .unwrap_or(name);
    ContainerId::parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";
    const ID: &str = "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    const NODE: &str = "9999999999999999999999999999999999999999999999999999999999999999";

    /// The parse of a well-formed file.
    fn parse(text: &str) -> Option<PodContainer> {
        parse_cgroup(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn expect(text: &str) {
        let got = parse(text).unwrap_or_else(|| panic!("no pod in {text:?}"));
        assert_eq!(got.pod_uid.as_str(), UID, "{text}");
        assert_eq!(got.container_id.as_str(), ID, "{text}");
    }

    #[test]
    fn systemd_driver_v2() {
        for (qos, runtime) in [
            ("burstable", "cri-containerd"),
            ("besteffort", "crio"),
            ("burstable", "docker"),
        ] {
            expect(&format!(
                "0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{runtime}-{ID}.scope\n"
            ));
        }
    }

    #[test]
    fn guaranteed_pods_have_no_qos_level() {
        expect(&format!(
            "0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
        ));
        expect(&format!("0::/kubepods/pod{UID}/{ID}\n"));
    }

    #[test]
    fn crio_with_crun_container_child() {
        expect(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope/container\n"
        ));
    }

    #[test]
    fn crio_conmon_is_not_the_container() {
        let text = format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(parse(&text), None);
    }

    #[test]
    fn cgroupfs_driver() {
        expect(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"));
        expect(&format!("0::/kubepods/burstable/pod{UID}/crio-{ID}\n"));
    }

    #[test]
    fn cgroupfs_crio_with_crun_container_child() {
        expect(&format!(
            "0::/kubepods/burstable/pod{UID}/crio-{ID}/container\n"
        ));
        expect(&format!("0::/kubepods/pod{UID}/crio-{ID}/container\n"));
    }

    #[test]
    fn cgroupfs_needs_a_kubepods_ancestor() {
        for text in [
            format!("0::/system.slice/pod{UID}/{ID}\n"),
            format!("0::/pod{UID}/{ID}\n"),
            format!("0::/besteffort/pod{UID}/{ID}\n"),
            format!("0::/../system.slice/pod{UID}/{ID}\n"),
            format!("0::/user.slice/../pod{UID}/{ID}\n"),
        ] {
            assert_eq!(parse(&text), None, "{text:?}");
        }
        // kind with the cgroupfs driver: the kubelet's root is /kubelet/kubepods.
        expect(&format!(
            "0::/docker/{NODE}/kubelet/kubepods/burstable/pod{UID}/{ID}\n"
        ));
    }

    #[test]
    fn relative_paths_from_a_private_cgroup_namespace() {
        // The agent's own pod has a private cgroup namespace; other pods' paths
        // are shown relative to its root.
        expect(&format!(
            "0::/../../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
        ));
        expect(&format!(
            "0::/../../../kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope/container\n"
        ));
        // cgroupfs: same QoS level as the agent, and a different one.
        expect(&format!("0::/../../pod{UID}/{ID}\n"));
        expect(&format!("0::/../../besteffort/pod{UID}/{ID}\n"));
    }

    #[test]
    fn cgroup_v1_and_hybrid_lines() {
        // v1: every controller line carries the path.
        expect(&format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        ));
        // hybrid: only some lines name the pod; the unified line says "/".
        expect(&format!(
            "9:name=systemd:/\n4:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n0::/\n"
        ));
        // and the other way round.
        expect(&format!(
            "4:memory:/\n0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
        ));
    }

    #[test]
    fn kind_and_k3s_nesting_ignore_the_outer_container() {
        expect(&format!(
            "0::/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
        ));
        expect(&format!(
            "0::/docker/{NODE}/kubepods/besteffort/pod{UID}/{ID}\n"
        ));
        // The node container itself is not a pod.
        assert_eq!(
            parse(&format!("0::/system.slice/docker-{NODE}.scope\n")),
            None
        );
    }

    #[test]
    fn unexpanded_systemd_form() {
        expect(&format!(
            "0::/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}\n"
        ));
        expect(&format!(
            "1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice:crio:{ID}\n"
        ));
    }

    #[test]
    fn static_pods_keep_their_config_hash() {
        let hash = "5b2d8bd2d9a4f2e8e7c5a3a0f9b7e6d1";
        let got = parse(&format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope\n")).unwrap();
        assert_eq!(got.pod_uid.as_str(), hash);
        assert!(got.pod_uid.is_static());
        // Under the cgroupfs driver.
        let got = parse(&format!("0::/kubepods/burstable/pod{hash}/{ID}\n")).unwrap();
        assert_eq!(
            (got.pod_uid.as_str(), got.container_id.as_str()),
            (hash, ID)
        );
    }

    #[test]
    fn not_pods() {
        for text in [
            "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(),
            format!("0::/system.slice/docker-{ID}.scope\n"), // plain docker run -it
            format!("0::/kubepods.slice/kubepods-pod{UID_}.slice\n"), // pod cgroup, no container
            format!("0::/kubepods/pod{UID}/not-a-container-id\n"),
            format!("0::/kubepods/podnot-a-uid/{ID}\n"),
            format!("0::/system.slice/mypod{UID_}.slice/{ID}\n"), // "pod" in a non-kubepods slice name
            String::new(),
            "0::\n".to_string(),
        ] {
            assert_eq!(parse(&text), None, "{text:?}");
        }
    }

    #[test]
    fn lines_that_are_not_cgroup_lines_are_errors() {
        let pod = format!("0::/kubepods/pod{UID}/{ID}\n");
        for text in [
            "garbage without colons\n".to_string(),
            "0:\n".to_string(),
            format!("x:{}", &pod[1..]),
            format!("{pod}junk\n"),
            "\u{fffd}::\n".to_string(),
        ] {
            let e = parse_cgroup(text.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "cgroup", "{text:?}");
        }
    }

    #[test]
    fn a_path_that_is_not_utf8_does_not_hide_the_pod() {
        let mut bytes = b"1:name=systemd:/odd-\xff\xfe.slice\n".to_vec();
        bytes.extend_from_slice(format!("0::/kubepods/pod{UID}/{ID}\n").as_bytes());
        let got = parse_cgroup(&bytes).unwrap().unwrap();
        assert_eq!(got.container_id.as_str(), ID);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in proptest::prelude::any::<String>()) {
            // Whatever it finds was in the text.
            if let Ok(Some(got)) = parse_cgroup(text.as_bytes()) {
                proptest::prop_assert!(text.to_ascii_lowercase().contains(got.container_id.as_str()));
            }
        }

        // Text shaped like the real file (lines, colons, slashes, pod-ish
        // names) reaches the path logic far more often than arbitrary strings.
        #[test]
        fn never_panics_on_cgroup_shaped_text(
            text in "([0-9]{0,2}:[a-z=,]{0,8}:(/(\\.\\.|kubepods[a-z.-]{0,12}|pod[0-9a-f_-]{0,36}|[a-z]{0,6}-[0-9a-f]{0,64}(\\.scope)?|\\PC{0,8}|:)){0,6}\n?){0,4}"
        ) {
            if let Ok(Some(got)) = parse_cgroup(text.as_bytes()) {
                proptest::prop_assert!(text.to_ascii_lowercase().contains(got.container_id.as_str()));
            }
        }

        #[test]
        fn finds_the_pod_under_any_prefix(prefix in "(/[a-z0-9._-]{1,12}){0,4}") {
            let text = format!("0::{prefix}/kubepods/besteffort/pod{UID}/{ID}\n");
            let got = parse(&text).unwrap();
            proptest::prop_assert_eq!(got.container_id.as_str(), ID);
        }
    }
}
