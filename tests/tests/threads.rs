//! Multi-threaded processes and process state that is refused for now.

use std::fs;
use std::process::Command;

use migrate_tests::lab::Host;
use migrate_tests::require_lab;

mod common;
use common::*;

const THREADS: &str = env!("CARGO_BIN_EXE_threads");

/// Sorted thread names of `pid` in `host`.
fn thread_names(host: &Host, pid: i32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(host.root_path(format!("proc/{pid}/task")))
        .map(|d| {
            d.filter_map(|e| fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The numbers of the last tick line: per-thread counts, the timer's
/// expiries and the bytes the pipe reader got, then whether total == sum,
/// then the churn count.
fn last_tick(w: &Proc) -> Option<(Vec<u64>, bool, u64)> {
    let text = w.text();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("tick ") && l.contains("churn="))?;
    let mut counts = Vec::new();
    let (mut total, mut sum, mut churn) = (None, None, 0);
    for word in line.split_whitespace().skip(2) {
        if let Some(v) = word.strip_prefix("total=") {
            total = v.parse::<u64>().ok();
        } else if let Some(v) = word.strip_prefix("sum=") {
            sum = v.parse::<u64>().ok();
        } else if let Some(v) = word.strip_prefix("churn=") {
            churn = v.parse().ok()?;
        } else if let Some(v) = word.strip_prefix("timer=") {
            counts.push(v.parse().ok()?);
        } else if let Some(v) = word.strip_prefix("piped=") {
            counts.push(v.parse().ok()?);
        } else if let Some(v) = word.strip_prefix("polled=") {
            counts.push(v.parse().ok()?);
        } else if !word.contains('=') {
            counts.push(word.parse().ok()?);
        }
    }
    Some((counts, total.is_some() && total == sum, churn))
}

#[test]
fn eight_threads_keep_working_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("th.out"), THREADS, &[]);
    assert!(w.wait_for("tick 20 ", 30), "threads did not start");
    let names = thread_names(c.h1(), w.pid);
    assert_eq!(names.len(), 11, "{names:?}");
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        thread_names(c.h2(), new_pid),
        names,
        "threads or their names changed"
    );

    let (before, _, _) = last_tick(&w).unwrap();
    assert!(
        wait_until(20, || last_tick(&w).is_some_and(|(now, _, _)| now
            .iter()
            .zip(&before)
            .all(|(a, b)| a > b))),
        "not every thread (or the timer) made progress on host2: {:?} -> {:?}",
        before,
        last_tick(&w)
    );
    // The mutex-protected total always equals the threads' own counts.
    for line in w.text().lines().filter(|l| l.starts_with("tick ")) {
        let ok = line.split_whitespace().any(|x| x.starts_with("total="))
            && line
                .split("total=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                == line
                    .split("sum=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next());
        assert!(ok, "mutex count broken: {line}");
    }
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 30), "{}", w.text());
    assert!(w.text().contains("verify ok 8"), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn python_threads_compute_the_same_results() {
    require_lab!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/py_threads.py");
    let reference = Command::new("python3")
        .args([script, "--fast"])
        .output()
        .unwrap();
    let results = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("result "))
            .map(String::from)
            .collect()
    };
    let want = results(&String::from_utf8_lossy(&reference.stdout));
    assert_eq!(want.len(), 6);

    let c = Cluster::start();
    let p = Proc::start(c.h1(), c.path("pyt.out"), "python3", &[script]);
    assert!(p.wait_for("ready", 60));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(
        !p.text().contains("result "),
        "finished before the migration: proves nothing"
    );
    assert!(p.wait_for("done", 120), "{}", p.text());
    assert_eq!(results(&p.text()), want);
}

#[test]
fn threads_coming_and_going_during_the_freeze() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(c.h1(), c.path("churn.out"), THREADS, &["--churn"]);
    assert!(w.wait_for("tick 10 ", 30));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    // The freeze seizes threads until no new one appears: a process
    // creating threads one after another moves.
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", c.logs());
    let (_, _, churn) = last_tick(&w).unwrap();
    // On host2 it goes on creating and joining threads.
    assert!(
        wait_until(20, || last_tick(&w)
            .is_some_and(|(_, ok, n)| ok && n > churn + 50)),
        "thread churn stopped after the move: {:?}\n{}",
        last_tick(&w),
        c.logs()
    );
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ok 8", 30), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn a_process_with_children_in_pre_copy_is_refused_before_anything_is_lost() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/threads_child_process.py");
    let p = Proc::start(c.h1(), c.path("child.out"), "python3", &["-c", script]);
    assert!(p.wait_for("tick", 30), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2", "--mode", "precopy"]);
    // A tree moves in post-copy or stop-and-copy, for now.
    assert_refused(&out, 1, "moves in post-copy or stop-and-copy mode");
    let n = p.text().lines().count();
    assert!(
        wait_until(10, || p.text().lines().count() > n + 5),
        "stopped running"
    );
    assert!(alive_in(c.h1(), p.pid));
}

/// Counts of the last `counts <itimer> <posix>` line.
fn timer_counts(p: &Proc) -> Option<(u64, u64)> {
    let text = p.text();
    let l = text.lines().rev().find(|l| l.starts_with("counts "))?;
    let mut w = l.split_whitespace().skip(1);
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

#[test]
fn interval_and_posix_timers_keep_firing_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/threads_interval_and_posix_timers_keep_firing_on_host2.py");
    let p = Proc::start(c.h1(), c.path("timers.out"), "python3", &["-c", script]);
    assert!(
        wait_until(20, || timer_counts(&p).is_some_and(|(a, b)| a > 5 && b > 5)),
        "{}",
        p.text()
    );
    let timers_before =
        fs::read_to_string(c.h1().root_path(format!("proc/{}/timers", p.pid))).unwrap();
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let (a, b) = timer_counts(&p).unwrap();
    assert!(
        wait_until(20, || timer_counts(&p)
            .is_some_and(|(x, y)| x > a + 20 && y > b + 20)),
        "timers stopped firing on host2: {:?} -> {:?}",
        (a, b),
        timer_counts(&p)
    );
    // The same timer ids, clocks and signals (the pids in notify differ
    // only if the pid had to change).
    let timers_after =
        fs::read_to_string(c.h2().root_path(format!("proc/{new_pid}/timers"))).unwrap();
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("notify:"))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(&timers_after), strip(&timers_before));
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn zstd_compressing_with_four_threads_finishes_correctly_on_host2() {
    zstd_moves(&[], "-11");
}

/// Pre-copy rounds while four threads write their buffers as fast as they
/// can: any write the tracking misses corrupts the archive.
#[test]
fn zstd_moves_with_precopy_and_hybrid() {
    // A slower level: the rounds must end before zstd does.
    zstd_moves(&["--mode", "precopy"], "-17");
    zstd_moves(&["--mode", "hybrid"], "-17");
}

fn zstd_moves(mode: &[&str], level: &str) {
    require_lab!();
    let c = Cluster::start();
    let input = c.path("input.txt");
    let packed = c.path("input.txt.zst");
    // 120 MB of text that compresses a little: several seconds of work.
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 90000000 /dev/urandom | base64 > {}",
            input.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    // Started through python so that no descriptor of the test harness
    // leaks into it; zstd itself is Debian's, unmodified.
    let launcher = include_str!("scripts/launcher.py");
    let z = Proc::start(
        c.h1(),
        c.path("zstd.out"),
        "python3",
        &[
            "-c",
            launcher,
            "zstd",
            "-T4",
            level,
            "-q",
            "-f",
            input.to_str().unwrap(),
            "-o",
            packed.to_str().unwrap(),
        ],
    );
    let threads = |h: &Host, pid: i32| {
        fs::read_dir(h.root_path(format!("proc/{pid}/task")))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(20, || threads(c.h1(), z.pid) >= 4),
        "zstd did not start its threads"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = z.pid.to_string();
    // --detach: back as soon as it runs on host2, so that its threads are
    // counted before zstd can finish (it may, while the rest of its memory
    // follows).
    let mut args = vec![pid.as_str(), "--to", "host2", "--detach"];
    args.extend_from_slice(mode);
    let out = c.migrate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let running = threads(c.h2(), new_pid);
    assert!(running >= 4, "{running} threads on host2");
    assert!(
        wait_until(120, || !alive_in(c.h2(), new_pid)),
        "zstd never finished on host2"
    );
    // Checked through zstd's own interface: the archive tests clean and
    // unpacks to the input, byte for byte.
    let t = Command::new("zstd")
        .args(["-t", "-q"])
        .arg(&packed)
        .status()
        .unwrap();
    assert!(t.success(), "the archive is corrupt");
    let d = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -d -q -c {} | cmp - {}",
            packed.display(),
            input.display()
        ))
        .status()
        .unwrap();
    assert!(d.success(), "the archive does not unpack to the input");
}

/// `VmFlags` of the VMA starting at `start` in `pid`'s smaps.
fn vm_flags(host: &Host, pid: i32, start: &str) -> Option<String> {
    let smaps = fs::read_to_string(host.root_path(format!("proc/{pid}/smaps"))).ok()?;
    let mut inside = false;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = first.split('-').next() == Some(start);
        } else if inside {
            if let Some(f) = l.strip_prefix("VmFlags:") {
                return Some(f.trim().to_string());
            }
        }
    }
    None
}

#[test]
fn madvise_flags_and_generated_code_survive() {
    require_lab!();
    let c = Cluster::start();
    let w = Proc::start(
        c.h1(),
        c.path("adv.out"),
        env!("CARGO_BIN_EXE_workload"),
        &["--mib", "8", "--advise"],
    );
    assert!(w.wait_for("ready", 60));
    let advised: Vec<(String, String)> = w
        .text()
        .lines()
        .filter_map(|l| {
            let mut p = l.strip_prefix("advised ")?.split_whitespace();
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect();
    assert_eq!(advised.len(), 4);
    for (start, flag) in &advised {
        let f = vm_flags(c.h1(), w.pid, start).unwrap_or_default();
        assert!(
            f.split_whitespace().any(|x| x == flag),
            "{start}: {f} lacks {flag} before"
        );
    }
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    for (start, flag) in &advised {
        let f = vm_flags(c.h2(), new_pid, start).unwrap_or_default();
        assert!(
            f.split_whitespace().any(|x| x == flag),
            "{start}: {f} lacks {flag} on host2"
        );
    }
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(w.wait_for("verify ", 30), "{}", w.text());
    assert!(w.text().contains("jit 42"), "{}", w.text());
    assert!(w.text().contains("verify ok 2048"), "{}", w.text());
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn pending_signals_arrive_with_their_siginfo() {
    require_lab!();
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/py_signals.py");
    let p = Proc::start(c.h1(), c.path("sig.out"), "python3", &[script]);
    assert!(p.wait_for("ready", 30), "{}", p.text());
    let status = fs::read_to_string(c.h1().root_path(format!("proc/{}/status", p.pid))).unwrap();
    assert!(status
        .lines()
        .any(|l| l.starts_with("ShdPnd:") && !l.ends_with("0000000000000000")));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR2");
    assert!(p.wait_for("done", 30), "{}", p.text());
    let got = |p: &Proc| -> Vec<String> {
        let me = format!("pid={}", p.pid);
        p.text()
            .lines()
            .filter(|l| l.starts_with("got "))
            .map(|l| l.replace(&me, "pid=SELF"))
            .collect()
    };
    // The same script, not migrated, is the reference: sender pids are
    // its own, codes are SI_QUEUE (-1) with the queued values in order.
    let r = Proc::start(c.h1(), c.path("sig-ref.out"), "python3", &[script]);
    assert!(r.wait_for("ready", 30));
    signal_in(c.h1(), r.pid, "-USR2");
    assert!(r.wait_for("done", 30), "{}", r.text());
    let want = got(&r);
    assert_eq!(want.len(), 4, "{want:?}");
    assert!(
        want.iter()
            .any(|l| l.ends_with("code=-1 pid=SELF value=4343")),
        "{want:?}"
    );
    assert_eq!(got(&p), want);
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn shared_anonymous_and_memfd_memory_move_with_their_content() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!(
        "scripts/threads_shared_anonymous_and_memfd_memory_move_with_their_content.py"
    );
    let p = Proc::start(c.h1(), c.path("shm.out"), "python3", &["-c", script]);
    assert!(p.wait_for("digest", 30), "{}", p.text());
    let shm_maps = |h: &Host, pid: i32| -> Vec<String> {
        fs::read_to_string(h.root_path(format!("proc/{pid}/maps")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/dev/zero") || l.contains("/memfd:"))
            .map(|l| {
                // range, perms, offset and name; not the device or inode.
                let w: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {} {}", w[0], w[1], w[2], w[5..].join(" "))
            })
            .collect()
    };
    let before = shm_maps(c.h1(), p.pid);
    assert_eq!(before.len(), 2, "{before:?}");
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_pid = rec["new_pid"].as_i64().unwrap() as i32;
    assert_eq!(shm_maps(c.h2(), new_pid), before);
    // The objects' pages (all populated: the digest read them) went
    // during the freeze.
    let eager = rec["eager_pages"].as_u64().unwrap();
    assert!((6144..6144 + 1024).contains(&eager), "eager pages: {eager}");
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(
        wait_until(20, || p.text().matches("digest ").count() == 2),
        "{}",
        p.text()
    );
    let text = p.text();
    let d: Vec<&str> = text.lines().filter(|l| l.starts_with("digest ")).collect();
    assert_eq!(d[0], d[1], "shared memory content changed");
    signal_in(c.h2(), new_pid, "-KILL");
}

#[test]
fn shared_memory_with_a_process_outside_its_tree_is_refused() {
    require_lab!();
    let c = Cluster::start();
    let script = include_str!("scripts/threads_shared_memory.py");
    let p = Proc::start(c.h1(), c.path("share.out"), "python3", &["-c", script]);
    assert!(p.wait_for("tick", 30));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "is shared with process");
    assert_untouched_lines(&c, &p);
}

/// The process still runs on host1 and still prints.
#[test]
fn a_seccomp_filter_is_refused_before_anything_is_lost() {
    require_lab!();
    let c = Cluster::start();
    let script =
        include_str!("scripts/threads_a_seccomp_filter_is_refused_before_anything_is_lost.py");
    let p = Proc::start(c.h1(), c.path("seccomp.out"), "python3", &["-c", script]);
    assert!(p.wait_for("tick", 30), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "seccomp");
    assert_untouched_lines(&c, &p);
}

#[test]
fn a_pipe_to_another_process_is_refused() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("piped.out");
    // python's fd 3 is a pipe to cat: not a standard stream, so not
    // forwarded, and the other end is not ours to move.
    let ticker = include_str!("scripts/threads_piped_ticker.py");
    let script = format!(
        "python3 -c \"$T\" 3>&1 >{} | cat > /dev/null",
        out_file.display()
    );
    let mut sh = c
        .h1()
        .command("sh")
        .args(["-c", &script])
        .env("T", ticker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(30, || fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains("tick")));
    let pid: i32 = fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, "fd 3: pipe:");
    assert_refused(&out, 1, "leads to process ");
    let n = fs::read_to_string(&out_file).unwrap().lines().count();
    assert!(wait_until(10, || fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .count()
        > n + 3));
    let _ = sh.kill();
    let _ = sh.wait();
}
