//! Writes one transition as a JSON line straight into a byte buffer.
//!
//! `trace --json` at full churn writes hundreds of thousands of lines a
//! second; building a [`TransitionRecord`] (six `String`s) and running it
//! through serde costs more than the rest of the pipeline together. The
//! bytes must be exactly serde's (a test compares them on hostile input),
//! so the fields, their order and every escape follow [`TransitionRecord`].
//!
//! The line is built in a fixed buffer that is kept between lines: numbers
//! are formatted in place and short pieces are copied without a `memcpy`
//! call each, which is what most of the time went to when it was a `Vec`
//! extended piece by piece.
//!
//! [`TransitionRecord`]: crate::views::trace::TransitionRecord
use crate::{
    clock::{rfc3339_utc, BootClock},
    model::Owner,
    sinks::Annotation,
    views::trace::TraceRow,
    wire::Comm,
};
use std::{io, net::IpAddr};

/// Room for any line, with slack for the 16-byte copies past its end. The
/// longest possible line is about 800 bytes (checked by the test
/// `bytes_equal_serdes_on_extremes_and_longest_line_fits`).
const LINE_MAX: usize = 1024;

const HEAD: &[u8] = b"{\"type\":\"transition\",\"time\":\"";

/// Lines are written into this and reused: the head up to the wall-clock
/// second (`{"type":..,"time":"YYYY-MM-DDTHH:MM:SS.`) stays in place for
/// all transitions of one second, only the nanoseconds on differ.
pub struct TransitionLines {
    buf: Box<[u8; LINE_MAX]>,
    /// The second whose head is in `buf[..head]`.
    second: Option<u64>,
    head: usize,
}

impl Default for TransitionLines {
    fn default() -> Self {
        Self {
            buf: Box::new([0; LINE_MAX]),
            second: None,
            head: 0,
        }
    }
}

impl TransitionLines {
    /// The JSON line (with its newline) of one transition.
    pub fn line(&mut self, row: &TraceRow, clock: &BootClock, annotation: &Annotation) -> &[u8] {
        let t = &row.transition;
        let wall_ns = clock.wall_ns(t.ts_boot_ns);
        let second = wall_ns / 1_000_000_000;
        if self.second != Some(second) {
            let full = rfc3339_utc(second * 1_000_000_000);
            // "...SS.000000000Z": keep up to and including the dot.
            let text = &full.as_bytes()[..full.len() - "000000000Z".len()];
            let mut head = Cursor {
                buf: &mut self.buf,
                pos: 0,
            };
            head.put(HEAD);
            head.put(text);
            self.head = head.pos;
            self.second = Some(second);
        }
        let mut c = Cursor {
            buf: &mut self.buf,
            pos: self.head,
        };
        c.nanos((wall_ns % 1_000_000_000) as u32);
        c.put(b"Z\",\"ts_boot_ns\":");
        c.uint(t.ts_boot_ns);
        c.put(b",\"connection_id\":");
        c.optional(annotation.connection_id);
        c.put(b",\"skaddr\":\"0x");
        c.hex(t.skaddr);
        c.put(b"\",\"netns\":");
        c.uint(t.netns.into());
        c.put(b",\"family\":\"");
        c.short(t.family.name().as_bytes());
        c.put(b"\",\"laddr\":\"");
        c.ip(t.local.ip);
        c.put(b"\",\"lport\":");
        c.uint(t.local.port.into());
        c.put(b",\"raddr\":\"");
        c.ip(t.remote.ip);
        c.put(b"\",\"rport\":");
        c.uint(t.remote.port.into());
        c.put(b",\"old\":\"");
        c.short(t.old.name().as_bytes());
        c.put(b"\",\"new\":\"");
        c.short(t.new.name().as_bytes());
        c.put(b"\",\"old_state_ms\":");
        match row.in_old_state_ns {
            Some(ns) => c.millis(ns),
            None => c.put(b"null"),
        }
        c.owner_fields(annotation.owner.as_ref());
        c.put(b",\"ctx_pid\":");
        c.uint(t.task.pid.into());
        c.put(b",\"ctx_tgid\":");
        c.uint(t.task.tgid.into());
        c.put(b",\"ctx_comm\":");
        c.comm(&t.task.comm);
        c.put(b",\"cpu\":");
        c.uint(t.cpu.into());
        c.put(b"}\n");
        let end = c.pos;
        &self.buf[..end]
    }
}

/// Two decimal digits per entry, for writing numbers two digits at a time.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `0.` to `255.`, padded to four bytes, and their lengths.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0; 4], 0); 256];
    let mut i = 0;
    while i < 256 {
        let (hundreds, tens, ones) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        table[i] = if i >= 100 {
            ([b'0' + hundreds, b'0' + tens, b'0' + ones, b'.'], 4)
        } else if i >= 10 {
            ([b'0' + tens, b'0' + ones, b'.', 0], 3)
        } else {
            ([b'0' + ones, b'.', 0, 0], 2)
        };
        i += 1;
    }
    table
};

/// The eight lowercase hex digits of `v`, all at once: each nibble
/// spread into a byte of its own, then turned into `0`-`9` or `a`-`f`.
fn hex8(v: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut x = u64::from(v);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // Now byte k holds nibble k. No byte carries into the next below.
    let letters = ((x + ONES * 6) >> 4) & ONES;
    (x + ONES * u64::from(b'0') + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// How many bytes at the start of `bytes` can go into a JSON string as
/// they are (printable ASCII other than `"` and `\`), all 16 tested at
/// once: each test leaves a byte's high bit set where it passes. No byte
/// carries into the next: the low seven bits plus at most 0x7f fit.
fn plain_ascii_len(bytes: &[u8; 16]) -> usize {
    const ONES: u128 = u128::from_le_bytes([1; 16]);
    const HIGH: u128 = ONES * 0x80;
    let x = u128::from_le_bytes(*bytes);
    let low7 = x & !HIGH;
    let printable = low7 + ONES * (0x80 - 0x20);
    let not = |c: u8| (low7 ^ (ONES * u128::from(c))) + ONES * 0x7f;
    let plain = !x & printable & not(0x7f) & not(b'"') & not(b'\\');
    ((!plain & HIGH).trailing_zeros() / 8) as usize
}

/// The number of decimal digits of `v`: log10 from log2, and a compare to
/// round it the right way.
fn decimal_len(v: u64) -> usize {
    const POW10: [u64; 20] = {
        let mut p = [1u64; 20];
        let mut i = 1;
        while i < 20 {
            p[i] = p[i - 1] * 10;
            i += 1;
        }
        p
    };
    let bits = 64 - (v | 1).leading_zeros();
    // floor(bits * log10(2)): the length, or one less.
    let low = ((bits * 1233) >> 12) as usize;
    low + usize::from((v | 1) >= POW10[low])
}

fn pair(v: u64) -> [u8; 2] {
    let i = v as usize * 2;
    [PAIRS[i], PAIRS[i + 1]]
}

/// Writes into the line. Every index is checked; `LINE_MAX` is what keeps
/// the checks from failing, also for the fixed-size copies that write up to
/// 16 bytes past the piece they put.
struct Cursor<'a> {
    buf: &'a mut [u8; LINE_MAX],
    pos: usize,
}

impl Cursor<'_> {
    /// Literal pieces: their length is known, so the copy is inlined.
    #[inline(always)]
    fn put(&mut self, s: &[u8]) {
        self.buf[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    /// Names of up to 16 bytes, with two overlapping fixed-size copies
    /// rather than a `memcpy` call.
    fn short(&mut self, s: &[u8]) {
        let n = s.len();
        let dst = &mut self.buf[self.pos..self.pos + 16];
        if n > 16 {
            return self.put(s);
        } else if n >= 8 {
            dst[..8].copy_from_slice(&s[..8]);
            dst[n - 8..n].copy_from_slice(&s[n - 8..]);
        } else if n >= 4 {
            dst[..4].copy_from_slice(&s[..4]);
            dst[n - 4..n].copy_from_slice(&s[n - 4..]);
        } else {
            dst[..n].iter_mut().zip(s).for_each(|(d, &b)| *d = b);
        }
        self.pos += n;
    }

    /// Decimal digits of `v`, four at a time as itoa does: the divisions
    /// form one dependency chain, a step per four digits rather than two.
    /// Inlined: called a dozen times a line, and the cursor stays in a
    /// register.
    #[inline(always)]
    fn uint(&mut self, v: u64) {
        let len = decimal_len(v);
        let out = &mut self.buf[self.pos..self.pos + len];
        let mut i = len;
        let mut v = v;
        while v >= 10_000 {
            let four = v % 10_000;
            v /= 10_000;
            out[i - 2..i].copy_from_slice(&pair(four % 100));
            out[i - 4..i - 2].copy_from_slice(&pair(four / 100));
            i -= 4;
        }
        if v >= 100 {
            out[i - 2..i].copy_from_slice(&pair(v % 100));
            v /= 100;
        }
        if v >= 10 {
            out[..2].copy_from_slice(&pair(v));
        } else {
            out[0] = b'0' + v as u8;
        }
        self.pos += len;
    }

    fn optional(&mut self, value: Option<u64>) {
        match value {
            Some(v) => self.uint(v),
            None => self.put(b"null"),
        }
    }

    /// The nine digits of the nanoseconds, leading zeros kept.
    fn nanos(&mut self, mut v: u32) {
        let out = &mut self.buf[self.pos..self.pos + 9];
        for i in (0..4).rev() {
            out[1 + 2 * i..3 + 2 * i].copy_from_slice(&pair(u64::from(v % 100)));
            v /= 100;
        }
        out[0] = b'0' + v as u8;
        self.pos += 9;
    }

    /// The digits of `{:#x}` (the caller writes the `0x`): lowercase,
    /// without leading zeros.
    fn hex(&mut self, value: u64) {
        let len = (64 - value.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut digits = [0; 32];
        digits[..8].copy_from_slice(&hex8((value >> 32) as u32));
        digits[8..16].copy_from_slice(&hex8(value as u32));
        // A fixed-size copy; what follows the digits is overwritten next.
        self.buf[self.pos..self.pos + 16].copy_from_slice(&digits[16 - len..32 - len]);
        self.pos += len;
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                // Each octet with a dot after it, one fixed-size copy each;
                // the last dot is dropped.
                let out = &mut self.buf[self.pos..self.pos + 16];
                let mut len = 0;
                for octet in v4.octets() {
                    let (text, n) = OCTETS[usize::from(octet)];
                    out[len..len + 4].copy_from_slice(&text);
                    len += usize::from(n);
                }
                self.pos += len - 1;
            }
            // Rarer, and its zero compression is easy to get wrong: std's.
            IpAddr::V6(v6) => self.write_with(|w| {
                use std::io::Write;
                write!(w, "{v6}")
            }),
        }
    }

    /// `ns as f64 / 1e6` as serde_json writes it. For 10 <= ns < 10^15 its
    /// digits are those of ns/10^6 with trailing zeros dropped: ns and 1e6
    /// are exact doubles and the division rounds correctly, so the double
    /// is the one nearest ns/10^6, a decimal of at most 15 significant
    /// digits. Any two such decimals are different doubles (DBL_DIG is
    /// 15), so no other decimal that short rounds to this double and it is
    /// the shortest one, the one serde_json's shortest-digits formatter
    /// (zmij) picks. Its layout for these magnitudes (10^-5 <= x < 10^9,
    /// inside its fixed-notation range) is `0.000123`, `12.34`, `5.0`.
    /// Test `millis_match_serde` compares the two.
    fn millis(&mut self, ns: u64) {
        if !(10..1_000_000_000_000_000).contains(&ns) {
            return self.write_with(|w| {
                serde_json::to_writer(w, &(ns as f64 / 1e6)).map_err(io::Error::from)
            });
        }
        self.uint(ns / 1_000_000);
        let fraction = ns % 1_000_000;
        if fraction == 0 {
            return self.put(b".0");
        }
        let out = &mut self.buf[self.pos..self.pos + 7];
        out[0] = b'.';
        let mut v = fraction;
        for i in (0..3).rev() {
            out[1 + 2 * i..3 + 2 * i].copy_from_slice(&pair(v % 100));
            v /= 100;
        }
        // Not all zero: at most five trailing zeros to drop.
        let zeros = out.iter().rev().take_while(|&&b| b == b'0').count();
        self.pos += 7 - zeros;
    }

    fn owner_fields(&mut self, owner: Option<&Owner>) {
        match owner {
            Some(o) => {
                self.put(b",\"owner_tgid\":");
                self.uint(o.tgid.into());
                self.put(b",\"owner_pid\":");
                self.uint(o.pid.into());
                self.put(b",\"owner_comm\":");
                self.comm(&o.comm);
                self.put(b",\"owner_how\":\"");
                self.short(o.how.name().as_bytes());
                self.put(b"\",\"owner_cgroup_id\":");
                self.uint(o.cgroup_id);
            }
            None => self.put(
                b",\"owner_tgid\":null,\"owner_pid\":null,\"owner_comm\":null,\
                  \"owner_how\":null,\"owner_cgroup_id\":null",
            ),
        }
    }

    /// A task name as a JSON string. Names are almost always plain ASCII and
    /// copied as they are; anything else goes through serde's escaping (of
    /// the same lossy UTF-8 conversion [`Comm::as_string`] does).
    fn comm(&mut self, comm: &Comm) {
        let bytes = &comm.0;
        // The first byte that is not plain ASCII ends the name if it is the
        // NUL terminator; any other needs escaping or is not ASCII.
        let plain = plain_ascii_len(bytes);
        if plain == bytes.len() || bytes[plain] == 0 {
            self.put(b"\"");
            // All 16 bytes in one fixed-size copy; the quote then goes
            // over whatever followed the name.
            self.buf[self.pos..self.pos + 16].copy_from_slice(bytes);
            self.pos += plain;
            self.put(b"\"");
        } else {
            self.write_with(|w| {
                serde_json::to_writer(w, &comm.as_string()).map_err(io::Error::from)
            });
        }
    }

    /// For the rare pieces left to std or serde.
    fn write_with(&mut self, write: impl FnOnce(&mut &mut [u8]) -> io::Result<()>) {
        let mut rest = &mut self.buf[self.pos..];
        let room = rest.len();
        write(&mut rest).expect("LINE_MAX is enough for any line");
        self.pos += room - rest.len();
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
        let mut lines = TransitionLines::default();
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
            let ours = lines.line(&row, &clock, &annotation);
            assert_eq!(
                String::from_utf8_lossy(ours),
                String::from_utf8_lossy(&serdes(&row, &clock, &annotation)),
                "row {i}: {row:?}"
            );
        }
    }

    fn serdes(row: &TraceRow, clock: &BootClock, annotation: &Annotation) -> Vec<u8> {
        let record = TransitionRecord::new(
            row,
            clock,
            annotation.connection_id,
            annotation.owner.as_ref(),
        );
        let mut line = serde_json::to_vec(&record).unwrap();
        line.push(b'\n');
        line
    }

    /// Extremes, one field at a time and all together: zeros, maxima, the
    /// longest addresses and names, escapes and bytes that are not UTF-8.
    /// Also checks that the longest line leaves `short`'s 16-byte slack.
    #[test]
    fn bytes_equal_serdes_on_extremes_and_longest_line_fits() {
        let mut lines = TransitionLines::default();
        let max_row = TraceRow {
            transition: Transition {
                ts_boot_ns: u64::MAX,
                skaddr: u64::MAX,
                family: Family::Ipv6,
                local: Endpoint::new(
                    IpAddr::V6(Ipv6Addr::new(
                        0xffff, 0xfffe, 0xfffd, 0xfffc, 0xfffb, 0xfffa, 0xfff9, 0xfff8,
                    )),
                    u16::MAX,
                ),
                remote: Endpoint::new(
                    IpAddr::V6(Ipv6Addr::new(
                        0x1000, 0xabcd, 0x1234, 0xdcba, 0x2345, 0xcdef, 0x3456, 0xffff,
                    )),
                    u16::MAX,
                ),
                old: TcpState::NewSynRecv,
                new: TcpState::Established,
                task: Task {
                    tgid: u32::MAX,
                    pid: u32::MAX,
                    comm: Comm([0x01; 16]),
                },
                cgroup_id: u64::MAX,
                netns: u32::MAX,
                cpu: u32::MAX,
            },
            in_old_state_ns: Some(u64::MAX),
        };
        let max_annotation = Annotation {
            connection_id: Some(u64::MAX),
            owner: Some(Owner {
                tgid: u32::MAX,
                pid: u32::MAX,
                comm: Comm([0x1f; 16]),
                how: OwnerHow::InheritedFromListener,
                cgroup_id: u64::MAX,
            }),
        };
        let max_clock = BootClock {
            boot_ns: 0,
            wall_ns: u64::MAX,
        };
        let longest = lines.line(&max_row, &max_clock, &max_annotation).len();
        assert!(longest + 16 <= LINE_MAX, "{longest} bytes");

        let mut rows = vec![(max_row, max_annotation)];
        let zero_row = TraceRow {
            transition: Transition {
                ts_boot_ns: 0,
                skaddr: 0,
                family: Family::Ipv4,
                local: Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                remote: Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                old: TcpState::Close,
                new: TcpState::Listen,
                task: Task {
                    tgid: 0,
                    pid: 0,
                    comm: Comm([0; 16]),
                },
                cgroup_id: 0,
                netns: 0,
                cpu: 0,
            },
            in_old_state_ns: Some(0),
        };
        let zero_annotation = Annotation {
            connection_id: Some(0),
            owner: Some(Owner {
                tgid: 0,
                pid: 0,
                comm: Comm([0; 16]),
                how: OwnerHow::SocketIo,
                cgroup_id: 0,
            }),
        };
        rows.push((zero_row, zero_annotation));
        let addrs = [
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V4(Ipv4Addr::new(1, 10, 100, 9)),
            IpAddr::V4(Ipv4Addr::new(99, 199, 200, 109)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)),
        ];
        let comms = [
            *b"\xc3\xa9t\xc3\xa9\0\0\0\0\0\0\0\0\0\0\0",
            *b"\xe2\x82\xac\xf0\x9f\xa6\x80 \"q\" \\x\0\0",
            *b"0123456789abcdef",
            *b"a\0b\"cdefghijklmn",
            *b"\x7f\x80\xffabcdefghijklm",
        ];
        let hows = [
            OwnerHow::Connect,
            OwnerHow::Listen,
            OwnerHow::Accept,
            OwnerHow::SocketIo,
            OwnerHow::InheritedFromListener,
            OwnerHow::Snapshot,
        ];
        for (i, ip) in addrs.into_iter().enumerate() {
            let mut row = zero_row;
            row.transition.local.ip = ip;
            row.transition.remote.ip = addrs[(i + 1) % addrs.len()];
            row.transition.local.port = [1, 9, 10, 99, 100, 65535, 12345][i];
            row.transition.task.comm = Comm(comms[i % comms.len()]);
            row.transition.old = TcpState::ALL[i];
            row.transition.new = TcpState::ALL[i + 5];
            let mut annotation = zero_annotation;
            if let Some(owner) = annotation.owner.as_mut() {
                owner.comm = Comm(comms[(i + 2) % comms.len()]);
                owner.how = hows[i % hows.len()];
            }
            rows.push((row, annotation));
        }
        for (i, (row, annotation)) in rows.iter().enumerate() {
            for clock in [
                max_clock,
                BootClock {
                    boot_ns: 0,
                    wall_ns: 0,
                },
            ] {
                assert_eq!(
                    String::from_utf8_lossy(lines.line(row, &clock, annotation)),
                    String::from_utf8_lossy(&serdes(row, &clock, annotation)),
                    "row {i}: {row:?}"
                );
            }
        }
    }

    /// The shortcut for `old_state_ms` against serde_json: every value in
    /// the first and last million of its range and around each power of
    /// ten, and a spread of others.
    #[test]
    fn millis_match_serde() {
        let mut rng = Lcg(11);
        let edges = (0..16).flat_map(|p| {
            let power = 10u64.pow(p);
            power.saturating_sub(1000)..power + 1000
        });
        let spread = (0..1_000_000).map(|_| {
            let bits = rng.next() % 54;
            rng.next() & ((1u64 << bits) - 1)
        });
        let top = 1_000_000_000_000_000 - 1_000_000..1_000_000_000_000_000 + 1000;
        let mut buf = Box::new([0; LINE_MAX]);
        for ns in (0..1_000_000).chain(edges).chain(spread).chain(top) {
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
            };
            c.millis(ns);
            let end = c.pos;
            assert_eq!(
                std::str::from_utf8(&buf[..end]).unwrap(),
                serde_json::to_string(&(ns as f64 / 1e6)).unwrap(),
                "{ns} ns"
            );
        }
    }

    #[test]
    fn uint_matches_std() {
        let powers = (0..20).map(|p| 10u64.pow(p));
        let values = powers
            .flat_map(|p| [p - 1, p, p + 1, p.wrapping_mul(5)])
            .chain([u64::MAX, u64::MAX - 1, u32::MAX.into(), 1 << 32, 1 << 63]);
        for v in values {
            let mut buf = Box::new([0; LINE_MAX]);
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
            };
            c.uint(v);
            let end = c.pos;
            assert_eq!(std::str::from_utf8(&buf[..end]).unwrap(), v.to_string());
        }
    }

    #[test]
    fn plain_ascii_len_stops_at_the_first_byte_to_escape() {
        for at in 0..16 {
            for b in 0..=255u8 {
                let mut bytes = [b'a'; 16];
                bytes[at] = b;
                let plain = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
                let expected = if plain { 16 } else { at };
                assert_eq!(plain_ascii_len(&bytes), expected, "{b:#x} at {at}");
            }
        }
    }

    #[test]
    fn hex_matches_std() {
        let all_digits = [
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0x9a9a_0f0f_a9a9,
        ];
        for v in [0u64, 1, 0xf, 0x10, 0xffff_8880_1234_5678, u64::MAX]
            .into_iter()
            .chain(all_digits)
            .chain((0..64).map(|shift| 1 << shift))
        {
            let mut buf = Box::new([0; LINE_MAX]);
            let mut c = Cursor {
                buf: &mut buf,
                pos: 0,
            };
            c.put(b"0x");
            c.hex(v);
            let end = c.pos;
            assert_eq!(std::str::from_utf8(&buf[..end]).unwrap(), format!("{v:#x}"));
        }
    }
}
