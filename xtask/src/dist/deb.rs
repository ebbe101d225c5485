//! The Debian package, staged in a directory and built with `dpkg-deb`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::Docs;
use crate::cmd::{self, phase};
use crate::workspace::Workspace;

pub struct Inputs<'a> {
    pub bin: &'a Path,
    pub docs: &'a Docs,
    pub version: &'a str,
    pub out_dir: &'a Path,
}

/// Where each file goes in the package, relative to the package root; the
/// files `verify` expects in `dpkg-deb --contents`.
pub const BIN: &str = "usr/bin/tcpstate";
pub const UNITS: [&str; 2] = [
    "lib/systemd/system/tcpstate.service",
    "lib/systemd/system/tcpstate-record.service",
];
pub const DEFAULTS: &str = "etc/default/tcpstate";
pub const MAN1: &str = "usr/share/man/man1";
pub const BASH: &str = "usr/share/bash-completion/completions/tcpstate";
pub const ZSH: &str = "usr/share/zsh/vendor-completions/_tcpstate";
pub const FISH: &str = "usr/share/fish/vendor_completions.d/tcpstate.fish";
pub const RULES: &str = "usr/share/tcpstate/prometheus/tcpstate-rules.yml";
pub const DASHBOARD: &str = "usr/share/tcpstate/grafana/tcpstate.json";
pub const COPYRIGHT: &str = "usr/share/doc/tcpstate/copyright";

/// The Debian architecture of the binaries this host builds.
pub fn architecture() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => anyhow::bail!(
            "no Debian architecture known for {other}: add it in xtask/src/dist/deb.rs"
        ),
    }
}

/// `target/dist/tcpstate_VERSION_ARCH.deb`.
pub fn build(ws: &Workspace, inputs: &Inputs) -> Result<PathBuf> {
    let arch = architecture()?;
    let name = format!("tcpstate_{}_{arch}", inputs.version);
    let stage = inputs.out_dir.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let packaging = ws.root.join("packaging");
    let contrib = ws.root.join("contrib");

    install(inputs.bin, &stage.join(BIN), 0o755)?;
    for unit in UNITS {
        let file = Path::new(unit).file_name().expect("a file name");
        install(
            &packaging.join("systemd").join(file),
            &stage.join(unit),
            0o644,
        )?;
    }
    install(
        &packaging.join("debian/default"),
        &stage.join(DEFAULTS),
        0o644,
    )?;
    for page in list(&inputs.docs.man1)? {
        let file = page.file_name().expect("a file name");
        let to = stage.join(MAN1).join(file);
        install(&page, &to, 0o644)?;
        // Debian compresses man pages; -n: no name or time stamp inside.
        cmd::run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&to))?;
    }
    let completions = &inputs.docs.completions;
    install(&completions.join("tcpstate.bash"), &stage.join(BASH), 0o644)?;
    install(&completions.join("_tcpstate"), &stage.join(ZSH), 0o644)?;
    install(&completions.join("tcpstate.fish"), &stage.join(FISH), 0o644)?;
    install(
        &contrib.join("prometheus/tcpstate-rules.yml"),
        &stage.join(RULES),
        0o644,
    )?;
    install(
        &contrib.join("grafana/tcpstate.json"),
        &stage.join(DASHBOARD),
        0o644,
    )?;
    write(&stage.join(COPYRIGHT), COPYRIGHT_TEXT, 0o644)?;

    let debian = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &packaging.join("debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    write(&debian.join("conffiles"), &format!("/{DEFAULTS}\n"), 0o644)?;
    let binary =
        fs::read(inputs.bin).with_context(|| format!("reading {}", inputs.bin.display()))?;
    let glibc = newest_glibc(&binary).context(
        "the binary names no GLIBC_ symbol version: is it linked against glibc? \
         (the package depends on libc6 at the version the binary needs)",
    )?;
    let control = control(inputs.version, arch, &glibc, installed_size_kib(&stage)?);
    write(&debian.join("control"), &control, 0o644)?;

    let deb = inputs.out_dir.join(format!("{name}.deb"));
    phase(format!("building {}", deb.display()));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The newest `GLIBC_x.y[.z]` symbol version a binary names: the libc6
/// version it needs (a build against an old glibc, such as the portable
/// release, needs an old one).
pub fn newest_glibc(binary: &[u8]) -> Option<String> {
    const TAG: &[u8] = b"GLIBC_";
    let mut newest: Option<Vec<u32>> = None;
    let mut at = 0;
    while let Some(found) = binary[at..].windows(TAG.len()).position(|w| w == TAG) {
        let start = at + found + TAG.len();
        let end = binary[start..]
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(binary.len(), |n| start + n);
        at = start;
        // Only a whole NUL-terminated version string (not GLIBC_PRIVATE).
        if binary.get(end) != Some(&0) {
            continue;
        }
        let parts: Option<Vec<u32>> = std::str::from_utf8(&binary[start..end])
            .ok()
            .map(|v| v.split('.').map(|p| p.parse().ok()).collect())
            .unwrap_or(None);
        if let Some(parts) = parts.filter(|p| p.len() >= 2) {
            if newest.as_ref().is_none_or(|n| parts > *n) {
                newest = Some(parts);
            }
        }
    }
    newest.map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
}

fn control(version: &str, arch: &str, glibc: &str, installed_kib: u64) -> String {
    format!(
        "Package: tcpstate\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: tcpstate developers <tcpstate@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6 (>= {glibc})\n\
         Section: net\n\
         Priority: optional\n\
         Description: TCP state transitions traced from the kernel with BPF\n \
         tcpstate shows every TCP state transition on a host as the kernel makes it,\n \
         attributes TIME_WAIT to the side and process that closed first, finds\n \
         CLOSE_WAIT leaks per process, and serves it all as Prometheus metrics\n \
         (tcpstate.service). Needs Linux 5.8 or newer with BTF.\n"
    )
}

const COPYRIGHT_TEXT: &str =
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: tcpstate\n\n\
Files: *\n\
Copyright: tcpstate developers\n\
License: MIT or Apache-2.0\n";

/// Copies `from` to `to` (creating directories) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = to.parent().expect("a destination directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = to.parent().expect("a destination directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        files.push(
            entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path(),
        );
    }
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no man pages in {}", dir.display());
    Ok(files)
}

/// The size of everything under `dir`, in KiB, rounded up (Installed-Size).
fn installed_size_kib(dir: &Path) -> Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), total)?;
            } else {
                *total += meta.len();
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, &mut total)?;
    Ok(total.div_ceil(1024))
}

#[cfg(test)]
mod tests {
    use super::newest_glibc;

    #[test]
    fn the_newest_glibc_version_a_binary_names() {
        let binary = b"\x7fELF..GLIBC_2.2.5\0GLIBC_2.34\0xGLIBC_2.17\0GLIBC_PRIVATE\0GLIBC_2.9\0";
        assert_eq!(newest_glibc(binary).as_deref(), Some("2.34"));
        assert_eq!(newest_glibc(b"GLIBC_2.17\0").as_deref(), Some("2.17"));
        // Not terminated, not a version, or none at all.
        assert_eq!(newest_glibc(b"GLIBC_2.40x\0"), None);
        assert_eq!(newest_glibc(b"GLIBC_2\0GLIBC_\0"), None);
        assert_eq!(newest_glibc(b"no libc here"), None);
        assert_eq!(newest_glibc(b"GLIBC_2.17"), None);
    }
}
