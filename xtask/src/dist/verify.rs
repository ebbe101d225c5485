//! Checks of the built package: its control data and file list
//! (`dpkg-deb --info/--contents`) and its systemd units
//! (`systemd-analyze verify`, on the package's own files).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::deb;
use crate::cmd::{self, phase};
use crate::prereqs;

/// `dpkg-deb --info` names the package, version and architecture and lists
/// the maintainer scripts and the conffile; `--contents` holds every file
/// the package must ship (one man page per generated page), owned by root.
pub fn package(deb_path: &Path, version: &str) -> Result<()> {
    let info = output(Command::new("dpkg-deb").arg("--info").arg(deb_path))?;
    let arch = deb::architecture()?;
    for expected in [
        "Package: tcpstate".to_string(),
        format!("Version: {version}"),
        format!("Architecture: {arch}"),
        "Depends: libc6".to_string(),
        "postinst".to_string(),
        "prerm".to_string(),
        "postrm".to_string(),
        "conffiles".to_string(),
    ] {
        anyhow::ensure!(
            info.contains(&expected),
            "`dpkg-deb --info {}` lacks {expected:?}:\n{info}",
            deb_path.display()
        );
    }
    let conffiles = output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb_path)
            .arg("conffiles"),
    )?;
    anyhow::ensure!(
        conffiles.trim() == format!("/{}", deb::DEFAULTS),
        "the package's conffiles should be /{} alone, not {conffiles:?}",
        deb::DEFAULTS
    );

    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(deb_path))?;
    let listed = parse_contents(&contents)?;
    let mut expected: Vec<String> = vec![
        deb::BIN.into(),
        deb::DEFAULTS.into(),
        deb::BASH.into(),
        deb::ZSH.into(),
        deb::FISH.into(),
        deb::RULES.into(),
        deb::DASHBOARD.into(),
        deb::COPYRIGHT.into(),
    ];
    expected.extend(deb::UNITS.iter().map(|u| u.to_string()));
    for page in [
        "tcpstate",
        "tcpstate-trace",
        "tcpstate-serve",
        "tcpstate-leaks",
    ] {
        expected.push(format!("{}/{page}.1.gz", deb::MAN1));
    }
    for path in &expected {
        let entry = listed
            .iter()
            .find(|e| &e.path == path)
            .with_context(|| format!("{path} missing from `dpkg-deb --contents`:\n{contents}"))?;
        anyhow::ensure!(
            entry.owner == "root/root",
            "{path} is owned by {} in the package, not root/root",
            entry.owner
        );
    }
    let bin = listed
        .iter()
        .find(|e| e.path == deb::BIN)
        .expect("checked above");
    anyhow::ensure!(
        bin.mode == "-rwxr-xr-x",
        "{} has mode {}",
        deb::BIN,
        bin.mode
    );
    let pages = listed
        .iter()
        .filter(|e| e.path.starts_with(deb::MAN1) && e.path.ends_with(".1.gz"))
        .count();
    phase(format!(
        "dpkg-deb --info/--contents: {} files as expected ({pages} man pages), owned by root",
        listed.iter().filter(|e| !e.mode.starts_with('d')).count()
    ));
    Ok(())
}

/// One line of `dpkg-deb --contents` (tar -tv): mode, owner, path.
#[derive(Debug, PartialEq)]
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

/// "-rwxr-xr-x root/root 123 2026-12-04 16:00 ./usr/bin/tcpstate" -> entry
/// with the path relative to the package root ("usr/bin/tcpstate").
fn parse_contents(text: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(
            fields.len() >= 6,
            "unexpected dpkg-deb --contents line: {line:?}"
        );
        let path = fields[5].trim_start_matches("./").trim_end_matches('/');
        entries.push(Entry {
            mode: fields[0].to_string(),
            owner: fields[1].to_string(),
            path: path.to_string(),
        });
    }
    Ok(entries)
}

/// Extracts the package and runs `systemd-analyze verify` on its units with
/// the extracted tree as root (so ExecStart's /usr/bin/tcpstate is the
/// packaged one; the host's own units and the other programs the units run
/// are copied in beside it). Warnings about our units count as failures
/// (verify exits 0 on an unknown key). Also prints systemd's exposure score
/// of the service's sandbox.
pub fn units(deb_path: &Path, dist_dir: &Path) -> Result<()> {
    let analyze = prereqs::ensure_program(
        "systemd-analyze",
        "systemd",
        "checks the package's systemd units",
    )?;
    let root = dist_dir.join("verify-root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb_path).arg(&root))?;
    let host_units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&host_units)?;
    cmd::run(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system/."])
            .arg(&host_units),
    )?;
    for unit in deb::UNITS {
        let text = std::fs::read_to_string(root.join(unit))
            .with_context(|| format!("reading {unit} from the package"))?;
        for program in exec_programs(&text) {
            let inside = root.join(program.trim_start_matches('/'));
            if !inside.exists() {
                std::fs::create_dir_all(inside.parent().expect("a directory"))?;
                std::fs::copy(&program, &inside)
                    .with_context(|| format!("{unit} runs {program}, which this host lacks too"))?;
            }
        }
    }
    for unit in deb::UNITS {
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.display()))
            .arg(format!("/{unit}"))
            .output()
            .context("running systemd-analyze verify")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !is_unrelated_to(l, unit))
            .collect();
        anyhow::ensure!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify {unit}: {}\n{}",
            out.status,
            complaints.join("\n")
        );
    }
    phase(format!(
        "systemd-analyze verify: {} accepted",
        deb::UNITS.join(", ")
    ));
    let unit = root.join(deb::UNITS[0]);
    if let Some(score) = cmd::probe(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit),
    )
    .and_then(|out| out.lines().last().map(str::to_string))
    {
        phase(format!(
            "systemd-analyze security tcpstate.service: {score}"
        ));
    }
    std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    Ok(())
}

/// The absolute programs of a unit's Exec*= lines ("-/usr/bin/find ..." ->
/// "/usr/bin/find").
fn exec_programs(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Exec"))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v))
        .filter_map(|v| v.split_whitespace().next())
        .map(|p| p.trim_start_matches(['-', '+', '@', '!', ':']).to_string())
        .filter(|p| p.starts_with('/'))
        .collect()
}

/// Messages of `systemd-analyze verify` about other units of the host
/// (it loads their dependencies), not about ours.
fn is_unrelated_to(line: &str, unit: &str) -> bool {
    let ours = Path::new(unit)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(unit);
    !line.contains(ours) && !line.contains("tcpstate")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start `{}`", cmd::show(cmd)))?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed ({}): {}",
        cmd::show(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_lines_become_relative_paths() {
        let text = "drwxr-xr-x root/root         0 2026-12-04 16:00 ./\n\
                    drwxr-xr-x root/root         0 2026-12-04 16:00 ./usr/\n\
                    -rwxr-xr-x root/root   1234567 2026-12-04 16:00 ./usr/bin/tcpstate\n";
        let entries = parse_contents(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].path, "usr");
        assert_eq!(
            entries[2],
            Entry {
                mode: "-rwxr-xr-x".into(),
                owner: "root/root".into(),
                path: "usr/bin/tcpstate".into()
            }
        );
    }

    #[test]
    fn programs_of_exec_lines() {
        let unit =
            "[Service]\nExecStartPre=-/usr/bin/find /x -delete\nExecStart=/bin/sh -c 'exec x'\n\
                    ExecStop=kill\nEnvironment=ExecStart=/nope\n";
        assert_eq!(exec_programs(unit), ["/usr/bin/find", "/bin/sh"]);
    }

    #[test]
    fn a_short_contents_line_is_an_error() {
        let err = parse_contents("-rwxr-xr-x root/root 12\n").unwrap_err();
        assert!(err.to_string().contains("unexpected"), "{err}");
    }
}
