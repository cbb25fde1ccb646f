//! Agents stop without losing a migration: SIGTERM drains (no new
//! migration, those in flight finish on either side, post-copy included,
//! then the agent exits), telling the service manager READY=1 and
//! STOPPING=1; SIGHUP re-reads the peers.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use migrate_tests::bins::bin;
use migrate_tests::lab::{Lab, AGENT_PORT};
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// A socket standing in for systemd's `NOTIFY_SOCKET`.
struct Notifications {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    fn bind(path: PathBuf) -> Notifications {
        let sock = UnixDatagram::bind(&path).expect("notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications { sock, path }
    }

    /// Every state received so far (waiting up to `secs` for one that
    /// contains `needle`).
    fn until(&self, needle: &str, secs: u64) -> Vec<String> {
        let mut got = Vec::new();
        wait_until(secs, || {
            let mut buf = [0u8; 512];
            while let Ok(n) = self.sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            got.iter().any(|s| s.contains(needle))
        });
        got
    }
}

/// SIGTERM to the agent on `host` ("host1": the source, "host2": the
/// destination) during a slow post-copy.
fn a_drained_agent_finishes_the_postcopy(host: &str) {
    let lab = Lab::start().expect("lab");
    let auth = lab.shared_dir().join("cluster");
    let auth = auth.to_string_lossy().into_owned();
    let notify = Notifications::bind(lab.shared_dir().join("notify.sock"));
    let notify_path = notify.path.to_string_lossy().into_owned();
    let env: &[(&str, &str)] = &[("NOTIFY_SOCKET", &notify_path)];
    let mut envs: [&[(&str, &str)]; 2] = [&[], &[]];
    let stopped = if host == "host1" { 0 } else { 1 };
    envs[stopped] = env;
    let mut c = Cluster::start_agents(
        lab,
        &bin("migrate-agent"),
        [&["--auth", &auth], &["--auth", &auth]],
        envs,
    );
    let ready = notify.until("READY=1", 10);
    assert!(ready.iter().any(|s| s == "READY=1"), "{ready:?}");

    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "64"]);
    let other = Proc::start(c.h1(), c.path("other.out"), WORKLOAD, &["--mib", "8"]);
    assert!(w.wait_for("ready 64", 60) && other.wait_for("ready 8", 60));
    let blocked = status_line(c.h1(), w.pid, "SigBlk");
    // About 8 s of push: the agent is stopped in the middle of it.
    let m = c.spawn_migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "8"]);
    let find = |c: &Cluster| pids_named(c.h2(), "workload").first().copied();
    assert!(
        wait_until(30, || find(&c).is_some()),
        "never resumed on host2\n{}",
        c.logs()
    );
    let copy = find(&c).unwrap();
    // The agent blocks its stop signals in every thread: the processes it
    // makes must not inherit that. The copy gets the original's mask from
    // its image; the keeper, started by host2's agent for the post-copy,
    // blocks nothing.
    assert_eq!(status_line(c.h2(), copy, "SigBlk"), blocked);
    let keeper = c
        .h2()
        .command("pgrep")
        .args(["-f", "migrate-agent __keeper"])
        .output()
        .expect("pgrep");
    let keeper: Vec<i32> = String::from_utf8_lossy(&keeper.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(keeper.len(), 1, "one keeper on host2: {keeper:?}");
    assert_eq!(
        status_line(c.h2(), keeper[0], "SigBlk"),
        "SigBlk:\t0000000000000000"
    );
    let agent_host = if host == "host1" { c.h1() } else { c.h2() };
    signal_in(agent_host, agent_pid_in(agent_host), "-TERM");
    let stopping = notify.until("STOPPING=1", 10);
    assert!(
        stopping.iter().any(|s| s.starts_with("STOPPING=1")),
        "{stopping:?}"
    );

    // Meanwhile a new migration is refused, and its process left alone.
    let out = c.migrate(&[&other.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "is stopping");
    assert_untouched(&c, &other);

    // The migration in flight completes: the process runs on host2 only,
    // its memory intact.
    let out = m.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", c.logs());
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "the original outlived the move"
    );

    // Then the agent is gone, by itself and cleanly.
    let status = c.agents[stopped].wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent on {host} did not end cleanly after the drain: {status:?}\n{}",
        c.logs()
    );
    assert!(runs_in(c.h2(), copy));
    assert_eq!(verify_memory(&c, c.h2(), copy, &w), "verify ok 16384");
}

#[test]
fn sigterm_to_the_source_agent_during_postcopy_drains_it() {
    require_lab!();
    a_drained_agent_finishes_the_postcopy("host1");
}

#[test]
fn sigterm_to_the_destination_agent_during_postcopy_drains_it() {
    require_lab!();
    a_drained_agent_finishes_the_postcopy("host2");
}

/// A second SIGTERM ends a draining agent at once.
#[test]
fn a_second_sigterm_ends_a_draining_agent_at_once() {
    require_lab!();
    let mut c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "32"]);
    assert!(w.wait_for("ready 32", 60));
    // Demand paging only: post-copy lasts while the process runs.
    let m = c.spawn_migrate(&[
        &w.pid.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "0",
        "--on-loss",
        "kill",
    ]);
    let find = |c: &Cluster| pids_named(c.h2(), "workload").first().copied();
    assert!(wait_until(30, || find(&c).is_some()), "{}", c.logs());
    let agent = agent_pid_in(c.h2());
    signal_in(c.h2(), agent, "-TERM");
    // Still there: it drains, and this post-copy never ends by itself.
    std::thread::sleep(Duration::from_secs(1));
    assert!(alive_in(c.h2(), agent), "the first SIGTERM ended the agent");
    signal_in(c.h2(), agent, "-TERM");
    let status = c.agents[1].wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second SIGTERM did not end the agent: {status:?}"
    );
    // The copy dies with its keeper; the source loses the process (it was
    // told to kill the original on loss): nothing runs twice.
    let out = m.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", c.logs());
    assert!(wait_until(30, || find(&c).is_none()), "{}", c.logs());
    assert!(!alive_in(c.h1(), w.pid));
}

#[test]
fn sighup_rereads_the_peers() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let auth = lab.shared_dir().join("cluster");
    let auth = auth.to_string_lossy().into_owned();
    let file = lab.shared_dir().join("agent1.toml");
    std::fs::write(&file, "").unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let c = Cluster::start_agents(
        lab,
        &bin("migrate-agent"),
        [
            &["--auth", &auth, "--config", &file_arg],
            &["--auth", &auth],
        ],
        [&[], &[]],
    );
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w.wait_for("ready 16", 60));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "annex"]);
    assert_refused(&out, 1, "unknown host");
    assert_untouched(&c, &w);

    std::fs::write(
        &file,
        format!("[peers]\nannex = \"{}:{AGENT_PORT}\"\n", c.h2().addr()),
    )
    .unwrap();
    signal_in(c.h1(), agent_pid_in(c.h1()), "-HUP");
    // Known once re-read: a pid that does not exist is refused for that,
    // not for the host.
    let known = wait_until(10, || {
        let out = c.migrate(&["999999", "--to", "annex"]);
        !String::from_utf8_lossy(&out.stderr).contains("unknown host")
    });
    assert!(known, "annex still unknown after SIGHUP\n{}", c.logs());
    let new_pid = c.moved(c.h1(), w.pid, "annex");
    assert_eq!(verify_memory(&c, c.h2(), new_pid, &w), "verify ok 4096");
    assert!(
        alive_in(c.h1(), agent_pid_in(c.h1())),
        "SIGHUP ended the agent"
    );
}
