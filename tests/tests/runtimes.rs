//! Language runtimes people run servers on, moved as their users would
//! start them: each holds memory it checks after every move, and is moved
//! there and back (host1 → host2 → host1).

use std::path::Path;
use std::process::Command;

use migrate_tests::lab::Host;
use migrate_tests::require_lab;

mod common;
use common::*;

/// Moves `p` (pid `pid` on host1) to host2 and back, asking it to check
/// its memory after each move by creating `trigger` (it prints `verify
/// ok` or `verify FAIL`), and checks it keeps running throughout; `after`
/// checks more after each move (the host it is on, its pid there).
fn there_and_back(c: &Cluster, p: &Proc, trigger: &Path, after: impl Fn(&Host, i32)) {
    let mut pid = p.pid;
    for (from, to, here) in [(c.h1(), "host2", c.h2()), (c.h2(), "host1", c.h1())] {
        pid = c.moved(from, pid, to);
        after(here, pid);
        let n = p.ticks().len();
        assert!(
            wait_until(30, || p.ticks().len() > n + 10),
            "no ticks after the move to {to}: {}",
            p.text()
        );
        let verified = p.text().matches("verify ok").count();
        std::fs::write(trigger, b"").unwrap();
        assert!(
            wait_until(60, || p.text().matches("verify ").count() > verified),
            "no check after the move to {to}: {}",
            p.text()
        );
        assert!(!p.text().contains("verify FAIL"), "{}", p.text());
    }
    signal_in(c.h1(), pid, "-KILL");
}

#[test]
fn a_jvm_moves_there_and_back_with_its_heap() {
    require_lab!();
    let c = Cluster::start();
    let classes = c.path("classes");
    std::fs::create_dir_all(&classes).unwrap();
    let source = classes.join("Heap.java");
    std::fs::write(&source, include_str!("scripts/Heap.java")).unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(&source)
        .output()
        .expect("javac (openjdk-17-jdk-headless)");
    assert!(javac.status.success(), "{javac:?}");
    let trigger = c.path("verify-now");
    // Through the launcher, which closes what the harness leaked, as a
    // shell would have.
    let p = Proc::start(
        c.h1(),
        c.path("java.out"),
        "python3",
        &[
            "-c",
            include_str!("scripts/launcher.py"),
            "java",
            "-Xmx1g",
            "-cp",
            classes.to_str().unwrap(),
            "Heap",
            "256",
            trigger.to_str().unwrap(),
        ],
    );
    assert!(p.wait_for("ready", 60), "{}", p.text());
    there_and_back(&c, &p, &trigger, |_, _| {});
}

#[test]
fn a_file_mapped_shared_and_writable_moves_with_its_pages_shared() {
    require_lab!();
    let c = Cluster::start();
    let p = Proc::start(
        c.h1(),
        c.path("mapped.out"),
        "python3",
        &["-c", include_str!("scripts/shared_file_mapping.py")],
    );
    assert!(p.wait_for("tick 5 ", 30), "{}", p.text());
    let check = |host, pid| answer(&p, host, pid, "-USR1", "check ", 20);
    assert_eq!(check(c.h1(), p.pid), "check ok same-at-path");
    // To host2, whose /tmp lacks the file: made there at its path, as
    // the process, with the content it had at the freeze.
    let on_h2 = c.moved(c.h1(), p.pid, "host2");
    assert_eq!(check(c.h2(), on_h2), "check ok same-at-path");
    // Back to host1, where the original's file still has the path: the
    // process gets a private copy, and host1's file is left as it was.
    let home = c.moved(c.h2(), on_h2, "host1");
    assert_eq!(check(c.h1(), home), "check ok other-at-path");
    signal_in(c.h1(), home, "-KILL");
}

/// The ids of the threads of `pid` in `host`.
fn tids_in(host: &Host, pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(host.root_path(format!("proc/{pid}/task")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    tids
}

#[test]
fn a_go_program_moves_there_and_back_with_its_thread_ids_taken_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let bin = c.path("heap-go");
    let go = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/heap.go"))
        .env("GOCACHE", c.path("gocache"))
        .env("GOPATH", c.path("gopath"))
        .output()
        .expect("go (golang-go)");
    assert!(go.status.success(), "{go:?}");
    let trigger = c.path("verify-now");
    let p = Proc::start(
        c.h1(),
        c.path("go.out"),
        "python3",
        &[
            "-c",
            include_str!("scripts/launcher.py"),
            bin.to_str().unwrap(),
            "256",
            trigger.to_str().unwrap(),
        ],
    );
    assert!(p.wait_for("ready", 60), "{}", p.text());
    assert!(p.wait_for("tick 10 ", 30), "{}", p.text());
    // Every id it has, taken on host2 on purpose: a statically linked Go
    // program keeps them where no thread library's copy is found.
    let tids = tids_in(c.h1(), p.pid);
    assert!(tids.len() > 2, "Go runs a few threads: {tids:?}");
    let holders: Vec<_> = tids
        .iter()
        .map(|&t| PidHolder::take(c.h2(), t).unwrap_or_else(|| panic!("cannot take {t} on host2")))
        .collect();
    let orig = p.pid;
    let init_on_h2 = std::cell::Cell::new(0);
    there_and_back(&c, &p, &trigger, |host, pid| {
        if host.name() == c.h2().name() {
            // Its ids were taken: a pid namespace of its own, whose init
            // is its parent.
            assert_ne!(pid, orig, "pid {orig} was held on host2");
            let ppid = status_line(host, pid, "PPid");
            init_on_h2.set(ppid.trim_start_matches("PPid:").trim().parse().unwrap());
        }
        // As it sees itself: its own pid, wherever it is.
        let nspid = status_line(host, pid, "NSpid");
        assert_eq!(
            nspid.split_whitespace().last(),
            Some(orig.to_string().as_str()),
            "NSpid {nspid}"
        );
        // Signals sent by the pid migrate printed reach it.
        let seen = answer(&p, host, pid, "-USR1", "usr1 ", 20);
        assert_eq!(seen, format!("usr1 {orig}"));
    });
    drop(holders);
    // Once it left host2, nothing of it is left there: its namespace's
    // init ended with it and was reaped.
    let init = init_on_h2.get();
    assert!(
        wait_until(10, || !host_has(c.h2(), init)),
        "the placeholder init {init} is left on host2"
    );
}

/// Whether anything, a zombie too, has pid `pid` in `host`.
fn host_has(host: &Host, pid: i32) -> bool {
    host.root_path(format!("proc/{pid}")).exists()
}
