//! Kubernetes namespace and pod names of an owner, from what the host shows
//! (no API call): the pod UID in the cgroup path of the pod's processes, and
//! the kubelet's log directories `/var/log/pods/NAMESPACE_POD_UID`.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the kubelet keeps one directory per pod on this node.
pub const KUBELET_POD_LOGS: &str = "/var/log/pods";

/// How often at most the pod directory is read again on a miss (pods come
/// and go; a UID of one already gone must not cost a read per lookup).
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
}

/// The pod UID in a cgroup path, with dashes (as the API and the kubelet's
/// directories write it), for both cgroup drivers:
/// cgroupfs `/kubepods/burstable/pod<UID>/<container>` and systemd
/// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID with _>.slice/...`.
pub fn pod_uid(cgroup_path: &str) -> Option<String> {
    let mut in_kubepods = false;
    for part in cgroup_path.split('/') {
        if part.contains("kubepods") {
            in_kubepods = true;
        }
        if !in_kubepods {
            continue;
        }
        let part = part.strip_suffix(".slice").unwrap_or(part);
        let Some(at) = part.rfind("pod") else {
            continue;
        };
        let uid = part[at + 3..].replace('_', "-");
        if is_uid(&uid) {
            return Some(uid);
        }
    }
    None
}

/// A UUID as Kubernetes writes pod UIDs: 8-4-4-4-12 lowercase hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `NAMESPACE_POD_UID` (a kubelet pod log directory's name) -> (UID, pod).
/// Namespaces and pod names are DNS labels/subdomains: never an underscore.
pub fn parse_pod_dir(name: &str) -> Option<(String, Pod)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || pod.is_empty() || !is_uid(uid) {
        return None;
    }
    Some((
        uid.to_string(),
        Pod {
            namespace: namespace.to_string(),
            name: pod.to_string(),
        },
    ))
}

/// Pod UIDs to names, read from the kubelet's pod log directories, cached;
/// an unknown UID reads the directory again at most once per
/// [`RESCAN_EVERY`]. On a host without the directory, nothing is found.
pub struct PodNames {
    dir: PathBuf,
    by_uid: HashMap<String, Pod>,
    scanned_at: Option<Instant>,
}

impl Default for PodNames {
    fn default() -> Self {
        PodNames::at(KUBELET_POD_LOGS)
    }
}

impl PodNames {
    /// Reads pod directories under `dir` instead of /var/log/pods.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        PodNames {
            dir: dir.as_ref().to_path_buf(),
            by_uid: HashMap::new(),
            scanned_at: None,
        }
    }

    /// The pod whose processes are in the cgroup at `cgroup_path`.
    pub fn of_cgroup(&mut self, cgroup_path: &str) -> Option<&Pod> {
        let uid = pod_uid(cgroup_path)?;
        let stale = self
            .scanned_at
            .is_none_or(|at| at.elapsed() >= RESCAN_EVERY);
        if !self.by_uid.contains_key(&uid) && stale {
            self.scan();
        }
        self.by_uid.get(&uid)
    }

    fn scan(&mut self) {
        self.scanned_at = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some((uid, pod)) = entry.file_name().to_str().and_then(parse_pod_dir) {
                self.by_uid.insert(uid, pod);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f2b7c1e-3d4a-4b5c-9d8e-7f6a5b4c3d2e";

    #[test]
    fn pod_uids_from_both_cgroup_drivers_and_every_qos_class() {
        let underscored = UID.replace('-', "_");
        let cid = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        for path in [
            format!("/kubepods/burstable/pod{UID}/{cid}"),
            format!("/kubepods/besteffort/pod{UID}/{cid}"),
            format!("/kubepods/pod{UID}/{cid}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{cid}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{underscored}.slice/crio-{cid}.scope"),
            // Nested under a node-level slice (kind, k3s in a container).
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{underscored}.slice/cri-containerd-{cid}.scope"),
            format!("/kubepods/burstable/pod{UID}"),
        ] {
            assert_eq!(pod_uid(&path).as_deref(), Some(UID), "{path}");
        }
    }

    #[test]
    fn paths_that_are_not_pods_have_no_uid() {
        for path in [
            "/",
            "",
            "/system.slice/docker-abc.scope",
            "/kubepods/burstable",
            "/kubepods.slice/kubepods-burstable.slice",
            // A pod-like name outside kubepods is not a pod.
            &format!("/user.slice/pod{UID}"),
            // Not a UUID: wrong lengths, upper case, extra group.
            "/kubepods/burstable/pod0f2b7c1e-3d4a-4b5c-9d8e-7f6a5b4c3d2",
            "/kubepods/burstable/pod0F2B7C1E-3D4A-4B5C-9D8E-7F6A5B4C3D2E",
            &format!("/kubepods/burstable/pod{UID}-1"),
            "/kubepods/burstable/pod",
        ] {
            assert_eq!(pod_uid(path), None, "{path}");
        }
    }

    #[test]
    fn kubelet_pod_directory_names() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-7db6d8ff4d-x2x9z_{UID}")),
            Some((
                UID.to_string(),
                Pod {
                    namespace: "kube-system".into(),
                    name: "coredns-7db6d8ff4d-x2x9z".into()
                }
            ))
        );
        for bad in [
            "kube-system_coredns".to_string(),
            format!("_coredns_{UID}"),
            format!("ns__{UID}"),
            format!("ns_pod_{UID}_extra"),
            "ns_pod_not-a-uid".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_pod_dir(&bad), None, "{bad:?}");
        }
    }

    fn layout(name: &str, dirs: &[&str], files: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("tcpstate-k8s-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for dir in dirs {
            std::fs::create_dir_all(root.join(dir).join("app")).unwrap();
        }
        for file in files {
            std::fs::write(root.join(file), b"").unwrap();
        }
        root
    }

    #[test]
    fn names_from_a_synthetic_kubelet_layout() {
        let other = "11111111-2222-4333-8444-555555555555";
        let root = layout(
            "names",
            &[
                &format!("payments_api-5d9f7b-abcde_{UID}"),
                &format!("default_web-0_{other}"),
                "not-a-pod-dir",
            ],
            // A file with a pod-like name is not a pod directory.
            &["monitoring_prom-0_22222222-3333-4444-8555-666666666666"],
        );
        let mut pods = PodNames::at(&root);
        let pod = pods
            .of_cgroup(&format!("/kubepods/burstable/pod{UID}/abc"))
            .cloned();
        assert_eq!(
            pod,
            Some(Pod {
                namespace: "payments".into(),
                name: "api-5d9f7b-abcde".into()
            })
        );
        let underscored = other.replace('-', "_");
        let web = pods
            .of_cgroup(&format!(
                "/kubepods.slice/kubepods-pod{underscored}.slice/cri-containerd-x.scope"
            ))
            .map(|p| p.name.clone());
        assert_eq!(web.as_deref(), Some("web-0"));
        assert_eq!(
            pods.of_cgroup("/kubepods/burstable/pod22222222-3333-4444-8555-666666666666/x"),
            None
        );
        assert_eq!(pods.of_cgroup("/system.slice/sshd.service"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_pod_created_later_is_found_after_the_rescan_interval_only() {
        let root = layout("later", &[], &[]);
        let mut pods = PodNames::at(&root);
        let path = format!("/kubepods/pod{UID}/abc");
        assert_eq!(pods.of_cgroup(&path), None);
        std::fs::create_dir(root.join(format!("ns_late_{UID}"))).unwrap();
        // Within RESCAN_EVERY of the last read: not read again.
        assert_eq!(pods.of_cgroup(&path), None);
        pods.scanned_at = Some(Instant::now() - RESCAN_EVERY);
        assert_eq!(pods.of_cgroup(&path).map(|p| p.name.as_str()), Some("late"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_kubelet_directory_means_no_names() {
        let mut pods = PodNames::at("/nonexistent/tcpstate/pods");
        assert_eq!(pods.of_cgroup(&format!("/kubepods/pod{UID}")), None);
    }
}
