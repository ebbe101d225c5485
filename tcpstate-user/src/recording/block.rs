//! The file preamble and the framing of blocks (see
//! `docs/recording-format.md`, sections 2 and 3).
//!
//! Every length read from a file is checked against [`MAX_BLOCK_PAYLOAD`]
//! and against the bytes left in the file before anything is allocated.

/// The first 8 bytes of every recording.
pub const FILE_MAGIC: [u8; 8] = *b"TCPSREC\n";
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic, version, reserved, CRC32.
pub const PREAMBLE_LEN: usize = 16;

/// The first 4 bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = [0xB7, b'T', b'S', b'B'];
pub const BLOCK_HEADER_LEN: usize = 36;
/// No block payload (stored or decompressed) is larger; readers refuse
/// larger lengths without allocating.
pub const MAX_BLOCK_PAYLOAD: u32 = 16 << 20;

/// Block kinds. Readers skip kinds they do not know.
pub mod kind {
    pub const HEADER: u8 = 1;
    pub const SNAPSHOT: u8 = 2;
    pub const ITEMS: u8 = 3;
}

/// Payload compression methods. Version 1 defines only `NONE`.
pub mod compression {
    pub const NONE: u8 = 0;
}

/// The preamble: magic, format version, CRC.
pub fn preamble(version: u16) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..8].copy_from_slice(&FILE_MAGIC);
    out[8..10].copy_from_slice(&version.to_le_bytes());
    // 10..12 reserved, zero.
    let crc = crc32fast::hash(&out[..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The fixed-size header in front of every block payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: u8,
    pub compression: u8,
    pub flags: u16,
    /// Payload bytes as stored in the file (after the header).
    pub stored_len: u32,
    /// Payload bytes once decompressed (= `stored_len` when uncompressed).
    pub raw_len: u32,
    /// Records (items, snapshot sockets, header: 0) in the payload.
    pub records: u32,
    /// CRC32 (IEEE) of the stored payload.
    pub payload_crc: u32,
    /// Boot-time ns of the first timestamped record; 0 if none.
    pub first_ts: u64,
}

impl BlockHeader {
    pub fn to_bytes(self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[0..4].copy_from_slice(&BLOCK_MAGIC);
        out[4] = self.kind;
        out[5] = self.compression;
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.records.to_le_bytes());
        out[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_ts.to_le_bytes());
        let crc = crc32fast::hash(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks a block header: magic, header CRC, lengths within
    /// [`MAX_BLOCK_PAYLOAD`].
    pub fn parse(bytes: &[u8; BLOCK_HEADER_LEN]) -> Result<Self, &'static str> {
        if bytes[0..4] != BLOCK_MAGIC {
            return Err("no block magic");
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if crc32fast::hash(&bytes[..32]) != u32_at(32) {
            return Err("block header CRC mismatch");
        }
        let header = BlockHeader {
            kind: bytes[4],
            compression: bytes[5],
            flags: u16::from_le_bytes([bytes[6], bytes[7]]),
            stored_len: u32_at(8),
            raw_len: u32_at(12),
            records: u32_at(16),
            payload_crc: u32_at(20),
            first_ts: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        };
        if header.stored_len > MAX_BLOCK_PAYLOAD || header.raw_len > MAX_BLOCK_PAYLOAD {
            return Err("block length over the 16 MiB limit");
        }
        Ok(header)
    }

    /// Whether this build can decode the payload: no compression (the only
    /// method of format version 1), so both lengths are equal.
    pub fn payload_problem(&self) -> Option<&'static str> {
        if self.compression != compression::NONE {
            return Some("unknown compression method");
        }
        if self.raw_len != self.stored_len {
            return Some("uncompressed block with two different lengths");
        }
        None
    }
}

/// Appends one framed block (header + payload) to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, records: u32, first_ts: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_BLOCK_PAYLOAD as usize);
    let header = BlockHeader {
        kind,
        compression: compression::NONE,
        flags: 0,
        stored_len: payload.len() as u32,
        raw_len: payload.len() as u32,
        records,
        payload_crc: crc32fast::hash(payload),
        first_ts,
    };
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
}
