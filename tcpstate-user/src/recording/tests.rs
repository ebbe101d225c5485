use super::{
    bench::{measure_size, sample_header},
    block::{self, BlockHeader, BLOCK_HEADER_LEN, PREAMBLE_LEN},
    encode_to_vec, fuzz_read,
    synth::{Churn, XorShift},
    RecordingError, RecordingReader, RecordingWarning, RecordingWriter, WriterOptions,
};
use crate::{
    addr::Endpoint,
    model::{ExistingSocket, Owner, OwnerHow},
    source::{
        snapshot::{Snapshot, SnapshotErrors, SnapshotSocket, SocketTimer, TimerKind},
        Item,
    },
    tcp::{Family, TcpState},
    testkit::{self, task_thread as task, INIT_NETNS},
    wire::{Comm, OwnerSeen, ResetSent, Task, Transition},
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

// ---------------------------------------------------------------------------
// Fixtures

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcpstate-recording-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Endpoint {
    Endpoint::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

fn v6(s: &str, port: u16) -> Endpoint {
    Endpoint::new(IpAddr::V6(s.parse().unwrap()), port)
}

/// Socket `skaddr` of 10.0.0.1:443 towards 192.0.2.7:50000 at `ts`, in
/// softirq on CPU 1 of the initial namespace.
fn transition(ts: u64, skaddr: u64, old: TcpState, new: TcpState) -> Transition {
    Transition {
        local: v4(10, 0, 0, 1, 443),
        remote: v4(192, 0, 2, 7, 50_000),
        task: task(0, 0, "swapper/1"),
        cgroup_id: 1,
        netns: INIT_NETNS,
        cpu: 1,
        ..testkit::transition(ts, skaddr, old, new)
    }
}

/// Every item kind, with the awkward values each field can take.
fn every_kind_of_item() -> Vec<Item> {
    use TcpState::*;
    let mut items = Vec::new();
    let base = transition(5_000_000_000, 0xffff_8881_0000_1000, Close, SynSent);
    items.push(Item::Transition(Transition {
        task: task(4242, 4242, "curl"),
        cgroup_id: 777,
        ..base
    }));
    items.push(Item::Transition(Transition {
        ts_boot_ns: base.ts_boot_ns + 1_500,
        old: SynSent,
        new: Established,
        ..base
    }));
    // IPv6 socket, IPv6 addresses and an IPv4 peer on a dual-stack socket.
    items.push(Item::Transition(Transition {
        ts_boot_ns: base.ts_boot_ns + 3_000,
        skaddr: 0xffff_8881_0000_2000,
        family: Family::Ipv6,
        local: v6("2001:db8::1", 443),
        remote: v6("2001:db8::beef", 61_000),
        old: SynRecv,
        new: Established,
        ..base
    }));
    items.push(Item::Transition(Transition {
        ts_boot_ns: base.ts_boot_ns + 3_100,
        skaddr: 0xffff_8881_0000_3000,
        family: Family::Ipv6,
        local: v4(10, 0, 0, 1, 8080),
        remote: v4(10, 0, 0, 2, 40_000),
        ..base
    }));
    // An IPv4-mapped address kept as IPv6, and the unspecified addresses.
    items.push(Item::Transition(Transition {
        ts_boot_ns: base.ts_boot_ns + 3_200,
        family: Family::Ipv6,
        local: Endpoint::new(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 1),
        remote: Endpoint::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        old: Close,
        new: Listen,
        ..base
    }));
    items.push(Item::Transition(Transition {
        local: v4(0, 0, 0, 0, 0),
        remote: v4(0, 0, 0, 0, 0),
        ..base
    }));
    // Timestamps going backwards (per-CPU ordering), extremes.
    items.push(Item::Transition(Transition {
        ts_boot_ns: base.ts_boot_ns - 10,
        ..base
    }));
    items.push(Item::Transition(Transition {
        ts_boot_ns: 0,
        skaddr: 0,
        cgroup_id: u64::MAX,
        netns: 0,
        cpu: u32::MAX,
        task: Task {
            tgid: u32::MAX,
            pid: 0,
            // All 16 bytes used, no NUL.
            comm: Comm(*b"0123456789abcdef"),
        },
        ..base
    }));
    items.push(Item::Transition(Transition {
        ts_boot_ns: u64::MAX,
        skaddr: u64::MAX,
        netns: u32::MAX,
        task: Task {
            tgid: 1,
            pid: 2,
            // Not UTF-8, and bytes after the NUL.
            comm: Comm([0x66, 0xff, 0, 0x67, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
        },
        ..base
    }));
    // An empty comm.
    items.push(Item::Transition(Transition {
        task: Task {
            tgid: 3,
            pid: 3,
            comm: Comm::default(),
        },
        ..base
    }));
    // Every pair of states.
    for (i, old) in TcpState::ALL.into_iter().enumerate() {
        for new in TcpState::ALL {
            items.push(Item::Transition(Transition {
                ts_boot_ns: base.ts_boot_ns + 10_000 + i as u64,
                old,
                new,
                ..base
            }));
        }
    }
    items.push(Item::Accepted(OwnerSeen {
        ts_boot_ns: base.ts_boot_ns + 20_000,
        skaddr: base.skaddr,
        task: task(1000, 1001, "nginx"),
        cgroup_id: 6100,
        netns: base.netns,
    }));
    // A socket never seen in a transition, in another namespace.
    items.push(Item::Accepted(OwnerSeen {
        ts_boot_ns: base.ts_boot_ns + 20_001,
        skaddr: 0xffff_8882_dead_0000,
        task: task(1000, 1001, "nginx"),
        cgroup_id: 6100,
        netns: 4_026_532_000,
    }));
    items.push(Item::ResetSent(ResetSent {
        ts_boot_ns: base.ts_boot_ns + 30_000,
        sender: 0,
        sender_state: None,
        netns: base.netns,
        segment_src: v4(203, 0, 113, 5, 12_345),
        segment_dst: v4(10, 0, 0, 1, 22),
    }));
    items.push(Item::ResetSent(ResetSent {
        ts_boot_ns: base.ts_boot_ns + 30_001,
        sender: base.skaddr,
        sender_state: Some(TimeWait),
        netns: base.netns,
        segment_src: v6("2001:db8::5", 1),
        segment_dst: v6("2001:db8::1", 443),
    }));
    items.push(Item::ResetSent(ResetSent {
        ts_boot_ns: base.ts_boot_ns + 30_002,
        sender: 0xffff_8883_0000_0000,
        sender_state: Some(Listen),
        netns: 7,
        segment_src: v4(203, 0, 113, 5, 12_345),
        segment_dst: v4(10, 0, 0, 1, 22),
    }));
    items.push(Item::Lost {
        total: 0,
        ts_boot_ns: 1,
    });
    items.push(Item::Lost {
        total: 17,
        ts_boot_ns: 2_000,
    });
    items.push(Item::Lost {
        total: u64::MAX,
        ts_boot_ns: u64::MAX,
    });
    // Failed calls (extension records), IPv4 and IPv6, extremes.
    let failure = crate::wire::CallFailure {
        ts_boot_ns: base.ts_boot_ns + 40_000,
        call: crate::wire::FailedCall::Connect,
        errno: 99,
        task: task(4242, 4243, "client"),
        cgroup_id: 777,
        netns: 4_026_532_000,
        skaddr: base.skaddr,
        family: Family::Ipv4,
        addr: v4(10, 0, 0, 2, 80),
    };
    items.push(Item::CallFailed(failure));
    items.push(Item::CallFailed(crate::wire::CallFailure {
        call: crate::wire::FailedCall::Bind,
        errno: u8::MAX,
        family: Family::Ipv6,
        addr: v6("2001:db8::1", 40_000),
        ts_boot_ns: u64::MAX,
        netns: u32::MAX,
        skaddr: u64::MAX,
        cgroup_id: u64::MAX,
        ..failure
    }));
    // Kills by `tcpstate kill` (extension kind 2): each outcome, with and
    // without an owner, IPv4 and IPv6.
    let kill = crate::kill_log::KillRecord {
        ts_boot_ns: base.ts_boot_ns + 50_000,
        killer_pid: 31_337,
        netns: 4_026_531_840,
        cookie: 0xdead_beef,
        family: Family::Ipv4,
        local: v4(127, 0, 0, 1, 8080),
        remote: v4(127, 0, 0, 1, 40_001),
        state: TcpState::CloseWait,
        owner: Some(crate::kill_log::KillOwner {
            tgid: 4242,
            comm: Comm::from_str_lossy("leaky"),
        }),
        outcome: crate::kill_log::KillOutcome::Destroyed,
    };
    items.push(Item::Kill(kill));
    items.push(Item::Kill(crate::kill_log::KillRecord {
        family: Family::Ipv6,
        local: v6("2001:db8::1", 443),
        remote: v6("2001:db8::2", 50_000),
        owner: None,
        outcome: crate::kill_log::KillOutcome::AlreadyGone,
        ..kill
    }));
    items.push(Item::Kill(crate::kill_log::KillRecord {
        outcome: crate::kill_log::KillOutcome::Refused(1),
        ts_boot_ns: u64::MAX,
        cookie: u64::MAX,
        ..kill
    }));
    items
}

fn sample_snapshot() -> Snapshot {
    let base = SnapshotSocket {
        existing: ExistingSocket {
            skaddr_or_cookie: None,
            netns: 4_026_531_840,
            family: Family::Ipv4,
            state: TcpState::Listen,
            local: v4(0, 0, 0, 0, 443),
            remote: v4(0, 0, 0, 0, 0),
            owner: Some(Owner {
                tgid: 1000,
                pid: 1000,
                comm: Comm::from_str_lossy("nginx"),
                how: OwnerHow::Snapshot,
                cgroup_id: 7_123,
            }),
        },
        inode: 12_345,
        cookie: 99,
        time_wait_expires_in_ms: None,
        holders: 9,
        timer: None,
        uid: 33,
        rqueue: 0,
        wqueue: 511,
    };
    let mut sockets = vec![base];
    sockets.push(SnapshotSocket {
        existing: ExistingSocket {
            state: TcpState::TimeWait,
            local: v4(10, 0, 0, 1, 40_001),
            remote: v4(10, 0, 0, 9, 80),
            owner: None,
            ..base.existing
        },
        inode: 0,
        cookie: u64::MAX,
        time_wait_expires_in_ms: Some(41_000),
        holders: 0,
        timer: Some(SocketTimer {
            kind: TimerKind::TimeWait,
            expires_in_ms: 41_000,
            retransmits: 0,
        }),
        uid: 0,
        ..base
    });
    sockets.push(SnapshotSocket {
        existing: ExistingSocket {
            skaddr_or_cookie: Some(0xffff_8881_0000_0040),
            netns: 4_026_532_001,
            family: Family::Ipv6,
            state: TcpState::CloseWait,
            local: v4(10, 0, 0, 1, 84),
            remote: v6("2001:db8::9", 2),
            owner: Some(Owner {
                tgid: 42,
                pid: 43,
                comm: Comm(*b"0123456789abcdef"),
                how: OwnerHow::Accept,
                cgroup_id: u64::MAX,
            }),
        },
        cookie: 5,
        holders: 2,
        timer: Some(SocketTimer {
            kind: TimerKind::Other(200),
            expires_in_ms: u32::MAX,
            retransmits: 255,
        }),
        uid: u32::MAX,
        rqueue: 5,
        wqueue: u32::MAX,
        ..base
    });
    for how in [
        OwnerHow::Connect,
        OwnerHow::Listen,
        OwnerHow::SocketIo,
        OwnerHow::InheritedFromListener,
    ] {
        let mut s = base;
        s.existing.owner.as_mut().unwrap().how = how;
        s.timer = Some(SocketTimer {
            kind: TimerKind::KeepAlive,
            expires_in_ms: 1,
            retransmits: 1,
        });
        sockets.push(s);
    }
    for kind in [TimerKind::Retransmit, TimerKind::ZeroWindowProbe] {
        let mut s = base;
        s.timer = Some(SocketTimer {
            kind,
            expires_in_ms: 7,
            retransmits: 2,
        });
        sockets.push(s);
    }
    Snapshot {
        sockets,
        errors: SnapshotErrors {
            unsupported_state: 1,
            unknown_state: 2,
            incomplete_time_wait: 3,
            duplicates: 4,
            skipped_messages: 5,
            dump_interrupted: true,
            owner_unknown: 6,
            proc_permission_denied: 7,
            proc_vanished: 8,
            proc_other_errors: u32::MAX,
        },
        netns: 4_026_531_840,
    }
}

fn read_all(reader: &mut RecordingReader) -> Vec<Item> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    while reader.next_batch(&mut batch).unwrap() {
        all.extend_from_slice(&batch);
    }
    all
}

/// (offset, header) of every block after the preamble, without checking
/// CRCs, as far as the lengths allow.
fn blocks_of(bytes: &[u8]) -> Vec<(usize, BlockHeader)> {
    let mut out = Vec::new();
    let mut at = PREAMBLE_LEN;
    while at + BLOCK_HEADER_LEN <= bytes.len() {
        let hb: &[u8; BLOCK_HEADER_LEN] = bytes[at..at + BLOCK_HEADER_LEN].try_into().unwrap();
        let Ok(header) = BlockHeader::parse(hb) else {
            break;
        };
        out.push((at, header));
        at += BLOCK_HEADER_LEN + header.stored_len as usize;
    }
    out
}

/// Recomputes every block's CRCs, so that mutated payloads reach the
/// decoder.
fn reseal(bytes: &mut [u8]) {
    let mut at = PREAMBLE_LEN;
    while at + BLOCK_HEADER_LEN <= bytes.len() {
        if bytes[at..at + 4] != block::BLOCK_MAGIC {
            return;
        }
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let start = at + BLOCK_HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len) else {
            return;
        };
        let crc = crc32fast::hash(payload);
        bytes[at + 20..at + 24].copy_from_slice(&crc.to_le_bytes());
        let hcrc = crc32fast::hash(&bytes[at..at + 32]);
        bytes[at + 32..at + 36].copy_from_slice(&hcrc.to_le_bytes());
        at = start + len;
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    text
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn every_item_kind_snapshot_and_header_round_trip_through_a_file() {
    let dir = TempDir::new();
    let path = dir.join("rec");
    let header = sample_header();
    let snapshot = sample_snapshot();
    let items = every_kind_of_item();
    let mut writer = RecordingWriter::create(&path, &header).unwrap();
    writer.write_snapshot(&snapshot).unwrap();
    for item in &items {
        writer.write_item(item).unwrap();
    }
    let summary = writer.finish().unwrap();
    assert_eq!(summary.items, items.len() as u64);
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());

    let mut reader = RecordingReader::open(&path).unwrap();
    assert_eq!(reader.header(), &header);
    assert_eq!(reader.format_version(), 1);
    assert_eq!(reader.snapshot(), Some(&snapshot));
    assert_eq!(read_all(&mut reader), items);
    assert!(reader.warnings().is_empty());
    // The writer and the in-memory encoder produce the same bytes.
    let bytes = encode_to_vec(&header, Some(&snapshot), &items, 256 << 10);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn header_fields_round_trip_including_absent_ones() {
    let mut header = sample_header();
    header.boot_id = None;
    header.sysctls.rfc1337 = true;
    header.command_line = vec![];
    header.host_name = "ünïcode-host".into();
    header.sysctls.local_port_range = (1024, 65535);
    header.sysctls.max_tw_buckets = 5;
    header.sysctls.tw_reuse = 1;
    header.sysctls.fin_timeout_secs = 30;
    let reader = RecordingReader::from_bytes(encode_to_vec(&header, None, &[], 1 << 10)).unwrap();
    assert_eq!(reader.header(), &header);
    assert_eq!(reader.snapshot(), None);
}

#[test]
fn captured_header_describes_this_host() {
    let header = super::RecordingHeader::capture(vec!["tcpstate".into()]);
    assert!(!header.kernel_release.is_empty());
    assert!(header.clock.boot_ns > 0 && header.clock.wall_ns > 0);
    assert_eq!(header.tcpstate_version, env!("CARGO_PKG_VERSION"));
    let reader = RecordingReader::from_bytes(encode_to_vec(&header, None, &[], 1 << 10)).unwrap();
    assert_eq!(reader.header(), &header);
}

#[test]
fn many_blocks_and_a_multi_block_snapshot_round_trip() {
    let items = Churn::new(11).take_items(20_000);
    let mut snapshot = sample_snapshot();
    let more: Vec<_> = (0..2_000u16)
        .map(|i| {
            let mut s = snapshot.sockets[i as usize % 3];
            s.existing.local.port = i;
            s.cookie = u64::from(i);
            s
        })
        .collect();
    snapshot.sockets.extend(more);
    let bytes = encode_to_vec(&sample_header(), Some(&snapshot), &items, 4 << 10);
    let blocks = blocks_of(&bytes);
    let snapshot_blocks = blocks
        .iter()
        .filter(|(_, h)| h.kind == block::kind::SNAPSHOT)
        .count();
    assert!(snapshot_blocks > 3, "{snapshot_blocks} snapshot blocks");
    assert!(blocks.len() > 20, "{} blocks", blocks.len());
    let mut reader = RecordingReader::from_bytes(bytes).unwrap();
    assert_eq!(reader.snapshot(), Some(&snapshot));
    assert_eq!(read_all(&mut reader), items);
    assert!(reader.warnings().is_empty());
}

#[test]
fn the_iterator_yields_items_in_order() {
    let items = Churn::new(5).take_items(3_000);
    let reader =
        RecordingReader::from_bytes(encode_to_vec(&sample_header(), None, &items, 1 << 10))
            .unwrap();
    let read: Vec<Item> = reader.map(Result::unwrap).collect();
    assert_eq!(read, items);
}

// ---------------------------------------------------------------------------
// Damage

/// A recording of about 8 items blocks, and where its blocks start.
fn damaged_fixture() -> (Vec<u8>, Vec<(usize, BlockHeader)>, Vec<Item>) {
    let items = Churn::new(2).take_items(2_000);
    let bytes = encode_to_vec(&sample_header(), Some(&sample_snapshot()), &items, 2 << 10);
    let blocks = blocks_of(&bytes);
    assert_eq!(
        blocks.last().map(|(at, h)| at + 36 + h.stored_len as usize),
        Some(bytes.len())
    );
    (bytes, blocks, items)
}

/// How many items the items blocks before block `index` hold.
fn items_before(blocks: &[(usize, BlockHeader)], index: usize) -> usize {
    blocks[..index]
        .iter()
        .filter(|(_, h)| h.kind == block::kind::ITEMS)
        .map(|(_, h)| h.records as usize)
        .sum()
}

#[test]
fn a_file_cut_anywhere_in_its_last_block_reads_back_every_complete_block() {
    let (bytes, blocks, items) = damaged_fixture();
    let (last_at, _) = *blocks.last().unwrap();
    let complete = items_before(&blocks, blocks.len() - 1);
    for cut in last_at..bytes.len() {
        let mut reader = RecordingReader::from_bytes(bytes[..cut].to_vec()).unwrap();
        assert_eq!(read_all(&mut reader), items[..complete], "cut at {cut}");
        if cut == last_at {
            assert!(reader.warnings().is_empty());
            continue;
        }
        match reader.warnings() {
            [RecordingWarning::Truncated {
                offset, skipped, ..
            }] => {
                assert_eq!(
                    (*offset, *skipped),
                    (last_at as u64, (cut - last_at) as u64)
                );
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        let text = one_line(&reader.warnings()[0]);
        assert!(text.contains(&format!("at byte {last_at}")), "{text}");
        assert_eq!(reader.stats().damaged_bytes, (cut - last_at) as u64);
    }
}

#[test]
fn a_file_cut_anywhere_never_fails_after_its_header() {
    let items = every_kind_of_item();
    let bytes = encode_to_vec(&sample_header(), Some(&sample_snapshot()), &items, 256);
    let blocks = blocks_of(&bytes);
    let header_end = blocks[0].0 + 36 + blocks[0].1.stored_len as usize;
    for cut in 0..=bytes.len() {
        let result = RecordingReader::from_bytes(bytes[..cut].to_vec());
        if cut < header_end {
            let e = result
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} opened"));
            match (cut, &e) {
                (0, RecordingError::Empty { .. }) => {}
                (1.., RecordingError::BadHeader { .. }) => {}
                _ => panic!("cut at {cut}: {e}"),
            }
            continue;
        }
        let mut reader = result.unwrap();
        let read = read_all(&mut reader);
        // Whole blocks only: exactly the items of the complete blocks.
        let complete: usize = blocks
            .iter()
            .filter(|(at, h)| {
                h.kind == block::kind::ITEMS && at + 36 + h.stored_len as usize <= cut
            })
            .map(|(_, h)| h.records as usize)
            .sum();
        assert_eq!(read.len(), complete, "cut at {cut}");
        assert_eq!(read, items[..read.len()]);
    }
}

#[test]
fn a_flipped_byte_in_a_middle_block_is_reported_and_skipped() {
    let (bytes, blocks, items) = damaged_fixture();
    let index = blocks.len() / 2;
    let (at, header) = blocks[index];
    assert_eq!(header.kind, block::kind::ITEMS);
    let next = at + 36 + header.stored_len as usize;
    // In the payload, then in the header's length field.
    for flip in [at + 36 + header.stored_len as usize / 2, at + 9] {
        let mut damaged = bytes.clone();
        damaged[flip] ^= 0x10;
        let mut reader = RecordingReader::from_bytes(damaged).unwrap();
        let mut before = Vec::new();
        let mut batch = Vec::new();
        let error = loop {
            match reader.next_batch(&mut batch) {
                Ok(true) => before.extend_from_slice(&batch),
                Ok(false) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(before, items[..items_before(&blocks, index)]);
        match &error {
            RecordingError::Corrupt {
                offset,
                skipped,
                resume_at,
                ..
            } => assert_eq!(
                (*offset, *skipped, *resume_at),
                (at as u64, (next - at) as u64, next as u64)
            ),
            other => panic!("{other}"),
        }
        let text = one_line(&error);
        assert!(text.contains(&format!("at byte {at}")), "{text}");
        assert!(
            text.contains(&format!("{} bytes skipped", next - at)),
            "{text}"
        );
        // Reading on delivers the blocks after the damaged one.
        let after = read_all(&mut reader);
        assert_eq!(after, items[items_before(&blocks, index + 1)..]);
        assert!(reader.warnings().is_empty());
        assert_eq!(reader.stats().damaged_bytes, (next - at) as u64);
    }
}

#[test]
fn garbage_between_blocks_is_skipped_by_looking_for_the_next_block() {
    let (bytes, blocks, items) = damaged_fixture();
    let (at, _) = blocks[4];
    let mut damaged = bytes[..at].to_vec();
    damaged.extend_from_slice(&[0xB7, b'T', b'S', b'B', 1, 2, 3]); // a false magic too
    damaged.extend_from_slice(&[0x55; 100]);
    damaged.extend_from_slice(&bytes[at..]);
    let mut reader = RecordingReader::from_bytes(damaged).unwrap();
    let mut got = Vec::new();
    let mut errors = Vec::new();
    for item in &mut reader {
        match item {
            Ok(item) => got.push(item),
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(got, items);
    match errors.as_slice() {
        [RecordingError::Corrupt {
            offset, skipped, ..
        }] => assert_eq!((*offset, *skipped), (at as u64, 107)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn damage_in_the_last_block_is_a_warning_not_an_error() {
    let (bytes, blocks, items) = damaged_fixture();
    let (at, _) = *blocks.last().unwrap();
    let mut damaged = bytes.clone();
    *damaged.last_mut().unwrap() ^= 1;
    let mut reader = RecordingReader::from_bytes(damaged).unwrap();
    assert_eq!(
        read_all(&mut reader),
        items[..items_before(&blocks, blocks.len() - 1)]
    );
    match reader.warnings() {
        [RecordingWarning::Truncated {
            offset, skipped, ..
        }] => assert_eq!((*offset, *skipped), (at as u64, (bytes.len() - at) as u64)),
        other => panic!("{other:?}"),
    }
    // Zeros at the end (a power cut after the size was extended).
    let mut zeros = bytes.clone();
    zeros.extend_from_slice(&[0; 4096]);
    let mut reader = RecordingReader::from_bytes(zeros).unwrap();
    assert_eq!(read_all(&mut reader), items);
    assert!(matches!(
        reader.warnings(),
        [RecordingWarning::Truncated { offset, skipped: 4096, .. }] if *offset == bytes.len() as u64
    ));
}

#[test]
fn a_damaged_snapshot_block_leaves_a_partial_snapshot_and_an_error() {
    let items = every_kind_of_item();
    let mut snapshot = sample_snapshot();
    let extra: Vec<_> = (0..300).map(|_| snapshot.sockets[2]).collect();
    snapshot.sockets.extend(extra);
    let bytes = encode_to_vec(&sample_header(), Some(&snapshot), &items, 1 << 10);
    let blocks = blocks_of(&bytes);
    let (at, second) = blocks[2];
    assert_eq!(second.kind, block::kind::SNAPSHOT);
    let mut damaged = bytes.clone();
    damaged[at + 40] ^= 0xff;
    let mut reader = RecordingReader::from_bytes(damaged).unwrap();
    let got = reader.snapshot().unwrap().sockets.len();
    assert!(got > 0 && got < snapshot.sockets.len());
    let mut batch = Vec::new();
    let error = reader.next_batch(&mut batch).unwrap_err();
    assert!(matches!(error, RecordingError::Corrupt { offset, .. } if offset == at as u64));
    assert_eq!(read_all(&mut reader), items);
    let missing = second.records as usize;
    assert_eq!(
        reader.snapshot().unwrap().sockets.len(),
        snapshot.sockets.len() - missing
    );
    assert!(reader
        .warnings()
        .iter()
        .any(|w| matches!(w, RecordingWarning::SnapshotIncomplete { .. })));
}

// ---------------------------------------------------------------------------
// Files that are not (readable) recordings

#[test]
fn refuses_what_is_not_a_readable_recording() {
    let dir = TempDir::new();
    let check = |path: &Path, expect: fn(&RecordingError) -> bool, words: &[&str]| {
        let e = RecordingReader::open(path).err().expect("an error");
        assert!(expect(&e), "{e:?}");
        let text = one_line(&e);
        assert!(text.contains(&path.display().to_string()), "{text}");
        for word in words {
            assert!(text.contains(word), "{text} lacks {word}");
        }
    };
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    check(
        &empty,
        |e| matches!(e, RecordingError::Empty { .. }),
        &["empty"],
    );

    let text = dir.join("text");
    std::fs::write(&text, b"{\"ts\": 1}\n{\"ts\": 2}\n").unwrap();
    check(
        &text,
        |e| matches!(e, RecordingError::NotARecording { .. }),
        &["not a tcpstate recording", "byte 0"],
    );

    let mut newer = block::preamble(2).to_vec();
    newer.extend_from_slice(&[0xAA; 100]);
    let path = dir.join("newer");
    std::fs::write(&path, &newer).unwrap();
    check(
        &path,
        |e| {
            matches!(
                e,
                RecordingError::NewerVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            )
        },
        &["version 2", "format version 1", "newer tcpstate"],
    );

    check(
        &dir.0,
        |e| matches!(e, RecordingError::IsDirectory { .. }),
        &["directory"],
    );
    check(
        &dir.join("missing"),
        |e| matches!(e, RecordingError::NotFound { .. }),
        &["no such file"],
    );

    let mut bad_crc = encode_to_vec(&sample_header(), None, &[], 1 << 10);
    bad_crc[40] ^= 1;
    let path = dir.join("bad-header");
    std::fs::write(&path, &bad_crc).unwrap();
    check(
        &path,
        |e| matches!(e, RecordingError::BadHeader { offset: 16, .. }),
        &["byte 16"],
    );

    let short = dir.join("short");
    std::fs::write(&short, &super::FILE_MAGIC[..5]).unwrap();
    check(
        &short,
        |e| matches!(e, RecordingError::BadHeader { offset: 0, .. }),
        &["preamble"],
    );

    // Permission checks do not apply to root.
    let locked = dir.join("locked");
    std::fs::write(&locked, encode_to_vec(&sample_header(), None, &[], 1 << 10)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        check(
            &locked,
            |e| matches!(e, RecordingError::PermissionDenied { .. }),
            &["permission denied"],
        );
    }
}

#[test]
fn permission_denied_maps_to_its_own_error() {
    let e = super::reader::open_error(
        Path::new("/x/rec"),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    assert!(matches!(e, RecordingError::PermissionDenied { .. }));
    let text = one_line(&e);
    assert!(text.starts_with("/x/rec: permission denied"), "{text}");
}

// ---------------------------------------------------------------------------
// The writer

#[test]
fn create_refuses_an_existing_file_and_makes_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let path = dir.join("rec");
    std::fs::write(&path, b"precious").unwrap();
    let e = RecordingWriter::create(&path, &sample_header())
        .err()
        .unwrap();
    assert!(matches!(e, RecordingError::Exists { .. }), "{e}");
    assert!(one_line(&e).contains("file exists"));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let options = WriterOptions {
        overwrite: true,
        ..WriterOptions::default()
    };
    RecordingWriter::create_with(&path, &sample_header(), options)
        .unwrap()
        .finish()
        .unwrap();
    let fresh = dir.join("fresh");
    RecordingWriter::create(&fresh, &sample_header())
        .unwrap()
        .finish()
        .unwrap();
    for p in [&path, &fresh] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
        assert!(RecordingReader::open(p).is_ok());
    }
    let e = RecordingWriter::create(dir.join("no/such/dir/rec"), &sample_header())
        .err()
        .unwrap();
    assert!(matches!(e, RecordingError::Create { .. }), "{e}");
}

#[test]
fn the_snapshot_comes_once_and_before_items() {
    let dir = TempDir::new();
    let mut writer = RecordingWriter::create(dir.join("a"), &sample_header()).unwrap();
    writer
        .write_item(&Item::Lost {
            total: 1,
            ts_boot_ns: 5,
        })
        .unwrap();
    let e = writer.write_snapshot(&sample_snapshot()).unwrap_err();
    assert!(matches!(e, RecordingError::SnapshotOrder { .. }));
    let mut writer = RecordingWriter::create(dir.join("b"), &sample_header()).unwrap();
    writer.write_snapshot(&sample_snapshot()).unwrap();
    assert!(writer.write_snapshot(&sample_snapshot()).is_err());
}

#[test]
fn blocks_are_written_when_full_when_old_and_when_asked() {
    let dir = TempDir::new();
    let path = dir.join("rec");
    let options = WriterOptions {
        block_bytes: 1 << 10,
        ..WriterOptions::default()
    };
    let mut writer = RecordingWriter::create_with(&path, &sample_header(), options).unwrap();
    let after_header = writer.bytes_written();
    assert_eq!(after_header, std::fs::metadata(&path).unwrap().len());
    let items = Churn::new(9).take_items(1_000);
    // Full blocks go out by themselves.
    for item in &items[..500] {
        writer.write_item(item).unwrap();
    }
    assert!(writer.bytes_written() > after_header);
    assert_eq!(
        writer.bytes_written(),
        std::fs::metadata(&path).unwrap().len()
    );
    // A reader sees what is written so far, while the file is written.
    let mut reader = RecordingReader::open(&path).unwrap();
    let early = read_all(&mut reader);
    assert!(!early.is_empty() && early.len() < 500);
    assert_eq!(early, items[..early.len()]);

    // The rest of the block goes out once it is a second old.
    writer.flush_block().unwrap();
    writer.write_item(&items[500]).unwrap();
    let now = Instant::now();
    let before = writer.bytes_written();
    assert!(!writer.maybe_flush(now).unwrap());
    assert_eq!(writer.bytes_written(), before);
    assert!(writer
        .maybe_flush(now + Duration::from_millis(1_100))
        .unwrap());
    assert!(writer.bytes_written() > before);
    assert!(!writer.maybe_flush(now + Duration::from_secs(5)).unwrap());

    // The reader goes on where it stopped.
    let more = read_all(&mut reader);
    assert_eq!(more, items[early.len()..501]);
    for item in &items[501..] {
        writer.write_item(item).unwrap();
    }
    drop(writer); // flushes too
    assert_eq!(read_all(&mut reader), items[501..]);
    assert!(reader.warnings().is_empty());
}

#[test]
fn a_block_being_written_is_read_once_complete() {
    let dir = TempDir::new();
    let path = dir.join("rec");
    let items = Churn::new(4).take_items(400);
    let bytes = encode_to_vec(&sample_header(), None, &items, 1 << 10);
    let blocks = blocks_of(&bytes);
    let (at, _) = blocks[2];
    let cut = at + 50;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let mut reader = RecordingReader::open(&path).unwrap();
    let first = read_all(&mut reader);
    assert_eq!(first, items[..items_before(&blocks, 2)]);
    assert_eq!(reader.warnings().len(), 1);
    // The writer completes the block and goes on.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&bytes[cut..]).unwrap();
    let rest = read_all(&mut reader);
    assert_eq!(rest, items[first.len()..]);
    assert_eq!(reader.warnings().len(), 1);
}

#[test]
fn rotation_continues_in_a_new_file() {
    let dir = TempDir::new();
    let items = Churn::new(8).take_items(300);
    let mut writer = RecordingWriter::create(dir.join("1"), &sample_header()).unwrap();
    for item in &items[..100] {
        writer.write_item(item).unwrap();
    }
    let e = writer.rotate(dir.join("1"), &sample_header()).unwrap_err();
    assert!(matches!(e, RecordingError::Exists { .. }));
    for item in &items[100..200] {
        writer.write_item(item).unwrap();
    }
    let mut header = sample_header();
    header.clock.boot_ns += 1;
    let done = writer.rotate(dir.join("2"), &header).unwrap();
    assert_eq!((done.items, done.path.clone()), (200, dir.join("1")));
    assert_eq!(writer.path(), dir.join("2"));
    for item in &items[200..] {
        writer.write_item(item).unwrap();
    }
    writer.finish().unwrap();
    let mut one = RecordingReader::open(dir.join("1")).unwrap();
    let mut two = RecordingReader::open(dir.join("2")).unwrap();
    assert_eq!(two.header(), &header);
    assert_eq!(read_all(&mut one), items[..200]);
    assert_eq!(read_all(&mut two), items[200..]);
}

// ---------------------------------------------------------------------------
// Size

#[test]
fn synthetic_churn_takes_under_40_bytes_per_transition() {
    for (churn, items) in [
        (Churn::new(1), 100_000),
        (Churn::with_arrivals(1, 60_000_000), 5_000),
    ] {
        let report = measure_size(churn, items, 256 << 10);
        eprintln!(
            "{report:?}: {:.2} bytes/transition",
            report.bytes_per_transition()
        );
        assert!(
            report.bytes_per_transition() < 40.0,
            "{:.2} bytes/transition",
            report.bytes_per_transition()
        );
    }
}

// ---------------------------------------------------------------------------
// Fuzzing

fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(8) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next_u64() as u8,
            2 => {
                let value: [u8; 4] = match rng.below(4) {
                    0 => [0; 4],
                    1 => [0xff; 4],
                    2 => [0x7f, 0xff, 0xff, 0xff],
                    _ => [0x80, 0x80, 0x80, 0x80],
                };
                let end = (at + 4).min(bytes.len());
                bytes[at..end].copy_from_slice(&value[..end - at]);
            }
            3 => {
                let end = (at + 1 + rng.below(64) as usize).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => {
                let junk: Vec<u8> = (0..1 + rng.below(32))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                bytes.splice(at..at, junk);
            }
            5 => {
                let end = (at + 1 + rng.below(200) as usize).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                let to = rng.below(bytes.len() as u64) as usize;
                bytes.splice(to..to, chunk);
            }
            6 => bytes.truncate(at),
            _ => {
                // Inside payloads, to reach the decoder once resealed.
                let at =
                    PREAMBLE_LEN + rng.below((bytes.len() - at.min(PREAMBLE_LEN)) as u64) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b = rng.next_u64() as u8;
                }
            }
        }
    }
}

#[test]
fn fuzz_smoke_mutated_recordings_never_panic() {
    let mut items = every_kind_of_item();
    items.extend(Churn::new(12).take_items(150));
    let mut snapshot = sample_snapshot();
    snapshot.sockets.truncate(4);
    let original = encode_to_vec(&sample_header(), Some(&snapshot), &items, 512);
    fuzz_read(&original);
    let mut rng = XorShift::new(0x5eed);
    let mut decoded_something = 0;
    for round in 0..20_000 {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes);
        // Half of the cases get valid CRCs, so that the payload decoders
        // see the damage.
        if round % 2 == 0 {
            reseal(&mut bytes);
        }
        fuzz_read(&bytes);
        if round % 97 == 0 {
            if let Ok(reader) = RecordingReader::from_bytes(bytes) {
                decoded_something += reader.filter(Result::is_ok).take(1).count();
            }
        }
    }
    assert!(decoded_something > 0);
    for cut in 0..=original.len() {
        fuzz_read(&original[..cut]);
    }
    for junk in [&b""[..], b"TCPSREC\n", &[0xff; 100], &block::preamble(1)] {
        fuzz_read(junk);
    }
}

// ---------------------------------------------------------------------------
// The worked example of docs/recording-format.md, section 5.

fn doc_example_items() -> Vec<Item> {
    let first = Transition {
        ts_boot_ns: 5_000_000_000,
        skaddr: 0xffff_8881_0000_1000,
        family: Family::Ipv4,
        local: v4(10, 0, 0, 1, 40_000),
        remote: v4(192, 0, 2, 7, 443),
        old: TcpState::Close,
        new: TcpState::SynSent,
        task: task(4242, 4242, "curl"),
        cgroup_id: 777,
        netns: 4_026_531_840,
        cpu: 1,
    };
    let second = Transition {
        ts_boot_ns: 5_000_001_500,
        old: TcpState::SynSent,
        new: TcpState::Established,
        task: task(0, 0, "swapper/1"),
        cgroup_id: 1,
        ..first
    };
    vec![Item::Transition(first), Item::Transition(second)]
}

#[test]
fn doc_example_payload() {
    let mut encoder = super::codec::ItemEncoder::default();
    for item in doc_example_items() {
        encoder.push(&item);
    }
    let hex: Vec<String> = encoder.buf.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "49 00 00 00 ff bf ff ff df df 3b 00 0a 00 00 01 40 9c 00 c0 00 02 07 bb 01 \
         81 80 80 80 0f 00 01 92 21 00 04 63 75 72 6c 89 06 01 \
         0c b8 17 01 00 01 00 00 09 73 77 61 70 70 65 72 2f 31 01 01"
    );
    assert_eq!(encoder.first_ts, Some(5_000_000_000));
    assert_eq!(encoder.records, 2);
    let mut decoded = Vec::new();
    super::codec::ItemDecoder::default()
        .decode(&encoder.buf, 2, 5_000_000_000, &mut decoded)
        .unwrap();
    assert_eq!(decoded, doc_example_items());
}
