//! Cooperating processes: `migrate run` starts a command with the shim
//! loaded and registered with the agent; `migrate list` shows what can be
//! migrated, cooperating ones marked, with their host of origin and moves,
//! followed across hosts.

use std::fs;

use migrate_tests::bins::bin;
use migrate_tests::lab::Host;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
/// `python3 -c FORGE_NOTICE PID TID`: queues the shim's signal (62) to
/// thread TID of PID with a freeze value, then a resume value, as the
/// agent would (`rt_tgsigqueueinfo`), without writing the block.
const FORGE_NOTICE: &str = include_str!("scripts/cooperating_forge_notice.py");

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
    let pid2 = c.moved(c.h1(), p.pid, "host2");
    assert_eq!(entry(&listed(&c, c.h2()), pid2), ("host1".into(), 1, true));
    assert!(
        !listed(&c, c.h1()).iter().any(|e| e.0 == p.pid),
        "still listed on host1"
    );

    // And back: moved twice, still from host1.
    let pid3 = c.moved(c.h2(), pid2, "host1");
    assert_eq!(entry(&listed(&c, c.h1()), pid3), ("host1".into(), 2, true));
    assert_eq!(verify_memory(&c, c.h1(), pid3, &p), "verify ok 4096");
}

/// The lines of `p` starting with `prefix`.
/// Starts `program` (named `comm`) with `migrate run` under a shell on
/// host1, then moves it host1 -> host2 (by `migrate`), host2 -> host1 (the
/// program asks, `migrate_request`), host1 -> host2 (by `migrate`), with
/// its pid and its second thread's id held by other processes on host2 so
/// the kernel gives it new ones there. After each move: its virtual ids,
/// its signals to itself, its callbacks (once per move, in order) and its
/// queries.
fn cooperating_program_across_three_migrations(
    comm: &str,
    program: impl FnOnce(&Cluster) -> String,
) {
    let c = Cluster::start();
    let migrate = bin("migrate");
    let program = program(&c);
    // Under a shell that stays, so the program's parent is in host1.
    let line = format!("{} run -- {program}; :", migrate.display());
    let p = Proc::start(c.h1(), c.path("coop.out"), "sh", &["-c", &line]);
    let first = p
        .text()
        .lines()
        .find(|l| l.starts_with("pid "))
        .unwrap()
        .to_string();
    let f: Vec<i32> = first
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let (vpid, vppid, vtid2) = (f[0], f[1], f[2]);
    assert!(vppid > 1, "the shell is not the parent: {first}");
    let _held = [
        PidHolder::take(c.h2(), vpid).expect("pid taken on host2"),
        PidHolder::take(c.h2(), vtid2).expect("thread id taken on host2"),
    ];
    let ids = |host: &Host, pid: i32| answer(&p, host, pid, "-USR2", "ids ", 20);

    // 0. A notice the agent did not send (queued to the shim's listener
    // thread with a freeze and a resume value) runs no callback.
    let listener = fs::read_dir(c.h1().root_path(format!("proc/{vpid}/task")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|t| {
            fs::read_to_string(c.h1().root_path(format!("proc/{vpid}/task/{t}/comm")))
                .is_ok_and(|n| n.trim_end() == "migrate-shim")
        })
        .expect("the shim's listener thread");
    let forged = c
        .h1()
        .command("/usr/bin/python3")
        .args(["-c", FORGE_NOTICE, &vpid.to_string(), &listener.to_string()])
        .output()
        .unwrap();
    assert!(forged.status.success(), "{forged:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        lines_of(&p, "freeze ").is_empty() && lines_of(&p, "resume ").is_empty(),
        "a forged notice ran the callbacks: {}",
        p.text()
    );
    let expected = format!("ids {vpid} {vpid} {vppid} {vpid} {vpid} {vppid} {vtid2} {vtid2} 1 1");
    assert_eq!(ids(c.h1(), vpid), expected);
    assert_eq!(
        answer(&p, c.h1(), vpid, "-USR1", "query ", 20),
        "query 1 host1 host1 0"
    );

    // 1. host1 -> host2 by migrate: new real ids, the same virtual ones.
    let pid = c.moved(c.h1(), vpid, "host2");
    assert_ne!(pid, vpid, "host2 gave the process its old pid");
    let real_tids = fs::read_dir(c.h2().root_path(format!("proc/{pid}/task")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect::<Vec<_>>();
    assert!(
        !real_tids.contains(&vtid2),
        "host2 gave the thread its old id"
    );
    assert_eq!(ids(c.h2(), pid), expected);

    // 2. host2 -> host1, asked by the program itself.
    assert_eq!(
        answer(&p, c.h2(), pid, "-HUP", "request ", 90),
        "request 0 host1"
    );
    let on1 = pids_named(c.h1(), comm);
    assert_eq!(on1.len(), 1, "{comm} on host1: {on1:?}");
    // The frozen original goes once post-copy is complete.
    assert!(
        wait_until(30, || pids_named(c.h2(), comm).is_empty()),
        "still on host2"
    );
    assert_eq!(ids(c.h1(), on1[0]), expected);

    // 3. host1 -> host2 by migrate again.
    let pid = c.moved(c.h1(), on1[0], "host2");
    assert_ne!(pid, vpid);
    assert_eq!(ids(c.h2(), pid), expected);
    assert_eq!(
        answer(&p, c.h2(), pid, "-USR1", "query ", 20),
        "query 1 host2 host1 3"
    );

    // The callbacks: once per move, freeze before resume, in order.
    let calls: Vec<String> = p
        .text()
        .lines()
        .filter(|l| l.starts_with("freeze ") || l.starts_with("resume "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        calls,
        [
            "freeze 1",
            "resume 1 host2",
            "freeze 2",
            "resume 2 host1",
            "freeze 3",
            "resume 3 host2"
        ],
        "{}",
        p.text()
    );
    signal_in(c.h2(), pid, "-KILL");
}

#[test]
fn a_c_program_cooperates_across_three_migrations() {
    require_lab!();
    // Built here against migrate.h and libmigrate_shim.so, into the lab's
    // shared directory (removed with the lab).
    cooperating_program_across_three_migrations("coop-c", |c| {
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
fn a_rust_program_cooperates_across_three_migrations() {
    require_lab!();
    cooperating_program_across_three_migrations("coop", |_| env!("CARGO_BIN_EXE_coop").to_string());
}

/// An echo server on host1 (which stays there) on `port` and a
/// cooperating client started on host1 with `migrate run [--tcp POLICY]`,
/// past its fifth echo.
fn echo_pair(c: &Cluster, port: &str, policy: Option<&str>) -> (Proc, Proc) {
    let server = Proc::start(
        c.h1(),
        c.path("server.out"),
        "python3",
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/tcp_echo.py"),
            &c.h1().addr().to_string(),
            port,
        ],
    );
    let migrate = bin("migrate");
    let to = format!("{}:{port}", c.h1().addr());
    let mut args = vec!["run"];
    if let Some(p) = policy {
        args.extend(["--tcp", p]);
    }
    args.extend(["--", env!("CARGO_BIN_EXE_tcp_client"), &to]);
    let client = Proc::start(
        c.h1(),
        c.path("client.out"),
        migrate.to_str().unwrap(),
        &args,
    );
    assert!(client.wait_for("echo 5\n", 30), "{}", client.text());
    (server, client)
}

fn last_echo(p: &Proc) -> u64 {
    p.text()
        .lines()
        .filter_map(|l| l.strip_prefix("echo ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn with_tcp_reconnect_a_client_keeps_talking_to_its_server_after_moving() {
    require_lab!();
    let c = Cluster::start();
    let (server, client) = echo_pair(&c, "47011", Some("reconnect"));
    let pid = c.moved(c.h1(), client.pid, "host2");
    // Told on host2 which descriptor was connected again.
    let fd = client
        .text()
        .lines()
        .find_map(|l| Some(l.strip_prefix("pid ")?.split_once(" fd ")?.1.to_string()))
        .unwrap();
    assert!(
        client.wait_for(&format!("resumed host2 [{fd}]"), 20),
        "{}",
        client.text()
    );
    // The exchange goes on from host2: every message echoed, in order,
    // none lost, none wrong.
    let before = last_echo(&client);
    assert!(
        wait_until(30, || last_echo(&client) >= before + 20),
        "{}",
        client.text()
    );
    let echoes: Vec<u64> = client
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("echo ")?.parse().ok())
        .collect();
    assert_eq!(echoes, (0..echoes.len() as u64).collect::<Vec<_>>());
    assert!(!client.text().contains("wrong ") && !client.text().contains("lost "));
    // The server saw the new connection come from host2.
    assert!(
        server.text().contains(&format!("conn {}", c.h2().addr())),
        "{}",
        server.text()
    );
    assert!(alive_in(c.h2(), pid));
    signal_in(c.h2(), pid, "-KILL");
}

#[test]
fn with_tcp_close_the_connection_is_reset_and_the_client_sees_it() {
    require_lab!();
    let mut c = Cluster::start();
    let (server, client) = echo_pair(&c, "47011", Some("close"));
    // A migration that fails after the freeze leaves the connection alone:
    // the original goes on talking on host1. (host2's agent, and so the
    // process it rebuilds, gets a descriptor limit it cannot lift; the
    // agent is started again after.)
    let st = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &agent_outer_pid(&c.agents[1]).to_string(),
            "--nofile=64:128",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = c.migrate(&[&client.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "runs on here, untouched");
    c.agents[1].kill();
    c.agents[1] = c
        .lab
        .host("host2")
        .spawn_agent(
            &bin("migrate-agent"),
            &[c.lab.host("host1")],
            &c.path("agent2b.log"),
        )
        .expect("agent restarts");
    let before = last_echo(&client);
    assert!(
        wait_until(20, || last_echo(&client) >= before + 5),
        "the original stopped talking: {}",
        client.text()
    );
    assert!(!client.text().contains("lost "), "{}", client.text());
    assert!(!server.text().contains("reset "), "{}", server.text());
    let pid = c.moved(c.h1(), client.pid, "host2");
    // The client, on host2, sees a reset connection; the server saw the
    // reset too.
    assert!(
        client.wait_for("lost ", 20),
        "no reset seen: {}",
        client.text()
    );
    let lost = client
        .text()
        .lines()
        .find(|l| l.starts_with("lost "))
        .unwrap()
        .to_string();
    assert!(lost.contains("reset"), "{lost}");
    assert!(
        client.text().contains("resumed host2 []"),
        "{}",
        client.text()
    );
    assert!(
        wait_until(10, || server
            .text()
            .contains(&format!("reset {}", c.h1().addr()))),
        "{}",
        server.text()
    );
    assert!(alive_in(c.h2(), pid));
    signal_in(c.h2(), pid, "-KILL");
}

#[test]
fn without_a_tcp_policy_a_connected_client_is_refused_with_the_way_out() {
    require_lab!();
    let c = Cluster::start();
    let (server, client) = echo_pair(&c, "47012", None);
    let out = c.migrate(&[&client.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "migrate run --tcp close|reconnect");
    // Untouched: it keeps talking on host1.
    let before = last_echo(&client);
    assert!(wait_until(20, || last_echo(&client) >= before + 5));
    drop(server);
}

#[test]
fn an_unmodified_debian_program_under_migrate_run_moves_twice() {
    require_lab!();
    // Debian's own python3, not built against anything of ours: it counts,
    // and prints the pid libc's getpid() gives it.
    let c = Cluster::start();
    let migrate = bin("migrate");
    let script = include_str!("scripts/cooperating_counter.py");
    let p = Proc::start(
        c.h1(),
        c.path("py.out"),
        migrate.to_str().unwrap(),
        &["run", "--", "/usr/bin/python3", "-u", "-c", script],
    );
    let _held = PidHolder::take(c.h2(), p.pid).expect("pid taken on host2");
    let counts = || -> Vec<(u64, i32)> {
        p.text()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("count ")?.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
            .collect()
    };
    let advanced = |by: u64| {
        let n = counts().last().map_or(0, |c| c.0);
        assert!(
            wait_until(20, || counts().last().is_some_and(|c| c.0 >= n + by)),
            "{}",
            p.text()
        );
    };
    advanced(10);
    let pid2 = c.moved(c.h1(), p.pid, "host2");
    assert_ne!(pid2, p.pid, "host2 gave it its old pid");
    advanced(10);
    let pid3 = c.moved(c.h2(), pid2, "host1");
    advanced(10);
    // One count, never restarted nor skipped, and one pid all along.
    let seen = counts();
    assert!(
        seen.iter().map(|c| c.0).eq(0..seen.len() as u64),
        "{}",
        p.text()
    );
    assert!(seen.iter().all(|c| c.1 == p.pid), "{}", p.text());
    signal_in(c.h1(), pid3, "-KILL");
}
