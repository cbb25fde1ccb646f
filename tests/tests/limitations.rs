//! Each refusal README's Limitations lists, tried as a user would: a
//! process in that state is refused with its reason before the freeze,
//! and runs on untouched.

use migrate_tests::require_lab;

mod common;
use common::*;

/// Starts `limitations_case.py CASE ARGS` on host1, asks to move it, and
/// checks the refusal names `reason` and the process runs on.
fn refused(c: &Cluster, case: &str, args: &[&str], reason: &str) {
    let script = include_str!("scripts/limitations_case.py");
    let mut all = vec!["-c", script, case];
    all.extend_from_slice(args);
    let p = Proc::start(c.h1(), c.path(&format!("{case}.out")), "python3", &all);
    assert!(p.wait_for("tick", 30), "{case} did not start: {}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    // Refused in the pre-flight, with the reason.
    assert_refused(&out, 1, "migrate: refused:");
    assert_refused(&out, 1, reason);
    eprintln!(
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    // Not frozen, nor half-moved: it goes on printing, and nothing of it
    // runs on host2.
    assert_untouched_lines(c, &p);
    assert!(
        pids_named(c.h2(), "python3").is_empty(),
        "{case}: something runs on host2"
    );
}

#[test]
fn every_listed_limitation_is_refused_with_its_reason() {
    require_lab!();
    let c = Cluster::start();
    let dir = c.path("watched");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = c.path("peer.sock");
    for (case, args, reason) in [
        ("terminal", vec![], "(terminal): not forwarded"),
        (
            "accept-queue",
            vec![],
            "connections wait in its accept queue",
        ),
        (
            "unix-peer",
            vec![sock.to_str().unwrap()],
            "(Unix unnamed) not supported",
        ),
        (
            "inotify-unread",
            vec![dir.to_str().unwrap()],
            "inotify has 32 bytes of events not read yet",
        ),
        ("sysv-shm", vec![], "System V shared memory"),
        ("userfaultfd", vec![], "userfaultfd"),
    ] {
        refused(&c, case, &args, reason);
    }
}

#[test]
fn a_process_sharing_a_pid_namespace_is_refused_and_runs_on() {
    require_lab!();
    let c = Cluster::start();
    // A pid namespace holding an init (sh), a sleep and a tail: not the
    // one process beside its init that a rebuild makes.
    let mut ns = c
        .h1()
        .command("unshare")
        .args(["--pid", "--fork", "--kill-child", "sh", "-c"])
        .arg("sleep 600 & exec 3>&-; tail -f /dev/null")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    struct Ends<'a>(&'a mut std::process::Child);
    impl Drop for Ends<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ends = Ends(&mut ns);
    assert!(wait_until(10, || pids_named(c.h1(), "tail").len() == 1));
    let tail = pids_named(c.h1(), "tail")[0];
    let init: i32 = status_line(c.h1(), tail, "PPid")
        .trim_start_matches("PPid:")
        .trim()
        .parse()
        .unwrap();
    for (pid, reason) in [
        (tail, "is in a pid namespace with other processes"),
        (init, "is pid 1 of a pid namespace of its own"),
    ] {
        let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
        assert_refused(&out, 1, reason);
        assert!(runs_in(c.h1(), pid), "{pid} does not run on");
    }
}
