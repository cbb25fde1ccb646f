//! Process trees: what the pre-flight says of a process with descendants,
//! and families moved as one in post-copy and stop-and-copy (pre-copy and
//! hybrid refuse a tree before the freeze, as does a process with
//! children moved alone by a caller who cannot have them all).

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

    // Moved, the family is refused for the FIFO leading outside, naming
    // the member and the process outside, and runs on untouched.
    let out = c.migrate(&[&root.to_string(), "--to", "host2", "--mode", "stop-copy"]);
    assert_refused(
        &out,
        1,
        &format!("process {fifo_reader} (python3): fd 3: {fifo_arg} leads to process {outside}"),
    );
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

/// Fields of `/proc/PID/stat` of `pid` in `host` after the command name
/// (state, ppid, pgrp, session, ...).
fn stat_in(host: &migrate_tests::lab::Host, pid: i32) -> Vec<String> {
    let stat =
        std::fs::read_to_string(host.root_path(format!("proc/{pid}/stat"))).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn a_c_family_moves_as_one_and_checks_itself() {
    require_lab!();
    let c = Cluster::start();
    let exe = c.path("tree");
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/tree.c"))
        .status()
        .expect("cc");
    assert!(st.success(), "the C program did not build");
    // Started where host1's pids are past those host2 uses: a tree keeps
    // its pids.
    let p = Proc::start(
        c.h1(),
        c.path("tree.out"),
        "sh",
        &[
            "-c",
            "echo 5000 > /proc/sys/kernel/ns_last_pid; \"$0\" & wait",
            exe.to_str().unwrap(),
        ],
    );
    assert!(p.wait_for("tick 3 ", 20), "{}", p.text());
    let [root, writer, reader, zombie] = family(&p)[..] else {
        panic!("{}", p.text())
    };
    let living = [root, writer, reader];
    let out = c.migrate(&["check", &root.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("with its 3 descendants, together"), "{said}");
    let pss_before = c.h1().pss_kib(&living);

    // Hybrid does not take a tree yet: refused before the freeze, the
    // family untouched.
    let out = c.migrate(&[&root.to_string(), "--to", "host2", "--mode", "hybrid"]);
    assert_refused(&out, 1, "moves in post-copy or stop-and-copy mode");
    let ticks = p.ticks().len();
    assert!(
        wait_until(5, || p.ticks().len() > ticks + 2),
        "{}",
        p.text()
    );

    // A pid of the family taken on host2: refused before the freeze,
    // naming it.
    let held = PidHolder::take(c.h2(), reader).expect("the reader's pid is taken on host2");
    let out = c.migrate(&[&root.to_string(), "--to", "host2"]);
    assert_refused(&out, 1, &format!("pid {reader} is taken on host2"));
    drop(held);
    let ticks = p.ticks().len();
    assert!(
        wait_until(5, || p.ticks().len() > ticks + 2),
        "{}",
        p.text()
    );

    // In post-copy (the default): the pages each member shares with its
    // parent go in the freeze, its own follow.
    let out = c.migrate(&[&root.to_string(), "--to", "host2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert_eq!(parse_summary(&stdout).0, root, "{stdout}");
    assert!(
        stdout.contains(&format!("migrated {root} with 3 descendants -> host2")),
        "{stdout}"
    );
    for pid in living {
        assert!(alive_in(c.h2(), pid), "member {pid} is not on host2");
        assert!(!alive_in(c.h1(), pid), "member {pid} still runs on host1");
    }
    // The relations, as /proc on host2 shows them.
    for pid in [writer, reader] {
        let f = stat_in(c.h2(), pid);
        assert_eq!(
            (f[1].as_str(), f[2].as_str()),
            (root.to_string().as_str(), writer.to_string().as_str()),
            "pid {pid}'s parent and group: {f:?}"
        );
    }
    let z = stat_in(c.h2(), zombie);
    assert_eq!(
        (z[0].as_str(), z[1].parse().ok()),
        ("Z", Some(root)),
        "{z:?}"
    );
    // The private memory the children share copy-on-write with their
    // parent is shared again, not copied per process.
    let pss_after = c.h2().pss_kib(&living);
    println!(
        "the family's proportional set size: {pss_before} KiB on host1, {pss_after} KiB on host2"
    );
    assert!(
        pss_after <= pss_before + 2048,
        "{pss_before} KiB on host1, {pss_after} KiB on host2"
    );

    signal_in(c.h2(), root, "-USR1");
    assert!(p.wait_for("verdict", 20), "{}", p.text());
    assert!(p.text().contains("verdict ok"), "{}", p.text());
}

/// The children of `pid` in `host`, as its main thread lists them.
fn children_in(host: &migrate_tests::lab::Host, pid: i32) -> Vec<i32> {
    std::fs::read_to_string(host.root_path(format!("proc/{pid}/task/{pid}/children")))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_shell_pipeline_moves_as_one() {
    require_lab!();
    let c = Cluster::start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts");
    // The shell and its three children past host2's pids (a tree keeps
    // them), started without the descriptors the lab leaks into its
    // processes.
    let script = format!(
        "echo pid $$; python3 -u {dir}/trees_pipeline_producer.py | \
         sed -u s/line/LINE/ | python3 -u {dir}/trees_pipeline_consumer.py; \
         echo pipeline done $?"
    );
    let p = Proc::start(
        c.h1(),
        c.path("pipeline.out"),
        "sh",
        &[
            "-c",
            &format!("echo 6000 > /proc/sys/kernel/ns_last_pid; {CLOSED} sh -c \"$0\" & wait"),
            &script,
        ],
    );
    assert!(p.wait_for("got 50", 30), "{}", p.text());
    let shell = p.pid;
    let kids = children_in(c.h1(), shell);
    assert_eq!(kids.len(), 3, "{kids:?}");

    let out = c.migrate(&[&shell.to_string(), "--to", "host2", "--mode", "stop-copy"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    let mut there = children_in(c.h2(), shell);
    there.sort_unstable();
    let mut want = kids.clone();
    want.sort_unstable();
    assert_eq!(there, want, "the shell's children on host2");
    // The bytes keep flowing through both pipes on host2.
    let got = p.text().lines().filter(|l| l.starts_with("got ")).count();
    assert!(
        wait_until(10, || p
            .text()
            .lines()
            .filter(|l| l.starts_with("got "))
            .count()
            > got + 2),
        "{}",
        p.text()
    );
    // The producer ends: the end of file runs down the pipeline, the
    // consumer saw every number in order, and the shell on host2 reaps
    // its children and says how the pipeline ended.
    let producer = kids.iter().copied().find(|k| {
        std::fs::read(c.h2().root_path(format!("proc/{k}/cmdline")))
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains("producer"))
    });
    signal_in(c.h2(), producer.expect("the producer on host2"), "-KILL");
    assert!(p.wait_for("pipeline done", 20), "{}", p.text());
    let text = p.text();
    let end = text
        .lines()
        .find(|l| l.starts_with("end "))
        .unwrap_or_default();
    assert!(end.ends_with(" ok"), "{text}");
    assert!(text.contains("pipeline done 0"), "{text}");
}

#[test]
fn a_python_pool_moves_mid_map_and_its_results_come_right() {
    require_lab!();
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/trees_pool.py");
    let p = Proc::start(
        c.h1(),
        c.path("pool.out"),
        "sh",
        &[
            "-c",
            "echo 7000 > /proc/sys/kernel/ns_last_pid; python3 \"$0\" & wait",
            script,
        ],
    );
    assert!(p.wait_for("progress 100", 30), "{}", p.text());
    let workers: Vec<i32> = p
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("pool "))
        .map(|l| l.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(workers.len(), 4, "{}", p.text());

    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(
        !p.text().contains("result"),
        "the map ended before the move: {}",
        p.text()
    );
    for w in &workers {
        assert!(alive_in(c.h2(), *w), "worker {w} is not on host2");
        assert!(!alive_in(c.h1(), *w), "worker {w} still runs on host1");
    }
    assert!(p.wait_for("result", 30), "{}", p.text());
    assert!(p.text().contains("result ok"), "{}", p.text());
}

/// `redis-cli -p PORT ARGS` in `host`: its output.
fn redis_cli(host: &migrate_tests::lab::Host, port: &str, args: &[&str]) -> String {
    let out = host
        .command("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_moves_while_its_bgsave_child_writes_and_the_save_ends_on_host2() {
    require_lab!();
    let c = Cluster::start();
    let dir = c.path("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let port = "6390";
    // Each key's save waits 200 us: the save of 20000 keys lasts seconds.
    // The save is redis's own (`save 2 1`: two seconds after a change),
    // so that no client is connected at its fork: the child would keep
    // that client's socket, and an established TCP connection does not
    // move yet.
    let server = format!(
        "echo pid $$; exec redis-server --port {port} --bind 127.0.0.1 --dir {} \
         --save '2 1' --appendonly no --rdb-key-save-delay 200 --enable-debug-command yes",
        dir.display()
    );
    let p = Proc::start(
        c.h1(),
        c.path("redis.out"),
        "sh",
        &[
            "-c",
            &format!("echo 8000 > /proc/sys/kernel/ns_last_pid; {CLOSED} sh -c \"$0\" & wait"),
            &server,
        ],
    );
    assert!(
        p.wait_for("Ready to accept connections", 30),
        "{}",
        p.text()
    );
    assert_eq!(
        redis_cli(c.h1(), port, &["DEBUG", "POPULATE", "20000"]),
        "OK"
    );
    // (A change that counts for `save`: the populating does not.)
    assert_eq!(redis_cli(c.h1(), port, &["SET", "marker", "1"]), "OK");
    assert!(
        p.wait_for("Background saving started by pid", 10),
        "{}",
        p.text()
    );
    let child: i32 = p
        .text()
        .lines()
        .find_map(|l| l.split("Background saving started by pid ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("the saving child's pid");
    std::thread::sleep(std::time::Duration::from_millis(500));

    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2", "--mode", "stop-copy"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(
        !p.text().contains("Background saving terminated"),
        "the save ended before the move: {}",
        p.text()
    );
    assert!(alive_in(c.h2(), child), "the saving child is not on host2");
    assert!(
        !alive_in(c.h1(), child),
        "the saving child still runs on host1"
    );
    // The child finishes on host2 and its parent there reaps it and takes
    // the file.
    assert!(
        p.wait_for("Background saving terminated", 30),
        "{}",
        p.text()
    );
    assert!(
        p.text()
            .contains("Background saving terminated with success"),
        "{}",
        p.text()
    );
    let info = redis_cli(c.h2(), port, &["INFO", "persistence"]);
    assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
    assert_eq!(redis_cli(c.h2(), port, &["DBSIZE"]), "20001");
    let check = c
        .h2()
        .command("redis-check-rdb")
        .arg(dir.join("dump.rdb"))
        .output()
        .expect("redis-check-rdb");
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(said.contains("RDB looks OK"), "{said}");
    assert!(said.contains("20001 keys read"), "{said}");
    redis_cli(c.h2(), port, &["SHUTDOWN", "NOSAVE"]);
}

#[test]
fn a_family_writing_to_one_forwarded_stream_moves_and_the_stream_follows() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("writers.out");
    let writers = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/trees_writers.py"
    );
    // The family's stdout is a pipe to `cat`, which stays on host1: it is
    // forwarded, the child's being the root's, inherited.
    let script = format!(
        "echo 9100 > /proc/sys/kernel/ns_last_pid; python3 {writers} 1500 4 root 0 | cat > {}",
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
    assert!(
        wait_until(20, || text().contains("root 200\n")),
        "{}",
        text()
    );
    let root: i32 = text()
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.parse().ok())
        .expect("the root's pid");
    let out = c.migrate(&[&root.to_string(), "--to", "host2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(stdout.contains("with 1 descendant"), "{stdout}");
    assert!(
        !text().contains("root 1500\n"),
        "the family ended before the move"
    );
    // Both write on through host2 to the `cat` on host1 until they end;
    // the end of file follows and the pipeline ends.
    let done = wait_until(60, || matches!(sh.try_wait(), Ok(Some(_))));
    assert!(done, "the pipeline never ended\n{}", c.logs());
    for who in ["root", "child"] {
        let seen: Vec<u32> = text()
            .lines()
            .filter_map(|l| l.strip_prefix(who)?.trim().parse().ok())
            .collect();
        let want: Vec<u32> = (1..=1500).collect();
        assert!(
            seen == want,
            "{who}'s lines lost, doubled or reordered: {} of them, missing {:?}",
            seen.len(),
            want.iter()
                .filter(|n| !seen.contains(n))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_family_on_a_terminal_moves_and_its_root_leaves_a_deputy_at_home() {
    require_lab!();
    let c = Cluster::start();
    let out_file = c.path("tty.out");
    // A parent leading the session of script's terminal, and its child:
    // both move, their output keeps reaching the terminal, and script
    // (waiting for the parent) sees it end with its own exit code,
    // through the deputy. (Past host2's pids: a tree keeps them; the
    // shell script starts execs the parent.)
    let ticker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/trees_writers.py"
    );
    let command = format!("exec python3 {ticker} 400 20 tick 7");
    let mut sh = c
        .h1()
        .command("sh")
        .args([
            "-c",
            "echo 9200 > /proc/sys/kernel/ns_last_pid; exec script -qfec \"$0\" /dev/null",
            &command,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(wait_until(20, || text().contains("tick 30")), "{}", text());
    let pid: i32 = text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid ")?.trim().parse().ok())
        .expect("pid");
    let leader = stat_in(c.h1(), pid)
        .get(3)
        .and_then(|s| s.parse::<i32>().ok());
    assert_eq!(leader, Some(pid), "the parent does not lead its session");
    let out = c.migrate(&[&pid.to_string(), "--to", "host2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(stdout.contains("with 1 descendant"), "{stdout}");
    assert!(!text().contains("tick 400"), "finished before the move");
    let mut status = None;
    assert!(
        wait_until(30, || {
            status = sh.try_wait().ok().flatten();
            status.is_some()
        }),
        "script never ended\n{}",
        c.logs()
    );
    for who in ["tick", "child"] {
        let seen: Vec<u32> = text()
            .lines()
            .filter_map(|l| l.trim().strip_prefix(who)?.trim().parse().ok())
            .collect();
        assert_eq!(seen, (1..=400).collect::<Vec<_>>(), "{who}");
    }
    assert_eq!(
        status.unwrap().code(),
        Some(7),
        "the exit code did not come home"
    );
}

#[test]
fn in_post_copy_a_member_ends_and_a_child_is_forked_while_pages_still_come() {
    require_lab!();
    let c = Cluster::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/trees_postcopy_family.py"
    );
    let p = Proc::start(
        c.h1(),
        c.path("family.out"),
        "sh",
        &[
            "-c",
            "echo 9300 > /proc/sys/kernel/ns_last_pid; python3 \"$0\" & wait",
            script,
        ],
    );
    let [root, a]: [i32; 2] = p
        .text()
        .lines()
        .find_map(|l| {
            let mut w = l.strip_prefix("pid ")?.split(' ');
            Some([w.next()?.parse().ok()?, w.next()?.trim().parse().ok()?])
        })
        .expect("pid line");
    // The push held at 4 MiB/s: most of the 96 MiB the two have of their
    // own is still to come when they are asked.
    let out = c.migrate(&[
        &root.to_string(),
        "--to",
        "host2",
        "--push-rate",
        "4",
        "--detach",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(stdout.contains("to follow"), "{stdout}");
    signal_in(c.h2(), a, "-USR1");
    signal_in(c.h2(), root, "-USR1");
    assert!(p.wait_for("verdict", 60), "{}\n{}", p.text(), c.logs());
    assert!(p.text().contains("verdict ok"), "{}", p.text());
}

/// Targets of the build in [`make_j_moves_mid_build_at_the_first_ask`].
const TARGETS: usize = 1000;

#[test]
fn make_j_moves_mid_build_at_the_first_ask() {
    require_lab!();
    let c = Cluster::start();
    // Each target a shell that sleeps a little and writes its file: the
    // build's children come and go all the time, and some end while the
    // tree is being frozen.
    let dir = c.path("build");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..TARGETS).map(|i| format!("t{i}.done")).collect();
    let makefile = format!(
        "all: {}\n\t@echo all built\n%.done:\n\t@sleep 0.002; echo $@ > $@\n",
        names.join(" ")
    );
    std::fs::write(dir.join("Makefile"), makefile).unwrap();
    let p = Proc::start(
        c.h1(),
        c.path("make.out"),
        "sh",
        &[
            "-c",
            &format!(
                "echo 20000 > /proc/sys/kernel/ns_last_pid; \
                 {CLOSED} sh -c 'echo pid $$; exec make -j4 -C \"$0\"' \"$0\" & wait"
            ),
            &dir.to_string_lossy(),
        ],
    );
    let done = || names.iter().filter(|n| dir.join(n).exists()).count();
    assert!(wait_until(30, || done() >= 60), "{}", p.text());
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        c.logs()
    );
    assert!(done() < TARGETS, "the build ended before it moved");
    // The original is gone from host1 (its parent there reaps it).
    let here = c.h1().root_path(format!("proc/{}/stat", p.pid));
    assert!(
        wait_until(10, || std::fs::read_to_string(&here)
            .map_or(true, |s| s.contains(") Z"))),
        "make runs on on host1"
    );
    // The build goes on on host2 and ends: every target's file written
    // once, with its name.
    assert!(p.wait_for("all built", 60), "{}\n{}", p.text(), c.logs());
    for n in &names {
        let text = std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        assert_eq!(text.trim(), n, "{n}");
    }
    assert_eq!(p.text().matches("all built").count(), 1, "{}", p.text());
}
