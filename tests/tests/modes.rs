//! The transfer modes other than the default post-copy: pre-copy rounds
//! with userfaultfd write-protect tracking, hybrid, stop-copy. Each moves
//! a workload that keeps writing new values while it is copied, and the
//! workload checks every word on host2 against a replay of its writes.

use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// What becomes of the source agent once the process runs on host2.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// It serves the rest, if any: `migrate` returns when all has moved.
    Kept,
    /// `migrate --detach` returns at the resume and the source agent is
    /// killed at once: the check on host2 then proves that nothing was
    /// left on the source, whatever the record says.
    KilledAtResume,
}

/// A move, as the test saw it.
struct Moved {
    /// `migrate --json`'s record.
    rec: serde_json::Value,
    /// Bytes host2 received on its link while `migrate` ran (the kernel's
    /// count on its veth).
    received: u64,
}

/// Starts a 96 MiB workload writing 32 pages every 2 ms (about 60 MiB/s
/// of new values), migrates it with `args`, and checks it on host2:
/// consecutive ticks, every word, original gone. Returns the record.
fn move_writing_workload(c: &mut Cluster, args: &[&str]) -> serde_json::Value {
    move_writing(c, args, Source::Kept).rec
}

/// The same, with the source agent kept or killed at the resume; what was
/// seen of the move.
fn move_writing(c: &mut Cluster, args: &[&str], source: Source) -> Moved {
    let workload = ["--mib", "96", "--tick-ms", "2", "--dirty-pages", "32"];
    move_writing_with(c, args, source, &workload)
}

/// [`move_writing`] with the workload's own arguments (96 MiB).
fn move_writing_with(c: &mut Cluster, args: &[&str], source: Source, workload: &[&str]) -> Moved {
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, workload);
    assert!(w.wait_for("ready 96", 60), "workload never got ready");
    assert!(wait_until(10, || w.ticks().len() >= 50), "no ticks");
    let pid = w.pid.to_string();
    let mut full = vec![pid.as_str(), "--to", "host2", "--json"];
    full.extend_from_slice(args);
    if source == Source::KilledAtResume {
        full.push("--detach");
    }
    let (before_rx, _) = c.h2().link_bytes();
    let out = c.migrate(&full);
    let received = c.h2().link_bytes().0 - before_rx;
    if source == Source::KilledAtResume {
        c.agents[0].kill();
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "migration failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json record");
    let new_pid = rec["new_pid"].as_i64().unwrap() as i32;
    assert!(alive_in(c.h2(), new_pid), "no process {new_pid} on host2");
    assert!(
        wait_until(10, || !alive_in(c.h1(), w.pid)),
        "the original still runs on host1"
    );
    let before = w.ticks().len();
    assert!(
        wait_until(10, || w.ticks().len() >= before + 50),
        "no ticks on host2"
    );
    for pair in w.ticks().windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "tick numbers jump: {pair:?}");
    }
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 60), "no verification answer");
    let verdict: Vec<String> = w
        .text()
        .lines()
        .filter(|l| l.starts_with("verify"))
        .map(String::from)
        .collect();
    assert_eq!(
        verdict,
        vec!["verify ok 24576".to_string()],
        "memory differs on host2"
    );
    signal_in(c.h2(), new_pid, "-KILL");
    if source == Source::Kept {
        // (A record taken at the resume has messages still in flight.)
        assert_messages_keep_the_clock_rules(&rec);
    }
    eprintln!(
        "{}: {} messages, downtime {} us, rounds {}, stored {}, eager {}, lazy {}, host2 received {} bytes",
        rec["mode"],
        rec["messages"].as_array().map_or(0, Vec::len),
        rec["downtime_us"],
        rec["precopy_rounds"],
        rec["stored_pages"],
        rec["eager_pages"],
        rec["lazy_pages"],
        received
    );
    Moved { rec, received }
}

/// The record lists the protocol's messages with both ends, and their
/// Lamport timestamps obey the clock rules: a receive is later than its
/// send, and each host's events (sends and receives) have distinct,
/// increasing timestamps in the order of its own clock.
fn assert_messages_keep_the_clock_rules(rec: &serde_json::Value) {
    let messages = rec["messages"].as_array().expect("messages in the record");
    assert_eq!(rec["messages_unlogged"], 0, "{rec}");
    let kinds: Vec<&str> = messages.iter().filter_map(|m| m["kind"].as_str()).collect();
    for want in [
        "FileCheck",
        "FileVerdict",
        "ClockProbe",
        "Core",
        "Ready",
        "Commit",
        "Resumed",
        "Complete",
    ] {
        assert!(kinds.contains(&want), "no {want} among {kinds:?}");
    }
    // The destination's log leaves with `Complete`: what the source sent
    // after that, on a lane in order, was never logged as received.
    let last_received_seq = messages
        .iter()
        .filter(|m| m["from"] == "host1" && !m["lamport_received"].is_null())
        .filter_map(|m| m["seq"].as_u64())
        .max()
        .unwrap();
    // Per host: (its own time, its Lamport time) of each send and receive.
    let mut events: std::collections::BTreeMap<String, Vec<(i64, u64)>> = Default::default();
    for m in messages {
        let (from, to) = (m["from"].as_str().unwrap(), m["to"].as_str().unwrap());
        let sent = (m["sent_us"].as_i64(), m["lamport_sent"].as_u64());
        let got = (m["received_us"].as_i64(), m["lamport_received"].as_u64());
        let (Some(ts), Some(ls)) = sent else {
            panic!("a message without its send: {m}")
        };
        events.entry(from.into()).or_default().push((ts, ls));
        match got {
            (Some(tr), Some(lr)) => {
                assert!(lr > ls, "received at L{lr}, sent at L{ls}: {m}");
                events.entry(to.into()).or_default().push((tr, lr));
            }
            _ => assert!(
                m["from"] == "host1" && m["seq"].as_u64().unwrap() > last_received_seq,
                "a message without its receipt: {m}"
            ),
        }
    }
    for (host, mut evs) in events {
        evs.sort();
        for w in evs.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "on {host}, L{} at {} us follows L{} at {} us",
                w[1].1,
                w[1].0,
                w[0].1,
                w[0].0
            );
        }
    }
}

fn rounds(rec: &serde_json::Value) -> Vec<u64> {
    rec["precopy_rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Bytes of `pages` pages.
fn page_bytes(pages: u64) -> u64 {
    pages * 4096
}

#[test]
fn precopy_moves_a_process_that_keeps_writing() {
    require_lab!();
    let mut c = Cluster::start();
    // The source agent is killed as soon as the process runs on host2:
    // its check there proves that pre-copy left nothing behind.
    let m = move_writing(
        &mut c,
        &["--mode", "precopy", "--max-rounds", "4"],
        Source::KilledAtResume,
    );
    let rec = &m.rec;
    assert_eq!(rec["mode"], "precopy");
    let r = rounds(rec);
    assert!(!r.is_empty() && r.len() <= 4, "rounds: {r:?}");
    // The first round carries the whole 96 MiB; pages written later went
    // again in later rounds or during the freeze. The rounds the record
    // counts crossed the link, by host2's count of what it received.
    assert!(r[0] >= 24576, "first round sent only {} pages", r[0]);
    let claimed = page_bytes(r.iter().sum());
    assert!(
        m.received >= claimed,
        "host2 received {} bytes, the rounds claim {claimed}",
        m.received
    );
    assert!(rec["stored_pages"].as_u64().unwrap() > 0);
}

#[test]
fn converge_pages_decides_when_the_rounds_end() {
    require_lab!();
    // A bound above all it writes: the first round's check finds fewer
    // written pages, and it is the last.
    let mut c = Cluster::start();
    let m = move_writing(
        &mut c,
        &["--mode", "precopy", "--converge-pages", "1000000"],
        Source::Kept,
    );
    assert_eq!(rounds(&m.rec).len(), 1, "rounds: {:?}", rounds(&m.rec));
    // No bound a writing process can meet: every round up to the most.
    let mut c = Cluster::start();
    let m = move_writing(
        &mut c,
        &[
            "--mode",
            "precopy",
            "--converge-pages",
            "0",
            "--max-rounds",
            "3",
        ],
        Source::Kept,
    );
    let r = rounds(&m.rec);
    assert_eq!(r.len(), 3, "rounds: {r:?}");
    // Those rounds crossed the link, by host2's count.
    assert!(
        m.received >= page_bytes(r.iter().sum()),
        "host2 received {} bytes for rounds of {r:?} pages",
        m.received
    );
}

#[test]
fn hybrid_copies_once_then_fetches_what_was_written_since() {
    require_lab!();
    let mut c = Cluster::start();
    let m = move_writing(&mut c, &["--mode", "hybrid"], Source::Kept);
    assert_eq!(m.rec["mode"], "hybrid");
    let r = rounds(&m.rec);
    assert_eq!(r.len(), 1);
    // One round of the whole memory crossed, and what was written since.
    assert!(
        m.received >= page_bytes(24576),
        "host2 received {} bytes for 96 MiB",
        m.received
    );
    assert!(m.rec["stored_pages"].as_u64().unwrap() > 0);
}

#[test]
fn stop_copy_moves_a_process_that_keeps_writing() {
    require_lab!();
    let mut c = Cluster::start();
    // Nothing is left on the source: killed at the resume, it is not
    // missed.
    let m = move_writing(&mut c, &["--mode", "stop-copy"], Source::KilledAtResume);
    assert_eq!(m.rec["mode"], "stop-copy");
    assert!(
        m.received >= page_bytes(24576),
        "host2 received {} bytes for 96 MiB",
        m.received
    );
}

#[test]
fn postcopy_moves_a_process_that_keeps_writing() {
    require_lab!();
    let mut c = Cluster::start();
    let rec = move_writing_workload(&mut c, &["--mode", "postcopy", "--push-rate", "64"]);
    assert_eq!(rec["mode"], "postcopy");
    // Its one thread faulted while the push was slow: each fault names it.
    let faults = rec["faults"].as_array().unwrap();
    assert!(!faults.is_empty(), "no demand faults");
    assert!(
        faults.iter().all(|f| f["tid"] == rec["new_pid"]),
        "fault threads: {:?}",
        faults.iter().map(|f| &f["tid"]).collect::<Vec<_>>()
    );
}

#[test]
fn pages_of_zeros_cross_post_copy_as_marks() {
    require_lab!();
    let mut c = Cluster::start();
    // Half the workload's pages hold zeros, written (in memory on host1),
    // and it writes a page a tick (most stay zero): they cross as marks,
    // and host2 maps the zero page there.
    let workload = [
        "--mib",
        "96",
        "--tick-ms",
        "5",
        "--dirty-pages",
        "1",
        "--zeros",
        "50",
    ];
    let m = move_writing_with(&mut c, &["--mode", "postcopy"], Source::Kept, &workload);
    assert_eq!(m.rec["mode"], "postcopy");
    // Every word checked on host2 (above); by host2's count of what it
    // received, the zeros did not cross as pages.
    assert!(
        m.received < page_bytes(24576) * 6 / 10,
        "host2 received {} bytes for 96 MiB of which half are zeros",
        m.received
    );
}

#[test]
fn eager_policies_choose_what_goes_in_the_freeze() {
    require_lab!();
    let mut c = Cluster::start();
    // Hybrid with every page not yet on host2 in the freeze: nothing lazy
    // (the source agent killed at the resume is not missed).
    let m = move_writing(
        &mut c,
        &["--mode", "hybrid", "--eager", "dirty"],
        Source::KilledAtResume,
    );
    assert!(m.rec["stored_pages"].as_u64().unwrap() > 0);

    let mut c = Cluster::start();
    // Post-copy with a 1 MiB budget: 256 pages (plus the thread blocks).
    let rec = move_writing_workload(
        &mut c,
        &[
            "--mode",
            "postcopy",
            "--eager",
            "dirty",
            "--eager-budget",
            "1",
        ],
    );
    let eager = rec["eager_pages"].as_u64().unwrap();
    assert!((256..256 + 64).contains(&eager), "eager pages: {eager}");

    let mut c = Cluster::start();
    // Nothing but what rebuilding needs: thread blocks, rseq areas and
    // the written pages of private file mappings (never lazy).
    let rec = move_writing_workload(&mut c, &["--mode", "postcopy", "--eager", "none"]);
    let eager = rec["eager_pages"].as_u64().unwrap();
    assert!(eager <= 32, "eager pages with --eager none: {eager}");
}

/// The runs of pages present (in memory, by `/proc/PID/pagemap`) in the
/// largest anonymous mapping of `pid` in `host`: (first page index,
/// length), in address order. Reading the pagemap touches nothing.
fn present_runs(host: &migrate_tests::lab::Host, pid: i32) -> Vec<(u64, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(host.root_path(format!("proc/{pid}/maps"))).unwrap();
    let (start, end) = maps
        .lines()
        .filter(|l| l.split_whitespace().count() == 5)
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .max_by_key(|(a, b)| b - a)
        .unwrap();
    let pages = (end - start) / 4096;
    let mut f = std::fs::File::open(host.root_path(format!("proc/{pid}/pagemap"))).unwrap();
    f.seek(SeekFrom::Start(start / 4096 * 8)).unwrap();
    let mut raw = vec![0u8; pages as usize * 8];
    f.read_exact(&mut raw).unwrap();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, e) in raw.chunks(8).enumerate() {
        let present = u64::from_ne_bytes(e.try_into().unwrap()) >> 63 == 1;
        match runs.last_mut() {
            Some((first, len)) if present && *first + *len == i as u64 => *len += 1,
            _ if present => runs.push((i as u64, 1)),
            _ => {}
        }
    }
    runs
}

/// Moves a 96 MiB workload writing one page every 50 ms (all over its
/// memory) in post-copy with a slow push and `args`, lets it run 1.5 s
/// on host2, and returns the runs of its pages present there then.
fn pages_present_after_a_slow_push(args: &[&str]) -> Vec<(u64, u64)> {
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "96", "--tick-ms", "50"],
    );
    assert!(w.wait_for("ready 96", 60), "workload never got ready");
    let pid = w.pid.to_string();
    let mut full = vec![
        pid.as_str(),
        "--to",
        "host2",
        "--detach",
        "--push-rate",
        "4",
    ];
    full.extend_from_slice(args);
    let out = c.migrate(&full);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let n = w.ticks().len();
    assert!(
        wait_until(20, || w.ticks().len() >= n + 30),
        "no ticks on host2"
    );
    present_runs(c.h2(), new_pid)
}

/// Runs of at least `len` pages after the first run (the push's start).
fn long_runs_beyond_the_start(runs: &[(u64, u64)], len: u64) -> usize {
    runs.iter().skip(1).filter(|r| r.1 >= len).count()
}

#[test]
fn the_push_follows_faults_and_a_fault_fetches_its_window() {
    require_lab!();
    // One page per fault, pushed in address order at 4 MiB/s: after the
    // push's start (about 6 MiB by then), only single faulted pages.
    let seq = pages_present_after_a_slow_push(&["--prefetch", "1"]);
    eprintln!(
        "sequential, prefetch 1: {} runs, first {:?}",
        seq.len(),
        seq.first()
    );
    assert_eq!(
        long_runs_beyond_the_start(&seq, 8),
        0,
        "pages beside faults came without being asked: {seq:?}"
    );
    // Each fault fetches 64 pages from the faulting one on.
    let window = pages_present_after_a_slow_push(&["--prefetch", "64"]);
    let fetched = long_runs_beyond_the_start(&window, 64);
    eprintln!("sequential, prefetch 64: {fetched} runs of 64 pages or more beyond the start");
    assert!(fetched >= 5, "no windows fetched around faults: {window:?}");
    // The push jumps to each fault and goes on from there: runs beside
    // faulted pages far beyond the push's start.
    let near = pages_present_after_a_slow_push(&["--prefetch", "1", "--push-order", "near-faults"]);
    let pushed = long_runs_beyond_the_start(&near, 16);
    eprintln!("near-faults, prefetch 1: {pushed} runs of 16 pages or more beyond the start");
    assert!(pushed >= 5, "the push did not follow the faults: {near:?}");
}

#[test]
fn the_record_aligns_both_hosts_and_draws() {
    require_lab!();
    let mut c = Cluster::start();
    let rec = move_writing_workload(&mut c, &["--mode", "hybrid", "--push-rate", "256"]);
    let id = rec["id"].as_str().unwrap().to_string();

    // Both agents' milestones on one timeline, in causal order within the
    // stated uncertainty of the clock offset.
    let unc = rec["clock_uncertainty_us"].as_i64().unwrap();
    assert!(unc < 50_000, "clock uncertainty {unc} us");
    let at = |host: &str, what: &str| {
        rec["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["host"] == host && e["what"] == what)
            .and_then(|e| e["at_us"].as_i64())
            .unwrap_or_else(|| panic!("no event {what} on {host}: {}", rec["events"]))
    };
    for (before, after) in [
        (("host1", "core dumped"), ("host2", "core received")),
        (("host2", "rebuilt"), ("host1", "commit")),
        (("host1", "commit"), ("host2", "resumed")),
        (("host2", "resumed"), ("host1", "resume acknowledged")),
        (("host2", "every page in"), ("host1", "original released")),
    ] {
        let (a, b) = (at(before.0, before.1), at(after.0, after.1));
        assert!(
            a <= b + unc,
            "{before:?} at {a} us is after {after:?} at {b} us (uncertainty {unc} us)"
        );
    }
    assert!(rec["lanes"]["precopy"].as_u64().unwrap() >= 96 << 20);

    let list = c.migrate(&["list", "--history"]);
    assert_eq!(list.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&id),
        "{id} not in the history:\n{}",
        String::from_utf8_lossy(&list.stdout)
    );
    let status = c.migrate(&["status", &id[..8], "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let again: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(again["id"], rec["id"]);
    assert_eq!(again["outcome"], "complete");
    assert_refused(
        &c.migrate(&["status", "ffffffffffffffff9"]),
        1,
        "no migration",
    );

    for (args, needle) in [
        (vec!["report", id.as_str()], "freeze"),
        (vec!["report", id.as_str(), "--timespace"], "host2"),
        (
            vec!["report", id.as_str(), "--timespace", "--html"],
            "addEventListener",
        ),
    ] {
        let svg = c.path("r.svg");
        let mut a = args.clone();
        a.extend(["-o", svg.to_str().unwrap()]);
        let out = c.migrate(&a);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let text = std::fs::read_to_string(&svg).unwrap();
        let html = args.contains(&"--html");
        assert!(
            text.starts_with(if html { "<!DOCTYPE html>" } else { "<svg" }),
            "not an SVG or a page"
        );
        assert!(text.contains(needle), "{needle} missing from the picture");
        if args.contains(&"--timespace") && !html {
            // One arrow per message with both ends in the whole
            // migration's panel, more in the zoomed one; Commit's
            // Lamport stamps written beside the hosts.
            let both = rec["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| !m["received_us"].is_null())
                .collect::<Vec<_>>();
            let arrows = text.matches(r#"<line class="msg""#).count();
            assert!(
                arrows > both.len(),
                "{arrows} arrows for {} messages",
                both.len()
            );
            let commit = both.iter().find(|m| m["kind"] == "Commit").unwrap();
            for l in [&commit["lamport_sent"], &commit["lamport_received"]] {
                assert!(text.contains(&format!(">L{l}<")), "no L{l} in the picture");
            }
        }
        if let Some(keep) = std::env::var_os("KEEP_TIMESPACE") {
            // The picture, and the page beside it as KEEP.html.
            let keep = std::path::PathBuf::from(keep);
            if html {
                std::fs::copy(&svg, keep.with_extension("html")).unwrap();
            } else if args.contains(&"--timespace") {
                std::fs::copy(&svg, keep).unwrap();
            }
        }
    }
}

#[test]
fn progress_is_reported_while_post_copy_runs() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "64"]);
    assert!(w.wait_for("ready 64", 60));
    // 64 MiB pushed at 32 MiB/s: about two seconds of post-copy.
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "32"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("post-copy: "))
        .collect();
    assert!(!lines.is_empty(), "no progress lines: {err}");
    assert!(
        lines.iter().all(|l| l.contains(" of 64.0 MiB moved")),
        "{lines:?}"
    );
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-KILL");
}

/// `Cpus_allowed_list` of task `tid` of process `pid` (outer pids).
fn cpus_of(pid: i32, tid: &str) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_destinations_post_copy_threads_run_on_every_cpu_its_agent_may() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "64"]);
    assert!(w.wait_for("ready 64", 60));
    // 64 MiB pushed at 8 MiB/s: about eight seconds of post-copy.
    let m = c.spawn_migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "8"]);
    let agent = agent_outer_pid(&c.agents[1]);
    let main = cpus_of(agent, &agent.to_string());
    // The restore pins its thread to one CPU for ptrace; the threads it
    // starts for post-copy must not stay there.
    let names = ["fault-loop", "demand-read", "push-read", "push-install"];
    let seen = || {
        let mut seen = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(format!("/proc/{agent}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let tid = e.file_name().to_string_lossy().to_string();
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if names.contains(&comm.trim()) {
                seen.insert(comm.trim().to_string(), cpus_of(agent, &tid));
            }
        }
        seen
    };
    let mut threads = seen();
    let t0 = std::time::Instant::now();
    while threads.len() < names.len() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        threads = seen();
    }
    let out = m.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-KILL");
    assert_eq!(
        threads.len(),
        names.len(),
        "post-copy's threads: {threads:?}"
    );
    assert!(
        threads.values().all(|cpus| *cpus == main),
        "the agent runs on {main}, its post-copy threads on {threads:?}"
    );
}

#[test]
fn compressed_pages_arrive_intact_and_take_fewer_bytes() {
    require_lab!();
    let mut c = Cluster::start();
    // Stop-and-copy sends each page once: without compression host2
    // receives a little more than the 96 MiB (`stop_copy_moves_...`).
    let m = move_writing(
        &mut c,
        &["--mode", "stop-copy", "--compress", "lz4"],
        Source::Kept,
    );
    let rec = &m.rec;
    assert_eq!(
        rec["options"]["compress"], true,
        "the policy is not in the record"
    );
    // The workload's 96 MiB all crossed (it checked every word on host2),
    // in fewer bytes than the pages, by host2's count of what it received.
    eprintln!("host2 received {} bytes for 96 MiB", m.received);
    assert!(
        m.received < page_bytes(24576) * 9 / 10,
        "compression saved little: host2 received {} bytes for 96 MiB",
        m.received
    );
}
