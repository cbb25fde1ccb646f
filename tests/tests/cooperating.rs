//! Cooperating processes: `migrate run` starts a command with the shim
//! loaded and registered with the agent; `migrate list` shows what can be
//! migrated, cooperating ones marked, with their host of origin and moves,
//! followed across hosts.

use std::fs;

use migrate_tests::bins::bin;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// `migrate list` on `host`: pid → (origin, moves, cooperating).
fn listed(c: &Cluster, host: &migrate_tests::lab::Host) -> Vec<(i32, String, u32, bool)> {
    let out = c.migrate_from(host, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.parse().ok()?,
                *f.get(4)? == "yes",
            ))
        })
        .collect()
}

fn entry(v: &[(i32, String, u32, bool)], pid: i32) -> (String, u32, bool) {
    let e = v
        .iter()
        .find(|e| e.0 == pid)
        .unwrap_or_else(|| panic!("pid {pid} not listed: {v:?}"));
    (e.1.clone(), e.2, e.3)
}

#[test]
fn migrate_run_starts_a_cooperating_process_that_list_follows_across_hosts() {
    require_lab!();
    let c = Cluster::start();
    let migrate = bin("migrate");
    let p = Proc::start(
        c.h1(),
        c.path("w.out"),
        migrate.to_str().unwrap(),
        &["run", "--", WORKLOAD, "--mib", "16"],
    );
    assert!(p.wait_for("ready 16", 60), "{}", p.text());
    // The same pid runs the command, with the shim loaded.
    let maps = fs::read_to_string(c.h1().root_path(format!("proc/{}/maps", p.pid))).unwrap();
    assert!(
        maps.contains("libmigrate_shim.so"),
        "the shim is not loaded"
    );
    let plain = Proc::start(c.h1(), c.path("o.out"), WORKLOAD, &["--mib", "8"]);
    assert!(plain.wait_for("ready 8", 60));

    let here = listed(&c, c.h1());
    assert_eq!(entry(&here, p.pid), ("host1".into(), 0, true));
    assert_eq!(entry(&here, plain.pid), ("host1".into(), 0, false));

    // host1 -> host2: listed there, from host1, moved once.
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (pid2, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(entry(&listed(&c, c.h2()), pid2), ("host1".into(), 1, true));
    assert!(
        !listed(&c, c.h1()).iter().any(|e| e.0 == p.pid),
        "still listed on host1"
    );

    // And back: moved twice, still from host1.
    let out = c.migrate_from(c.h2(), &[&pid2.to_string(), "--to", "host1"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (pid3, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(entry(&listed(&c, c.h1()), pid3), ("host1".into(), 2, true));
    assert_eq!(verify_memory(&c, c.h1(), pid3, &p), "verify ok 4096");
}

/// Starts `program` with `migrate run` on host1, then moves it host1 ->
/// host2 -> host1 -> host2, asking it (SIGUSR1) after each step where it
/// runs, where it started and how often it moved.
fn queries_follow_three_migrations(program: impl FnOnce(&Cluster) -> String) {
    let c = Cluster::start();
    let migrate = bin("migrate");
    let program = program(&c);
    let p = Proc::start(
        c.h1(),
        c.path("coop.out"),
        migrate.to_str().unwrap(),
        &["run", "--", &program],
    );
    let ask = |host: &migrate_tests::lab::Host, pid: i32| -> String {
        let n = p.text().matches("query ").count();
        signal_in(host, pid, "-USR1");
        assert!(
            wait_until(20, || p.text().matches("query ").count() > n),
            "no answer from {pid}: {}",
            p.text()
        );
        p.text()
            .lines()
            .filter(|l| l.starts_with("query "))
            .nth(n)
            .unwrap()
            .to_string()
    };
    assert_eq!(ask(c.h1(), p.pid), "query 1 host1 host1 0");
    let mut pid = p.pid;
    for (i, (from, to, name)) in [
        (c.h1(), c.h2(), "host2"),
        (c.h2(), c.h1(), "host1"),
        (c.h1(), c.h2(), "host2"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = c.migrate_from(from, &[&pid.to_string(), "--to", name]);
        assert_eq!(out.status.code(), Some(0), "{}", c.logs());
        pid = parse_summary(&String::from_utf8_lossy(&out.stdout)).0;
        assert_eq!(ask(to, pid), format!("query 1 {name} host1 {}", i + 1));
    }
    signal_in(c.h2(), pid, "-KILL");
}

#[test]
fn a_c_program_asks_the_shim_where_it_is_across_three_migrations() {
    require_lab!();
    // Built here against migrate.h and libmigrate_shim.so, into the lab's
    // shared directory (removed with the lab).
    queries_follow_three_migrations(|c| {
        let lib = bin("migrate");
        let lib = lib.parent().unwrap();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let exe = c.path("coop-c");
        let st = std::process::Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(format!("{root}/tests/workloads/coop.c"))
            .arg(format!("-I{root}/shim/include"))
            .arg(format!("-L{}", lib.display()))
            .arg("-lmigrate_shim")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .status()
            .expect("cc");
        assert!(st.success(), "the C program did not build");
        exe.to_str().unwrap().to_string()
    });
}

#[test]
fn a_rust_program_asks_the_crate_where_it_is_across_three_migrations() {
    require_lab!();
    queries_follow_three_migrations(|_| env!("CARGO_BIN_EXE_coop").to_string());
}
