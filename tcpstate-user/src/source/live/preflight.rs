//! Checks made before loading anything, so failures get a precise message.
use super::LiveError;

/// Linux 5.8 introduced the BPF ring buffer.
const MIN_KERNEL: (u32, u32) = (5, 8);

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `Ok` for releases at or above 5.8 (`6.18.44-fc-v657`, `5.8.0`).
pub fn check_kernel_release(release: &str) -> Result<(), LiveError> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let version = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        // Unparseable: let the loader decide rather than refuse a kernel
        // we do not understand.
        _ => return Ok(()),
    };
    if version < MIN_KERNEL {
        return Err(LiveError::KernelTooOld {
            release: release.to_string(),
        });
    }
    Ok(())
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_privileges() -> Result<(), LiveError> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(LiveError::NotPrivileged {
        detail: format!(" (effective capabilities {caps:#x})"),
    })
}

pub fn check() -> Result<(), LiveError> {
    check_kernel_release(&kernel_release())?;
    check_privileges()
}

/// Since 5.11 BPF memory is charged to the cgroup; older kernels count it
/// against RLIMIT_MEMLOCK, which is often too small for the ring buffer.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure is harmless here
    // (the load then fails with a clear error of its own).
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(check_kernel_release("6.18.44-fc-v657").is_ok());
        assert!(check_kernel_release("5.8.0").is_ok());
        assert!(check_kernel_release("10.0").is_ok());
        assert!(check_kernel_release("weird").is_ok());
        let err = check_kernel_release("5.4.0-150-generic").unwrap_err();
        assert!(err.to_string().contains("5.4.0-150-generic") && err.to_string().contains("5.8"));
        assert!(check_kernel_release("4.19.0").is_err());
    }
}
