//! Bounded connection workloads on loopback.
use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
};

/// Transitions one loopback connection produces when the client closes first
/// (client 5, server child 5).
pub const TRANSITIONS_PER_CONNECTION: usize = 10;
/// The listener's CLOSE→LISTEN and LISTEN→CLOSE.
pub const LISTENER_TRANSITIONS: usize = 2;

/// A listener on 127.0.0.1 with an ephemeral port, bound but not listening
/// yet, so a tracer can be started on its port before anything happens.
pub fn bound_listener() -> (socket2::Socket, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("inet");
    (socket, addr)
}

/// Listens on `socket` and makes `count` connections to it, one after the
/// other; the client closes first, the server reads EOF and closes. Returns
/// when all sockets are closed (the listener too).
pub fn client_closes_first(socket: socket2::Socket, count: usize) {
    socket.listen(1024).expect("listen");
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().expect("local_addr");
    let server: JoinHandle<()> = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut child, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            while child.read(&mut buf).expect("read") > 0 {}
        }
    });
    for _ in 0..count {
        drop(TcpStream::connect(addr).expect("connect"));
    }
    server.join().expect("server thread");
}
