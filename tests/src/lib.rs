//! Helpers for the kernel integration tests: they load the real BPF program
//! into the running kernel and drive real sockets. They need root.
pub mod kernel;
pub mod netns;
pub mod prometheus;
pub mod running;
pub mod scenario;
pub mod tracer;
pub mod workload;

/// Environment variable: how many times slower than an ordinary host the
/// machine running the tests is (xtask sets it for a VM without hardware
/// virtualisation). Every wait and timeout of the tests is multiplied by it;
/// no test asserts anything about speed.
pub const SLOWDOWN_ENV: &str = "TCPSTATE_TEST_SLOWDOWN";

/// See [`SLOWDOWN_ENV`]; 1 on an ordinary host.
pub fn slowdown() -> u32 {
    std::env::var(SLOWDOWN_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// A wait or timeout of `n` seconds on an ordinary host.
pub fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n) * slowdown()
}

/// A wait or timeout of `n` milliseconds on an ordinary host.
pub fn millis(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n) * slowdown()
}

/// What tcpstate says on stderr once its programs are attached and it
/// traces (other lines, such as `-v` ones, may mention tracing too).
pub const STARTED: &str = "tcpstate: tracing TCP state transitions";

/// Panics (so the test fails, never passes) when not root. `cargo xtask test`
/// skips these tests with a message before they get here.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel integration tests need root (they load a BPF program): run `sudo -E cargo xtask test`"
    );
}

/// The single-threaded tokio runtime a live source runs on (its ring
/// buffer is polled through tokio's reactor).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Path of the `tcpstate` binary under test: `TCPSTATE_BIN`, which xtask
/// sets to the binary it just built. No fallback: a plain `cargo test` would
/// otherwise run whatever stale binary lies in the target directory.
pub fn tcpstate_bin() -> std::path::PathBuf {
    let bin: std::path::PathBuf = std::env::var_os("TCPSTATE_BIN")
        .expect("TCPSTATE_BIN is not set: run the kernel tests with `cargo xtask test`, which builds tcpstate and sets it")
        .into();
    assert!(
        bin.exists(),
        "TCPSTATE_BIN={} does not exist: build it with `cargo xtask build`",
        bin.display()
    );
    bin
}
