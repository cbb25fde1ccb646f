//! After the commit both agents beat on the control lane: a link cut
//! during post-copy is noticed on both sides without any help from TCP.
//! The destination kills its copy (its pages cannot come); the source,
//! even with `--on-loss resume`, runs the frozen original again only once
//! the destination, asked, says the copy is gone.

use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_tests::bins::bin;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

#[test]
fn a_link_cut_during_postcopy_kills_the_copy_and_resumes_the_original() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "64"]);
    assert!(w.wait_for("ready 64", 60));
    assert!(w.wait_for("tick 3 ", 30));
    // A tick of the original's before the move.
    let before = w.ticks().last().unwrap().0;
    // Demand paging only: post-copy stays open while the process runs.
    let mut m = c.spawn_migrate(&[
        &w.pid.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "0",
        "--on-loss",
        "resume",
    ]);
    let find = |c: &Cluster| pids_named(c.h2(), "workload").first().copied();
    assert!(
        wait_until(30, || find(&c).is_some()),
        "never resumed on host2\n{}",
        c.logs()
    );
    let copy = find(&c).unwrap();
    // It runs there (ticks go on) before the link goes.
    let n = w.ticks().len();
    assert!(
        wait_until(20, || w.ticks().len() > n + 10),
        "no ticks on host2"
    );
    let st = c
        .h1()
        .command("ip")
        .args(["link", "set", "mgl0", "down"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "could not cut the link");
    let cut = Instant::now();

    // The destination hears nothing more and kills its copy.
    assert!(
        wait_until(60, || !alive_in(c.h2(), copy)),
        "the copy outlived the link:\n{}",
        c.logs()
    );
    let copy_gone = now_ns();
    // The source gives up on the destination, asks it what became of the
    // copy and cannot reach it: it may not resume the original then (the
    // copy might run on), and keeps it frozen, saying why.
    let t = Instant::now();
    let status = loop {
        if let Some(st) = m.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(90) {
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = m.kill();
    }
    let out = m.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("migrate ended {:?} after the cut: {err}", cut.elapsed());
    assert_eq!(out.status.code(), Some(4), "{err}\n{}", c.logs());
    assert!(err.contains("lost host2 during post-copy"), "{err}");
    assert!(err.contains("cannot be learned"), "{err}");
    assert!(err.contains("is kept frozen here"), "{err}");
    sleep(Duration::from_secs(1));
    assert!(
        alive_in(c.h1(), w.pid) && !runs_in(c.h1(), w.pid),
        "the original is not kept frozen"
    );
    let id = resolve_id(&err);

    // With the link back, host2 says the copy is gone: the original runs
    // on, untouched.
    let st = c
        .h1()
        .command("ip")
        .args(["link", "set", "mgl0", "up"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "could not restore the link");
    let mut resolved = None;
    wait_until(30, || {
        let out = c.migrate(&["resolve", &id, "--resume"]);
        let ok = out.status.success();
        resolved = Some(out);
        ok
    });
    let out = resolved.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("runs here again"));
    assert_untouched(&c, &w);
    assert_eq!(verify_memory(&c, c.h1(), w.pid, &w), "verify ok 16384");
    one_run_then_the_original_again(&w.ticks(), before, copy_gone);
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The ticks (number, wall-clock ns) of an original moved (`before` one
/// of its ticks before the move), its copy lost after ten ticks or more
/// (gone by `copy_gone`) and the original resumed, all appended to one
/// file: the original then the copy count on without a gap; then, once,
/// the count goes back to a tick after `before` and ten or more before the
/// copy's last (the original runs on from where it was frozen), only after
/// the copy was gone, and counts on without a gap.
fn one_run_then_the_original_again(ticks: &[(u64, u64)], before: u64, copy_gone: u64) {
    let back: Vec<usize> = (1..ticks.len())
        .filter(|&i| ticks[i].0 != ticks[i - 1].0 + 1)
        .collect();
    assert_eq!(
        back.len(),
        1,
        "not one run then one resume: breaks at {back:?}"
    );
    let (first, resumed) = ticks.split_at(back[0]);
    let (copy_last, _) = first[first.len() - 1];
    let (again, again_ns) = resumed[0];
    assert!(
        again > before && again + 9 <= copy_last,
        "after tick {copy_last} the count went to {again} (a tick before the move: {before})"
    );
    assert!(
        again_ns > copy_gone,
        "the original ticked again before the copy was gone"
    );
    // Before the resume, nothing ticked after the copy was gone.
    assert!(first.iter().all(|&(_, ns)| ns < copy_gone));
}

#[test]
fn ticks_of_one_run_then_the_original_again_are_judged() {
    let run = |upto: u64| (1..=upto).map(|n| (n, n * 10)).collect::<Vec<_>>();
    let with = |mut v: Vec<(u64, u64)>, more: &[(u64, u64)]| {
        v.extend_from_slice(more);
        v
    };
    // Frozen after tick 3, the copy ticked 4..=20, gone by 250.
    let ok = with(run(20), &[(4, 300), (5, 310)]);
    one_run_then_the_original_again(&ok, 2, 250);
    let bad = [
        // The original ran before the copy was gone.
        with(run(20), &[(4, 240), (5, 310)]),
        // Resumed from before the move.
        with(run(20), &[(2, 300), (3, 310)]),
        // The copy and the original interleaved.
        with(run(20), &[(4, 300), (21, 305), (5, 310)]),
        // Never resumed.
        run(20),
    ];
    for b in bad {
        let r = std::panic::catch_unwind(|| one_run_then_the_original_again(&b, 2, 250));
        assert!(r.is_err(), "{b:?} passed");
    }
}

#[test]
fn a_busy_destination_refuses_before_the_freeze() {
    require_lab!();
    let lab = migrate_tests::lab::Lab::start().expect("lab");
    let auth = lab.shared_dir().join("cluster");
    let auth = auth.to_str().unwrap().to_string();
    let c = Cluster::start_in(
        lab,
        [
            &["--auth", &auth],
            &["--auth", &auth, "--max-incoming", "1"],
        ],
    );
    let w1 = Proc::start(c.h1(), c.path("w1.out"), WORKLOAD, &["--mib", "16"]);
    let w2 = Proc::start(c.h1(), c.path("w2.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w1.wait_for("ready 16", 60) && w2.wait_for("ready 16", 60));
    // The first stays in post-copy (no push) and holds host2's one slot.
    let m1 = c.spawn_migrate(&[&w1.pid.to_string(), "--to", "host2", "--push-rate", "0"]);
    let on_host2 = |c: &Cluster| pids_named(c.h2(), "workload");
    assert!(
        wait_until(30, || on_host2(&c).len() == 1),
        "the first never ran on host2\n{}",
        c.logs()
    );
    let out = c.migrate(&[&w2.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "is busy");
    assert_untouched(&c, &w2);
    assert_eq!(verify_memory(&c, c.h1(), w2.pid, &w2), "verify ok 4096");
    assert_eq!(on_host2(&c).len(), 1, "the refused one appeared on host2");
    // The first ends (its process exits): the slot is free again.
    signal_in(c.h2(), on_host2(&c)[0], "-KILL");
    let out1 = m1.wait_with_output().unwrap();
    assert_eq!(
        out1.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    let out = c.migrate(&[&w2.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
}

/// A destination agent killed during post-copy takes its copy along (its
/// keeper kills it); restarted, it still knows what became of that copy,
/// so the source may run the original again.
#[test]
fn a_destination_agent_restarted_after_a_crash_says_its_copy_is_gone() {
    require_lab!();
    let mut c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "32"]);
    assert!(w.wait_for("ready 32", 60));
    // Demand paging only: post-copy stays open while the process runs.
    let m = c.spawn_migrate(&[&w.pid.to_string(), "--to", "host2", "--push-rate", "0"]);
    let find = |c: &Cluster| pids_named(c.h2(), "workload").first().copied();
    assert!(
        wait_until(30, || find(&c).is_some()),
        "never resumed on host2\n{}",
        c.logs()
    );
    c.agents[1].kill();
    assert!(
        wait_until(20, || find(&c).is_none()),
        "the copy outlived its agent"
    );
    // The source cannot ask a dead agent: the original stays frozen.
    let out = m.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}\n{}", c.logs());
    assert!(err.contains("cannot be learned"), "{err}");
    let id = resolve_id(&err);
    let early = c.migrate(&["resolve", &id, "--resume"]);
    assert_refused(&early, 1, "not known to be gone");
    assert!(alive_in(c.h1(), w.pid) && !runs_in(c.h1(), w.pid));

    // Restarted, host2's agent answers from its record: the copy is gone.
    c.agents[1] = c
        .h2()
        .spawn_agent(
            &bin("migrate-agent"),
            &[c.h1()],
            &c.path("agent2-restarted.log"),
        )
        .expect("agent on host2 again");
    let out = c.migrate(&["resolve", &id, "--resume"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert_untouched(&c, &w);
    assert_eq!(verify_memory(&c, c.h1(), w.pid, &w), "verify ok 8192");
}
