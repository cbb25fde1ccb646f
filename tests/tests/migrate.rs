//! End-to-end migrations between the lab's two hosts: real processes,
//! real agents, real TCP over the veth link.

use std::fs;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_tests::lab::Host;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const UFFD_EVENTS: &str = env!("CARGO_BIN_EXE_uffd_events");

#[test]
fn workload_512mib_keeps_counting_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "512", "--tick-ms", "5"],
    );
    assert!(
        w.wait_for("ready 512", 120),
        "workload never filled its memory"
    );
    assert!(wait_until(10, || w.ticks().len() >= 20), "no ticks");

    let before = identity(c.h1(), w.pid);
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "migration failed\n{}", c.logs());
    let (new_pid, downtime_ms) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert!(alive_in(c.h2(), new_pid), "no process {new_pid} on host2");
    assert_eq!(identity(c.h2(), new_pid), before, "/proc view changed");
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "the original still runs on host1"
    );

    let before = w.ticks().len();
    assert!(
        wait_until(10, || w.ticks().len() >= before + 50),
        "no ticks on host2"
    );
    let ticks = w.ticks();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "tick numbers jump: {pair:?}");
    }
    let max_gap_ms = ticks
        .windows(2)
        .map(|p| p[1].1.saturating_sub(p[0].1))
        .max()
        .unwrap() as f64
        / 1e6;
    eprintln!(
        "downtime reported {downtime_ms:.1} ms, largest gap between ticks {max_gap_ms:.1} ms"
    );
    // The figures are printed, not asserted: on a loaded 2-core machine the
    // largest gap also holds scheduling delays and the first demand faults.
    // Downtime belongs to a benchmark, not to a timed test.

    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 120), "no verification answer");
    assert!(
        w.text().contains("verify ok 131072"),
        "memory check failed on host2:\n{}",
        w.text()
            .lines()
            .filter(|l| l.starts_with("verify"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    signal_in(c.h2(), new_pid, "-KILL");
}

/// What `/proc` shows of a process that must survive a move: command
/// line, environment, executable, cwd, name, ids, signal dispositions.
fn identity(host: &Host, pid: i32) -> Vec<String> {
    let read = |f: &str| fs::read(host.root_path(format!("proc/{pid}/{f}"))).unwrap_or_default();
    let link = |f: &str| {
        fs::read_link(host.root_path(format!("proc/{pid}/{f}")))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let status = String::from_utf8_lossy(&read("status")).into_owned();
    let keep = [
        "Name:", "Umask:", "Uid:", "Gid:", "Groups:", "SigBlk:", "SigIgn:", "SigCgt:", "CapEff:",
    ];
    let mut v = vec![
        String::from_utf8_lossy(&read("cmdline")).into_owned(),
        String::from_utf8_lossy(&read("environ")).into_owned(),
        link("exe"),
        link("cwd"),
        link("fd/1"),
    ];
    v.extend(
        status
            .lines()
            .filter(|l| keep.iter().any(|k| l.starts_with(k)))
            .map(String::from),
    );
    // Resource limits, and the mm fields PR_SET_MM restores (code, data,
    // brk, stack, arguments and environment bounds: stat fields 26-28 and
    // 45-51, counted from 1).
    v.push(String::from_utf8_lossy(&read("limits")).into_owned());
    let stat = String::from_utf8_lossy(&read("stat")).into_owned();
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for n in [26, 27, 28, 45, 46, 47, 48, 49, 50, 51] {
        v.push(format!(
            "stat[{n}]={}",
            after_comm.get(n - 3).copied().unwrap_or("?")
        ));
    }
    // Descriptor flags of stdio, and offsets but stdout's, which moves on
    // as the process writes (the tick checks see it continue in place).
    for fd in 0..3 {
        let info = String::from_utf8_lossy(&read(&format!("fdinfo/{fd}"))).into_owned();
        v.extend(
            info.lines()
                .filter(|l| (l.starts_with("pos:") && fd != 1) || l.starts_with("flags:"))
                .map(|l| format!("fd{fd} {l}")),
        );
    }
    v
}

#[test]
fn an_unprivileged_user_migrates_its_own_process() {
    require_lab!();
    let c = Cluster::start();
    let w = start_as_nobody(
        c.h1(),
        nobody_file(c.path("nobody.out")),
        WORKLOAD,
        &[
            "--mib",
            "16",
            "--tick-ms",
            "5",
            "--pdeathsig",
            "15",
            "--process-state",
        ],
    );
    assert!(w.wait_for("ready", 60));
    let before = identity(c.h1(), w.pid);
    assert!(
        before.iter().any(|l| l.starts_with("Uid:\t65534")),
        "{before:?}"
    );
    let states = |w: &Proc| -> Vec<String> {
        w.text()
            .lines()
            .filter(|l| l.starts_with("state "))
            .map(String::from)
            .collect()
    };
    signal_in(c.h1(), w.pid, "-USR1");
    assert!(wait_until(30, || states(&w).len() == 1), "{}", w.text());
    assert!(
        states(&w)[0].contains("rseq=registered@"),
        "{:?}",
        states(&w)
    );
    let out = c.migrate_as(Some(65534), &[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "migration failed\n{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        identity(c.h2(), new_pid),
        before,
        "credentials or /proc view changed"
    );
    let n = w.ticks().len();
    assert!(
        wait_until(10, || w.ticks().len() > n + 20),
        "no ticks on host2"
    );
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(wait_until(30, || states(&w).len() == 2), "{}", w.text());
    assert_eq!(
        w.text().matches("verify ok 4096").count(),
        2,
        "{}",
        w.text()
    );
    // clear_child_tid, robust list, rseq registration, alternate stack,
    // no_new_privs, dumpable and pdeathsig, as the process
    // itself sees them, are the same on host2.
    let s = states(&w);
    assert_eq!(s[0], s[1]);
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn python_objects_compute_the_same_result_after_migration() {
    require_lab!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/py_objects.py");
    let reference = Command::new("python3")
        .args([script, "--mib", "200", "--fast"])
        .output()
        .expect("python3");
    let reference = String::from_utf8_lossy(&reference.stdout)
        .lines()
        .find(|l| l.starts_with("result "))
        .expect("reference result")
        .to_string();

    let c = Cluster::start();
    let p = Proc::start(
        c.h1(),
        c.path("py.out"),
        "python3",
        &[script, "--mib", "200"],
    );
    assert!(p.wait_for("ready", 120), "python never got ready");
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "migration failed\n{}", c.logs());
    assert!(
        !p.text().contains("result "),
        "finished before the migration: test proves nothing"
    );
    assert!(
        p.wait_for("result ", 120),
        "no result after migration:\n{}",
        p.text()
    );
    let got = p
        .text()
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap()
        .to_string();
    assert_eq!(got, reference);
}

#[test]
fn fork_dontneed_and_mremap_during_postcopy() {
    require_lab!();
    let c = Cluster::start();
    let p = Proc::start(c.h1(), c.path("ev.out"), UFFD_EVENTS, &["--mib", "64"]);
    assert!(p.wait_for("ready", 60), "uffd_events never got ready");
    // A slow push keeps most pages lazy while the process works on them.
    let out = c.migrate(&[
        &p.pid.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "4",
        "--detach",
    ]);
    assert_eq!(out.status.code(), Some(0), "migration failed\n{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR2");
    assert!(
        p.wait_for("done", 120),
        "checks never finished:\n{}\n{}",
        p.text(),
        c.logs()
    );
    let text = p.text();
    for check in [
        "fork ok",
        "dontneed ok",
        "mremap ok",
        "munmap ok",
        "first ok",
        "second ok",
        "all ok",
    ] {
        assert!(text.contains(check), "{check} missing:\n{text}");
    }
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn status_follow_shows_a_detached_migration_to_its_end() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "64", "--tick-ms", "5"],
    );
    assert!(w.wait_for("ready", 60));
    // 64 MiB at 16 MiB/s: post-copy goes on for seconds after `--detach`
    // returns.
    let out = c.migrate(&[
        &w.pid.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "16",
        "--detach",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(rec["outcome"], "resumed");
    let follow = c.migrate(&["status", &id[..6], "--follow", "--json"]);
    assert_eq!(follow.status.code(), Some(0), "{}", c.logs());
    let seen: Vec<serde_json::Value> = String::from_utf8_lossy(&follow.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One record per change, the same id throughout: under way with its
    // pages coming in, then complete with every page in.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.iter().all(|r| r["id"] == id.as_str()));
    let moved: Vec<u64> = seen
        .iter()
        .map(|r| r["moved_pages"].as_u64().unwrap())
        .collect();
    assert!(moved.windows(2).all(|w| w[0] <= w[1]), "{moved:?}");
    let last = seen.last().unwrap();
    assert_eq!(last["outcome"], "complete");
    assert_eq!(last["moved_pages"], last["lazy_pages"]);
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .any(|r| r["outcome"] == "resumed" && r["moved_pages"].as_u64() > Some(0)),
        "{moved:?}"
    );
    // In text, the same migration ends the same way.
    let text = c.migrate(&["status", &id, "--follow"]);
    let said = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(said.starts_with(&id) && said.contains("complete"), "{said}");
    let new_pid = last["new_pid"].as_i64().unwrap() as i32;
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn refusals_leave_the_process_running() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "8", "--tick-ms", "5"],
    );
    assert!(w.wait_for("ready", 60));
    let pid = w.pid.to_string();

    assert_refused(
        &c.migrate(&["999999", "--to", "host2"]),
        1,
        "no such process: 999999",
    );
    assert_refused(&c.migrate(&["1", "--to", "host2"]), 1, "pid 1");
    let agent_pid = agent_pid_in(c.h1());
    assert_refused(
        &c.migrate(&[&agent_pid.to_string(), "--to", "host2"]),
        1,
        "the migrate agent itself",
    );
    assert_refused(
        &c.migrate(&[&pid, "--to", "host9"]),
        1,
        "unknown host \"host9\"",
    );
    // An address on the lab's link where nobody answers (bounded timeout).
    let t = Instant::now();
    assert_refused(
        &c.migrate(&[&pid, "--to", "10.77.0.3:7070"]),
        1,
        "does not answer",
    );
    assert!(t.elapsed() < Duration::from_secs(20), "no bounded timeout");
    assert_refused(
        &c.migrate(&[&pid, "--to", "host2", "--socket", "/run/none.sock"]),
        3,
        "no agent at /run/none.sock",
    );
    assert_refused(
        &c.migrate_as(Some(65534), &[&pid, "--to", "host2"]),
        1,
        "permission denied",
    );
    assert_untouched(&c, &w);

    // `check` answers without freezing.
    let out = c.migrate(&["check", &pid]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("can be migrated"));
    assert_untouched(&c, &w);

    // A process holding an established TCP connection is refused, with the
    // connection named.
    let py = Proc::start(
        c.h1(),
        c.path("sock.out"),
        "python3",
        &["-c", include_str!("scripts/migrate_established_tcp.py")],
    );
    let out = c.migrate(&[&py.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "-> 10.77.0.1:40000 (established)) not supported");
    assert!(alive_in(c.h1(), py.pid));
}

#[test]
fn a_second_migration_of_the_same_process_is_refused() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), UFFD_EVENTS, &["--mib", "8"]);
    assert!(w.wait_for("ready", 60));
    let pid = w.pid.to_string();
    // Demand paging only: the idle process keeps post-copy open.
    let out = c.migrate(&[&pid, "--to", "host2", "--push-rate", "0", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_refused(
        &c.migrate(&[&pid, "--to", "host2"]),
        1,
        "already being migrated",
    );
    // The process still works on host2 and pulls its pages on demand.
    signal_in(c.h2(), new_pid, "-USR2");
    assert!(w.wait_for("done", 60), "{}", w.text());
    assert!(w.text().contains("all ok"), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn untouched_memory_is_never_sent_and_shared_file_maps_move() {
    require_lab!();
    let c = Cluster::start();
    let data = c.path("data.bin");
    fs::write(
        &data,
        (0..3 << 20)
            .map(|i: u32| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &[
            "--mib",
            "32",
            "--reserve-mib",
            "1024",
            "--reserve-none-gib",
            "64",
            "--map-file",
            data.to_str().unwrap(),
        ],
    );
    assert!(w.wait_for("ready", 60));
    // What crossed is counted on host2's end of the link, by the kernel;
    // pages go uncompressed unless asked.
    let (before, _) = c.h2().link_bytes();
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (after, _) = c.h2().link_bytes();
    let mib = (after - before) as f64 / 1048576.0;
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json record");
    eprintln!(
        "host2 received {mib:.1} MiB for 32 MiB written, 1 GiB reserved, 64 GiB PROT_NONE; downtime {} us",
        rec["downtime_us"]
    );
    assert!(
        mib >= 32.0,
        "the written memory did not all cross: {mib:.1} MiB"
    );
    assert!(mib < 32.0 + 16.0, "untouched memory was sent: {mib:.1} MiB");
    assert_eq!(rec["outcome"], "complete");
    let new_pid = rec["new_pid"].as_i64().unwrap() as i32;
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 60));
    assert!(w.text().contains("verify ok 8192"), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn files_missing_on_the_destination_are_refused_before_the_freeze() {
    require_lab!();
    let c = Cluster::start();
    // /tmp is private to each host.
    let st = c
        .h1()
        .command("sh")
        .args([
            "-c",
            "mkdir -p /tmp/wd && head -c 65536 /dev/zero > /tmp/wd/data",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "4", "--map-file", "/tmp/wd/data"],
    );
    assert!(w.wait_for("ready", 60));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "/tmp/wd/data: cannot be opened on host2");
    assert_untouched(&c, &w);

    let script = format!("cd /tmp/wd && exec {WORKLOAD} --mib 4");
    let w2 = Proc::start(c.h1(), c.path("w2.out"), "sh", &["-c", &script]);
    assert!(w2.wait_for("ready", 60));
    let out = c.migrate(&[&w2.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "/tmp/wd: cannot be opened on host2");
    assert_refused(&out, 1, "working directory");
    assert_untouched(&c, &w2);
}

#[test]
fn a_restore_failure_after_the_freeze_resumes_the_original() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "16", "--tick-ms", "5"],
    );
    assert!(w.wait_for("ready", 60));
    // The destination agent (and so every process it rebuilds) gets a hard
    // descriptor limit below the workload's: raising it back needs
    // CAP_SYS_RESOURCE, so the rebuild fails after the freeze.
    let dest_agent = agent_outer_pid(&c.agents[1]);
    let st = Command::new("prlimit")
        .args(["--pid", &dest_agent.to_string(), "--nofile=64:128"])
        .status()
        .unwrap();
    assert!(st.success());
    let before = w.ticks().len();
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", c.logs());
    assert!(err.contains("could not rebuild"), "{err}");
    assert!(err.contains("runs on here, untouched"), "{err}");
    // The same process goes on, its memory intact; nothing is left on host2.
    assert_untouched(&c, &w);
    let ticks = w.ticks();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "tick numbers jump: {pair:?}");
    }
    assert!(ticks.len() > before);
    signal_in(c.h1(), w.pid, "-USR1");
    assert!(w.wait_for("verify ", 60));
    assert!(w.text().contains("verify ok 4096"), "{}", w.text());
    assert!(
        pids_named(c.h2(), "workload").is_empty(),
        "a rebuilt process was left on host2"
    );
}

#[test]
fn a_destination_agent_dying_during_postcopy_never_leaves_zeros_running() {
    require_lab!();
    let mut c = Cluster::start();
    // It reports its walk over its memory to a file of its own, so that
    // what it read is known without the agents that forward its output.
    let report = c.path("walk.txt");
    let w = Proc::start(
        c.h1(),
        c.path("ev.out"),
        UFFD_EVENTS,
        &["--mib", "64", "--walk", report.to_str().unwrap()],
    );
    assert!(w.wait_for("ready", 60));
    // Demand paging only, so post-copy stays open while the process walks.
    let m = c.spawn_migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "0"]);
    let find = |c: &Cluster| pids_named(c.h2(), "uffd_events").first().copied();
    assert!(
        wait_until(30, || find(&c).is_some()),
        "never resumed on host2\n{}",
        c.logs()
    );
    let new_pid = find(&c).unwrap();
    // It walks its lazy memory, one page a millisecond, each a demand
    // fault; host2's agent is killed in the middle of the walk.
    signal_in(c.h2(), new_pid, "-USR2");
    let walked = || fs::read_to_string(&report).unwrap_or_default();
    assert!(
        wait_until(30, || walked().contains("walked 256\n")),
        "no walk on host2: {}\n{}",
        walked(),
        c.logs()
    );
    c.agents[1].kill();
    assert!(
        wait_until(10, || !alive_in(c.h2(), new_pid)),
        "the restored process outlived its agent:\n{}",
        walked()
    );
    let walk = walked();
    assert!(
        !walk.contains("FAIL") && !walk.contains("walk done"),
        "it read wrong memory, or finished its walk without the agent:\n{walk}"
    );
    let out = m.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("lost host2"), "{err}");
    // Whether the copy is gone cannot be learned from a dead agent: the
    // original is kept, frozen, until someone decides.
    assert!(err.contains("is kept frozen here"), "{err}");
    sleep(Duration::from_secs(1));
    assert!(
        alive_in(c.h1(), w.pid),
        "the original was freed without a decision"
    );
    let id = resolve_id(&err);
    // Host2's agent is gone: whether the copy is gone cannot be learned
    // (the agent might be back after a restart, the copy run on), so the
    // original may not resume.
    let resume = c.migrate(&["resolve", &id, "--resume"]);
    assert_refused(&resume, 1, "not known to be gone");
    assert!(alive_in(c.h1(), w.pid) && !runs_in(c.h1(), w.pid));
    let other = c.migrate(&["resolve", "0123456789abcdef", "--kill"]);
    assert_ne!(other.status.code(), Some(0));
    let out = c.migrate(&["resolve", &id, "--kill"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("was killed"));
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "the original outlived the decision"
    );
    // Decided once: a second decision finds nothing kept.
    let again = c.migrate(&["resolve", &id, "--resume"]);
    assert_refused(&again, 1, "keeps no frozen original");
}

#[test]
fn vector_registers_survive_the_move() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("fpu.out"),
        env!("CARGO_BIN_EXE_fpu_state"),
        &[],
    );
    assert!(w.wait_for("round 2 ", 30), "fpu_state did not start");
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let rounds = |w: &Proc| w.text().lines().filter(|l| l.starts_with("round ")).count();
    let n = rounds(&w);
    assert!(wait_until(20, || rounds(&w) >= n + 3), "no rounds on host2");
    let text = w.text();
    assert!(
        !text.contains("FAIL"),
        "vector registers changed across the move:\n{text}"
    );
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn a_source_agent_dying_after_the_commit_never_leaves_two_copies() {
    require_lab!();
    let mut c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("ev.out"), UFFD_EVENTS, &["--mib", "8"]);
    assert!(w.wait_for("ready", 60));
    // Demand paging only: post-copy stays open while the process idles.
    let out = c.migrate(&[
        &w.pid.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "0",
        "--detach",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert!(alive_in(c.h2(), new_pid));
    c.agents[0].kill();
    // The frozen original must not come back to life on host1, and the
    // copy that lost its pages' source is stopped on host2.
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "the original resumed on host1"
    );
    assert!(
        wait_until(10, || !alive_in(c.h2(), new_pid)),
        "the copy kept running without its source"
    );
}

#[test]
fn a_link_cut_before_the_commit_aborts_and_the_original_resumes() {
    require_lab!();
    let c = Cluster::start();
    // The link goes down while the pages cross.
    let (w, out, took) = interrupted_stop_copy(&c, || {
        let st = c
            .h1()
            .command("ip")
            .args(["link", "set", "mgl0", "down"])
            .status();
        assert!(st.is_ok_and(|s| s.success()), "could not cut the link");
    });
    eprintln!("abort after {took:?}");
    assert_refused(&out, 1, "runs on here, untouched");
    assert_refused(&out, 1, "the link or the destination is down");
    assert!(took < Duration::from_secs(40), "no bounded abort: {took:?}");
    assert_untouched(&c, &w);
    assert_eq!(verify_memory(&c, c.h1(), w.pid, &w), "verify ok 262144");
}

/// Zombie children of the agent inside `host` (pids).
fn agent_zombies(host: &Host) -> Vec<i32> {
    let agent = agent_pid_in(host);
    let mut out = Vec::new();
    for e in fs::read_dir(host.root_path("proc")).unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let field = |k: &str| status_line(host, pid, k).replace(k, "").trim().to_string();
        if field("PPid:") == agent.to_string() && field("State:").starts_with('Z') {
            out.push(pid);
        }
    }
    out
}

#[test]
fn children_a_moved_process_leaves_behind_are_reaped() {
    require_lab!();
    let c = Cluster::start();
    // After the move it forks children that outlive it: orphans, they
    // fall to the agent (a subreaper), which must reap them as they end.
    let script =
        include_str!("scripts/migrate_children_a_moved_process_leaves_behind_are_reaped.py");
    let p = Proc::start(c.h1(), c.path("orphans.out"), "python3", &["-c", script]);
    assert!(p.wait_for("ready", 20), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("forked", 20), "{}", p.text());
    // The children end within 1 s; give the agent 3 s more to reap them.
    sleep(Duration::from_secs(1));
    assert!(
        wait_until(3, || agent_zombies(c.h2()).is_empty()),
        "zombies left in host2's agent: {:?}",
        agent_zombies(c.h2())
    );
}
