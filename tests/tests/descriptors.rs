//! Descriptors checked through themselves after a move.

use migrate_tests::require_lab;

mod common;
use common::*;

fn counts(p: &Proc) -> Option<(u64, u64)> {
    let (timer, sigs, _) = tick(p)?;
    Some((timer, sigs))
}

/// The last tick's timerfd expirations, signals read, and the process's
/// own time (ms).
fn tick(p: &Proc) -> Option<(u64, u64, u64)> {
    let text = p.text();
    let l = text.lines().rev().find(|l| l.starts_with("tick "))?;
    let get = |k: &str| l.split(k).nth(1)?.split_whitespace().next()?.parse().ok();
    Some((get("timer=")?, get("sigs=")?, get("ms=")?))
}

#[test]
fn timerfd_signalfd_and_directory_keep_working_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let p = Proc::start(c.h1(), c.path("fk.out"), env!("CARGO_BIN_EXE_fdkinds"), &[]);
    assert!(p.wait_for("tick 3 ", 30), "{}", p.text());

    // `migrate check` names each descriptor with its kind and verdict.
    let out = c.migrate(&["check", &p.pid.to_string()]);
    assert_eq!(out.status.code(), Some(0));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for kind in [
        "(timerfd): moves",
        "(signalfd): moves",
        "(directory): moves",
        "(device): moves",
        "(file): moves",
    ] {
        assert!(report.contains(kind), "{kind} missing in:\n{report}");
    }

    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));

    // The timerfd fires every 20 ms: over two seconds or more of the
    // process's own time on host2, one expiration per 20 ms of it (from
    // the first tick printed there).
    let (_, _, printed) = tick(&p).unwrap();
    let mut first = None;
    assert!(
        wait_until(30, || {
            first = tick(&p).filter(|&(_, _, ms)| ms > printed);
            first.is_some()
        }),
        "no ticks on host2: {}",
        p.text()
    );
    let (t0, s0, ms0) = first.unwrap();
    let mut later = None;
    assert!(
        wait_until(30, || {
            later = tick(&p).filter(|&(_, _, ms)| ms >= ms0 + 2000);
            later.is_some()
        }),
        "no ticks on host2: {}",
        p.text()
    );
    let (t1, _, ms1) = later.unwrap();
    let due = (ms1 - ms0) / 20;
    assert!(
        (t1 - t0).abs_diff(due) <= 3,
        "timerfd fired {} times in {} ms on host2 ({due} due)",
        t1 - t0,
        ms1 - ms0
    );
    // The signalfd still reads SIGUSR2.
    signal_in(c.h2(), new_pid, "-USR2");
    assert!(
        wait_until(10, || counts(&p).is_some_and(|(_, s)| s == s0 + 1)),
        "{}",
        p.text()
    );
    // The directory listing goes on from where it was.
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("dir ", 10), "{}", p.text());
    assert!(p.text().contains("dir ok"), "{}", p.text());
    assert!(p.text().contains("devices ok"), "{}", p.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn check_lists_refused_descriptors_with_their_reason() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/descriptors_netlink.py");
    let p = Proc::start(c.h1(), c.path("udp.out"), "python3", &["-c", script]);
    let out = c.migrate(&["check", &p.pid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("(socket): refused: ") && l.ends_with("not supported")),
        "{err}"
    );
    assert!(
        err.contains("fd 1: ") && err.contains("(file): moves"),
        "{err}"
    );
}

/// `ss` lines of the established TCP connections of the agents' port in
/// `host`, with their timers.
fn lane_timers(host: &migrate_tests::lab::Host) -> String {
    let out = host
        .command("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            "( sport = :7070 or dport = :7070 )",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether an `ss -o` line shows a keepalive timer, due within `secs`
/// when `ss` prints when (`timer:(keepalive,4.2sec,0)`; a timer due now
/// shows no time).
fn keepalive_within(line: &str, secs: f64) -> bool {
    let Some(t) = line.split("timer:(keepalive,").nth(1) else {
        return false;
    };
    match t.split(',').next().unwrap_or_default() {
        "" => true,
        v => v
            .strip_suffix("sec")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v <= secs),
    }
}

/// Fetches `url` from inside `host` with python3; the body or an error.
fn fetch(host: &migrate_tests::lab::Host, url: &str) -> String {
    let out = host
        .command("python3")
        .args(["-c", include_str!("scripts/descriptors_fetch.py"), url])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ss` line of the listener on `port` inside `host`: state, queue, backlog.
fn listener(host: &migrate_tests::lab::Host, port: u16) -> String {
    let out = host
        .command("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn python_http_server_keeps_serving_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let docs = c.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("hello.txt"), "served from wherever I run\n").unwrap();
    // Started through python so that no descriptor of the harness leaks in.
    let launcher = include_str!("scripts/launcher.py");
    let p = Proc::start(
        c.h1(),
        c.path("http.out"),
        "python3",
        &[
            "-c",
            launcher,
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "10.77.0.1",
            "--directory",
            docs.to_str().unwrap(),
        ],
    );
    assert!(
        wait_until(20, || fetch(c.h1(), "http://10.77.0.1:8000/hello.txt")
            .starts_with("served")),
        "server did not start"
    );
    let before = listener(c.h1(), 8000);
    assert!(before.starts_with("LISTEN 0 5 10.77.0.1:8000"), "{before}");
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    // Bound to host2's address now, same port and backlog, and serving.
    assert_eq!(listener(c.h2(), 8000), "LISTEN 0 5 10.77.0.2:8000");
    for _ in 0..3 {
        assert_eq!(
            fetch(c.h2(), "http://10.77.0.2:8000/hello.txt"),
            "served from wherever I run\n"
        );
    }
    assert_eq!(
        fetch(c.h1(), "http://10.77.0.2:8000/hello.txt"),
        "served from wherever I run\n"
    );
}

#[test]
fn a_udp_socket_bound_to_the_wildcard_answers_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/descriptors_udp_echo.py");
    let p = Proc::start(c.h1(), c.path("udp.out"), "python3", &["-c", script]);
    let ask = |host: &migrate_tests::lab::Host, ip: &str| -> String {
        let out = host
            .command("python3")
            .args(["-c", include_str!("scripts/descriptors_udp_ask.py"), ip])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(wait_until(10, || ask(c.h1(), "10.77.0.1") == "echo:hi"));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert_eq!(ask(c.h1(), "10.77.0.2"), "echo:hi");
    assert_eq!(ask(c.h2(), "127.0.0.1"), "echo:hi");
}

#[test]
fn a_held_file_lock_is_refused_not_dropped() {
    require_lab!();
    let c = Cluster::start();
    let lockfile = c.path("locked");
    let script = include_str!("scripts/descriptors_file_lock.py");
    let lockfile = lockfile.to_string_lossy().into_owned();
    let p = Proc::start(
        c.h1(),
        c.path("lock.out"),
        "python3",
        &["-c", script, &lockfile],
    );
    assert!(p.wait_for("tick", 20));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "holds a file lock (FLOCK");
    // Each reason has a stable code beside its text: in brackets, and in
    // --json as {"refused": [{"code", "text"}]} on standard output.
    assert_refused(&out, 1, "locks are not migrated yet [file-lock]");
    for args in [
        vec![
            p.pid.to_string(),
            "--to".into(),
            "host2".into(),
            "--json".into(),
        ],
        vec!["check".into(), p.pid.to_string(), "--json".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.migrate(&args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"));
        let reasons = v["refused"].as_array().expect("a list of reasons");
        assert!(
            reasons.iter().any(|r| r["code"] == "file-lock"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("holds a file lock"))),
            "{args:?}: {v}"
        );
    }
    assert!(alive_in(c.h1(), p.pid));
    let n = p.text().lines().count();
    assert!(
        wait_until(10, || p.text().lines().count() > n + 3),
        "stopped running"
    );
}

#[test]
fn memfds_keep_their_content_seals_and_sharing() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/descriptors_memfds_keep_their_content_seals_and_sharing.py");
    let p = Proc::start(c.h1(), c.path("memfd.out"), "python3", &["-c", script]);
    assert!(p.wait_for("state", 20), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("write-through", 20), "{}", p.text());
    let text = p.text();
    let states: Vec<&str> = text.lines().filter(|l| l.starts_with("state ")).collect();
    assert!(states[0].contains("shared=True"), "{}", states[0]);
    // The second state saw "more" written through the mapping after the
    // move: compare everything but the mapped memfd's hash.
    let strip = |s: &str| {
        s.split(" | ")
            .map(|p| {
                if p.contains("mgw-mapped") {
                    p.split(' ')
                        .filter(|w| w.len() != 12)
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(states[1]), strip(states[0]));
    assert!(text.contains("write-through True"), "{text}");
    eprintln!("{}", states.join("\n"));
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn files_missing_on_host2_and_deleted_files_are_shipped() {
    require_lab!();
    let c = Cluster::start();
    let script =
        include_str!("scripts/descriptors_files_missing_on_host2_and_deleted_files_are_shipped.py");
    let p = Proc::start(c.h1(), c.path("ship.out"), "python3", &["-c", script]);
    assert!(p.wait_for("state", 20), "{}", p.text());
    assert!(!c.h2().root_path("/tmp/wd/notes.txt").exists());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(
        wait_until(20, || p.text().matches("state ").count() == 2),
        "{}",
        p.text()
    );
    let text = p.text();
    let s: Vec<&str> = text.lines().filter(|l| l.starts_with("state ")).collect();
    // The deleted file: same content, offset, still deleted.
    assert_eq!(s[0].split(" | ").nth(1), s[1].split(" | ").nth(1), "{s:?}");
    assert!(s[1].ends_with("True"), "{s:?}");
    // The shipped file exists on host2 now, written through at its offset.
    let notes = std::fs::read_to_string(c.h2().root_path("/tmp/wd/notes.txt")).unwrap();
    assert!(notes.starts_with("line 1\nline 2\n"), "{}", &notes[..40]);
    assert_eq!(&notes[100..125], "appended on the new host\n");
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn a_shipped_file_streams_through_the_agents() {
    require_lab!();
    let c = Cluster::start();
    // 28 MiB that differ everywhere, twice: deleted on host1, and at a
    // path missing on host2 (together within the 64 MiB shipping limit).
    let script = include_str!("scripts/descriptors_a_shipped_file_streams_through_the_agents.py");
    let p = Proc::start(c.h1(), c.path("stream.out"), "python3", &["-c", script]);
    assert!(p.wait_for("state", 60), "{}", p.text());
    let before = [c.h1(), c.h2()].map(|h| agent_memory_kib(h, "VmHWM:"));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let after = [c.h1(), c.h2()].map(|h| agent_memory_kib(h, "VmHWM:"));
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(
        wait_until(60, || p.text().matches("state ").count() == 2),
        "{}",
        p.text()
    );
    let text = p.text();
    let s: Vec<&str> = text.lines().filter(|l| l.starts_with("state ")).collect();
    assert_eq!(s[0], s[1], "the content changed on the way");
    // 56 MiB went through; neither agent's peak grew by half of one file
    // (read whole, each would have grown by 56 MiB at least).
    for (host, (b, a)) in ["host1", "host2"].iter().zip(before.iter().zip(after)) {
        eprintln!("{host} agent peak RSS: {b} KiB -> {a} KiB");
        assert!(a - b < 12 << 10, "{host}'s agent grew from {b} to {a} KiB");
    }
    // (The workload has exited after its second line.)
}

#[test]
fn a_missing_file_over_the_shipping_limit_is_refused() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/descriptors_big_file.py");
    let p = Proc::start(c.h1(), c.path("big.out"), "python3", &["-c", script]);
    assert!(p.wait_for("tick", 20));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_refused(
        &out,
        1,
        "/tmp/big (73400320 bytes) is missing on the destination and over the shipping limit",
    );
    assert!(alive_in(c.h1(), p.pid));
}

#[test]
fn socketpairs_keep_their_queued_data() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/descriptors_socketpairs_keep_their_queued_data.py");
    let p = Proc::start(c.h1(), c.path("pair.out"), "python3", &["-c", script]);
    assert!(p.wait_for("ready", 20), "{}", p.text());
    let check = c.migrate(&["check", &p.pid.to_string()]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("(unix socket): moves"), "{check:?}");
    assert!(
        report.contains("(unix socket, its peer gone): moves"),
        "{check:?}"
    );
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("after", 20), "{}", p.text());
    let t = p.text();
    assert!(t.contains("b got 8000 True"), "{t}");
    assert!(t.contains("a got from b"), "{t}");
    assert!(t.contains("dgrams one,two,three"), "{t}");
    // Widowed: its bytes, then end-of-file, and a write fails.
    assert!(t.contains("widowed last words b'' EPIPE"), "{t}");
    assert!(t.contains("after still connected"), "{t}");
}

#[test]
fn idle_stream_lanes_probe_their_peer_with_keepalive() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("idle.out");
    // A process whose standard output is a pipe to `cat` on host1, quiet
    // after its first line: its stream lane idles once it has moved.
    let script = format!(
        "python3 -c 'import os, time; os.closerange(3, 4096); print(\"pid\", os.getpid(), flush=True); time.sleep(600)' | cat > {}",
        out_file.display()
    );
    let mut sh = c
        .h1()
        .command("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(wait_until(20, || text().contains("pid ")), "did not start");
    let pid: i32 = text()
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .expect("pid");
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    // Its lane is the agents' only connection once the move is over: the
    // kernel shows its keepalive timer (probes after 5 s idle).
    let mut seen = String::new();
    let probed = wait_until(15, || {
        seen = lane_timers(c.h2());
        let lanes: Vec<&str> = seen.lines().collect();
        !lanes.is_empty() && lanes.iter().all(|l| keepalive_within(l, 5.0))
    });
    let (on_h2, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), on_h2, "-KILL");
    let _ = sh.wait();
    assert!(probed, "stream lanes without keepalive on host2:\n{seen}");
}

#[test]
fn a_pipeline_middle_stage_moves_and_its_streams_are_forwarded() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("pipeline.out");
    // producer | sed (Debian's, unmodified, started without stray
    // descriptors) | consumer, all on host1; sed moves to host2.
    let producer = include_str!("scripts/descriptors_pipeline_producer.py");
    let launcher = include_str!("scripts/launcher.py");
    let script = format!(
        "python3 -c \"$P\" | python3 -c \"$L\" sed -u 's/^/seen /' | cat > {}",
        out_file.display()
    );
    let mut sh = c
        .h1()
        .command("sh")
        .args(["-c", &script])
        .env("P", producer)
        .env("L", launcher)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        wait_until(20, || text().contains("seen 200\n")),
        "pipeline did not start: {}",
        text()
    );
    let pid: i32 = text()
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .expect("sed's pid");
    let check = c.migrate(&["check", &pid.to_string()]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("fd 0: pipe:"),
        "{check:?}"
    );
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(
        !text().contains("seen 3000\n"),
        "the producer finished before the move: proves nothing"
    );
    // And back home to host1: the forwarding follows (through host2's
    // agent, which now holds sed's streams).
    let (on_h2, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let back = c.migrate_from(c.h2(), &[&on_h2.to_string(), "--to", "host1"]);
    assert_eq!(back.status.code(), Some(0), "{back:?}\n{}", c.logs());
    assert!(
        !text().contains("seen 3000\n"),
        "the producer finished before the second move"
    );
    // The pipeline runs to its end: EOF travels producer -> sed (host2)
    // -> consumer, and nothing is lost or reordered on the way.
    let done = wait_until(60, || matches!(sh.try_wait(), Ok(Some(_))));
    assert!(done, "the pipeline never ended\n{}", c.logs());
    let lines: Vec<String> = text()
        .lines()
        .filter(|l| l.starts_with("seen "))
        .map(String::from)
        .collect();
    let want: Vec<String> = (1..=3000).map(|i| format!("seen {i}")).collect();
    assert_eq!(lines.len(), want.len(), "lines lost or duplicated");
    assert!(lines == want, "lines reordered");
}

#[test]
fn a_program_on_a_terminal_moves_and_a_deputy_stands_in_at_home() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("tty.out");
    // A program on a terminal (script's pty): it moves, its output keeps
    // reaching the terminal, and script (the session leader waiting for
    // it) sees it end with its own exit code, through the deputy.
    let ticker = include_str!("scripts/descriptors_terminal_ticker.py");
    let mut sh = c
        .h1()
        .command("script")
        .args(["-qfec", "python3 -c \"$T\"", "/dev/null"])
        .env("T", ticker)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(wait_until(20, || text().contains("tick 30")), "{}", text());
    let pid: i32 = text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .expect("pid");
    let report =
        String::from_utf8_lossy(&c.migrate(&["check", &pid.to_string()]).stdout).into_owned();
    assert!(
        report.contains("(terminal, forwarded; a deputy stays here): moves"),
        "{report}"
    );
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(!text().contains("tick 400"), "finished before the move");
    // And on back to host1: the deputy follows (it now talks to host1's
    // agent), the terminal keeps getting the output.
    let (on_h2, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let again = c.migrate_from(c.h2(), &[&on_h2.to_string(), "--to", "host1"]);
    assert_eq!(again.status.code(), Some(0), "{again:?}\n{}", c.logs());
    assert!(
        !text().contains("tick 400"),
        "finished before the second move"
    );
    let mut status = None;
    assert!(
        wait_until(30, || {
            status = sh.try_wait().ok().flatten();
            status.is_some()
        }),
        "script never ended\n{}",
        c.logs()
    );
    let ticks: Vec<u32> = text()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.trim().parse().ok())
        .collect();
    assert_eq!(ticks, (1..=400).collect::<Vec<_>>());
    assert_eq!(
        status.unwrap().code(),
        Some(7),
        "the exit code did not come home"
    );
}

#[test]
fn inotify_watches_are_added_again_with_their_numbers() {
    require_lab!();
    let c = Cluster::start();
    let watched = c.path("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let script = include_str!("scripts/descriptors_inotify.py");
    let watched_arg = watched.to_string_lossy().into_owned();
    let p = Proc::start(
        c.h1(),
        c.path("inotify.out"),
        "python3",
        &["-c", script, &watched_arg],
    );
    assert!(p.wait_for("wds 1 3", 20), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    // A file made on host2 (the shared directory) is reported through the
    // watch, under its old number, and nothing else is.
    std::fs::write(watched.join("made-after-the-move"), "x").unwrap();
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("events", 20), "{}", p.text());
    assert!(
        p.text().contains("events 3:100:made-after-the-move\n"),
        "{}",
        p.text()
    );
}

#[test]
fn a_named_fifo_with_both_ends_keeps_its_bytes() {
    require_lab!();
    let c = Cluster::start();
    let fifo = c.path("fifo");
    let script = include_str!("scripts/descriptors_fifo.py");
    let fifo_arg = fifo.to_string_lossy().into_owned();
    let p = Proc::start(
        c.h1(),
        c.path("fifo.out"),
        "python3",
        &["-c", script, &fifo_arg],
    );
    assert!(p.wait_for("pid", 20), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("blocking", 20), "{}", p.text());
    let t = p.text();
    assert!(t.contains("read waiting in the fifo\n"), "{t}");
    assert!(t.contains("read and more blocking True"), "{t}");
}

#[test]
fn a_signal_to_the_deputy_reaches_the_moved_process() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("tty-int.out");
    let ticker = include_str!("scripts/descriptors_interrupted_ticker.py");
    let mut sh = c
        .h1()
        .command("script")
        .args(["-qfec", "python3 -c \"$T\"", "/dev/null"])
        .env("T", ticker)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(wait_until(20, || text().contains("tick 30")), "{}", text());
    let pid: i32 = text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .expect("pid");
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    // The deputy holds the old pid on host1: ^C sent there reaches the
    // process on host2, which says so on the terminal and exits.
    assert!(
        wait_until(10, || alive_in(c.h1(), pid)),
        "no deputy on host1"
    );
    signal_in(c.h1(), pid, "-INT");
    let mut status = None;
    assert!(
        wait_until(20, || {
            status = sh.try_wait().ok().flatten();
            status.is_some()
        }),
        "script never ended\n{}",
        text()
    );
    assert!(text().contains("interrupted on host2"), "{}", text());
    assert_eq!(status.unwrap().code(), Some(42));
}

#[test]
fn a_different_file_at_the_same_path_on_host2_goes_as_a_private_copy() {
    require_lab!();
    let c = Cluster::start();
    // Each host's private /tmp holds its own /tmp/notes.txt.
    let st = c
        .h2()
        .command("sh")
        .args(["-c", "echo 'host2 has its own notes' > /tmp/notes.txt"])
        .status()
        .unwrap();
    assert!(st.success());
    let script = include_str!("scripts/descriptors_notes.py");
    let p = Proc::start(c.h1(), c.path("notes.out"), "python3", &["-c", script]);
    assert!(p.wait_for("pid", 20));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("now:", 20), "{}", p.text());
    // The process goes on with its own content, at its offset...
    assert!(
        p.text()
            .contains("mine: host1 notes, longer than the other\n"),
        "{}",
        p.text()
    );
    assert!(
        p.text()
            .contains("now: host1 notes, longer than the other|written on host2|"),
        "{}",
        p.text()
    );
    // ...and host2's own file is untouched.
    let theirs = std::fs::read_to_string(c.h2().root_path("/tmp/notes.txt")).unwrap();
    assert_eq!(
        theirs, "host2 has its own notes\n",
        "host2's file was touched"
    );
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn a_unix_listener_and_its_own_connection_move() {
    require_lab!();
    let c = Cluster::start();
    let path = c.path("srv.sock");
    let script = include_str!("scripts/descriptors_unix_listener.py");
    let path_arg = path.to_string_lossy().into_owned();
    let p = Proc::start(
        c.h1(),
        c.path("usrv.out"),
        "python3",
        &["-c", script, &path_arg],
    );
    assert!(p.wait_for("pid", 20), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let ask = include_str!("scripts/descriptors_unix_ask.py");
    let r = c
        .h2()
        .command("python3")
        .args(["-c", ask, &path_arg])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "echo:hi", "{r:?}");
    assert!(p.wait_for("inner", 10), "{}", p.text());
    assert!(
        p.text().contains("inner queued before the move"),
        "{}",
        p.text()
    );
}
