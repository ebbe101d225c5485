//! Encoding of block payloads: items (section 5 of
//! `docs/recording-format.md`) and the start-up snapshot (section 6).
//!
//! Every block is self-contained: the tables (sockets, tasks, addresses,
//! comms) and the registers (previous timestamp, skaddr, netns, cgroup)
//! start empty in each block, so any block decodes without the others.
//!
//! The decoder treats its input as hostile: every read is bounds-checked,
//! every table reference is checked against the table, and nothing is
//! allocated from a count read from the payload (tables grow one entry per
//! record actually decoded).
use crate::{
    addr::Endpoint,
    model::{ExistingSocket, Owner, OwnerHow},
    source::{
        snapshot::{Snapshot, SnapshotErrors, SnapshotSocket, SocketTimer, TimerKind},
        Item,
    },
    tcp::{Family, TcpState},
    wire::{Comm, OwnerSeen, ResetSent, Task, Transition},
};
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Head bytes below this are transitions: `(old - 1) * 12 + (new - 1)`.
pub const HEAD_TRANSITIONS: u8 = 144;
pub const HEAD_ACCEPTED: u8 = 144;
pub const HEAD_RESET: u8 = 145;
pub const HEAD_LOST: u8 = 146;
/// A record of a later format revision: varint length, then that many
/// bytes, which readers that do not know it skip.
pub const HEAD_EXTENSION: u8 = 255;

/// Why a payload could not be decoded: what, and at which payload byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecError {
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at payload byte {}", self.what, self.at)
    }
}

mod call_failure;
mod items;
mod kill;
mod primitives;
mod snapshot;
mod tables;

pub use items::{ItemDecoder, ItemEncoder};
pub use kill::{decode as decode_kill, encode as encode_kill, MAX_LEN as KILL_MAX_LEN};
pub use primitives::{put_varint, Cursor};
pub use snapshot::{decode_snapshot, encode_snapshot};

/// The damage every extension record's decoder must refuse or survive:
/// each truncation and one byte too many refused, each `(offset, value)` of
/// `bad` (a field out of range) refused, each byte flipped decoded or
/// refused, never a panic.
#[cfg(test)]
fn check_damaged<T>(
    decode: impl Fn(&[u8]) -> Result<Option<T>, &'static str>,
    body: &[u8],
    bad: &[(usize, u8)],
) {
    for cut in 0..body.len() {
        assert!(decode(&body[..cut]).is_err(), "cut at {cut} accepted");
    }
    let mut longer = body.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "one byte too many accepted");
    for &(at, value) in bad {
        let mut damaged = body.to_vec();
        damaged[at] = value;
        assert!(decode(&damaged).is_err(), "byte {at} = {value} accepted");
    }
    for at in 0..body.len() {
        let mut flipped = body.to_vec();
        flipped[at] ^= 0xff;
        let _ = decode(&flipped);
    }
}
// The sections share their helpers.
use primitives::*;
use tables::*;
