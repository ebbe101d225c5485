//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`), just
//! enough to find a few struct member byte offsets at load time so the BPF
//! program can walk kernel structs with `bpf_probe_read_kernel`.
//!
//! The format is described in the kernel's Documentation/bpf/btf.rst. The
//! input is treated as untrusted: every read is bounds-checked, lengths from
//! the header are checked against the data before use, and type chains are
//! followed only to a fixed depth, so malformed data gives an error, never a
//! panic or a hang.
//!
//! Why hand-written (judged for issue 13): aya-obj's public API parses BTF
//! but gives no member offsets. `btf-rs` 2 (`resolve_types_by_name`, struct
//! members with bit offsets) and `btfparse` (`offset_of` along a member
//! path) look able to answer the same questions, so a replacement is
//! plausible; it has not been made yet because neither was checked against
//! what this reader guarantees and tests: hostile input (the mutation test
//! below: errors, never a panic), anonymous nested members, bitfields
//! refused, FWD declarations skipped, and building with rustc 1.95. Until
//! one passes those tests, this reader stays.
use std::ops::Range;
use std::path::Path;
use tcpstate_common::{StructOffsets, SOCK_HEAD_BYTES};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xEB9F;
const VERSION: u8 = 1;
/// Size of the header fields this reader knows; later versions may add more.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_LEN: usize = 12;
/// How many typedef/const/... links or nested anonymous members are
/// followed before the data is deemed cyclic (the kernel uses 32 too).
const MAX_DEPTH: u32 = 32;
/// Label used in errors for data that did not come from a file.
const IN_MEMORY: &str = "<BTF data>";

/// BTF kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// Why BTF could not be read or did not have what was asked for. Each
/// message names the file and, for lookups, the struct and member.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} is not BTF: magic is {found:#06x}, expected 0xeb9f{hint}")]
    BadMagic {
        file: String,
        found: u16,
        hint: &'static str,
    },
    #[error("kernel BTF ignored ({var} is set)")]
    Ignored { var: &'static str },
    #[error("{file}: unexpected layout: {what}")]
    Layout { file: String, what: String },
    #[error("{file}: malformed BTF: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file}: no struct or union named `{name}` (nor a typedef of one)")]
    StructNotFound { file: String, name: String },
    #[error("{file}: {owner} has no member `{member}`")]
    MemberNotFound {
        file: String,
        owner: String,
        member: String,
    },
    #[error(
        "{file}: {owner}: member `{member}` is a {bits}-bit bitfield, which has no byte offset"
    )]
    Bitfield {
        file: String,
        owner: String,
        member: String,
        bits: u32,
    },
    #[error(
        "{file}: {owner}: member `{member}` starts at bit {bit_offset}, not on a byte boundary"
    )]
    NotByteAligned {
        file: String,
        owner: String,
        member: String,
        bit_offset: u64,
    },
    #[error("{file}: {owner}: member `{member}` is not a struct or union, so `{next}` cannot be looked up in it")]
    NotComposite {
        file: String,
        owner: String,
        member: String,
        next: String,
    },
}

/// One `struct btf_type`; `data` is where its kind-specific data starts in
/// `Btf::data` (already checked to lie within the type section).
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    data: usize,
}

impl Type {
    fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
    fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
}

/// One struct/union member, its offset decoded according to the parent's
/// kind_flag.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for kind_flag bitfields.
    bitfield_size: u32,
}

/// A member found by name, possibly inside anonymous members.
struct Hit {
    /// From the start of the searched struct, summed over anonymous parents.
    bit_offset: u64,
    member: Member,
    /// kind_flag of the struct/union that directly holds the member.
    parent_kind_flag: bool,
}

/// Parsed BTF: the raw data plus an index of type records by id.
pub struct Btf {
    data: Vec<u8>,
    strs: Range<usize>,
    /// `types[i]` has type id `i + 1` (id 0 is void).
    types: Vec<Type>,
    /// File name (or a placeholder) for error messages.
    source: String,
}

impl std::fmt::Debug for Btf {
    // The derived form would print megabytes of raw data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("source", &self.source)
            .field("bytes", &self.data.len())
            .field("types", &self.types.len())
            .finish()
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn kind_name(k: u8) -> &'static str {
    match k {
        kind::INT => "INT",
        kind::PTR => "PTR",
        kind::ARRAY => "ARRAY",
        kind::STRUCT => "STRUCT",
        kind::UNION => "UNION",
        kind::ENUM => "ENUM",
        kind::FWD => "FWD",
        kind::TYPEDEF => "TYPEDEF",
        kind::VOLATILE => "VOLATILE",
        kind::CONST => "CONST",
        kind::RESTRICT => "RESTRICT",
        kind::FUNC => "FUNC",
        kind::FUNC_PROTO => "FUNC_PROTO",
        kind::VAR => "VAR",
        kind::DATASEC => "DATASEC",
        kind::FLOAT => "FLOAT",
        kind::DECL_TAG => "DECL_TAG",
        kind::TYPE_TAG => "TYPE_TAG",
        kind::ENUM64 => "ENUM64",
        _ => "unknown",
    }
}

impl Btf {
    /// Parses BTF from memory (native endianness).
    // Part of the API (and what the tests use); the loader reads the file.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        Self::from_vec(bytes.to_vec(), IN_MEMORY.to_string())
    }

    /// Reads and parses a BTF file such as [`VMLINUX_BTF`].
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let file = path.display().to_string();
        match std::fs::read(path) {
            Ok(data) => Self::from_vec(data, file),
            Err(source) => Err(BtfError::Io { file, source }),
        }
    }

    /// Takes ownership of the data so reading a file does not copy it again.
    fn from_vec(data: Vec<u8>, source: String) -> Result<Btf, BtfError> {
        let bad = |reason: String| BtfError::Malformed {
            file: source.clone(),
            reason,
        };
        if data.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                data.len()
            )));
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(BtfError::BadMagic {
                file: source,
                found: magic,
                hint: if magic == MAGIC.swap_bytes() {
                    " (it is BTF of the other byte order)"
                } else {
                    ""
                },
            });
        }
        if data[2] != VERSION {
            return Err(bad(format!(
                "version {} is not the supported version {VERSION}",
                data[2]
            )));
        }
        // All five fields exist: the length was checked above.
        let field = |at: usize| u64::from(read_u32(&data, at).unwrap_or(0));
        let hdr_len = field(4);
        let len = data.len() as u64;
        if hdr_len < HEADER_LEN as u64 || hdr_len > len {
            return Err(bad(format!(
                "header length {hdr_len} is not between {HEADER_LEN} and the data length {len}"
            )));
        }
        // Sections are relative to the end of the header; u64 sums of u32s
        // cannot overflow, and each end is checked against the real length.
        let section = |name: &str, off_at: usize| -> Result<Range<usize>, BtfError> {
            let start = hdr_len + field(off_at);
            let end = start + field(off_at + 4);
            if end > len {
                return Err(bad(format!(
                    "{name} section (bytes {start}..{end}) runs past the end of the {len}-byte data"
                )));
            }
            Ok(start as usize..end as usize)
        };
        let types_range = section("type", 8)?;
        let strs = section("string", 16)?;
        // The kernel requires a string section that starts with the empty
        // string and ends with a NUL; then every in-range offset names a
        // NUL-terminated string.
        match (
            data.get(strs.start),
            strs.end.checked_sub(1).and_then(|i| data.get(i)),
        ) {
            (Some(0), Some(0)) if !strs.is_empty() => {}
            _ => {
                return Err(bad(
                    "string section is empty or not NUL-delimited at both ends".to_string(),
                ))
            }
        }
        let str_len = strs.len();
        let check_name = |id: usize, what: &str, off: u32| -> Result<(), BtfError> {
            if off as usize >= str_len {
                return Err(bad(format!(
                    "type {id}: {what} name offset {off} is past the {str_len}-byte string section"
                )));
            }
            Ok(())
        };

        // Each record is at least 12 bytes, so this capacity is bounded by
        // the data really present, not by a header field.
        let mut types = Vec::with_capacity(types_range.len() / TYPE_LEN);
        let mut pos = types_range.start;
        let end = types_range.end;
        while pos < end {
            let id = types.len() + 1;
            if end - pos < TYPE_LEN {
                return Err(bad(format!(
                    "type {id} at byte {pos}: record truncated by the end of the type section at {end}"
                )));
            }
            let word = |i: usize| read_u32(&data, pos + 4 * i).unwrap_or(0);
            let t = Type {
                name_off: word(0),
                info: word(1),
                size_or_type: word(2),
                data: pos + TYPE_LEN,
            };
            let k = t.kind();
            let vlen = t.vlen();
            // (bytes per entry, entries, offset of a name in each entry)
            let (stride, count, name_in_entry) = match k {
                kind::INT | kind::VAR | kind::DECL_TAG => (4, 1, false),
                kind::ARRAY => (12, 1, false),
                kind::STRUCT | kind::UNION | kind::ENUM64 => (12, vlen, true),
                kind::ENUM | kind::FUNC_PROTO => (8, vlen, true),
                kind::DATASEC => (12, vlen, false),
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => (0, 0, false),
                _ => {
                    return Err(bad(format!(
                        "type {id} at byte {pos}: unknown kind {k} (BTF from a newer kernel?)"
                    )))
                }
            };
            // At most 65535 * 12 bytes: no overflow.
            let extra = stride * count;
            if end - t.data < extra {
                return Err(bad(format!(
                    "type {id} ({}) with {vlen} entries needs {extra} bytes but the type section has only {} left",
                    kind_name(k),
                    end - t.data
                )));
            }
            check_name(id, kind_name(k), t.name_off)?;
            if name_in_entry {
                for i in 0..count {
                    let off = read_u32(&data, t.data + i * stride).unwrap_or(0);
                    check_name(id, "member", off)?;
                }
            }
            pos = t.data + extra;
            types.push(t);
        }
        Ok(Btf {
            data,
            strs,
            types,
            source,
        })
    }

    fn malformed(&self, reason: String) -> BtfError {
        BtfError::Malformed {
            file: self.source.clone(),
            reason,
        }
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Whether the string at `off` is exactly `want`.
    fn name_is(&self, off: u32, want: &[u8]) -> bool {
        self.data
            .get(self.strs.clone())
            .and_then(|s| s.get(off as usize..))
            .is_some_and(|s| s.starts_with(want) && s.get(want.len()) == Some(&0))
    }

    fn member(&self, t: &Type, i: usize) -> Result<Member, BtfError> {
        let at = t.data + i * 12;
        let word = |j: usize| read_u32(&self.data, at + 4 * j);
        let (Some(name_off), Some(type_id), Some(raw)) = (word(0), word(1), word(2)) else {
            // Unreachable for parsed data; kept so a logic slip is an error.
            return Err(self.malformed(format!("member {i} lies outside the data")));
        };
        let (bit_offset, bitfield_size) = if t.kind_flag() {
            (raw & 0x00ff_ffff, raw >> 24)
        } else {
            (raw, 0)
        };
        Ok(Member {
            name_off,
            type_id,
            bit_offset,
            bitfield_size,
        })
    }

    /// Follows typedef/const/volatile/restrict/type_tag links to the
    /// underlying type id (0 for void).
    fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let t = self.ty(id).ok_or_else(|| {
                self.malformed(format!(
                    "type id {id} is referenced but there are only {} types",
                    self.types.len()
                ))
            })?;
            match t.kind() {
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(self.malformed(format!(
            "typedef/qualifier chain longer than {MAX_DEPTH} (a cycle?) reaching type {id}"
        )))
    }

    /// The id of the struct or union called `name`: a struct/union of that
    /// name with a non-zero size (FWD declarations have their own kind and
    /// are never matched), else a typedef of that name resolving to a
    /// struct/union (`possible_net_t` is a typedef of an anonymous struct),
    /// else an empty struct/union of that name.
    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        let want = name.as_bytes();
        let mut empty = None;
        let mut typedefs = Vec::new();
        if !want.is_empty() {
            for (i, t) in self.types.iter().enumerate() {
                let k = t.kind();
                if !(t.is_composite() || k == kind::TYPEDEF) || !self.name_is(t.name_off, want) {
                    continue;
                }
                // Ids fit in u32: the type section is at most 4 GiB.
                let id = (i + 1) as u32;
                if k == kind::TYPEDEF {
                    typedefs.push(t.size_or_type);
                } else if t.size_or_type > 0 {
                    return Ok(id);
                } else {
                    empty.get_or_insert(id);
                }
            }
        }
        for target in typedefs {
            let id = self.skip_modifiers(target)?;
            if self.ty(id).is_some_and(Type::is_composite) {
                return Ok(id);
            }
        }
        empty.ok_or_else(|| BtfError::StructNotFound {
            file: self.source.clone(),
            name: name.to_string(),
        })
    }

    /// Finds a member by name in struct/union `comp`, descending into
    /// anonymous struct/union members (C makes their members visible as if
    /// they were the parent's).
    fn find_member(&self, comp: &Type, want: &[u8], depth: u32) -> Result<Option<Hit>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!(
                "anonymous members nested deeper than {MAX_DEPTH} (a cycle?)"
            )));
        }
        for i in 0..comp.vlen() {
            let m = self.member(comp, i)?;
            if self.name_is(m.name_off, want) {
                return Ok(Some(Hit {
                    bit_offset: u64::from(m.bit_offset),
                    member: m,
                    parent_kind_flag: comp.kind_flag(),
                }));
            }
            if !self.name_is(m.name_off, b"") {
                continue;
            }
            let inner = self.skip_modifiers(m.type_id)?;
            if let Some(t) = self.ty(inner).filter(|t| t.is_composite()) {
                if let Some(mut hit) = self.find_member(t, want, depth + 1)? {
                    hit.bit_offset += u64::from(m.bit_offset);
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `member` in struct/union `comp_id`, and the member's
    /// type id. `owner` describes the struct for error messages.
    fn offset_in(&self, comp_id: u32, owner: &str, member: &str) -> Result<(u32, u32), BtfError> {
        let comp = self
            .ty(comp_id)
            .ok_or_else(|| self.malformed(format!("{owner} has an invalid type id {comp_id}")))?;
        let not_found = || BtfError::MemberNotFound {
            file: self.source.clone(),
            owner: owner.to_string(),
            member: member.to_string(),
        };
        if member.is_empty() {
            // An empty name would match anonymous members.
            return Err(not_found());
        }
        let hit = self
            .find_member(comp, member.as_bytes(), 0)?
            .ok_or_else(not_found)?;
        let bitfield = |bits: u32| BtfError::Bitfield {
            file: self.source.clone(),
            owner: owner.to_string(),
            member: member.to_string(),
            bits,
        };
        if hit.member.bitfield_size != 0 {
            return Err(bitfield(hit.member.bitfield_size));
        }
        if !hit.parent_kind_flag {
            // Without kind_flag, a bitfield's base type is an INT whose
            // encoding gives fewer bits than its size (btf.rst).
            if let Some(t) = self
                .ty(hit.member.type_id)
                .filter(|t| t.kind() == kind::INT)
            {
                let enc = read_u32(&self.data, t.data).unwrap_or(0);
                let (bits, bit_in_int) = (enc & 0xff, (enc >> 16) & 0xff);
                if u64::from(bits) != u64::from(t.size_or_type) * 8 || bit_in_int != 0 {
                    return Err(bitfield(bits));
                }
            }
        }
        if hit.bit_offset % 8 != 0 {
            return Err(BtfError::NotByteAligned {
                file: self.source.clone(),
                owner: owner.to_string(),
                member: member.to_string(),
                bit_offset: hit.bit_offset,
            });
        }
        let bytes = u32::try_from(hit.bit_offset / 8).map_err(|_| {
            self.malformed(format!(
                "{owner}: member `{member}` is at bit {}, beyond 4 GiB",
                hit.bit_offset
            ))
        })?;
        Ok((bytes, hit.member.type_id))
    }

    /// Byte offset of `member` within struct `struct_name` (the first
    /// struct/union of that name with a non-zero size, or a typedef of one;
    /// FWD declarations are skipped), looking into anonymous struct/union
    /// members and adding their offsets. Bitfields and members not on a
    /// byte boundary are errors.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self.find_composite(struct_name)?;
        Ok(self
            .offset_in(id, &format!("struct {struct_name}"), member)?
            .0)
    }

    /// Byte offset of a chain of members, each looked up in the type of the
    /// previous one: `["skc_net", "net"]` in `sock_common` is the offset of
    /// `sock_common.skc_net.net`. Following the member's own type avoids
    /// assuming which struct name it has.
    pub fn member_path_offset(&self, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = self.find_composite(struct_name)?;
        let mut owner = format!("struct {struct_name}");
        let mut dotted = struct_name.to_string();
        let mut total = 0u32;
        for (i, member) in path.iter().enumerate() {
            if i > 0 {
                let inner = self.skip_modifiers(id)?;
                if !self.ty(inner).is_some_and(Type::is_composite) {
                    let (parent, last) = dotted.rsplit_once('.').unwrap_or(("", &dotted));
                    return Err(BtfError::NotComposite {
                        file: self.source.clone(),
                        owner: parent.to_string(),
                        member: last.to_string(),
                        next: (*member).to_string(),
                    });
                }
                id = inner;
                owner = format!("the type of {dotted}");
            }
            let (offset, member_type) = self.offset_in(id, &owner, member)?;
            total = total
                .checked_add(offset)
                .ok_or_else(|| self.malformed(format!("offset of {dotted}.{member} overflows")))?;
            id = member_type;
            dotted.push('.');
            dotted.push_str(member);
        }
        Ok(total)
    }

    /// Byte size of struct (or union, or typedef of one) `name`.
    // Part of the API (and what the tests use); the loader needs only offsets.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = self.find_composite(name)?;
        self.ty(id)
            .map(|t| t.size_or_type)
            .ok_or_else(|| self.malformed(format!("struct {name} has an invalid type id {id}")))
    }
}

/// Fills in the offsets that go from the current task and an fd number to
/// the `struct sock` (`task_struct.files`, `files_struct.fdt`, `fdtable.fd`
/// and `.max_fds`, `file.private_data`, `socket.sk`), from the task to its
/// saved registers (`task_struct.stack`), from a socket to its
/// network namespace's inode (`sock_common.skc_net.net`, `net.ns.inum`),
/// and to a packet's IP and TCP headers (`sk_buff.head`, `.network_header`,
/// `.transport_header`, for the segment a RST answers). Unchanged on error.
pub fn fill_kernel_offsets(btf: &Btf, offsets: &mut StructOffsets) -> Result<(), BtfError> {
    *offsets = StructOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        // Only the failed-call programs need it: left unknown (0) rather
        // than failing the rest, and those programs are then off.
        task_stack: btf.member_offset("task_struct", "stack").unwrap_or(0),
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        // Through the members' own types, so this does not depend on the
        // names `possible_net_t` and `ns_common`.
        sock_common_net: btf.member_path_offset("sock_common", &["skc_net", "net"])?,
        net_ns_inum: btf.member_path_offset("net", &["ns", "inum"])?,
        skb_head: btf.member_offset("sk_buff", "head")?,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_transport_header: btf.member_offset("sk_buff", "transport_header")?,
        ..*offsets
    };
    Ok(())
}

/// Fills in what the raw tracepoint reads from the `struct sock` it is
/// given: the fields `sock:inet_sock_set_state` copies. `struct sock`
/// begins with its `sock_common`, and `inet_sock` with its `sock`, so every
/// offset is from the start of the socket. The `sock_common` members (with
/// `sock_common_net`, filled by [`fill_kernel_offsets`]) must lie in the
/// first [`SOCK_HEAD_BYTES`] (the program reads them at once); `inet_sport`
/// comes from the [`INET_SADDR_SPAN`] bytes read at `inet_saddr` when it
/// lies there, else from a read of its own. Unchanged on error (then only
/// the raw program is off).
pub fn fill_sock_offsets(btf: &Btf, offsets: &mut StructOffsets) -> Result<(), BtfError> {
    let filled = StructOffsets {
        skc_family: btf.member_offset("sock_common", "skc_family")?,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        skc_daddr: btf.member_offset("sock_common", "skc_daddr")?,
        skc_dport: btf.member_offset("sock_common", "skc_dport")?,
        skc_v6_daddr: btf.member_offset("sock_common", "skc_v6_daddr")?,
        skc_v6_rcv_saddr: btf.member_offset("sock_common", "skc_v6_rcv_saddr")?,
        inet_saddr: btf.member_offset("inet_sock", "inet_saddr")?,
        inet_sport: btf.member_offset("inet_sock", "inet_sport")?,
        ..*offsets
    };
    let groups = [
        (
            "sock_common.skc_family",
            filled.skc_family,
            2,
            SOCK_HEAD_BYTES,
        ),
        (
            "sock_common.skc_daddr",
            filled.skc_daddr,
            4,
            SOCK_HEAD_BYTES,
        ),
        (
            "sock_common.skc_dport",
            filled.skc_dport,
            2,
            SOCK_HEAD_BYTES,
        ),
        (
            "sock_common.skc_v6_daddr",
            filled.skc_v6_daddr,
            16,
            SOCK_HEAD_BYTES,
        ),
        (
            "sock_common.skc_v6_rcv_saddr",
            filled.skc_v6_rcv_saddr,
            16,
            SOCK_HEAD_BYTES,
        ),
        (
            "sock_common.skc_net",
            filled.sock_common_net,
            8,
            SOCK_HEAD_BYTES,
        ),
        ("inet_sock.inet_saddr", filled.inet_saddr, 4, usize::MAX),
        ("inet_sock.inet_sport", filled.inet_sport, 2, usize::MAX),
    ];
    // The program reads these as aligned 32-bit words and shifts.
    for (member, offset, size, span) in groups {
        let o = offset as usize;
        let what = if o.saturating_add(size) > span {
            format!("at byte {o} lies beyond the {span} bytes the raw program reads at once")
        } else if !o.is_multiple_of(size.min(4)) {
            format!("at byte {o} is not aligned to {} bytes", size.min(4))
        } else {
            continue;
        };
        return Err(BtfError::Layout {
            file: btf.source.clone(),
            what: format!("{member} {what}"),
        });
    }
    *offsets = filled;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF blobs: header, then the type section, then strings.
    struct Builder {
        types: Vec<u8>,
        strs: Vec<u8>,
        next_id: u32,
    }

    /// (name, type id, bit offset, bitfield size) of a member.
    type M<'a> = (&'a str, u32, u32, u32);

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strs: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(s.as_bytes());
            self.strs.push(0);
            off
        }
        fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_ne_bytes());
        }
        fn raw(
            &mut self,
            name: &str,
            k: u8,
            kflag: bool,
            vlen: u32,
            sot: u32,
            extra: &[u32],
        ) -> u32 {
            let n = self.s(name);
            self.word(n);
            self.word(u32::from(kflag) << 31 | u32::from(k) << 24 | vlen);
            self.word(sot);
            for &w in extra {
                self.word(w);
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            self.raw(name, kind::INT, false, 0, bytes, &[bytes * 8])
        }
        fn ptr(&mut self, target: u32) -> u32 {
            self.raw("", kind::PTR, false, 0, target, &[])
        }
        fn composite(&mut self, k: u8, name: &str, size: u32, kflag: bool, members: &[M]) -> u32 {
            let mut extra = Vec::new();
            for &(n, t, off, bf) in members {
                extra.push(self.s(n));
                extra.push(t);
                extra.push(if kflag { bf << 24 | off } else { off });
            }
            self.raw(name, k, kflag, members.len() as u32, size, &extra)
        }
        fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.composite(kind::STRUCT, name, size, false, members)
        }
        fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.composite(kind::UNION, name, size, false, members)
        }
        fn typedef(&mut self, name: &str, target: u32) -> u32 {
            self.raw(name, kind::TYPEDEF, false, 0, target, &[])
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_ne_bytes());
            out.extend_from_slice(&[VERSION, 0]);
            for w in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strs.len() as u32,
            ] {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    fn set_u32(blob: &mut [u8], at: usize, v: u32) {
        blob[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    // Header field positions.
    const HDR_LEN: usize = 4;
    const TYPE_OFF: usize = 8;
    const TYPE_LEN_AT: usize = 12;
    const STR_OFF: usize = 16;
    const STR_LEN: usize = 20;

    /// A miniature kernel with everything `fill_kernel_offsets` needs, laid out
    /// like x86_64 (offsets in bits in the member lists).
    fn mini_kernel() -> Builder {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let uint = b.int("unsigned int", 4);
        let long = b.int("long", 8);
        let void_ptr = b.ptr(0);
        // FWD first: lookups must skip it for the full definition.
        let files_fwd = b.raw("files_struct", kind::FWD, false, 0, 0, &[]);
        let files_fwd_ptr = b.ptr(files_fwd);
        b.strukt(
            "task_struct",
            64,
            &[("pid", int, 0, 0), ("files", files_fwd_ptr, 320, 0)],
        );
        let fdtable = b.strukt(
            "fdtable",
            32,
            &[("max_fds", uint, 0, 0), ("fd", void_ptr, 64, 0)],
        );
        let fdtable_ptr = b.ptr(fdtable);
        // fdt sits inside an anonymous union inside an anonymous struct.
        let anon_union = b.union("", 8, &[("fdt", fdtable_ptr, 0, 0), ("other", long, 0, 0)]);
        let anon_struct = b.strukt("", 16, &[("count", long, 0, 0), ("", anon_union, 64, 0)]);
        b.strukt(
            "files_struct",
            48,
            &[("flags", long, 0, 0), ("", anon_struct, 128, 0)],
        );
        b.strukt(
            "file",
            200,
            &[("f_mode", uint, 0, 0), ("private_data", void_ptr, 1536, 0)],
        );
        b.strukt(
            "socket",
            48,
            &[("state", int, 0, 0), ("sk", void_ptr, 192, 0)],
        );
        let net_fwd = b.raw("net", kind::FWD, false, 0, 0, &[]);
        let net_ptr = b.ptr(net_fwd);
        let anon_pnet = b.strukt("", 8, &[("net", net_ptr, 0, 0)]);
        let pnet = b.typedef("possible_net_t", anon_pnet);
        b.strukt(
            "sock_common",
            136,
            &[("skc_hash", uint, 0, 0), ("skc_net", pnet, 384, 0)],
        );
        let ns_common = b.strukt(
            "ns_common",
            24,
            &[("stashed", long, 0, 0), ("inum", uint, 128, 0)],
        );
        b.strukt(
            "net",
            4096,
            &[("passive", int, 0, 0), ("ns", ns_common, 1024, 0)],
        );
        let u16_ty = b.int("__u16", 2);
        b.strukt(
            "sk_buff",
            232,
            &[
                ("len", uint, 0, 0),
                ("transport_header", u16_ty, 1440, 0),
                ("network_header", u16_ty, 1456, 0),
                ("head", void_ptr, 1600, 0),
            ],
        );
        b
    }

    /// `sock_common`, `sock` and `inet_sock` with what the raw program
    /// reads, x86_64's layout but for the offsets given (in bytes).
    fn sock_kernel(skc_v6_rcv_saddr: u32, inet_sport: u32) -> Btf {
        let mut b = Builder::new();
        let u16_ty = b.int("__u16", 2);
        let u32_ty = b.int("__u32", 4);
        let in6 = b.strukt("in6_addr", 16, &[("s6_addr32", u32_ty, 0, 0)]);
        let common = b.strukt(
            "sock_common",
            136,
            &[
                ("skc_daddr", u32_ty, 0, 0),
                ("skc_rcv_saddr", u32_ty, 32, 0),
                ("skc_dport", u16_ty, 96, 0),
                ("skc_num", u16_ty, 112, 0),
                ("skc_family", u16_ty, 128, 0),
                ("skc_v6_daddr", in6, 448, 0),
                ("skc_v6_rcv_saddr", in6, skc_v6_rcv_saddr * 8, 0),
            ],
        );
        let sock = b.strukt(
            "sock",
            760,
            &[
                ("__sk_common", common, 0, 0),
                ("sk_protocol", u16_ty, 4080, 0),
            ],
        );
        b.strukt(
            "inet_sock",
            1000,
            &[
                ("sk", sock, 0, 0),
                ("inet_saddr", u32_ty, 784 * 8, 0),
                ("inet_sport", u16_ty, inet_sport * 8, 0),
            ],
        );
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn sock_offsets_must_fit_what_the_program_reads_at_once() {
        let net = StructOffsets {
            sock_common_net: 48,
            ..StructOffsets::zeroed()
        };
        let mut ok = net;
        fill_sock_offsets(&sock_kernel(72, 790), &mut ok).unwrap();
        assert_eq!(
            (
                ok.skc_v6_rcv_saddr,
                ok.sk_protocol,
                ok.skc_family,
                ok.inet_saddr,
                ok.inet_sport
            ),
            (72, 510, 16, 784, 790)
        );
        assert!(ok.sport_in_saddr_span(), "+6: read with inet_saddr");
        // Wherever the port lies (6.1 has it 20 bytes after the address),
        // the raw program can read it: with the address, or on its own.
        for (sport, with_saddr) in [(798, true), (800, false), (804, false), (780, false)] {
            let mut k = net;
            fill_sock_offsets(&sock_kernel(72, sport), &mut k).unwrap();
            assert_eq!(k.inet_sport, sport);
            assert_eq!(k.sport_in_saddr_span(), with_saddr, "inet_sport at {sport}");
        }
        for (v6, sport, want) in [
            (120, 790, "beyond the 128 bytes"),
            (74, 790, "not aligned to 4 bytes"),
            (72, 791, "not aligned to 2 bytes"),
        ] {
            let mut k = net;
            let err = fill_sock_offsets(&sock_kernel(v6, sport), &mut k).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(k, net, "left unchanged by the failure");
        }
    }

    #[test]
    fn kernel_offsets_from_synthetic_btf() {
        let btf = Btf::parse(&mini_kernel().build()).unwrap();
        let mut k = StructOffsets::zeroed();
        fill_kernel_offsets(&btf, &mut k).unwrap();
        let before = k;
        assert!(
            fill_sock_offsets(&btf, &mut k).is_err(),
            "the mini kernel has no struct sock"
        );
        assert_eq!(k, before, "left unchanged by the failure");
        assert_eq!(
            k,
            StructOffsets {
                task_files: 40,
                files_fdt: 16 + 8,
                fdtable_fd: 8,
                fdtable_max_fds: 0,
                file_private_data: 192,
                socket_sk: 24,
                sock_common_net: 48,
                net_ns_inum: 128 + 16,
                skb_head: 200,
                skb_network_header: 182,
                skb_transport_header: 180,
                ..StructOffsets::zeroed()
            }
        );
    }

    #[test]
    fn plain_member_and_size() {
        let btf = Btf::parse(&mini_kernel().build()).unwrap();
        assert_eq!(btf.member_offset("task_struct", "pid").unwrap(), 0);
        assert_eq!(btf.member_offset("task_struct", "files").unwrap(), 40);
        assert_eq!(btf.struct_size("task_struct").unwrap(), 64);
        assert_eq!(btf.struct_size("net").unwrap(), 4096);
    }

    #[test]
    fn member_inside_anonymous_members_adds_offsets() {
        let btf = Btf::parse(&mini_kernel().build()).unwrap();
        // files_struct: anon struct at 16, anon union at +8, fdt at +0.
        assert_eq!(btf.member_offset("files_struct", "fdt").unwrap(), 24);
        assert_eq!(btf.member_offset("files_struct", "other").unwrap(), 24);
        assert_eq!(btf.member_offset("files_struct", "count").unwrap(), 16);
    }

    #[test]
    fn fwd_declaration_skipped() {
        let btf = Btf::parse(&mini_kernel().build()).unwrap();
        // The FWD `files_struct` comes first.
        assert_eq!(btf.struct_size("files_struct").unwrap(), 48);
        // A name with only a FWD is not found.
        let mut b = Builder::new();
        b.raw("opaque", kind::FWD, false, 0, 0, &[]);
        let btf = Btf::parse(&b.build()).unwrap();
        let e = btf.struct_size("opaque").unwrap_err();
        assert!(matches!(e, BtfError::StructNotFound { .. }), "{e}");
    }

    #[test]
    fn typedef_of_anonymous_struct() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let anon = b.strukt("", 8, &[("a", int, 0, 0), ("net", int, 32, 0)]);
        // Through a const as well as typedef chains.
        let c = b.raw("", kind::CONST, false, 0, anon, &[]);
        let inner = b.typedef("inner_t", c);
        b.typedef("possible_net_t", inner);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("possible_net_t", "net").unwrap(), 4);
        assert_eq!(btf.struct_size("possible_net_t").unwrap(), 8);
        // A typedef of a non-struct is not a struct.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.typedef("pid_t", int);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.struct_size("pid_t"),
            Err(BtfError::StructNotFound { .. })
        ));
    }

    #[test]
    fn empty_struct_found_when_nothing_else() {
        let mut b = Builder::new();
        b.strukt("lock_class_key", 0, &[]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.struct_size("lock_class_key").unwrap(), 0);
    }

    #[test]
    fn bitfields_rejected() {
        let mut b = Builder::new();
        let uint = b.int("unsigned int", 4);
        let u8t = b.int("u8", 1);
        b.composite(
            kind::STRUCT,
            "sock",
            16,
            true,
            &[
                ("sk_state", u8t, 8, 0),
                ("sk_flags", uint, 19, 5),
                ("sk_aligned_bf", uint, 32, 8),
                ("sk_mark", uint, 64, 0),
            ],
        );
        // The old encoding: no kind_flag, an INT of fewer bits.
        let three_bits = b.raw("", kind::INT, false, 0, 4, &[3]);
        b.strukt("old", 8, &[("bf", three_bits, 0, 0), ("odd", u8t, 12, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("sock", "sk_state").unwrap(), 1);
        assert_eq!(btf.member_offset("sock", "sk_mark").unwrap(), 8);
        for (s, m, bits) in [
            ("sock", "sk_flags", 5),
            ("sock", "sk_aligned_bf", 8),
            ("old", "bf", 3),
        ] {
            let e = btf.member_offset(s, m).unwrap_err();
            assert!(
                matches!(e, BtfError::Bitfield { bits: b, .. } if b == bits),
                "{e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(s) && msg.contains(m) && msg.contains("bitfield"),
                "{msg}"
            );
        }
        let e = btf.member_offset("old", "odd").unwrap_err();
        assert!(
            matches!(e, BtfError::NotByteAligned { bit_offset: 12, .. }),
            "{e}"
        );
    }

    #[test]
    fn missing_struct_and_member_errors_name_them() {
        let btf = Btf::parse(&mini_kernel().build()).unwrap();
        let e = btf.member_offset("no_such_struct", "x").unwrap_err();
        assert!(matches!(e, BtfError::StructNotFound { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("no_such_struct") && msg.contains(IN_MEMORY),
            "{msg}"
        );

        let e = btf
            .member_offset("task_struct", "no_such_member")
            .unwrap_err();
        assert!(matches!(e, BtfError::MemberNotFound { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("task_struct") && msg.contains("no_such_member"),
            "{msg}"
        );

        // An empty member name must not match anonymous members.
        assert!(btf.member_offset("files_struct", "").is_err());
        assert!(btf.struct_size("").is_err());

        let e = btf
            .member_path_offset("sock_common", &["skc_net", "nope"])
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sock_common.skc_net") && msg.contains("nope"),
            "{msg}"
        );
        let e = btf
            .member_path_offset("socket", &["state", "x"])
            .unwrap_err();
        assert!(matches!(e, BtfError::NotComposite { .. }), "{e}");
        assert!(e.to_string().contains("`state`"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let e = Btf::from_file(Path::new("/nonexistent/btf/vmlinux")).unwrap_err();
        assert!(matches!(e, BtfError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/btf/vmlinux"), "{e}");
    }

    fn assert_malformed(blob: &[u8], what: &str) {
        match Btf::parse(blob) {
            Err(BtfError::Malformed { .. } | BtfError::BadMagic { .. }) => {}
            other => panic!("{what}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn hostile_headers() {
        let good = mini_kernel().build();
        assert!(Btf::parse(&good).is_ok());
        assert_malformed(&[], "empty");
        assert_malformed(&good[..10], "short header");
        assert_malformed(&good[..HEADER_LEN - 1], "header minus one");

        let mut bad = good.clone();
        bad[0] ^= 0xff;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadMagic { .. })));
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        let e = Btf::parse(&swapped).unwrap_err();
        assert!(e.to_string().contains("other byte order"), "{e}");

        let mut v = good.clone();
        v[2] = 2;
        assert_malformed(&v, "version");

        let len = good.len() as u32;
        let cases: &[(usize, u32, &str)] = &[
            (HDR_LEN, 0, "hdr_len 0"),
            (HDR_LEN, 23, "hdr_len 23"),
            (HDR_LEN, len + 1, "hdr_len past end"),
            (HDR_LEN, u32::MAX, "hdr_len max"),
            (TYPE_OFF, len, "type_off past end"),
            (TYPE_OFF, u32::MAX, "type_off max"),
            (TYPE_LEN_AT, len, "type_len past end"),
            (TYPE_LEN_AT, u32::MAX, "type_len max"),
            (STR_OFF, len, "str_off past end"),
            (STR_OFF, u32::MAX, "str_off max"),
            (STR_LEN, len, "str_len past end"),
            (STR_LEN, u32::MAX, "str_len max"),
            (STR_LEN, 0, "no strings"),
        ];
        for &(at, value, what) in cases {
            let mut blob = good.clone();
            set_u32(&mut blob, at, value);
            assert_malformed(&blob, what);
        }
        // String section not NUL-terminated.
        let mut blob = good.clone();
        let last = blob.len() - 1;
        blob[last] = b'x';
        assert_malformed(&blob, "unterminated strings");
    }

    #[test]
    fn hostile_types() {
        // Type name offset past the strings.
        let mut b = Builder::new();
        b.raw("", kind::STRUCT, false, 0, 4, &[]);
        let mut blob = b.build();
        set_u32(&mut blob, HEADER_LEN, 1000);
        assert_malformed(&blob, "type name offset");

        // Member name offset past the strings.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("s", 4, &[("m", int, 0, 0)]);
        let mut blob = b.build();
        // int: 12 + 4 bytes; struct header 12; member name at +0.
        set_u32(&mut blob, HEADER_LEN + 16 + 12, u32::MAX);
        assert_malformed(&blob, "member name offset");

        // vlen far larger than the data.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.raw("s", kind::STRUCT, false, 0xffff, 4, &[0, int, 0]);
        assert_malformed(&b.build(), "huge vlen");

        // Type section ending mid-record (strings stay where they are).
        let mut blob = mini_kernel().build();
        for cut in [1, 4, 11, 13] {
            let type_len =
                u32::from_ne_bytes(blob[TYPE_LEN_AT..TYPE_LEN_AT + 4].try_into().unwrap());
            let mut t = blob.clone();
            set_u32(&mut t, TYPE_LEN_AT, type_len - cut);
            assert_malformed(&t, "truncated type section");
        }
        // Unknown kinds.
        for k in [0u8, 20, 31] {
            let mut b = Builder::new();
            b.raw("x", k, false, 0, 0, &[]);
            assert_malformed(&b.build(), "unknown kind");
        }
        // Enum with too few entries present.
        let mut b = Builder::new();
        b.raw("e", kind::ENUM, false, 3, 4, &[0, 1, 0, 2]);
        assert_malformed(&b.build(), "short enum");
        blob.truncate(HEADER_LEN + 5);
        assert_malformed(&blob, "truncated file");
    }

    #[test]
    fn hostile_references_are_errors_not_hangs() {
        let mut b = Builder::new();
        // Typedef cycle: 1 -> 2 -> 1.
        b.typedef("loop_a", 2);
        b.typedef("loop_b", 1);
        // Anonymous member whose type is its own struct.
        b.strukt("selfish", 8, &[("", 3, 0, 0)]);
        // Member pointing at a type id that does not exist.
        b.strukt("dangling", 8, &[("", 999, 0, 0), ("x", 1000, 0, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(btf.struct_size("loop_a").is_err());
        assert!(btf.member_offset("selfish", "x").is_err());
        assert!(btf.member_offset("dangling", "y").is_err());
        assert!(btf.member_path_offset("dangling", &["x", "y"]).is_err());
    }

    /// Deterministic xorshift64 so the fuzz tests need no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Runs every lookup; only the absence of panics is checked.
    fn poke(btf: &Btf) {
        let _ = fill_kernel_offsets(btf, &mut StructOffsets::zeroed());
        for name in [
            "task_struct",
            "files_struct",
            "possible_net_t",
            "loop_a",
            "int",
        ] {
            let _ = btf.struct_size(name);
            let _ = btf.member_offset(name, "fdt");
            let _ = btf.member_path_offset(name, &["skc_net", "net"]);
        }
    }

    #[test]
    fn random_bytes_are_rejected() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5000 {
            let len = rng.below(400);
            let blob: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(Btf::parse(&blob).is_err(), "{blob:?}");
        }
    }

    #[test]
    fn random_bodies_and_mutations_never_panic() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let good = mini_kernel().build();
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut blob = good.clone();
            if round % 2 == 0 {
                // Flip a few bytes anywhere, header included.
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(blob.len());
                    blob[i] = rng.next() as u8;
                }
            } else {
                // A valid header over random sections.
                blob.truncate(HEADER_LEN);
                let body = rng.below(300);
                blob.extend((0..body).map(|_| rng.next() as u8));
                let n = blob.len() as u32 - HEADER_LEN as u32;
                let t = rng.below(n as usize + 1) as u32;
                set_u32(&mut blob, TYPE_OFF, 0);
                set_u32(&mut blob, TYPE_LEN_AT, t);
                set_u32(&mut blob, STR_OFF, t);
                set_u32(&mut blob, STR_LEN, n - t);
                if let Some(b) = blob.get_mut(HEADER_LEN + t as usize) {
                    *b = 0;
                }
                if let Some(b) = blob.last_mut() {
                    *b = 0;
                }
            }
            if let Ok(btf) = Btf::parse(&blob) {
                parsed += 1;
                poke(&btf);
            }
        }
        // Most single-byte mutations leave the data parseable, so lookups
        // on corrupted-but-accepted data really were exercised.
        assert!(parsed > 1000, "only {parsed} mutated blobs parsed");
    }

    #[test]
    fn real_vmlinux() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("{VMLINUX_BTF} does not exist; skipping");
            return;
        }
        let start = std::time::Instant::now();
        let btf = match Btf::from_file(path) {
            Err(BtfError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                eprintln!("{VMLINUX_BTF} is not readable; skipping");
                return;
            }
            other => other.unwrap(),
        };
        let parsed = start.elapsed();
        let mut k = StructOffsets::zeroed();
        fill_kernel_offsets(&btf, &mut k).unwrap();
        let total = start.elapsed();
        eprintln!("{btf:?}: read+parse {parsed:?}, with offsets {total:?}");
        eprintln!("{k:#?}");
        assert!(k.task_files > 0);
        assert!(k.task_stack > 0);
        assert!(k.files_fdt > 0);
        assert!(k.fdtable_fd > 0, "fd follows max_fds");
        assert!(k.file_private_data > 0);
        assert!(k.socket_sk > 0);
        assert!(k.net_ns_inum > 0);
        assert!(k.task_files < btf.struct_size("task_struct").unwrap());
        assert!(k.file_private_data < btf.struct_size("file").unwrap());
        assert!(k.net_ns_inum < btf.struct_size("net").unwrap());
        // The path-through-types result matches looking the types up by name.
        assert_eq!(
            k.sock_common_net,
            btf.member_offset("sock_common", "skc_net").unwrap()
                + btf.member_offset("possible_net_t", "net").unwrap()
        );
        assert_eq!(
            k.net_ns_inum,
            btf.member_offset("net", "ns").unwrap()
                + btf.member_offset("ns_common", "inum").unwrap()
        );
        // Members reached through anonymous unions/structs in the real kernel.
        assert!(btf.member_offset("sock_common", "skc_daddr").is_ok());
        assert!(btf.member_offset("sock_common", "skc_dport").is_ok());
        // What the raw tracepoint reads; the fixed parts of x86-64's layout.
        let mut s = StructOffsets::zeroed();
        fill_sock_offsets(&btf, &mut s).unwrap();
        eprintln!("{s:#?}");
        assert_eq!((s.skc_daddr, s.skc_dport, s.skc_family), (0, 12, 16));
        assert!(s.inet_saddr >= btf.struct_size("sock").unwrap());
        assert!(s.inet_sport > s.inet_saddr && s.inet_sport < s.inet_saddr + 16);
        assert!(s.skc_v6_rcv_saddr as usize + 16 <= SOCK_HEAD_BYTES);
        assert!(s.sk_protocol < btf.struct_size("sock").unwrap());
    }
}
