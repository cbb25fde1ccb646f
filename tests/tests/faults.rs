//! Failures around a migration: the process ending during post-copy, an
//! agent restarted.

use std::fs;

use migrate_tests::bins::bin;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

fn fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn keepers(host: &migrate_tests::lab::Host) -> String {
    let out = host
        .command("pgrep")
        .args(["-a", "-f", "__keeper"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_process_killed_during_postcopy_is_cleaned_up_on_both_sides() {
    require_lab!();
    let c = Cluster::start();
    let agents: Vec<i32> = c.agents.iter().map(agent_outer_pid).collect();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "256"]);
    assert!(w.wait_for("ready 256", 60));
    let before: Vec<usize> = agents.iter().map(|&a| fds(a)).collect();
    let out = std::thread::scope(|s| {
        // A slow push keeps post-copy going for seconds.
        let m = s.spawn(|| c.migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "16"]));
        let n0 = w.ticks().len();
        assert!(
            wait_until(30, || workload_pid_on(c.h2()).is_some()
                && w.ticks().len() > n0 + 50),
            "the process never ran on host2"
        );
        let pid = workload_pid_on(c.h2()).unwrap();
        signal_in(c.h2(), pid, "-KILL");
        m.join().unwrap()
    });
    // The end of the process ends post-copy: the source frees the original.
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "original left on host1"
    );
    assert!(
        wait_until(10, || keepers(c.h2()).is_empty()),
        "keeper left: {}",
        keepers(c.h2())
    );
    assert!(
        wait_until(10, || agents.iter().map(|&a| fds(a)).collect::<Vec<_>>()
            == before),
        "agents hold descriptors: {before:?} -> {:?}",
        agents.iter().map(|&a| fds(a)).collect::<Vec<_>>()
    );
}

/// The workload's pid on `host`, if it runs there.
fn workload_pid_on(host: &migrate_tests::lab::Host) -> Option<i32> {
    pids_named(host, "workload").first().copied()
}

#[test]
fn a_restarted_agent_serves_new_migrations_at_once() {
    require_lab!();
    let mut c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w.wait_for("ready 16", 60));
    let first = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(first.status.code(), Some(0), "{}", c.logs());
    let (pid2, _) = parse_summary(&String::from_utf8_lossy(&first.stdout));
    let history = |c: &Cluster| {
        let out = c.migrate(&["list", "--history"]);
        assert_eq!(out.status.code(), Some(0), "{}", c.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = history(&c);
    assert!(before.contains("host2"), "{before}");
    // host1's agent dies and comes back; the process moves home through it.
    c.agents[0].kill();
    let again = c
        .lab
        .host("host1")
        .spawn_agent(
            &bin("migrate-agent"),
            &[c.lab.host("host2")],
            &c.path("agent1b.log"),
        )
        .expect("agent restarts");
    c.agents[0] = again;
    // Its history survived.
    assert_eq!(history(&c), before);
    let back = c.migrate_from(c.h2(), &[&pid2.to_string(), "--to", "host1"]);
    assert_eq!(back.status.code(), Some(0), "{}", c.logs());
    let (pid1, _) = parse_summary(&String::from_utf8_lossy(&back.stdout));
    signal_in(c.h1(), pid1, "-USR1");
    assert!(w.wait_for("verify ", 30));
    assert!(w.text().contains("verify ok 4096"), "{}", w.text());
    signal_in(c.h1(), pid1, "-KILL");
}

#[test]
fn the_destination_agent_dying_before_the_commit_leaves_the_original_running() {
    require_lab!();
    let mut c = Cluster::start();
    // host2's agent is killed while the pages cross.
    let mut agent2 = c.agents.remove(1);
    let (w, out, _) = interrupted_stop_copy(&c, || agent2.kill());
    assert_refused(&out, 1, "runs on here, untouched");
    assert_untouched(&c, &w);
    assert_eq!(verify_memory(&c, c.h1(), w.pid, &w), "verify ok 262144");
    // Nothing of the half-built copy is left on host2.
    assert!(
        pids_named(c.h2(), "workload").is_empty(),
        "a copy runs on host2"
    );
}
