//! Server threads: one per listening address; each accepts, and either
//! reads to EOF then closes (the client closes first) or closes at once.
use super::{args::Closer, netns};
use socket2::{Domain, Socket, Type};
use std::{
    io::Read,
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// A bound, listening socket (non-blocking, so its thread can notice the
/// end of the run).
pub fn listen(addr: SocketAddrV4) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Makes the listeners inside `netns` (if any), on one port for all
/// addresses (the first one's ephemeral port), and starts a thread each.
pub fn start(
    addrs: &[std::net::Ipv4Addr],
    netns: Option<&str>,
    closer: Closer,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(u16, Vec<JoinHandle<()>>)> {
    let addrs = addrs.to_vec();
    let ns = netns.map(str::to_string);
    // Sockets belong to the namespace of the thread that creates them.
    let listeners = netns::run_in(ns.as_deref(), move || {
        let first = listen(SocketAddrV4::new(addrs[0], 0))?;
        let port = first
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or(0);
        let mut all = vec![first];
        for addr in &addrs[1..] {
            all.push(listen(SocketAddrV4::new(*addr, port))?);
        }
        Ok::<_, std::io::Error>((port, all))
    })?;
    let (port, sockets) = listeners;
    let threads = sockets
        .into_iter()
        .map(|socket| {
            let stop = stop.clone();
            std::thread::spawn(move || serve(socket, closer, &stop))
        })
        .collect();
    Ok((port, threads))
}

fn serve(listener: Socket, closer: Closer, stop: &AtomicBool) {
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        while let Ok((conn, _)) = listener.accept() {
            match closer {
                Closer::Server => drop(conn),
                Closer::Client => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut stream: TcpStream = conn.into();
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
        }
    }
}
