//! Varints, zigzag, registers and the bounds-checked [`Cursor`].
use super::*;

#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A netns as a varint: 0 = the same as the `last` register, else netns + 1.
#[inline]
pub(super) fn put_netns(out: &mut Vec<u8>, last: &mut u32, netns: u32) {
    if netns == *last {
        out.push(0);
    } else {
        put_varint(out, u64::from(netns) + 1);
        *last = netns;
    }
}

/// A reading position in a payload.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn err(&self, what: &'static str) -> CodecError {
        CodecError { at: self.pos, what }
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.err("payload ends inside a record")),
        }
    }

    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(self.err("payload ends inside a record")),
        }
    }

    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn u64_le(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An unsigned LEB128 number of at most 10 bytes that fits in a u64.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let first = self.u8()?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.err("number over 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    #[inline]
    pub fn varint_u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| self.err("number over 32 bits"))
    }

    #[inline]
    pub(super) fn zigzag(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }

    #[inline]
    pub(super) fn netns(&mut self, last: &mut u32) -> Result<u32, CodecError> {
        match self.varint()? {
            0 => Ok(*last),
            x => {
                let netns = u32::try_from(x - 1).map_err(|_| self.err("netns over 32 bits"))?;
                *last = netns;
                Ok(netns)
            }
        }
    }

    pub(super) fn state(&mut self) -> Result<TcpState, CodecError> {
        let raw = self.u8()?;
        TcpState::from_raw(raw).ok_or(self.err("unknown TCP state"))
    }
}
