//! A tree of stubs made as planned from a tree's relations: every pid as
//! it was, each parent the kernel's own, process groups and sessions as
//! planned, zombies ended with their status and left unreaped. What the
//! rebuild of a process tree stands on.

use std::fs;
use std::path::Path;

use migrate_agent::rebuild::family;
use migrate_agent::rebuild::restore::Stub;
use migrate_proto::image::Relation;

mod common;

/// Held by each test while it chooses and uses its pids: two tests
/// choosing at once would choose the same.
static PIDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `count` consecutive pids that no process, thread, process group or
/// session holds, some way past the last one handed out.
fn free_pids(count: i32) -> i32 {
    let read = |f: &str| -> i32 { fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    let (last, max) = (
        read("/proc/sys/kernel/ns_last_pid"),
        read("/proc/sys/kernel/pid_max"),
    );
    let mut used = std::collections::BTreeSet::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        for t in fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            used.extend(t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()));
        }
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            let f: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
            used.extend([f[2], f[3]].iter().filter_map(|n| n.parse::<i32>().ok()));
        }
        used.insert(pid);
    }
    let mut base = last + 500;
    for _ in 0..max {
        if base + count >= max {
            base = 300;
        }
        if (base..base + count).all(|p| !used.contains(&p)) {
            return base;
        }
        base += 1;
    }
    panic!("no {count} free pids in a row");
}

/// (state, ppid, pgrp, session, exit code) of `pid`, from its stat.
fn stat(pid: i32) -> (char, i32, i32, i32, i32) {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
    let n = |i: usize| f[i].trim().parse::<i32>().unwrap();
    // Fields from 3 (state); the exit code is field 52.
    (f[0].chars().next().unwrap(), n(1), n(2), n(3), n(52 - 3))
}

fn rel(pid: i32, ppid: i32, pgid: i32, sid: i32, exit: Option<i32>) -> Relation {
    Relation {
        pid,
        ppid,
        pgid,
        sid,
        exit,
    }
}

#[test]
fn a_stub_tree_has_the_pids_parents_groups_sessions_and_zombies_planned() {
    if !common::root("choosing the stubs' pids (clone3 set_tid)") {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let b = free_pids(6);
    // As a shell job on the source: the root in a group and session led
    // from outside (1000, 999), two children in a group the first leads,
    // a grandchild leading its own session, a zombie that exited with 3
    // and one killed by SIGTERM.
    let tree = [
        rel(b, 50, 1000, 999, None),
        rel(b + 1, b, b + 1, 999, None),
        rel(b + 2, b, b + 1, 999, None),
        rel(b + 3, b + 1, b + 3, b + 3, None),
        rel(b + 4, b, 1000, 999, Some(3 << 8)),
        rel(b + 5, b, 1000, 999, Some(libc::SIGTERM)),
    ];
    let plan = family::plan(&tree).unwrap();
    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let stubs = Stub::spawn_tree(stub, &plan).unwrap();
    let pids: Vec<i32> = stubs.iter().map(|s| s.pid()).collect();
    assert_eq!(pids, (b..b + 6).collect::<Vec<_>>());
    // The root leads the session and group its outside leaders had.
    let (_, _, pgrp, sid, _) = stat(b);
    assert_eq!((pgrp, sid), (b, b));
    let expect = [
        (b + 1, 'S', b, b + 1, b),
        (b + 2, 'S', b, b + 1, b),
        (b + 3, 'S', b + 1, b + 3, b + 3),
    ];
    // Each stub sleeps once it has said its word; each zombie ends.
    for (pid, state) in [
        (b + 1, 'S'),
        (b + 2, 'S'),
        (b + 3, 'S'),
        (b + 4, 'Z'),
        (b + 5, 'Z'),
    ] {
        assert!(
            common::wait_until(5, || stat_state(pid) == Some(state)),
            "pid {pid}: {:?}",
            stat_state(pid)
        );
    }
    for (pid, state, ppid, pgrp, sid) in expect {
        let s = stat(pid);
        assert_eq!((s.0, s.1, s.2, s.3), (state, ppid, pgrp, sid), "pid {pid}");
    }
    let (state, ppid, _, _, code) = stat(b + 4);
    assert_eq!((state, ppid, code), ('Z', b, 3 << 8));
    let (state, ppid, _, _, code) = stat(b + 5);
    assert_eq!((state, ppid, code), ('Z', b, libc::SIGTERM));
    // Dropped, the tree is gone: the root killed, its children killed by
    // their pidfds.
    drop(stubs);
    for pid in [b, b + 1, b + 2, b + 3] {
        assert!(
            common::wait_until(5, || stat_state(pid).is_none_or(|s| s == 'Z')),
            "stub {pid} still runs"
        );
    }
}

#[test]
fn a_taken_pid_refuses_the_tree_and_leaves_nothing() {
    if !common::root("choosing the stubs' pids (clone3 set_tid)") {
        return;
    }
    let _pids = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    let b = free_pids(3);
    let me = std::process::id() as i32;
    let tree = [
        rel(b, 50, b, b, None),
        rel(b + 1, b, b, b, None),
        rel(me, b, b, b, None),
    ];
    let plan = family::plan(&tree).unwrap();
    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let err = Stub::spawn_tree(stub, &plan).map(|_| ()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("pid {me} of the process tree cannot be had here")),
        "{err}"
    );
    for pid in [b, b + 1] {
        assert!(
            common::wait_until(5, || stat_state(pid).is_none_or(|s| s == 'Z')),
            "stub {pid} was left running"
        );
    }
}

/// The state letter of `pid`, if it exists.
fn stat_state(pid: i32) -> Option<char> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 2..].chars().next()
}
