//! The kernels of the matrix: Debian's own packages, fetched with apt from
//! the archives this host's apt already uses, into a private apt state under
//! `target/kernels/` (the host's package lists are not touched), and cached
//! there: a second run downloads nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::apt_sources::DebianMirrors;
use crate::cmd::{self, phase};

/// Which of the host's Debian archives has a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    Main,
    Security,
}

/// One kernel series of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// How it is named on the command line (`5.10`).
    pub name: &'static str,
    pub archive: Archive,
    pub suite: &'static str,
    /// The distribution that ships it.
    pub distribution: &'static str,
}

/// Oldest first. 5.10 is the oldest LTS kernel a supported Debian ships,
/// 6.1 the most common one.
pub const MATRIX: [Series; 3] = [
    Series {
        name: "5.10",
        archive: Archive::Security,
        suite: "bullseye-security",
        distribution: "Debian 11 (bullseye)",
    },
    Series {
        name: "6.1",
        archive: Archive::Main,
        suite: "bookworm",
        distribution: "Debian 12 (bookworm)",
    },
    Series {
        name: "6.12",
        archive: Archive::Security,
        suite: "bookworm-security",
        distribution: "Debian 12 (bookworm-security)",
    },
];

pub fn series(name: &str) -> Option<Series> {
    MATRIX.iter().copied().find(|s| s.name == name)
}

/// A kernel ready to boot: its image, and its modules installed where
/// virtme-ng looks for them.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    /// `uname -r` of the kernel (`6.1.0-57-amd64`).
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// Whether `package` is the generic amd64 image of `series` (not the cloud
/// or realtime flavour, nor a backport built for another release).
pub fn is_generic_image(series: &str, package: &str) -> bool {
    let Some(rest) = package
        .strip_prefix("linux-image-")
        .and_then(|r| r.strip_prefix(series))
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix("-amd64-unsigned"))
    else {
        return false;
    };
    // `0-57` (5.10, 6.1) or `118+deb12` (6.12); anything else is a flavour
    // (`0-57-cloud`) or a backport (`0-0.deb11.52`).
    let plain = rest.replacen("+deb", "+", 1);
    !plain.is_empty()
        && plain.starts_with(|c: char| c.is_ascii_digit())
        && plain
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
}

/// The numbers in a package name, for picking the newest.
pub fn version_key(package: &str) -> Vec<u64> {
    package
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// apt with its own state (lists, cache, sources) under `dir`.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: &Path, series: &[Series]) -> Result<Self> {
        let mirrors = DebianMirrors::of_host();
        let mut lines = String::new();
        for s in series {
            let base = match s.archive {
                Archive::Main => mirrors.main.as_deref(),
                Archive::Security => mirrors.security.as_deref(),
            };
            let Some(base) = base else {
                bail!(
                    "the kernel matrix takes Debian's kernel packages from the Debian archives \
                     apt already uses, but /etc/apt/sources.list(.d) names no Debian {} archive: \
                     add one, or leave out --kernel {}",
                    match s.archive {
                        Archive::Main => "release",
                        Archive::Security => "security",
                    },
                    s.name
                );
            };
            lines.push_str(&format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {base} {} main\n",
                s.suite
            ));
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("sources.list"), lines)
            .with_context(|| format!("writing {}", dir.join("sources.list").display()))?;
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = self.dir.display();
        c.env("DEBIAN_FRONTEND", "noninteractive").args([
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oDir::State::status=/dev/null".into(),
            // Downloads go to a folder `_apt` may not write.
            "-oAPT::Sandbox::User=root".into(),
        ]);
        c
    }
}

/// Makes each kernel of `wanted` ready: from the cache, else downloaded.
pub fn prepare(kernels_dir: &Path, wanted: &[Series]) -> Result<Vec<Kernel>> {
    let missing: Vec<Series> = wanted
        .iter()
        .copied()
        .filter(|s| cached(kernels_dir, s).is_none())
        .collect();
    if !missing.is_empty() {
        fetch(kernels_dir, &missing)?;
    }
    wanted
        .iter()
        .map(|s| {
            let kernel = cached(kernels_dir, s).with_context(|| {
                format!("kernel {} missing from the cache after download", s.name)
            })?;
            install_modules(kernels_dir, &kernel)?;
            Ok(kernel)
        })
        .collect()
}

/// A series already extracted under `kernels_dir/NAME`, whose `release`
/// file (written last) names its kernel.
fn cached(kernels_dir: &Path, series: &Series) -> Option<Kernel> {
    let dir = kernels_dir.join(series.name);
    let release = fs::read_to_string(dir.join("release")).ok()?;
    let release = release.trim().to_string();
    let vmlinuz = dir.join("root/boot").join(format!("vmlinuz-{release}"));
    vmlinuz.is_file().then_some(Kernel {
        series: *series,
        release,
        vmlinuz,
    })
}

fn fetch(kernels_dir: &Path, series: &[Series]) -> Result<()> {
    let apt = PrivateApt::new(&kernels_dir.join("apt"), series)?;
    phase(format!(
        "kernel matrix: reading the package lists of {} (private apt state in {})",
        series
            .iter()
            .map(|s| s.suite)
            .collect::<Vec<_>>()
            .join(", "),
        apt.dir.display()
    ));
    cmd::run(apt.command("apt-get").arg("-q").arg("update"))?;
    for s in series {
        let names = cmd::probe(apt.command("apt-cache").args(["pkgnames", "linux-image-"]))
            .unwrap_or_default();
        let package = names
            .lines()
            .filter(|n| is_generic_image(s.name, n))
            .max_by_key(|n| version_key(n))
            .with_context(|| {
                format!(
                    "no generic linux-image-{}.*-amd64-unsigned in {}",
                    s.name, s.suite
                )
            })?
            .to_string();
        let debs = kernels_dir.join("debs");
        fs::create_dir_all(&debs)?;
        phase(format!(
            "kernel matrix: downloading {package} ({})",
            s.distribution
        ));
        cmd::run(
            apt.command("apt-get")
                .args(["-q", "download", &package])
                .current_dir(&debs),
        )?;
        let deb = fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| {
                format!("{package}: downloaded .deb not found in {}", debs.display())
            })?;
        let dir = kernels_dir.join(s.name);
        let root = dir.join("root");
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        let release = fs::read_dir(root.join("lib/modules"))
            .with_context(|| format!("{}: no lib/modules", deb.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .with_context(|| format!("{}: empty lib/modules", deb.display()))?;
        fs::write(dir.join("release"), format!("{release}\n"))?;
    }
    Ok(())
}

/// virtme-ng builds the guest's initramfs from `/lib/modules/RELEASE` of the
/// root it boots (the host's): the 9p and virtio modules it needs are
/// modules in Debian's generic kernels, and the tests need veth.
///
/// depmod runs on the extracted tree (this checkout's own), which is then
/// copied beside the target and renamed into place: several checkouts may
/// install the same kernel at once, and a fresh host may have no
/// `/lib/modules` at all (`cp -a DIR /lib/modules/` would then make the
/// modules directory itself the copy).
fn install_modules(kernels_dir: &Path, kernel: &Kernel) -> Result<()> {
    let modules = Path::new("/lib/modules");
    let target = modules.join(&kernel.release);
    if target.join("modules.dep").is_file() {
        return Ok(());
    }
    let root = kernels_dir.join(kernel.series.name).join("root");
    phase(format!(
        "kernel matrix: installing the modules of {} into {} (depmod)",
        kernel.release,
        target.display()
    ));
    cmd::run(
        Command::new("depmod")
            .arg("-b")
            .arg(&root)
            .arg(&kernel.release),
    )?;
    fs::create_dir_all(modules).with_context(|| format!("creating {}", modules.display()))?;
    let staging = modules.join(format!(".{}.{}", kernel.release, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    cmd::run(
        Command::new("cp")
            .arg("-a")
            .arg(root.join("lib/modules").join(&kernel.release))
            .arg(&staging),
    )?;
    // A half-installed target (no modules.dep) from an interrupted run goes;
    // one another checkout completed meanwhile stays, and our copy goes.
    if target.exists() && !target.join("modules.dep").is_file() {
        fs::remove_dir_all(&target).with_context(|| format!("removing {}", target.display()))?;
    }
    if let Err(err) = fs::rename(&staging, &target) {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
        if !target.join("modules.dep").is_file() {
            return Err(err).with_context(|| format!("installing {}", target.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_images_only() {
        for (series, name, yes) in [
            ("6.1", "linux-image-6.1.0-57-amd64-unsigned", true),
            ("6.1", "linux-image-6.1.0-57-cloud-amd64-unsigned", false),
            ("6.1", "linux-image-6.1.0-57-rt-amd64-unsigned", false),
            ("6.1", "linux-image-6.1.0-0.deb11.52-amd64-unsigned", false),
            ("6.1", "linux-image-6.12.118+deb12-amd64-unsigned", false),
            ("6.12", "linux-image-6.12.118+deb12-amd64-unsigned", true),
            (
                "6.12",
                "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
                false,
            ),
            ("5.10", "linux-image-5.10.0-46-amd64-unsigned", true),
            ("5.10", "linux-image-5.10.0-46-amd64", false),
            ("5.10", "linux-image-5.10.-amd64-unsigned", false),
            ("5.10", "linux-image-5.10", false),
        ] {
            assert_eq!(is_generic_image(series, name), yes, "{series} {name}");
        }
    }

    #[test]
    fn newest_by_numbers() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-50-amd64-unsigned",
        ];
        let newest = names.iter().max_by_key(|n| version_key(n)).unwrap();
        assert_eq!(*newest, "linux-image-6.1.0-57-amd64-unsigned");
        assert!(
            version_key("linux-image-6.12.118+deb12-amd64-unsigned")
                > version_key("linux-image-6.12.99+deb12-amd64-unsigned")
        );
    }
}
