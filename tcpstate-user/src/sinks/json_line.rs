//! Writes one transition as a JSON line straight into a byte buffer.
//!
//! `trace --json` at full churn writes hundreds of thousands of lines a
//! second; building a [`TransitionRecord`] (six `String`s) and running it
//! through serde costs more than the rest of the pipeline together. The
//! bytes must be exactly serde's (a test compares them on hostile input),
//! so the fields, their order and every escape follow [`TransitionRecord`].
//!
//! [`TransitionRecord`]: crate::views::trace::TransitionRecord
use crate::{
    clock::{rfc3339_utc, BootClock},
    model::Owner,
    sinks::Annotation,
    views::trace::TraceRow,
    wire::Comm,
};
use std::net::IpAddr;

/// The wall-clock second last formatted, as `"YYYY-MM-DDTHH:MM:SS."`: all
/// transitions of one second share it, only the nanoseconds differ.
#[derive(Default)]
pub struct SecondPrefix {
    second: Option<u64>,
    text: Vec<u8>,
}

impl SecondPrefix {
    fn write_time(&mut self, out: &mut Vec<u8>, wall_ns: u64) {
        let second = wall_ns / 1_000_000_000;
        if self.second != Some(second) {
            let full = rfc3339_utc(second * 1_000_000_000);
            // "...SS.000000000Z": keep up to and including the dot.
            let fraction = "000000000Z".len();
            self.text.clear();
            self.text
                .extend_from_slice(&full.as_bytes()[..full.len() - fraction]);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.text);
        let mut digits = [b'0'; 9];
        let mut nanos = wall_ns % 1_000_000_000;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// Appends the JSON line (with its newline) of one transition to `out`.
pub fn write_transition(
    out: &mut Vec<u8>,
    prefix: &mut SecondPrefix,
    row: &TraceRow,
    clock: &BootClock,
    annotation: &Annotation,
) {
    let t = &row.transition;
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"type\":\"transition\",\"time\":\"");
    prefix.write_time(out, clock.wall_ns(t.ts_boot_ns));
    out.extend_from_slice(b"\",\"ts_boot_ns\":");
    out.extend_from_slice(num.format(t.ts_boot_ns).as_bytes());
    out.extend_from_slice(b",\"connection_id\":");
    optional(out, annotation.connection_id, &mut num);
    out.extend_from_slice(b",\"skaddr\":\"");
    hex(out, t.skaddr);
    out.extend_from_slice(b"\",\"netns\":");
    out.extend_from_slice(num.format(t.netns).as_bytes());
    out.extend_from_slice(b",\"family\":\"");
    out.extend_from_slice(t.family.name().as_bytes());
    out.extend_from_slice(b"\",\"laddr\":\"");
    ip(out, t.local.ip, &mut num);
    out.extend_from_slice(b"\",\"lport\":");
    out.extend_from_slice(num.format(t.local.port).as_bytes());
    out.extend_from_slice(b",\"raddr\":\"");
    ip(out, t.remote.ip, &mut num);
    out.extend_from_slice(b"\",\"rport\":");
    out.extend_from_slice(num.format(t.remote.port).as_bytes());
    out.extend_from_slice(b",\"old\":\"");
    out.extend_from_slice(t.old.name().as_bytes());
    out.extend_from_slice(b"\",\"new\":\"");
    out.extend_from_slice(t.new.name().as_bytes());
    out.extend_from_slice(b"\",\"old_state_ms\":");
    match row.in_old_state_ns {
        // serde_json's own float formatting, so that the digits match.
        Some(ns) => {
            let _ = serde_json::to_writer(&mut *out, &(ns as f64 / 1e6));
        }
        None => out.extend_from_slice(b"null"),
    }
    owner_fields(out, annotation.owner.as_ref(), &mut num);
    out.extend_from_slice(b",\"ctx_pid\":");
    out.extend_from_slice(num.format(t.task.pid).as_bytes());
    out.extend_from_slice(b",\"ctx_tgid\":");
    out.extend_from_slice(num.format(t.task.tgid).as_bytes());
    out.extend_from_slice(b",\"ctx_comm\":");
    comm(out, &t.task.comm);
    out.extend_from_slice(b",\"cpu\":");
    out.extend_from_slice(num.format(t.cpu).as_bytes());
    out.extend_from_slice(b"}\n");
}

fn owner_fields(out: &mut Vec<u8>, owner: Option<&Owner>, num: &mut itoa::Buffer) {
    out.extend_from_slice(b",\"owner_tgid\":");
    optional(out, owner.map(|o| o.tgid), num);
    out.extend_from_slice(b",\"owner_pid\":");
    optional(out, owner.map(|o| o.pid), num);
    out.extend_from_slice(b",\"owner_comm\":");
    match owner {
        Some(o) => comm(out, &o.comm),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"owner_how\":");
    match owner {
        Some(o) => {
            out.push(b'"');
            out.extend_from_slice(o.how.name().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"owner_cgroup_id\":");
    optional(out, owner.map(|o| o.cgroup_id), num);
}

fn optional<N: itoa::Integer>(out: &mut Vec<u8>, value: Option<N>, num: &mut itoa::Buffer) {
    match value {
        Some(v) => out.extend_from_slice(num.format(v).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// `{:#x}`: `0x` and lowercase digits without leading zeros.
fn hex(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(b"0x");
    let digits = (64 - value.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((value >> (i * 4)) & 0xf) as usize]);
    }
}

fn ip(out: &mut Vec<u8>, ip: IpAddr, num: &mut itoa::Buffer) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(num.format(octet).as_bytes());
            }
        }
        // Rarer, and its zero compression is easy to get wrong: std's.
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A task name as a JSON string. Names are almost always plain ASCII and
/// copied as they are; anything else goes through serde's escaping (of the
/// same lossy UTF-8 conversion [`Comm::as_string`] does).
fn comm(out: &mut Vec<u8>, comm: &Comm) {
    let name = comm.name_bytes();
    if name
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(name);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, &comm.as_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        addr::Endpoint,
        model::OwnerHow,
        tcp::{Family, TcpState},
        views::trace::TransitionRecord,
        wire::{Task, Transition},
    };
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A small deterministic generator, so failures reproduce.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }
    }

    fn comm_from(rng: &mut Lcg) -> Comm {
        let mut bytes = [0u8; 16];
        let len = (rng.next() % 17) as usize;
        for b in bytes.iter_mut().take(len) {
            // Mostly printable, sometimes quotes, backslashes, control bytes
            // and bytes that are not UTF-8.
            *b = match rng.next() % 8 {
                0 => [b'"', b'\\', 0x01, 0x1f, 0x7f, 0xc3, 0xff, b'\n'][(rng.next() % 8) as usize],
                _ => b' ' + (rng.next() % 95) as u8,
            };
        }
        Comm(bytes)
    }

    fn ip_from(rng: &mut Lcg) -> IpAddr {
        match rng.next() % 4 {
            0 => IpAddr::V6(Ipv6Addr::from(
                u128::from(rng.next()) << 64 | u128::from(rng.next()),
            )),
            1 => IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 1, rng.next() as u16)),
            2 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
        }
    }

    #[test]
    fn bytes_equal_serdes_on_random_and_hostile_rows() {
        let mut rng = Lcg(7);
        let mut prefix = SecondPrefix::default();
        for i in 0..20_000u64 {
            let clock = BootClock {
                boot_ns: rng.next() % 1_000_000_000_000,
                wall_ns: 1_700_000_000_000_000_000 + (rng.next() % 3) * 999_999_999,
            };
            let row = TraceRow {
                transition: Transition {
                    ts_boot_ns: if i % 100 == 0 {
                        u64::MAX / 4
                    } else {
                        rng.next()
                    },
                    skaddr: if i % 50 == 0 {
                        0
                    } else {
                        rng.next() << (rng.next() % 12)
                    },
                    family: if rng.next().is_multiple_of(2) {
                        Family::Ipv4
                    } else {
                        Family::Ipv6
                    },
                    local: Endpoint::new(ip_from(&mut rng), rng.next() as u16),
                    remote: Endpoint::new(ip_from(&mut rng), rng.next() as u16),
                    old: TcpState::ALL[(rng.next() % 12) as usize],
                    new: TcpState::ALL[(rng.next() % 12) as usize],
                    task: Task {
                        tgid: rng.next() as u32,
                        pid: rng.next() as u32,
                        comm: comm_from(&mut rng),
                    },
                    cgroup_id: rng.next(),
                    netns: rng.next() as u32,
                    cpu: (rng.next() % 512) as u32,
                },
                in_old_state_ns: match rng.next() % 4 {
                    0 => None,
                    1 => Some(rng.next() % 1000),
                    _ => Some(rng.next()),
                },
            };
            let owner = (!rng.next().is_multiple_of(3)).then(|| Owner {
                tgid: rng.next() as u32,
                pid: rng.next() as u32,
                comm: comm_from(&mut rng),
                how: [
                    OwnerHow::Connect,
                    OwnerHow::Accept,
                    OwnerHow::InheritedFromListener,
                ][(rng.next() % 3) as usize],
                cgroup_id: rng.next(),
            });
            let annotation = Annotation {
                connection_id: (!rng.next().is_multiple_of(4)).then(|| rng.next()),
                owner,
            };
            let mut ours = Vec::new();
            write_transition(&mut ours, &mut prefix, &row, &clock, &annotation);
            let record = TransitionRecord::new(
                &row,
                &clock,
                annotation.connection_id,
                annotation.owner.as_ref(),
            );
            let mut theirs = serde_json::to_vec(&record).unwrap();
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "row {i}: {row:?}"
            );
        }
    }

    #[test]
    fn hex_matches_std() {
        for v in [0u64, 1, 0xf, 0x10, 0xffff_8880_1234_5678, u64::MAX] {
            let mut out = Vec::new();
            hex(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v:#x}"));
        }
    }
}
