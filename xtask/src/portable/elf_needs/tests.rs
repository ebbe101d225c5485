use std::process::Command;

use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Sym, Vernaux, Verneed, Writer};
use object::write::StringId;
use object::Endianness;

use super::{read, ElfNeeds, GlibcVersion, VersionNeed, GLIBC_INTERPRETER};

const FLOOR: GlibcVersion = GlibcVersion(2, 17, 0);

/// What the synthetic executable declares.
struct Spec<'a> {
    machine: u16,
    interpreter: Option<&'a str>,
    needed: &'a [&'a str],
    /// (library, version, undefined symbols bound to it)
    versions: &'a [(&'a str, &'a str, &'a [&'a str])],
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            machine: elf::EM_X86_64,
            interpreter: Some(GLIBC_INTERPRETER),
            needed: &["libc.so.6"],
            versions: &[],
        }
    }
}

/// A library's name, its dynstr id, and its (version name id, version index)s.
type LibraryVersions<'a> = (&'a str, StringId, Vec<(StringId, u16)>);

/// Writes a minimal dynamically linked ELF64 executable with the given
/// PT_INTERP, DT_NEEDED, .gnu.version_r and versioned undefined symbols.
fn synthetic(spec: &Spec) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buf);

    let needed: Vec<StringId> = spec
        .needed
        .iter()
        .map(|l| w.add_dynamic_string(l.as_bytes()))
        .collect();
    // One verneed per library, in first-seen order; vernaux indexes from 2.
    let mut libraries: Vec<LibraryVersions> = Vec::new();
    let mut symbols: Vec<(StringId, u16)> = Vec::new();
    for (i, (lib, version, syms)) in spec.versions.iter().enumerate() {
        let index = u16::try_from(i + 2).expect("few versions");
        let version_id = w.add_dynamic_string(version.as_bytes());
        match libraries.iter_mut().find(|(name, ..)| name == lib) {
            Some((_, _, auxes)) => auxes.push((version_id, index)),
            None => {
                let file = w.add_dynamic_string(lib.as_bytes());
                libraries.push((lib, file, vec![(version_id, index)]));
            }
        }
        for sym in *syms {
            symbols.push((w.add_dynamic_string(sym.as_bytes()), index));
        }
    }
    let aux_count: usize = libraries.iter().map(|l| l.2.len()).sum();
    let dynamic_count = needed.len() + 1;

    w.reserve_file_header();
    let program_header_count = 1 + usize::from(spec.interpreter.is_some());
    w.reserve_program_headers(program_header_count as u32);
    let interp = spec.interpreter.map(|i| {
        let bytes = [i.as_bytes(), b"\0"].concat();
        (w.reserve(bytes.len(), 1), bytes)
    });
    w.reserve_null_dynamic_symbol_index();
    for _ in &symbols {
        w.reserve_dynamic_symbol_index();
    }
    w.reserve_null_section_index();
    w.reserve_dynstr_section_index();
    w.reserve_dynsym_section_index();
    w.reserve_gnu_versym_section_index();
    w.reserve_gnu_verneed_section_index();
    w.reserve_dynamic_section_index();
    w.reserve_shstrtab_section_index();
    w.reserve_dynstr();
    w.reserve_dynsym();
    w.reserve_gnu_versym();
    w.reserve_gnu_verneed(libraries.len(), aux_count);
    let dynamic_offset = w.reserve_dynamic(dynamic_count);
    w.reserve_shstrtab();
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_DYN,
        e_machine: spec.machine,
        e_entry: 0,
        e_flags: 0,
    })
    .expect("file header");
    w.write_align_program_headers();
    if let Some((offset, bytes)) = &interp {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_INTERP,
            p_flags: elf::PF_R,
            p_offset: *offset as u64,
            p_vaddr: *offset as u64,
            p_paddr: *offset as u64,
            p_filesz: bytes.len() as u64,
            p_memsz: bytes.len() as u64,
            p_align: 1,
        });
    }
    let dynamic_size = (dynamic_count * 16) as u64;
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_DYNAMIC,
        p_flags: elf::PF_R,
        p_offset: dynamic_offset as u64,
        p_vaddr: dynamic_offset as u64,
        p_paddr: dynamic_offset as u64,
        p_filesz: dynamic_size,
        p_memsz: dynamic_size,
        p_align: 8,
    });
    if let Some((_, bytes)) = &interp {
        w.write(bytes);
    }
    w.write_dynstr();
    w.write_null_dynamic_symbol();
    for (name, _) in &symbols {
        w.write_dynamic_symbol(&Sym {
            name: Some(*name),
            section: None,
            st_info: (elf::STB_GLOBAL << 4) | elf::STT_FUNC,
            st_other: 0,
            st_shndx: elf::SHN_UNDEF,
            st_value: 0,
            st_size: 0,
        });
    }
    w.write_null_gnu_versym();
    for (_, index) in &symbols {
        w.write_gnu_versym(*index);
    }
    w.write_align_gnu_verneed();
    for (_, file, auxes) in &libraries {
        w.write_gnu_verneed(&Verneed {
            version: elf::VER_NEED_CURRENT,
            aux_count: u16::try_from(auxes.len()).expect("few versions"),
            file: *file,
        });
        for (name, index) in auxes {
            w.write_gnu_vernaux(&Vernaux {
                flags: 0,
                index: *index,
                name: *name,
            });
        }
    }
    w.write_align_dynamic();
    for id in &needed {
        w.write_dynamic_string(elf::DT_NEEDED, *id)
            .expect("DT_NEEDED");
    }
    w.write_dynamic(elf::DT_NULL, 0).expect("DT_NULL");
    w.write_shstrtab();
    w.write_null_section_header();
    w.write_dynstr_section_header(0);
    w.write_dynsym_section_header(0, 1);
    w.write_gnu_versym_section_header(0);
    w.write_gnu_verneed_section_header(0);
    w.write_dynamic_section_header(0);
    w.write_shstrtab_section_header();
    drop(w);
    buf
}

fn need(library: &str, version: &str, symbols: &[&str]) -> VersionNeed {
    VersionNeed {
        library: library.into(),
        version: version.into(),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn version_names() {
    let parse = GlibcVersion::from_symbol_version;
    assert_eq!(parse("GLIBC_2.17"), Some(GlibcVersion(2, 17, 0)));
    assert_eq!(parse("GLIBC_2.2.5"), Some(GlibcVersion(2, 2, 5)));
    assert_eq!(parse("GLIBC_2.34"), Some(GlibcVersion(2, 34, 0)));
    for bad in [
        "GLIBC_PRIVATE",
        "GLIBC_2",
        "GLIBC_2.",
        "GLIBC_.17",
        "GLIBC_2.17.1.1",
        "GLIBC_2.x",
        "GLIBC_2.-1",
        "GCC_3.0",
        "glibc_2.17",
        "",
        "GLIBC_99999999999.1",
    ] {
        assert_eq!(parse(bad), None, "{bad:?} must not parse");
    }
    assert!(GlibcVersion(2, 2, 5) < FLOOR && FLOOR < GlibcVersion(2, 34, 0));
    assert_eq!(GlibcVersion(2, 2, 5).to_string(), "2.2.5");
    assert_eq!(FLOOR.to_string(), "2.17");
}

#[test]
fn executable_within_the_floor_passes() {
    let data = synthetic(&Spec {
        needed: &["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2"],
        versions: &[
            ("libc.so.6", "GLIBC_2.2.5", &["write", "malloc"]),
            ("libc.so.6", "GLIBC_2.17", &["clock_gettime"]),
            ("libm.so.6", "GLIBC_2.2.5", &["fmod"]),
        ],
        ..Spec::default()
    });
    let needs = read(&data).expect("synthetic ELF reads");
    assert_eq!(
        needs,
        ElfNeeds {
            interpreter: Some(GLIBC_INTERPRETER.into()),
            libraries: ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2"]
                .map(String::from)
                .to_vec(),
            versions: vec![
                need("libc.so.6", "GLIBC_2.2.5", &["write", "malloc"]),
                need("libc.so.6", "GLIBC_2.17", &["clock_gettime"]),
                need("libm.so.6", "GLIBC_2.2.5", &["fmod"]),
            ],
        }
    );
    assert_eq!(needs.newest_glibc(), Some(FLOOR));
    assert_eq!(needs.problems(FLOOR), Vec::<String>::new());
    assert!(!needs.is_static());
}

#[test]
fn a_symbol_newer_than_the_floor_is_flagged() {
    let data = synthetic(&Spec {
        versions: &[
            ("libc.so.6", "GLIBC_2.2.5", &["write"]),
            (
                "libc.so.6",
                "GLIBC_2.34",
                &["__libc_start_main", "pthread_create"],
            ),
        ],
        ..Spec::default()
    });
    let needs = read(&data).expect("synthetic ELF reads");
    assert_eq!(needs.newest_glibc(), Some(GlibcVersion(2, 34, 0)));
    let problems = needs.problems(FLOOR);
    assert_eq!(problems.len(), 1, "{problems:?}");
    for part in [
        "libc.so.6@GLIBC_2.34",
        "__libc_start_main",
        "pthread_create",
        "2.17",
    ] {
        assert!(
            problems[0].contains(part),
            "{part:?} missing in {problems:?}"
        );
    }
    // The same binary is fine for a floor of 2.34.
    assert!(needs.problems(GlibcVersion(2, 34, 0)).is_empty());
}

#[test]
fn a_version_without_symbols_is_still_flagged() {
    let data = synthetic(&Spec {
        versions: &[("libc.so.6", "GLIBC_2.28", &[])],
        ..Spec::default()
    });
    let problems = read(&data).expect("reads").problems(FLOOR);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("GLIBC_2.28"), "{problems:?}");
}

#[test]
fn libraries_outside_glibc_and_private_versions_are_flagged() {
    let data = synthetic(&Spec {
        needed: &["libc.so.6", "libgcc_s.so.1", "libssl.so.3"],
        versions: &[
            ("libgcc_s.so.1", "GCC_3.0", &["_Unwind_Resume"]),
            ("libc.so.6", "GLIBC_PRIVATE", &["__libc_internal"]),
        ],
        ..Spec::default()
    });
    let problems = read(&data).expect("reads").problems(FLOOR);
    assert_eq!(problems.len(), 4, "{problems:?}");
    let all = problems.join("\n");
    for part in [
        "libgcc_s.so.1, which is not part of glibc",
        "libssl.so.3, which is not part of glibc",
        "libgcc_s.so.1@GCC_3.0 (not a glibc release version) for _Unwind_Resume",
        "libc.so.6@GLIBC_PRIVATE",
    ] {
        assert!(all.contains(part), "{part:?} missing in {all}");
    }
}

#[test]
fn another_interpreter_is_flagged() {
    let data = synthetic(&Spec {
        interpreter: Some("/lib/ld-musl-x86_64.so.1"),
        ..Spec::default()
    });
    let problems = read(&data).expect("reads").problems(FLOOR);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("/lib/ld-musl-x86_64.so.1"),
        "{problems:?}"
    );
}

#[test]
fn many_symbols_are_summarised() {
    let syms = ["a", "b", "c", "d", "e", "f", "g"];
    let data = synthetic(&Spec {
        versions: &[("libc.so.6", "GLIBC_2.38", &syms)],
        ..Spec::default()
    });
    let problems = read(&data).expect("reads").problems(FLOOR);
    assert!(
        problems[0].ends_with("for a, b, c, d, e and 2 more"),
        "{problems:?}"
    );
}

#[test]
fn a_static_executable_needs_nothing() {
    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buf);
    w.reserve_file_header();
    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })
    .expect("file header");
    drop(w);
    let needs = read(&buf).expect("reads");
    assert!(needs.is_static(), "{needs:?}");
    assert!(needs.problems(FLOOR).is_empty());
}

#[test]
fn hostile_input_is_an_error_never_a_panic() {
    for (what, data) in [
        ("empty", Vec::new()),
        ("text", b"#!/bin/sh\necho not an ELF\n".to_vec()),
        ("ELF magic only", b"\x7fELF".to_vec()),
    ] {
        let err = read(&data).expect_err(what);
        assert!(
            err.to_string().contains("not a 64-bit ELF"),
            "{what}: {err}"
        );
    }

    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, false, &mut buf);
    w.reserve_file_header();
    w.write_file_header(&FileHeader {
        os_abi: 0,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_386,
        e_entry: 0,
        e_flags: 0,
    })
    .expect("file header");
    drop(w);
    read(&buf).expect_err("a 32-bit ELF is refused");

    let arm = synthetic(&Spec {
        machine: elf::EM_AARCH64,
        ..Spec::default()
    });
    let err = read(&arm).expect_err("aarch64 is refused");
    assert!(err.to_string().contains("not an x86_64"), "{err}");

    // Every prefix and every single-byte corruption of a valid file: an
    // answer or an error, never a panic.
    let valid = synthetic(&Spec {
        needed: &["libc.so.6", "libm.so.6"],
        versions: &[
            ("libc.so.6", "GLIBC_2.2.5", &["write"]),
            ("libm.so.6", "GLIBC_2.29", &["exp"]),
        ],
        ..Spec::default()
    });
    for len in 0..valid.len() {
        let _ = read(&valid[..len]);
    }
    for pos in 0..valid.len() {
        for byte in [0x00, 0x01, 0x7f, 0xff] {
            let mut corrupt = valid.clone();
            corrupt[pos] = byte;
            let _ = read(&corrupt);
        }
    }
}

/// A real executable, linked by the host's C compiler against the host's
/// glibc: `getrandom` exists since glibc 2.25, so its version must be flagged
/// against the 2.17 floor.
#[test]
fn a_host_linked_program_using_getrandom_is_flagged() {
    let dir = std::env::temp_dir().join(format!("tcpstate-elf-needs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let source = dir.join("getrandom.c");
    let exe = dir.join("getrandom");
    std::fs::write(
        &source,
        "#include <sys/random.h>\n\
         int main(void) { char b[4]; return getrandom(b, sizeof b, 0) == 4 ? 0 : 1; }\n",
    )
    .expect("write C source");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!("{cc} (the C compiler rustc links with) cannot be started: {e}")
        });
    assert!(
        status.success(),
        "{cc} failed to build {}",
        source.display()
    );
    let data = std::fs::read(&exe).expect("read the built program");
    std::fs::remove_dir_all(&dir).expect("remove the temporary directory");

    let needs = read(&data).expect("the host-linked program reads");
    assert!(
        needs
            .versions
            .contains(&need("libc.so.6", "GLIBC_2.25", &["getrandom"])),
        "{needs:?}"
    );
    let problems = needs.problems(FLOOR);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("libc.so.6@GLIBC_2.25") && p.contains("getrandom")),
        "{problems:?}"
    );
}
