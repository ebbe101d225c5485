//! The per-block tables both item and snapshot payloads share: addresses and comms.
use super::*;

/// A comm's significant bytes: all of them up to the last non-zero one, so
/// that any 16-byte value round-trips exactly.
pub(super) fn comm_len(comm: &[u8; 16]) -> usize {
    16 - comm.iter().rev().take_while(|&&b| b == 0).count()
}

#[derive(Default)]
pub(super) struct EncTables {
    ips: HashMap<IpAddr, u32>,
    comms: HashMap<[u8; 16], u32>,
}

impl EncTables {
    pub(super) fn clear(&mut self) {
        self.ips.clear();
        self.comms.clear();
    }

    /// 0: IPv4 literal (4 bytes); 1: IPv6 literal (16 bytes); k >= 2: the
    /// (k-2)th address introduced in this block.
    pub(super) fn ip(&mut self, out: &mut Vec<u8>, ip: IpAddr) {
        if let Some(&k) = self.ips.get(&ip) {
            put_varint(out, u64::from(k) + 2);
            return;
        }
        match ip {
            IpAddr::V4(v4) => {
                out.push(0);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(1);
                out.extend_from_slice(&v6.octets());
            }
        }
        let k = self.ips.len() as u32;
        self.ips.insert(ip, k);
    }

    pub(super) fn endpoint(&mut self, out: &mut Vec<u8>, ep: &Endpoint) {
        self.ip(out, ep.ip);
        out.extend_from_slice(&ep.port.to_le_bytes());
    }

    /// 0: literal (length byte 0..=16, bytes); k >= 1: the (k-1)th comm
    /// introduced in this block.
    pub(super) fn comm(&mut self, out: &mut Vec<u8>, comm: &Comm) {
        if let Some(&k) = self.comms.get(&comm.0) {
            put_varint(out, u64::from(k) + 1);
            return;
        }
        out.push(0);
        let len = comm_len(&comm.0);
        out.push(len as u8);
        out.extend_from_slice(&comm.0[..len]);
        let k = self.comms.len() as u32;
        self.comms.insert(comm.0, k);
    }
}

#[derive(Default)]
pub(super) struct DecTables {
    ips: Vec<IpAddr>,
    comms: Vec<Comm>,
}

impl DecTables {
    pub(super) fn clear(&mut self) {
        self.ips.clear();
        self.comms.clear();
    }

    #[inline]
    pub(super) fn ip(&mut self, cur: &mut Cursor) -> Result<IpAddr, CodecError> {
        match cur.varint()? {
            0 => {
                let ip = IpAddr::V4(Ipv4Addr::from(cur.array::<4>()?));
                self.ips.push(ip);
                Ok(ip)
            }
            1 => {
                let ip = IpAddr::V6(Ipv6Addr::from(cur.array::<16>()?));
                self.ips.push(ip);
                Ok(ip)
            }
            k => usize::try_from(k - 2)
                .ok()
                .and_then(|k| self.ips.get(k).copied())
                .ok_or(cur.err("address reference out of range")),
        }
    }

    #[inline]
    pub(super) fn endpoint(&mut self, cur: &mut Cursor) -> Result<Endpoint, CodecError> {
        let ip = self.ip(cur)?;
        Ok(Endpoint::new(ip, cur.u16()?))
    }

    pub(super) fn comm(&mut self, cur: &mut Cursor) -> Result<Comm, CodecError> {
        match cur.varint()? {
            0 => {
                let len = usize::from(cur.u8()?);
                if len > 16 {
                    return Err(cur.err("comm longer than 16 bytes"));
                }
                let mut comm = Comm::default();
                comm.0[..len].copy_from_slice(cur.bytes(len)?);
                self.comms.push(comm);
                Ok(comm)
            }
            k => usize::try_from(k - 1)
                .ok()
                .and_then(|k| self.comms.get(k).copied())
                .ok_or(cur.err("comm reference out of range")),
        }
    }
}
