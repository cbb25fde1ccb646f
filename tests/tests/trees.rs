//! Process trees: what the pre-flight says of a process with descendants.
//! (Moving a tree is not built yet: it is refused before the freeze,
//! naming the children, and `migrate check` gives each member's verdict
//! as if the tree moved together.)

use std::process::Command;

use migrate_tests::require_lab;

mod common;
use common::*;

/// The pids a `family` line names: root, writer, reader, zombie, and the
/// FIFO's reader.
fn family(p: &Proc) -> Vec<i32> {
    p.text()
        .lines()
        .find_map(|l| l.strip_prefix("family "))
        .map(|l| l.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// The line of `text` about member `pid`.
fn member(text: &str, pid: i32) -> &str {
    let head = format!("pid {pid} (");
    text.lines()
        .find(|l| l.trim_start().starts_with(&head))
        .unwrap_or_else(|| panic!("no line for member {pid} in:\n{text}"))
}

#[test]
fn check_lists_the_tree_each_member_with_its_verdict() {
    require_lab!();
    let c = Cluster::start();
    let fifo = c.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo_arg = fifo.to_string_lossy().into_owned();
    // A process outside the family holds the FIFO's write end (opened
    // read-write, so that the open does not wait for a reader).
    let holder = Proc::start(
        c.h1(),
        c.path("holder.out"),
        "sh",
        &[
            "-c",
            "exec 3<>\"$0\"; echo pid $$; exec sleep 600",
            &fifo_arg,
        ],
    );
    let outside = holder.pid;
    let script = include_str!("scripts/trees_family.py");
    let p = Proc::start(
        c.h1(),
        c.path("family.out"),
        "python3",
        &["-c", script, &fifo_arg],
    );
    assert!(p.wait_for("family", 20), "{}", p.text());
    let pids = family(&p);
    let [root, writer, reader, zombie, fifo_reader] = pids[..] else {
        panic!("{}", p.text())
    };

    let out = c.migrate(&["check", &root.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("tree of 5 processes"), "{err}");
    // The root, with the shared anonymous page its children map too.
    assert!(member(&err, root).ends_with(": moves"), "{err}");
    // The two children in a group of their own, joined by a pipe whose
    // both ends are inside.
    let w = member(&err, writer);
    assert!(
        w.contains(&format!("child of {root}, group {writer},")),
        "{w}"
    );
    assert!(w.ends_with(": moves"), "{err}");
    let r = member(&err, reader);
    assert!(
        r.contains(&format!("child of {root}, group {writer},")),
        "{r}"
    );
    assert!(r.ends_with(": moves"), "{err}");
    assert!(err.contains("(pipe, write end): moves"), "{err}");
    assert!(err.contains("(pipe, read end): moves"), "{err}");
    assert!(
        member(&err, zombie).ends_with(": exited, not reaped yet"),
        "{err}"
    );
    // The FIFO leads outside the family: refused, naming the process.
    let f = member(&err, fifo_reader);
    assert!(
        f.contains(&format!(
            "refused: fd 3: {fifo_arg} leads to process {outside} (only its read end is here)"
        )),
        "{err}"
    );

    // Moved alone, the root is refused, its children named, and the whole
    // family runs on untouched.
    let out = c.migrate(&[&root.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, &format!("child processes {writer} (python3)"));
    for pid in [root, writer, reader, fifo_reader] {
        assert!(alive_in(c.h1(), pid), "member {pid} is gone");
    }
    for pid in [writer, reader, fifo_reader] {
        signal_in(c.h1(), pid, "-KILL");
    }
}

#[test]
fn a_member_in_another_pid_namespace_is_named() {
    require_lab!();
    let c = Cluster::start();
    // The grandchild, `sleep`, runs in a pid namespace of its own.
    let p = Proc::start(
        c.h1(),
        c.path("ns.out"),
        "sh",
        &["-c", "echo pid $$; unshare --pid --fork sleep 600; true"],
    );
    assert!(
        wait_until(20, || {
            let out = c.migrate(&["check", &p.pid.to_string()]);
            String::from_utf8_lossy(&out.stderr).contains("(sleep)")
        }),
        "the tree never showed its grandchild"
    );
    let out = c.migrate(&["check", &p.pid.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.contains("refused: process ")
            && l.contains("(sleep) is in another pid namespace than process")),
        "{err}"
    );
    // Killing the shell and the unshare leaves the namespace's sleep to
    // the lab's teardown, which ends the host's whole pid namespace.
}
