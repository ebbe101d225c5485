//! Containers and namespaces: the same 4-tuple in two network namespaces is
//! two connections, each with its namespace; `--netns` selects one; owners
//! carry their cgroup.
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use tcpstate_tests::{
    netns::{in_netns, NetnsPair, CLIENT_V4, SERVER_V4},
    require_root,
    running::Running,
};

const PORT: u16 = 8080;

/// A server in `pair`'s server namespace and one connection to it from its
/// client namespace, closed by the client.
fn one_connection(pair: &NetnsPair) {
    let server = SocketAddr::from((SERVER_V4, PORT));
    let listener = in_netns(Some(&pair.server), move || {
        TcpListener::bind(server).expect("bind")
    });
    let client = in_netns(Some(&pair.client), move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from((CLIENT_V4, 40_000)).into())
            .unwrap();
        socket
    });
    client.connect(&server.into()).expect("connect");
    let (child, _) = listener.accept().expect("accept");
    drop(TcpStream::from(client));
    let mut child = child;
    use std::io::Read;
    let mut buf = [0u8; 8];
    while child.read(&mut buf).unwrap_or(0) > 0 {}
}

fn ns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap()
        .ino()
}

#[test]
fn same_tuple_in_two_namespaces_is_two_connections() {
    require_root();
    let (a, b) = (NetnsPair::create(), NetnsPair::create());
    let all = Running::start(&["life", "--json"]);
    let only_a = Running::start(&["life", "--json", "--netns", &a.server]);
    one_connection(&a);
    one_connection(&b);
    std::thread::sleep(tcpstate_tests::millis(500));
    let (lines, stderr, status) = all.interrupt();
    assert!(status.success(), "{stderr:?}");
    let (lines_a, _, status) = only_a.interrupt();
    assert!(status.success());

    let parse = |lines: &[String]| -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|c| c["lport"] == PORT && c["laddr"] == SERVER_V4.to_string())
            .collect()
    };
    let servers = parse(&lines);
    assert_eq!(
        servers.len(),
        2,
        "one server-side connection per namespace: {servers:#?}"
    );
    let (first, second) = (&servers[0], &servers[1]);
    for key in ["laddr", "lport", "raddr", "rport"] {
        assert_eq!(first[key], second[key], "the same 4-tuple");
    }
    let mut namespaces: Vec<u64> = servers
        .iter()
        .map(|c| c["netns"].as_u64().unwrap())
        .collect();
    namespaces.sort();
    let mut expected = vec![ns_inode(&a.server), ns_inode(&b.server)];
    expected.sort();
    assert_eq!(namespaces, expected, "each connection names its namespace");
    assert_ne!(first["id"], second["id"]);
    // The accepting process (this test) owns both, with its cgroup.
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for c in &servers {
        assert_eq!(c["owner"]["tgid"], std::process::id(), "{c}");
        if own_cgroup.starts_with("0::") {
            assert_ne!(c["owner"]["cgroup_id"], 0, "the owner's cgroup: {c}");
        }
    }

    let in_a = parse(&lines_a);
    assert_eq!(in_a.len(), 1, "--netns keeps one namespace: {in_a:#?}");
    assert_eq!(in_a[0]["netns"].as_u64(), Some(ns_inode(&a.server)));
}
