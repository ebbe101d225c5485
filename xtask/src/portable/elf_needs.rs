//! What an x86_64 ELF executable needs from the system that runs it: the
//! program interpreter, the shared libraries (DT_NEEDED) and the symbol
//! versions (.gnu.version_r, with the symbols that use each), and how that
//! compares with a glibc floor. Pure: bytes in, findings out.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Sym};
use object::Endianness;

/// The libraries of glibc itself, present on every x86_64 glibc system since
/// long before 2.17 (since 2.34 most are empty stubs, still installed).
pub const GLIBC_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "ld-linux-x86-64.so.2",
];

/// The x86_64 glibc program interpreter (the path is part of the ABI).
pub const GLIBC_INTERPRETER: &str = "/lib64/ld-linux-x86-64.so.2";

/// A glibc release, as in the symbol version `GLIBC_2.2.5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32, pub u32);

impl GlibcVersion {
    /// Parses a version name such as `GLIBC_2.17` or `GLIBC_2.2.5`; None for
    /// anything else (`GLIBC_PRIVATE`, `GCC_3.0`, ...).
    pub fn from_symbol_version(name: &str) -> Option<Self> {
        let mut parts = name.strip_prefix("GLIBC_")?.split('.');
        let mut next = |required: bool| match parts.next() {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
            None if !required => Some(0),
            _ => None,
        };
        let version = Self(next(true)?, next(true)?, next(false)?);
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self(major, minor, 0) => write!(f, "{major}.{minor}"),
            Self(major, minor, patch) => write!(f, "{major}.{minor}.{patch}"),
        }
    }
}

/// One version an executable requires from one library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionNeed {
    pub library: String,
    pub version: String,
    /// The undefined dynamic symbols bound to this version (may be empty:
    /// a version can be required without a symbol using it).
    pub symbols: Vec<String>,
}

/// What an executable needs at run time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfNeeds {
    /// PT_INTERP; None for a static executable.
    pub interpreter: Option<String>,
    /// DT_NEEDED, in file order.
    pub libraries: Vec<String>,
    pub versions: Vec<VersionNeed>,
}

impl ElfNeeds {
    /// A fully static executable: nothing is loaded from the system.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.libraries.is_empty()
    }

    /// The newest glibc release any required version names.
    pub fn newest_glibc(&self) -> Option<GlibcVersion> {
        self.versions
            .iter()
            .filter_map(|v| GlibcVersion::from_symbol_version(&v.version))
            .max()
    }

    /// Everything that keeps the executable from starting on every x86_64
    /// glibc system of release `floor` or newer; empty when it runs there.
    pub fn problems(&self, floor: GlibcVersion) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(interp) = &self.interpreter {
            if interp != GLIBC_INTERPRETER {
                problems.push(format!(
                    "its program interpreter is {interp}, not glibc's {GLIBC_INTERPRETER}"
                ));
            }
        }
        for lib in &self.libraries {
            if !GLIBC_LIBRARIES.contains(&lib.as_str()) {
                problems.push(format!(
                    "it links {lib}, which is not part of glibc (allowed: {})",
                    GLIBC_LIBRARIES.join(", ")
                ));
            }
        }
        for need in &self.versions {
            let what = match GlibcVersion::from_symbol_version(&need.version) {
                Some(v) if v <= floor => continue,
                Some(v) => format!("glibc {v} is newer than the floor {floor}"),
                None => "not a glibc release version".to_string(),
            };
            problems.push(format!(
                "it needs {}@{} ({what}){}",
                need.library,
                need.version,
                symbol_list(&need.symbols)
            ));
        }
        problems
    }
}

fn symbol_list(symbols: &[String]) -> String {
    const SHOWN: usize = 5;
    match symbols.len() {
        0 => String::new(),
        n if n <= SHOWN => format!(" for {}", symbols.join(", ")),
        n => format!(
            " for {} and {} more",
            symbols[..SHOWN].join(", "),
            n - SHOWN
        ),
    }
}

/// Reads what a 64-bit little-endian x86_64 ELF executable needs. Any other
/// input (not ELF, another class or machine, truncated or inconsistent
/// tables) is an error, never a panic.
pub fn read(data: &[u8]) -> Result<ElfNeeds> {
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|e| anyhow::anyhow!("not a 64-bit ELF file ({e})"))?;
    let endian = header.endian().map_err(anyhow::Error::msg)?;
    ensure!(
        endian == Endianness::Little && header.e_machine(endian) == elf::EM_X86_64,
        "not an x86_64 executable (e_machine {})",
        header.e_machine(endian)
    );

    let mut needs = ElfNeeds::default();
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| anyhow::anyhow!("program headers: {e}"))?;
    let mut dynamic_segment = false;
    for segment in segments {
        if let Some(interp) = segment
            .interpreter(endian, data)
            .map_err(|e| anyhow::anyhow!("PT_INTERP: {e}"))?
        {
            needs.interpreter = Some(text(interp, "PT_INTERP")?);
        }
        dynamic_segment |= segment.p_type(endian) == elf::PT_DYNAMIC;
    }

    let sections = header
        .sections(endian, data)
        .map_err(|e| anyhow::anyhow!("section headers: {e}"))?;
    let dynamic = sections
        .dynamic_table(endian, data)
        .map_err(|e| anyhow::anyhow!(".dynamic: {e}"))?;
    if dynamic.is_empty() {
        // The loader reads PT_DYNAMIC; without section headers describing it
        // the symbol versions cannot be checked.
        ensure!(
            !dynamic_segment && needs.interpreter.is_none(),
            "it is dynamically linked but has no .dynamic section header: cannot read what it needs"
        );
        return Ok(needs);
    }
    for entry in &dynamic {
        if entry.tag == elf::DT_NEEDED {
            let name = dynamic
                .string(entry)
                .map_err(|e| anyhow::anyhow!("DT_NEEDED: {e}"))?;
            needs.libraries.push(text(name, "DT_NEEDED")?);
        }
    }

    needs.versions = version_needs(&sections, endian, data)?;
    Ok(needs)
}

type Sections<'data> = object::read::elf::SectionTable<'data, elf::FileHeader64<Endianness>>;

/// .gnu.version_r, with each undefined dynamic symbol attached to its version.
fn version_needs(
    sections: &Sections<'_>,
    endian: Endianness,
    data: &[u8],
) -> Result<Vec<VersionNeed>> {
    let Some((mut verneeds, link)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| anyhow::anyhow!(".gnu.version_r: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let strings = sections
        .strings(endian, data, link)
        .map_err(|e| anyhow::anyhow!(".gnu.version_r strings: {e}"))?;
    // (library, version) -> symbols, in file order of the requirements.
    let mut order = Vec::new();
    let mut by_version: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    while let Some((verneed, mut vernauxes)) = verneeds
        .next()
        .map_err(|e| anyhow::anyhow!(".gnu.version_r: {e}"))?
    {
        let library = verneed
            .file(endian, strings)
            .map_err(|e| anyhow::anyhow!(".gnu.version_r file: {e}"))?;
        let library = text(library, ".gnu.version_r file")?;
        while let Some(vernaux) = vernauxes
            .next()
            .map_err(|e| anyhow::anyhow!(".gnu.version_r entry: {e}"))?
        {
            let version = vernaux
                .name(endian, strings)
                .map_err(|e| anyhow::anyhow!(".gnu.version_r name: {e}"))?;
            let key = (library.clone(), text(version, ".gnu.version_r name")?);
            if by_version.insert(key.clone(), Vec::new()).is_none() {
                order.push(key);
            }
        }
    }

    if let Some(versions) = sections
        .versions(endian, data)
        .map_err(|e| anyhow::anyhow!(".gnu.version: {e}"))?
    {
        let symbols = sections
            .symbols(endian, data, elf::SHT_DYNSYM)
            .map_err(|e| anyhow::anyhow!(".dynsym: {e}"))?;
        for (index, symbol) in symbols.enumerate() {
            if !symbol.is_undefined(endian) || index.0 == 0 {
                continue;
            }
            let Some(version) = versions
                .version(versions.version_index(endian, index))
                .map_err(|e| anyhow::anyhow!(".gnu.version of symbol {}: {e}", index.0))?
            else {
                continue;
            };
            let (Some(file), name) = (version.file(), version.name()) else {
                continue;
            };
            let key = (text(file, "version file")?, text(name, "version name")?);
            let symbol_name = symbol
                .name(endian, symbols.strings())
                .map_err(|e| anyhow::anyhow!(".dynsym name: {e}"))?;
            by_version
                .get_mut(&key)
                .context("a symbol names a version missing from .gnu.version_r")?
                .push(text(symbol_name, ".dynsym name")?);
        }
    }

    Ok(order
        .into_iter()
        .map(|key| {
            let symbols = by_version.remove(&key).unwrap_or_default();
            VersionNeed {
                library: key.0,
                version: key.1,
                symbols,
            }
        })
        .collect())
}

fn text(bytes: &[u8], what: &str) -> Result<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => Ok(s.to_string()),
        Ok(_) => bail!("{what}: empty name"),
        Err(_) => bail!("{what}: name is not UTF-8"),
    }
}

#[cfg(test)]
mod tests;
