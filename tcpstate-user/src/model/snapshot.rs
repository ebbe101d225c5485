//! Sockets that exist before tracing starts (from `/proc/net/tcp*` or
//! sock_diag), so that the model does not start blind.
use super::owner::Owner;
use crate::{addr::Endpoint, tcp::Family, tcp::TcpState};

/// One socket from the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingSocket {
    /// The identifier transitions will carry for this socket (the kernel
    /// address, e.g. the `sk` column of /proc/net/tcp when kptr_restrict
    /// allows). None when unknown: the socket is then matched to its first
    /// transition by 4-tuple (or, for a listener, by local endpoint).
    pub skaddr_or_cookie: Option<u64>,
    /// Network namespace inode of the snapshot's reader.
    pub netns: u32,
    pub family: Family,
    pub state: TcpState,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// Its `how` is replaced by [`OwnerHow::Snapshot`](super::OwnerHow).
    pub owner: Option<Owner>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExistingSocketError {
    /// CLOSE (unconnected sockets) and NEW_SYN_RECV (request sockets) are not
    /// connections the model tracks.
    #[error("sockets in state {0} are not tracked")]
    UnsupportedState(TcpState),
    /// A TIME_WAIT socket without both ends cannot be keyed.
    #[error("a TIME_WAIT socket needs both endpoints")]
    IncompleteTuple,
}
