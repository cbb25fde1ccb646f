//! Language runtimes people run servers on, moved as their users would
//! start them: each holds memory it checks after every move, and is moved
//! there and back (host1 → host2 → host1).

use std::path::Path;
use std::process::Command;

use migrate_tests::require_lab;

mod common;
use common::*;

/// Moves `p` (pid `pid` on host1) to host2 and back, asking it to check
/// its memory after each move by creating `trigger` (it prints `verify
/// ok` or `verify FAIL`), and checks it keeps running throughout.
fn there_and_back(c: &Cluster, p: &Proc, trigger: &Path) {
    let mut pid = p.pid;
    for (from, to) in [(c.h1(), "host2"), (c.h2(), "host1")] {
        pid = c.moved(from, pid, to);
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
    there_and_back(&c, &p, &trigger);
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
