//! Running child processes, looking up programs, and environment hygiene.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Prints the one-line announcement of a phase.
pub fn phase(msg: impl Display) {
    eprintln!("xtask: {msg}");
}

/// Runs `cmd` with inherited stdio; fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its trimmed stdout, or None if it cannot be started
/// or fails (stderr is discarded).
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Shell-like rendering of a command: explicitly set variables (except PATH),
/// the program and its arguments.
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(key, _)| *key != "PATH")
        .filter_map(|(key, val)| val.map(|v| format!("{}={}", key.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
}

/// Finds an executable by name: first in `first_dirs`, then on PATH.
pub fn find_program(name: &str, first_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    first_dirs
        .iter()
        .cloned()
        .chain(env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// PATH with `dir` in front (the child of a cargo build must find bpf-linker).
pub fn path_with(dir: &Path) -> Result<OsString> {
    let old = env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&old));
    env::join_paths(dirs).context("building PATH")
}

/// The cargo that runs this xtask (so nested builds use the same toolchain).
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    scrub_cargo_run_env(&mut cmd);
    cmd
}

/// Removes the variables `cargo run` sets for the xtask binary itself, which
/// describe xtask's package and mean nothing to a nested cargo.
pub fn scrub_cargo_run_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k == "CARGO"
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_BIN_NAME"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_PKG_")
        {
            cmd.env_remove(&key);
        }
    }
}

/// For the eBPF build: removes everything the outer cargo/rustup or the user
/// set that would change which compiler runs or how it is invoked. Registry,
/// network and terminal settings (and CARGO_HOME) are kept.
pub fn scrub_for_bpf(cmd: &mut Command) {
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const REMOVE: &[&str] = &[
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUST_RECURSION_COUNT",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_BOOTSTRAP",
        "RUSTC_LINKER",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
    ];
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        let cargo_var = (k.starts_with("CARGO") && !KEEP_PREFIXES.iter().any(|p| k.starts_with(p)))
            || k.starts_with("__CARGO");
        if cargo_var || REMOVE.contains(&k.as_ref()) {
            cmd.env_remove(&key);
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
