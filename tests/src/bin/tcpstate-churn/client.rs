//! Client threads: connect, then close at once (the client closes first)
//! or read to EOF and close (the server closes first); saturating, or paced
//! to a fixed offered load.
use super::args::Closer;
use socket2::{Domain, Socket, Type};
use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// What every client thread shares.
pub struct Plan {
    pub closer: Closer,
    pub listeners: Vec<Ipv4Addr>,
    pub port: u16,
    /// Empty: let connect() pick the source address.
    pub sources: Vec<Ipv4Addr>,
    pub threads: usize,
    /// Connections/s per thread; 0 saturates.
    pub rate_per_thread: f64,
    pub deadline: Instant,
    /// Connections started so far, over all threads (bounded by `count`).
    pub started: AtomicU64,
    pub count: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub connections: u64,
    pub errors: u64,
    pub first_error: Option<i32>,
    pub finished: Option<Instant>,
}

pub fn run(plan: &Plan, thread: usize) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut buf = [0u8; 256];
    for k in 0u64.. {
        if plan.rate_per_thread > 0.0 {
            let due = start + Duration::from_secs_f64(k as f64 / plan.rate_per_thread);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due.min(plan.deadline) - now);
            }
        }
        if Instant::now() >= plan.deadline
            || plan.started.fetch_add(1, Ordering::Relaxed) >= plan.count
        {
            break;
        }
        let n = k as usize * plan.threads + thread;
        let dst = plan.listeners[n % plan.listeners.len()];
        let src = (!plan.sources.is_empty()).then(|| plan.sources[n % plan.sources.len()]);
        match connect(src, SocketAddrV4::new(dst, plan.port)) {
            Ok(stream) => {
                if plan.closer == Closer::Server {
                    let mut stream = stream;
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
                out.connections += 1;
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.raw_os_error().unwrap_or(0));
                // Do not spin on a persistent failure.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    out.finished = Some(Instant::now());
    out
}

fn connect(src: Option<Ipv4Addr>, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(src) = src {
        // Choose the port at connect() time, for the whole 4-tuple: a
        // plain bind() would pick a port unique per address and run out.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    }
    socket.connect_timeout(&SocketAddr::V4(dst).into(), Duration::from_secs(2))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(socket.into())
}
