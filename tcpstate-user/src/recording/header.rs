//! The recording header: where and when the recording was made (section 4
//! of `docs/recording-format.md`).
use super::codec::{put_varint, CodecError, Cursor};
use crate::{
    clock::BootClock,
    source::port_settings::{self, NetnsPorts, PortSettings},
    source::sysctl::TcpSysctls,
};
use std::path::Path;

/// What a recording says about the host it was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingHeader {
    /// `/proc/sys/kernel/hostname`.
    pub host_name: String,
    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id`: tells whether two recordings
    /// come from the same boot (same skaddr space and boot clock).
    pub boot_id: Option<String>,
    /// The pairing of boot time and wall-clock time used to print the
    /// events' wall-clock times; replays print the same times.
    pub clock: BootClock,
    /// The TCP settings, `net.ipv4.tcp_rfc1337` included.
    pub sysctls: TcpSysctls,
    /// The tcpstate version that wrote the recording.
    pub tcpstate_version: String,
    /// The recorder's command line, argv[0] first.
    pub command_line: Vec<String>,
    /// The local port settings of each network namespace in use at start
    /// (issue 11); empty in recordings made before they were kept.
    pub netns_ports: Vec<NetnsPorts>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl RecordingHeader {
    /// Reads everything from this host now: host name, kernel release,
    /// boot id, a fresh [`BootClock`] pairing, the TCP sysctls, and this
    /// build's version.
    pub fn capture(command_line: Vec<String>) -> Self {
        Self {
            host_name: read_trimmed(Path::new("/proc/sys/kernel/hostname")).unwrap_or_default(),
            kernel_release: read_trimmed(Path::new("/proc/sys/kernel/osrelease"))
                .unwrap_or_default(),
            boot_id: read_trimmed(Path::new("/proc/sys/kernel/random/boot_id")),
            clock: BootClock::now(),
            sysctls: TcpSysctls::read(),
            tcpstate_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line,
            // Entering other namespaces needs the privileges the run still
            // has here, before they are dropped.
            netns_ports: port_settings::capture(),
        }
    }
}

/// Tags of the header's fields.
mod tag {
    pub const HOST_NAME: u64 = 1;
    pub const KERNEL_RELEASE: u64 = 2;
    pub const BOOT_ID: u64 = 3;
    pub const CLOCK: u64 = 4;
    pub const PORT_RANGE: u64 = 5;
    pub const FIN_TIMEOUT: u64 = 6;
    pub const TW_REUSE: u64 = 7;
    pub const MAX_TW_BUCKETS: u64 = 8;
    pub const RFC1337: u64 = 9;
    pub const VERSION: u64 = 10;
    pub const ARG: u64 = 11;
    /// One per namespace: netns, port range, tw_reuse, reserved ranges.
    pub const NETNS_PORTS: u64 = 12;
}

fn field(out: &mut Vec<u8>, tag: u64, value: &[u8]) {
    put_varint(out, tag);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn varint_field(out: &mut Vec<u8>, tag: u64, v: u64) {
    let mut value = Vec::with_capacity(10);
    put_varint(&mut value, v);
    field(out, tag, &value);
}

fn string_field(out: &mut Vec<u8>, tag: u64, s: &str) {
    field(out, tag, s.as_bytes());
}

/// The header block's payload: a sequence of (tag, length, value).
pub fn encode(h: &RecordingHeader) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, tag::HOST_NAME, &h.host_name);
    string_field(&mut out, tag::KERNEL_RELEASE, &h.kernel_release);
    if let Some(id) = &h.boot_id {
        string_field(&mut out, tag::BOOT_ID, id);
    }
    let mut clock = [0u8; 16];
    clock[..8].copy_from_slice(&h.clock.boot_ns.to_le_bytes());
    clock[8..].copy_from_slice(&h.clock.wall_ns.to_le_bytes());
    field(&mut out, tag::CLOCK, &clock);
    // Every field, so that a new one cannot be forgotten here.
    let TcpSysctls {
        fin_timeout_secs,
        max_tw_buckets,
        tw_reuse,
        local_port_range: (low, high),
        rfc1337,
    } = h.sysctls;
    let mut range = [0u8; 4];
    range[..2].copy_from_slice(&low.to_le_bytes());
    range[2..].copy_from_slice(&high.to_le_bytes());
    field(&mut out, tag::PORT_RANGE, &range);
    varint_field(&mut out, tag::FIN_TIMEOUT, fin_timeout_secs);
    varint_field(&mut out, tag::TW_REUSE, u64::from(tw_reuse));
    varint_field(&mut out, tag::MAX_TW_BUCKETS, max_tw_buckets as u64);
    varint_field(&mut out, tag::RFC1337, u64::from(rfc1337));
    string_field(&mut out, tag::VERSION, &h.tcpstate_version);
    for arg in &h.command_line {
        string_field(&mut out, tag::ARG, arg);
    }
    for ns in &h.netns_ports {
        field(&mut out, tag::NETNS_PORTS, &encode_netns_ports(ns));
    }
    out
}

fn encode_netns_ports(ns: &NetnsPorts) -> Vec<u8> {
    let mut value = Vec::new();
    put_varint(&mut value, u64::from(ns.netns));
    value.extend_from_slice(&ns.settings.range.0.to_le_bytes());
    value.extend_from_slice(&ns.settings.range.1.to_le_bytes());
    put_varint(&mut value, u64::from(ns.settings.tw_reuse));
    put_varint(&mut value, ns.settings.reserved.len() as u64);
    for (low, high) in &ns.settings.reserved {
        value.extend_from_slice(&low.to_le_bytes());
        value.extend_from_slice(&high.to_le_bytes());
    }
    value
}

fn decode_netns_ports(v: &mut Cursor<'_>) -> Result<NetnsPorts, CodecError> {
    let netns = v.varint_u32()?;
    let range = (v.u16()?, v.u16()?);
    let tw_reuse = v.varint_u32()?;
    let count = v.varint()?;
    let mut reserved = Vec::new();
    // Each range is 4 bytes: a count the field cannot hold fails on the
    // first missing one, before anything large is allocated.
    for _ in 0..count {
        reserved.push((v.u16()?, v.u16()?));
    }
    if !v.is_empty() {
        return Err(v.err("namespace port settings longer than their fields"));
    }
    Ok(NetnsPorts {
        netns,
        settings: PortSettings {
            range: (range.0.min(range.1), range.0.max(range.1)),
            reserved,
            tw_reuse,
        },
    })
}

/// Parses the header block's payload. Unknown tags are skipped; a missing
/// clock is an error (times could not be printed); other missing fields
/// take their defaults.
pub fn decode(payload: &[u8]) -> Result<RecordingHeader, CodecError> {
    let mut h = RecordingHeader {
        host_name: String::new(),
        kernel_release: String::new(),
        boot_id: None,
        clock: BootClock {
            boot_ns: 0,
            wall_ns: 0,
        },
        sysctls: TcpSysctls::default(),
        tcpstate_version: String::new(),
        command_line: Vec::new(),
        netns_ports: Vec::new(),
    };
    let mut have_clock = false;
    let mut cur = Cursor::new(payload);
    while !cur.is_empty() {
        let tag = cur.varint()?;
        let len = usize::try_from(cur.varint()?).map_err(|_| cur.err("header field too long"))?;
        let value = cur.bytes(len)?;
        let mut v = Cursor::new(value);
        let text = || String::from_utf8_lossy(value).into_owned();
        let bad = |what| CodecError {
            at: cur.pos(),
            what,
        };
        match tag {
            tag::HOST_NAME => h.host_name = text(),
            tag::KERNEL_RELEASE => h.kernel_release = text(),
            tag::BOOT_ID => h.boot_id = Some(text()),
            tag::CLOCK => {
                if len != 16 {
                    return Err(bad("clock field is not 16 bytes"));
                }
                h.clock = BootClock {
                    boot_ns: v.u64_le()?,
                    wall_ns: v.u64_le()?,
                };
                have_clock = true;
            }
            tag::PORT_RANGE => {
                if len != 4 {
                    return Err(bad("port range field is not 4 bytes"));
                }
                h.sysctls.local_port_range = (v.u16()?, v.u16()?);
            }
            tag::FIN_TIMEOUT => h.sysctls.fin_timeout_secs = v.varint()?,
            tag::TW_REUSE => h.sysctls.tw_reuse = v.varint_u32()?,
            tag::MAX_TW_BUCKETS => {
                h.sysctls.max_tw_buckets =
                    usize::try_from(v.varint()?).map_err(|_| bad("tcp_max_tw_buckets too large"))?
            }
            tag::RFC1337 => h.sysctls.rfc1337 = v.varint()? != 0,
            tag::VERSION => h.tcpstate_version = text(),
            tag::ARG => h.command_line.push(text()),
            tag::NETNS_PORTS => h.netns_ports.push(decode_netns_ports(&mut v)?),
            _ => {} // A field of a later revision: skipped.
        }
    }
    if !have_clock {
        return Err(cur.err("header has no boot clock"));
    }
    Ok(h)
}

#[cfg(test)]
mod netns_ports_tests {
    use super::*;

    fn header() -> RecordingHeader {
        let mut h = crate::recording::bench::sample_header();
        h.netns_ports = vec![
            NetnsPorts {
                netns: 4026531840,
                settings: PortSettings::default(),
            },
            NetnsPorts {
                netns: 4026532999,
                settings: PortSettings {
                    range: (40000, 40099),
                    reserved: vec![(40000, 40009), (40050, 40050)],
                    tw_reuse: 1,
                },
            },
        ];
        h
    }

    #[test]
    fn namespace_port_settings_survive_a_round_trip() {
        let h = header();
        assert_eq!(decode(&encode(&h)).unwrap(), h);
    }

    #[test]
    fn truncated_or_padded_namespace_settings_are_refused() {
        let ns = &header().netns_ports[1];
        let value = encode_netns_ports(ns);
        for cut in 0..value.len() {
            assert!(
                decode_netns_ports(&mut Cursor::new(&value[..cut])).is_err(),
                "a field cut to {cut} bytes was accepted"
            );
        }
        let mut padded = value.clone();
        padded.push(0);
        assert!(decode_netns_ports(&mut Cursor::new(&padded)).is_err());
        // A count of reserved ranges far beyond the field fails, not allocates.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1);
        huge.extend_from_slice(&[0, 0, 0, 0]);
        put_varint(&mut huge, 0);
        put_varint(&mut huge, u64::MAX);
        assert!(decode_netns_ports(&mut Cursor::new(&huge)).is_err());
    }
}
