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
const SENDER: &str = include_str!("scripts/bad_input_sender.py");

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
