//! Cgroups and containers of owners, read from the host (live only).
//!
//! `bpf_get_current_cgroup_id` gives a cgroup v2 id, which is the inode
//! number of the cgroup's directory under the cgroup2 mount. Names are
//! found by walking that tree once and on a miss (cgroups come and go).
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 id of a process (from `/proc/PID/cgroup`).
pub fn id_of_process(tgid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new(CGROUP2_ROOT).join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Resolves cgroup ids to paths (relative to the cgroup2 root), caching.
/// An unknown id walks the tree again, at most once per [`RESCAN_EVERY`]
/// (cgroups come and go; an id of one already gone must not cost a walk
/// per lookup).
#[derive(Default)]
pub struct CgroupNames {
    by_id: HashMap<u64, String>,
    scanned_at: Option<std::time::Instant>,
    /// Kubernetes pod names of the cgroups that are a pod's.
    pods: crate::source::kubernetes::PodNames,
}

pub const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl CgroupNames {
    /// The path of cgroup `id`, e.g. `/system.slice/docker-<id>.scope`.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if id == 0 {
            return None;
        }
        let stale = self
            .scanned_at
            .is_none_or(|at| at.elapsed() >= RESCAN_EVERY);
        if !self.by_id.contains_key(&id) && stale {
            self.scan();
        }
        self.by_id.get(&id).map(String::as_str)
    }

    /// One walk of the cgroup2 tree (bounded depth).
    fn scan(&mut self) {
        self.scanned_at = Some(std::time::Instant::now());
        let root = PathBuf::from(CGROUP2_ROOT);
        let mut stack = vec![(root.clone(), 0u32)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&root).unwrap_or(&dir);
            self.by_id
                .insert(meta.ino(), format!("/{}", relative.display()));
            if depth >= 12 {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((entry.path(), depth + 1));
                    }
                }
            }
        }
    }
}

/// Where a cgroup is shown: its id, and when known its path, the container
/// id the path shows, and the Kubernetes namespace and pod it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupView {
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl CgroupNames {
    /// The view of cgroup `id`; paths only when `resolve` (live: a
    /// recording's cgroups may not exist on the host reading it).
    pub fn view(&mut self, id: u64, resolve: bool) -> CgroupView {
        let path = if resolve {
            self.path(id).map(str::to_string)
        } else {
            None
        };
        let pod = path
            .as_deref()
            .and_then(|p| self.pods.of_cgroup(p))
            .cloned();
        CgroupView {
            cgroup_id: id,
            container_id: path.as_deref().and_then(container_id).map(str::to_string),
            cgroup: path,
            namespace: pod.as_ref().map(|p| p.namespace.clone()),
            pod: pod.map(|p| p.name),
        }
    }
}

/// The container id in a cgroup path, when the path shows one: docker,
/// containerd/CRI, podman/libpod and plain `/docker/<id>` layouts put a
/// 64-hex-digit id in a path component.
pub fn container_id(path: &str) -> Option<&str> {
    path.split('/').rev().find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_common_layouts() {
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id)
        );
        assert_eq!(container_id(&format!("/docker/{id}")), Some(id));
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
            )),
            Some(id)
        );
        assert_eq!(
            container_id(&format!("/machine.slice/libpod-{id}.scope/container")),
            Some(id)
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id(&format!("/docker/{}", &id[..63])), None);
    }

    #[test]
    fn this_process_has_a_cgroup_that_resolves_to_a_path() {
        let Some(id) = id_of_process(std::process::id()) else {
            eprintln!("no cgroup v2 here; skipping");
            return;
        };
        let mut names = CgroupNames::default();
        let path = names.path(id).expect("the walk finds our own cgroup");
        assert!(path.starts_with('/'), "{path}");
    }
}
