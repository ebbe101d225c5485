//! `cargo xtask dist --install-check`: the package installed, run and
//! removed in a fresh Debian root made by debootstrap (cached as a tar file,
//! so only the first run downloads anything).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::prereqs;

const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

pub fn install_check(dist_dir: &Path, deb: &Path, version: &str) -> Result<()> {
    anyhow::ensure!(
        cmd::is_root(),
        "--install-check makes a chroot and mounts /proc and /sys in it: run it as root \
         (sudo -E cargo xtask dist --install-check)"
    );
    let cache = base_tarball(dist_dir)?;
    let root = Root::fresh(&dist_dir.join("chroot"))?;
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&root.0)
            .arg("-xf")
            .arg(&cache),
    )?;
    let in_root = Path::new("/tmp/tcpstate.deb");
    fs::copy(deb, root.path(in_root)).context("copying the package into the chroot")?;

    phase(format!(
        "installing {} in a fresh {SUITE} root",
        deb.display()
    ));
    root.run(&["dpkg", "-i", "/tmp/tcpstate.deb"])?;
    for file in [
        "usr/bin/tcpstate",
        "etc/default/tcpstate",
        "lib/systemd/system/tcpstate.service",
        "usr/share/man/man1/tcpstate-serve.1.gz",
        "usr/share/bash-completion/completions/tcpstate",
    ] {
        anyhow::ensure!(
            root.0.join(file).is_file(),
            "/{file} not installed by the package"
        );
    }
    let said = root.output(&["tcpstate", "--version"])?;
    anyhow::ensure!(
        said.trim() == format!("tcpstate {version}"),
        "tcpstate --version in the chroot said {said:?}"
    );

    // The real thing: the BPF programs loaded from the installed binary,
    // with the host's /proc and /sys (BTF, tracefs) mounted in the root.
    root.mount("proc", "proc", "/proc")?;
    root.mount("sysfs", "sysfs", "/sys")?;
    let doctor = {
        let _lock = crate::test::kernel_tests_lock()?;
        root.output(&["tcpstate", "doctor", "--for", "1s", "--json"])?
    };
    let report: serde_json::Value = serde_json::from_str(&doctor).with_context(|| {
        format!("tcpstate doctor --json in the chroot printed no JSON: {doctor}")
    })?;
    anyhow::ensure!(report.is_object(), "tcpstate doctor --json: {doctor}");
    root.unmount_all()?;

    root.run(&["dpkg", "-r", "tcpstate"])?;
    anyhow::ensure!(
        !root.0.join("usr/bin/tcpstate").exists(),
        "dpkg -r left /usr/bin/tcpstate"
    );
    anyhow::ensure!(
        root.0.join("etc/default/tcpstate").is_file(),
        "dpkg -r removed the conffile /etc/default/tcpstate (only purge should)"
    );
    root.run(&["dpkg", "-P", "tcpstate"])?;
    anyhow::ensure!(
        !root.0.join("etc/default/tcpstate").exists(),
        "dpkg -P left /etc/default/tcpstate"
    );
    let status = root.output(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "tcpstate"]);
    anyhow::ensure!(
        status.as_deref().map_or(true, |s| !s.starts_with("ii")),
        "tcpstate still installed after purge: {status:?}"
    );
    let audit = root.output(&["dpkg", "--audit"])?;
    anyhow::ensure!(audit.trim().is_empty(), "dpkg --audit after purge: {audit}");
    phase(format!(
        "install check: installed, `tcpstate --version` and `tcpstate doctor` ran (BPF loaded), \
         removed and purged cleanly in a fresh {SUITE} root"
    ));
    Ok(())
}

/// target/dist/chroot-cache/SUITE-minbase.tar: a debootstrap root, made once.
fn base_tarball(dist_dir: &Path) -> Result<PathBuf> {
    let cache_dir = dist_dir.join("chroot-cache");
    let tarball = cache_dir.join(format!("{SUITE}-minbase.tar"));
    if tarball.is_file() {
        phase(format!(
            "fresh Debian root from the cache {}",
            tarball.display()
        ));
        return Ok(tarball);
    }
    let debootstrap = prereqs::ensure_program(
        "debootstrap",
        "debootstrap",
        "makes the fresh Debian root of the install check",
    )?;
    let build = Root::fresh(&cache_dir.join("build"))?;
    let mirror = host_mirror().unwrap_or_else(|| DEFAULT_MIRROR.to_string());
    phase(format!(
        "debootstrap --variant=minbase {SUITE} from {mirror} (once; cached)"
    ));
    cmd::run(
        Command::new(debootstrap)
            .args(["--variant=minbase", SUITE])
            .arg(&build.0)
            .arg(&mirror),
    )?;
    build.unmount_all()?;
    let partial = cache_dir.join(format!("{SUITE}-minbase.tar.partial"));
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&build.0)
            .args(["--exclude=./proc/*", "--exclude=./sys/*", "-cf"])
            .arg(&partial)
            .arg("."),
    )?;
    fs::rename(&partial, &tarball).with_context(|| format!("renaming to {}", tarball.display()))?;
    Ok(tarball)
}

/// The Debian mirror this host's apt uses (deb822 `URIs:` or a
/// sources.list `deb` line), so the chroot comes from the same place.
fn host_mirror() -> Option<String> {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_in(&deb822, &list)
}

fn mirror_in(deb822: &str, list: &str) -> Option<String> {
    let from_deb822 = deb822
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|uri| !uri.contains("security"));
    let from_list = || {
        list.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("deb "))
            .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")))
            .find(|uri| !uri.contains("security"))
    };
    from_deb822.or_else(from_list).map(str::to_string)
}

/// A directory used as a root; everything mounted under it is unmounted and
/// the directory removed when it is dropped, also after a failure.
struct Root(PathBuf);

impl Root {
    fn fresh(dir: &Path) -> Result<Root> {
        let root = Root(dir.to_path_buf());
        root.unmount_all()?;
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(root)
    }

    fn path(&self, inside: &Path) -> PathBuf {
        self.0.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    fn chroot(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.0)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8");
        c
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        cmd::run(&mut self.chroot(args))
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        let mut c = self.chroot(args);
        let out = c
            .output()
            .with_context(|| format!("starting `{}`", cmd::show(&c)))?;
        anyhow::ensure!(
            out.status.success(),
            "`chroot {} {}` failed ({}): {}",
            self.0.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn mount(&self, fstype: &str, source: &str, inside: &str) -> Result<()> {
        let target = self.path(Path::new(inside));
        fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
        cmd::run(
            Command::new("mount")
                .args(["-t", fstype, source])
                .arg(&target),
        )
    }

    /// Unmounts every mount point under the root, deepest first (tcpstate
    /// may have mounted tracefs under the chroot's /sys).
    fn unmount_all(&self) -> Result<()> {
        let mounts =
            fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        let Ok(root) = self.0.canonicalize() else {
            return Ok(());
        };
        let mut under: Vec<PathBuf> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(&root))
            .collect();
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in under {
            cmd::run(Command::new("umount").arg("--lazy").arg(&point))?;
        }
        Ok(())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            eprintln!("xtask: warning: {e:#}");
            return; // never remove files through a mount that is still there
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::mirror_in;

    #[test]
    fn the_hosts_mirror_not_the_security_one() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_in(deb822, "").as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n";
        assert_eq!(
            mirror_in("", list).as_deref(),
            Some("http://other.example/debian")
        );
        assert_eq!(
            mirror_in("", "deb-src http://x/debian bookworm main\n"),
            None
        );
        assert_eq!(mirror_in("", ""), None);
    }
}
