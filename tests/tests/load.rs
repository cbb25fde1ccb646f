//! Load: several migrations at once, and one process moved back and forth
//! many times with the agents' descriptors and memory watched.

use std::fs;

use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

fn verify_count(w: &Proc) -> usize {
    w.text()
        .lines()
        .filter(|l| l.starts_with("verify ok "))
        .count()
}

#[test]
fn four_migrations_at_once_all_verified() {
    require_lab!();
    let c = Cluster::start();
    let ws: Vec<Proc> = (0..4)
        .map(|i| {
            Proc::start(
                c.h1(),
                c.path(&format!("w{i}.out")),
                WORKLOAD,
                &["--mib", "48", "--tick-ms", "5", "--dirty-pages", "8"],
            )
        })
        .collect();
    for w in &ws {
        assert!(w.wait_for("ready 48", 60), "workload {} not ready", w.pid);
    }
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = ws
            .iter()
            .map(|w| {
                let c = &c;
                let pid = w.pid.to_string();
                s.spawn(move || c.migrate(&[&pid, "--to", "host2"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (w, out) in ws.iter().zip(&outs) {
        assert_eq!(out.status.code(), Some(0), "{}", c.logs());
        let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
        assert!(
            wait_until(10, || !alive_in(c.h1(), w.pid)),
            "original {} still on host1",
            w.pid
        );
        assert_eq!(verify_memory(&c, c.h2(), new_pid, w), "verify ok 12288");
        signal_in(c.h2(), new_pid, "-KILL");
    }
}

/// Open descriptors and resident KiB of an agent (outer pid).
fn agent_usage(pid: i32) -> (usize, u64) {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (fds, rss)
}

#[test]
fn thirty_moves_back_and_forth_keep_memory_and_agents_flat() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "32", "--tick-ms", "5", "--dirty-pages", "8"],
    );
    assert!(w.wait_for("ready 32", 60));
    let agents: Vec<i32> = c.agents.iter().map(agent_outer_pid).collect();
    let mut pid = w.pid;
    let mut usage = Vec::new();
    for n in 0..30 {
        let (from, to, to_name) = if n % 2 == 0 {
            (c.h1(), c.h2(), "host2")
        } else {
            (c.h2(), c.h1(), "host1")
        };
        let out = c.migrate_from(from, &[&pid.to_string(), "--to", to_name]);
        assert_eq!(out.status.code(), Some(0), "move {n}: {}", c.logs());
        let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
        assert!(
            wait_until(10, || !alive_in(from, pid)),
            "move {n}: the original {pid} still runs"
        );
        assert_eq!(
            verify_memory(&c, to, new_pid, &w),
            "verify ok 8192",
            "move {n}"
        );
        pid = new_pid;
        usage.push(agents.iter().map(|&a| agent_usage(a)).collect::<Vec<_>>());
    }
    assert_eq!(verify_count(&w), 30);
    eprintln!("agents' (fds, rss KiB) after each move: {usage:?}");
    // Descriptors: the same after every round trip. Memory: the allocator
    // warms up over the first moves (glibc gives new threads their own
    // arenas, up to 16 here) and levels off slowly: each agent grew 1.9-4.3
    // MiB from the 10th move to the 20th in earlier runs (past the 4 MiB
    // this test first allowed there), and in a run of 60 moves 0.3-1.9 MiB
    // from the 20th to the 30th and 1.5-2.2 MiB over the 30 after. Over
    // the last ten moves growth stays under 4 MiB, the kept records of past
    // migrations included, where keeping even 2% of each 32 MiB move
    // would add 6.4 MiB.
    for (a, (e, l)) in usage[1].iter().zip(&usage[29]).enumerate() {
        assert_eq!(l.0, e.0, "agent {a} keeps descriptors: {usage:?}");
    }
    for (a, (e, l)) in usage[19].iter().zip(&usage[29]).enumerate() {
        assert!(l.1 <= e.1 + 4096, "agent {a} grows: {usage:?}");
    }
    signal_in(c.h1(), pid, "-KILL");
}
