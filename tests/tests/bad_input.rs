//! Malformed, truncated and oversized input from the network and from the
//! control socket: each is dropped, and the agents go on serving.

use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// Sends byte strings to host1's agent, each on its own connection (TCP
/// port 7070, then the control socket), one connection left open and
/// silent meanwhile. With `plain`, the TCP ones follow a valid plaintext
/// preamble, so that they reach the frame decoder of an `--insecure` agent;
/// otherwise they meet the handshake (some are broken handshakes).
const SENDER: &str = r#"
import socket, struct, sys, time
def hdr(kind, length):
    return b"MGRT" + struct.pack("<HHQ", kind, 0, length)
bad = [
    b"GET / HTTP/1.0\r\n\r\n",
    hdr(1, 1 << 40),
    hdr(2, 1 << 40),
    hdr(9, 16),
    hdr(1, 64) + b"\xff" * 10,
    hdr(1, 8) + b"\xff" * 8,
    hdr(2, 16 + 4096) + struct.pack("<QI", 0x1001, 3) + b"\0" * 4,
    b"\0" * 100000,
    b"MGL1N" + b"\x00\x20" + b"\x01" * 32,
    b"MGL1N" + b"\xff\xff" + b"\x00" * 10,
    b"MGL1N" + b"\x00\x20" + b"\x01" * 32 + b"\x00\x40" + b"\x02" * 64,
    b"MGL1P" + hdr(1, 1 << 40),
    b"MGL1X",
]
prefix = b"MGL1P" if sys.argv[1] == "plain" else b""
idle = socket.create_connection(("10.77.0.1", 7070), timeout=5)
for b in bad:
    for target in ("tcp", "unix"):
        if target == "tcp":
            s = socket.create_connection(("10.77.0.1", 7070), timeout=5)
            b = prefix + b
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect("/run/migrate/agent.sock")
        try:
            s.sendall(b)
            s.shutdown(socket.SHUT_WR)
            s.recv(4096)
        except OSError:
            pass
        s.close()
print("sent", len(bad) * 2)
"#;

#[test]
fn garbage_from_the_network_and_the_socket_leaves_the_agents_serving() {
    require_lab!();
    garbage_leaves_the_agents_serving(Cluster::start(), "secure");
}

#[test]
fn garbage_reaching_the_frame_decoders_leaves_insecure_agents_serving() {
    require_lab!();
    garbage_leaves_the_agents_serving(
        Cluster::start_with([&["--insecure"], &["--insecure"]]),
        "plain",
    );
}

fn garbage_leaves_the_agents_serving(c: Cluster, mode: &str) {
    let agents: Vec<i32> = c.agents.iter().map(agent_outer_pid).collect();
    let out = c
        .h1()
        .command("python3")
        .args(["-c", SENDER, mode])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent 26"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same agents, still serving: a migration goes through and verifies.
    for (a, pid) in agents.iter().enumerate() {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "agent {a} died"
        );
    }
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w.wait_for("ready 16", 60));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 30));
    assert!(w.text().contains("verify ok 4096"), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
    assert_eq!(
        c.agents.iter().map(agent_outer_pid).collect::<Vec<_>>(),
        agents
    );
}
