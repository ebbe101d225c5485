//! virtme-ng (PyPI) and QEMU: boot a kernel on the host's own root file
//! system (read-only over 9p, with writable folders we name).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::prereqs::Apt;

/// The virtme-ng release this was verified with.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Debian packages the VMs need: QEMU, depmod, and the busybox virtme-ng
/// puts in the guest's initramfs.
const VM_PKGS: &[&str] = &["qemu-system-x86", "kmod", "busybox-static"];

/// Installs what booting needs; returns the `vng` program.
pub fn ensure(tools_dir: &Path) -> Result<PathBuf> {
    let have = |p: &str| cmd::find_program(p, &[PathBuf::from("/usr/bin"), PathBuf::from("/sbin")]);
    if have("qemu-system-x86_64").is_none() || have("depmod").is_none() || have("busybox").is_none()
    {
        Apt::new().install(
            "QEMU, kmod and busybox (to boot the kernel matrix)",
            VM_PKGS,
        )?;
    }
    let venv = tools_dir.join("virtme-ng");
    let vng = venv.join("bin/vng");
    if !vng.is_file() {
        phase(format!(
            "installing {VIRTME_NG} into {} (python3 -m venv; pip)",
            venv.display()
        ));
        let python = cmd::find_program("python3", &[]).context(
            "python3 is needed to install virtme-ng: apt-get install -y python3 python3-venv",
        )?;
        cmd::run(Command::new(&python).args(["-m", "venv"]).arg(&venv)).context(
            "creating a Python venv failed: on Debian/Ubuntu run `apt-get install -y python3-venv`",
        )?;
        cmd::run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            VIRTME_NG,
        ]))?;
    }
    Ok(vng)
}

/// How the guest runs: KVM where the CPU offers hardware virtualisation,
/// otherwise QEMU's emulator (TCG). `/dev/kvm` alone is not enough: on a VM
/// without nested virtualisation it exists, yet a guest hangs or fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn detect() -> Accel {
        if let Ok(forced) = std::env::var("TCPSTATE_VM_ACCEL") {
            return if forced == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpu
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or_default();
        let hw = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
        if hw && Path::new("/dev/kvm").exists() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// How many times slower than the host the tests run in the guest: their
    /// waits and timeouts are scaled by it.
    pub fn slowdown(self) -> u32 {
        match self {
            Accel::Kvm => 2,
            Accel::Tcg => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (emulated)",
        }
    }
}
