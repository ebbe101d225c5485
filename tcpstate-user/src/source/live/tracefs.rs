//! Finding (or mounting) tracefs and checking the tracepoint's format.
use super::LiveError;
use std::path::{Path, PathBuf};
use tcpstate_common::{tp_offsets, TRACEPOINT_CATEGORY, TRACEPOINT_NAME};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at /sys/kernel/tracing when it is absent
/// (which needs root; otherwise the error says how).
pub fn ensure_mounted() -> Result<PathBuf, LiveError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a literal");
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LiveError::TracefsMissing {
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

pub fn format_path(root: &Path) -> PathBuf {
    root.join("events")
        .join(TRACEPOINT_CATEGORY)
        .join(TRACEPOINT_NAME)
        .join("format")
}

/// Reads the format file and checks it against the offsets the BPF program
/// was compiled with.
pub fn check_tracepoint(root: &Path) -> Result<(), LiveError> {
    let path = format_path(root);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LiveError::TracepointMissing {
            path: path.display().to_string(),
        },
        std::io::ErrorKind::PermissionDenied => LiveError::NotPrivileged {
            detail: format!(" (cannot read {})", path.display()),
        },
        _ => LiveError::TracepointMissing {
            path: format!("{}: {e}", path.display()),
        },
    })?;
    check_format(&text).map_err(|detail| LiveError::FormatMismatch {
        path: path.display().to_string(),
        detail,
    })
}

/// Checks the `sock:inet_sock_set_state` format text; on mismatch says which
/// field differs.
pub fn check_format(text: &str) -> Result<(), String> {
    check_fields(text, &tp_offsets::EXPECTED)
}

/// Checks that each (name, offset, size) appears in a tracepoint format text.
pub fn check_fields(text: &str, expected: &[(&str, usize, usize)]) -> Result<(), String> {
    for &(name, offset, size) in expected {
        let Some(line) = text.lines().find(|l| field_name(l) == Some(name)) else {
            return Err(format!("field `{name}` is missing"));
        };
        let got_offset = attribute(line, "offset");
        let got_size = attribute(line, "size");
        if got_offset != Some(offset) || got_size != Some(size) {
            return Err(format!(
                "field `{name}` is at offset {} size {}, expected offset {offset} size {size}",
                got_offset.map_or("?".into(), |v| v.to_string()),
                got_size.map_or("?".into(), |v| v.to_string()),
            ));
        }
    }
    Ok(())
}

/// `field:__u8 saddr_v6[16];` → `saddr_v6`.
fn field_name(line: &str) -> Option<&str> {
    let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
    let last = decl
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()?;
    Some(last.split('[').next().unwrap_or(last))
}

fn attribute(line: &str, key: &str) -> Option<usize> {
    line.split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_X: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn accepts_the_current_format() {
        assert_eq!(check_format(FORMAT_6_X), Ok(()));
    }

    #[test]
    fn names_the_field_that_moved() {
        let moved = FORMAT_6_X.replace("offset:28;\tsize:2", "offset:30;\tsize:2");
        let err = check_format(&moved).unwrap_err();
        assert!(
            err.contains("`family`") && err.contains("offset 30"),
            "{err}"
        );
        // 4.15 and older had no protocol field.
        let old: String = FORMAT_6_X
            .lines()
            .filter(|l| !l.contains("protocol"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            check_format(&old).unwrap_err(),
            "field `protocol` is missing"
        );
        assert!(check_format("").is_err());
        assert!(check_format("garbage\n\u{0}\u{fffd};;;:").is_err());
    }

    #[test]
    fn parses_pointer_and_array_field_names() {
        assert_eq!(
            field_name("\tfield:const void * skaddr;\toffset:8;"),
            Some("skaddr")
        );
        assert_eq!(
            field_name("\tfield:__u8 daddr_v6[16];\toffset:56;"),
            Some("daddr_v6")
        );
        assert_eq!(field_name("format:"), None);
    }
}
