//! Every failpoint of the agents (`migrate-agent __failpoints` in a build
//! with `--features failpoints`), each with `return` (the step fails as a
//! real error there would) and `panic` (the agent dies there), in post-copy,
//! stop-copy and for a tree in both (`tree`, `tree-postcopy`: a workload
//! with a child sharing its memory copy-on-write; every member must be
//! where the outcome says, together), in post-copy with a service address
//! moved (`address`: the workload echoes to a client on a third host over a
//! connection on that address, which is where the workload runs, never on
//! both hosts; the client's connection goes on
//! with whichever runs, unless a copy ran and was lost), and with `unwind` (a panic that ends only its migration's
//! thread, as in normal builds; the agent must go on serving) in
//! stop-copy. An agent that dies is restarted a second later, as its unit
//! would. Afterwards, on both hosts:
//! - exit 0: the process runs on host2 only;
//! - exit 1: the original runs on host1 (the same process, with the
//!   mappings it had before), nothing on host2;
//! - exit 4 (lost): it runs nowhere (a kept original is frozen), or, only
//!   when the source agent died (`panic`), at most once anywhere: a source
//!   that loses touch after the commit asks the destination what became
//!   of the copy, and one that runs with every page completes the
//!   migration; but `migrate` cannot ask for a dead source.
//! - a source agent that dies before the commit (its dump included, in
//!   the middle of a syscall it injected) leaves the original running on
//!   host1 as it was: the same mappings, memory, CPU affinity (given back
//!   by the restarted agent), and no copy.
//!
//! and the copy that runs has its memory, checked word for word.

use std::time::{Duration, Instant};

use migrate_tests::bins::failpoint_agent;
use migrate_tests::lab::Host;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD_BIN: &str = env!("CARGO_BIN_EXE_workload");

/// The source's failpoints before the commit: the original is the process.
const SOURCE_BEFORE_COMMIT: &[&str] = &[
    "source.after-file-check",
    "source.before-freeze",
    "source.dump.injecting",
    "source.dump.in-syscall",
    "source.before-core",
    "source.after-core",
    "source.after-ready",
];

/// Each thread's CPU affinity (`Cpus_allowed_list`), by thread id.
fn affinity(host: &Host, pid: i32) -> Vec<(String, String)> {
    let dir = host.root_path(format!("proc/{pid}/task"));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let allowed = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .unwrap_or_default()
            .to_string();
        out.push((e.file_name().to_string_lossy().into_owned(), allowed));
    }
    out.sort();
    out
}

/// Pids of workloads that run in `host`.
fn workloads(host: &Host) -> Vec<i32> {
    let mut pids: Vec<i32> = pids_named(host, "workload")
        .into_iter()
        .filter(|&p| runs_in(host, p))
        .collect();
    pids.sort_unstable();
    pids
}

/// One case: the outcome, or what went wrong.
fn walk(agent: &std::path::Path, name: &str, action: &str, mode: &str) -> Result<String, String> {
    // `unwind`: a panic that unwinds its thread only, as in normal builds.
    let spec = format!("{name}={}", action.replace("unwind", "panic"));
    let mut set = vec![("FAILPOINTS", spec.as_str())];
    if action == "unwind" {
        set.push(("FAILPOINTS_UNWIND", "1"));
    }
    let env: [&[(&str, &str)]; 2] = if name.starts_with("source.") {
        [&set, &[]]
    } else {
        [&[], &set]
    };
    // A moved address: a client on a third host on the same switch.
    let address = mode == "address";
    let mut c = if address {
        Cluster::start_switched(agent, env)
    } else {
        Cluster::start_env(agent, env)
    };
    // A tree: the workload and a child; pids past those host2 uses, since
    // a tree keeps them.
    let tree = mode.starts_with("tree");
    let mode = match mode {
        "tree" => "stop-copy",
        "tree-postcopy" | "address" => "postcopy",
        m => m,
    };
    let w = if address {
        serve_address(&c);
        let at = format!("{SERVICE}:7100");
        Proc::start(
            c.h1(),
            c.path("w.out"),
            WORKLOAD_BIN,
            &["--mib", "8", "--echo", &at],
        )
    } else if tree {
        let script = "echo 5000 > /proc/sys/kernel/ns_last_pid; \"$0\" --mib 8 --fork 1 & wait";
        Proc::start(c.h1(), c.path("w.out"), "sh", &["-c", script, WORKLOAD_BIN])
    } else {
        Proc::start(c.h1(), c.path("w.out"), WORKLOAD_BIN, &["--mib", "8"])
    };
    if !w.wait_for("ready 8", 60) {
        return Err(format!("the workload did not start: {}", w.text()));
    }
    // Every member, sorted: one pid, or the workload and its child.
    let mut members = vec![w.pid as i32];
    if tree {
        let text = w.text();
        let child = text
            .lines()
            .find_map(|l| l.strip_prefix("child ")?.trim().parse().ok());
        match child {
            Some(pid) => members.push(pid),
            None => return Err(format!("no child line: {text}")),
        }
    }
    members.sort_unstable();
    let members = members;
    let client = if address {
        let client = echo_client(&c, "client.out", "7100", 100_000, "0.005");
        if !client.wait_for("echoed 20", 30) {
            return Err(format!("the client did not start: {}", client.text()));
        }
        Some(client)
    } else {
        None
    };
    let maps_of = c.h1().root_path(format!("proc/{}/maps", w.pid));
    let maps = |_: i32| std::fs::read_to_string(&maps_of);
    let maps_before = maps(w.pid);
    let affinity_before = affinity(c.h1(), w.pid);
    // The agent that dies is restarted, as its unit would
    // (Restart=on-failure), a second later and without failpoints: a
    // destination answers the source from its record, a source gives
    // back what it held of the original.
    let restart = action == "panic";
    let (which, peer) = if name.starts_with("source.") {
        (0, 1)
    } else {
        (1, 0)
    };
    let dying = c.agents.remove(which);
    let migrating = std::sync::atomic::AtomicBool::new(true);
    let cr = &c;
    let (out, restarted) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut a = dying;
            let host = cr.lab.host(["host1", "host2"][which]);
            let other = cr.lab.host(["host1", "host2"][peer]);
            let until = Instant::now() + Duration::from_secs(120);
            // While `migrate` runs, and a little after (it ends as soon as
            // a source agent dies).
            let mut ended: Option<Instant> = None;
            while restart && Instant::now() < until {
                if a.wait_exit(Duration::from_millis(100)).is_some() {
                    std::thread::sleep(Duration::from_secs(1));
                    let log = cr.path(&format!("agent{}-restarted.log", which + 1));
                    return host
                        .spawn_agent(agent, &[other], &log)
                        .expect("the agent restarted");
                }
                if !migrating.load(std::sync::atomic::Ordering::Relaxed)
                    && ended.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2)
                {
                    break;
                }
            }
            a
        });
        let pid = w.pid.to_string();
        let mut args = vec![pid.as_str(), "--to", "host2", "--mode", mode];
        if address {
            args.extend(["--move-address", SERVICE]);
        }
        let out = cr.migrate(&args);
        migrating.store(false, std::sync::atomic::Ordering::Relaxed);
        (out, watcher.join().expect("the watcher"))
    });
    c.agents.insert(which, restarted);
    let restart_dest = restart && which == 1;
    let code = out.status.code();
    // Settle: a copy whose source died is killed once the source has been
    // silent 5 s; that only follows a failure `migrate` reports (exit 4).
    // A copy may run on after exit 4 only when the source agent died:
    // `migrate` cannot ask about the copy. Otherwise the source asks the
    // destination (restarted if it died), and a copy that runs completes
    // the migration, one that is gone lets the original run on.
    let agent_died = action == "panic" && name.starts_with("source.");
    let original_kept = agent_died && SOURCE_BEFORE_COMMIT.contains(&name);
    // All of the tree in one place: its members' pids, or none.
    let n = members.len();
    let ok = |h1: &[i32], h2: &[i32]| match (code, h1.len(), h2.len()) {
        _ if original_kept => h1 == members && h2.is_empty(),
        (Some(0), 0, k) => k == n && (!tree || h2 == members),
        (Some(1), k, 0) => k == n && h1 == members,
        (Some(4), 0, 0) => !restart_dest,
        (Some(4), n1, n2) if agent_died => {
            (n1 == 0 || h1 == members) && (n2 == 0 || !tree || h2 == members) && n1 + n2 <= n
        }
        _ => false,
    };
    let deadline = Instant::now() + Duration::from_secs(12);
    let (h1, h2) = loop {
        let state = (workloads(c.h1()), workloads(c.h2()));
        if ok(&state.0, &state.1) || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nothing may start running later: a kept original stays frozen, and a
    // copy can only be killed (its source gone: only after exit 4).
    std::thread::sleep(Duration::from_millis(500));
    let (h1b, h2b) = (workloads(c.h1()), workloads(c.h2()));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let what = format!("exit {code:?}, host1 {h1b:?}, host2 {h2b:?} ({err})");
    if !ok(&h1, &h2) || !ok(&h1b, &h2b) {
        return Err(format!("{what}; first seen host1 {h1:?} host2 {h2:?}"));
    }
    // The one copy that runs has its memory.
    let running = h1b
        .iter()
        .map(|&p| (c.h1(), p))
        .chain(h2b.iter().map(|&p| (c.h2(), p)));
    for (host, pid) in running {
        match try_verify_memory(host, pid, &w, 30) {
            Some(v) if v.starts_with("verify ok") => {}
            // A copy killed meanwhile, after `migrate` said it was lost.
            None if code == Some(4) && !runs_in(host, pid) => {}
            v => return Err(format!("{what}; memory on {}: {v:?}", host.name())),
        }
    }
    if let Some(client) = &client {
        // The address is where the process runs; never on both hosts.
        let here = (has_service(c.h1()), has_service(c.h2()));
        let right = match (h1b.is_empty(), h2b.is_empty()) {
            (_, false) => here == (false, true),
            (false, true) => here == (true, false),
            // Lost: gone with it, or back home.
            (true, true) => here != (true, true) && here != (false, true),
        };
        if !right {
            return Err(format!("{what}; the address is on (host1, host2) {here:?}"));
        }
        // Its connection goes on with whichever runs, unless a copy ran
        // and was lost (the original's is older than what the client saw).
        let copy_lost = code == Some(4) || err.contains("copy on host2 is gone");
        if !copy_lost || original_kept {
            let echoed = |t: &str| t.lines().filter(|l| l.starts_with("echoed ")).count();
            let before = echoed(&client.text());
            let on = wait_until(15, || echoed(&client.text()) >= before + 2);
            let text = client.text();
            if !on || text.contains("error") || text.contains("bad") || text.contains("closed") {
                return Err(format!(
                    "{what}; the client: {}",
                    text.lines().last().unwrap_or("")
                ));
            }
        }
    }
    // Untouched: not a mapping more or less than before (a scratch page
    // left by an abandoned dump would show).
    if (code == Some(1) || original_kept) && maps(w.pid).ok() != maps_before.ok() {
        return Err(format!("{what}; the original's mappings changed"));
    }
    if original_kept {
        // Its threads' CPU affinity, held by the dump, given back by the
        // restarted agent.
        let until = Instant::now() + Duration::from_secs(10);
        let mut now = affinity(c.h1(), w.pid);
        while now != affinity_before && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            now = affinity(c.h1(), w.pid);
        }
        if now != affinity_before {
            return Err(format!(
                "{what}; the original's affinity is {now:?}, was {affinity_before:?}"
            ));
        }
    }
    if action == "unwind" {
        // The panic ended one migration, not the agent.
        for host in [c.h1(), c.h2()] {
            let list = c.migrate_from(host, &["list"]);
            if !list.status.success() {
                return Err(format!("{what}; the agent on {} is gone", host.name()));
            }
        }
    }
    Ok(what)
}

#[test]
fn every_failpoint_leaves_the_process_running_exactly_once() {
    require_lab!();
    let agent = failpoint_agent();
    let listed = std::process::Command::new(&agent)
        .arg("__failpoints")
        .output()
        .expect("migrate-agent __failpoints");
    assert!(listed.status.success(), "{listed:?}");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert!(names.len() > 10, "{names:?}");
    // For work on one failpoint: `FAILPOINT_CASES=NAME[,NAME...]`.
    let only = std::env::var("FAILPOINT_CASES").ok();
    let chosen = |n: &str| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == n));
    let modes = std::env::var("FAILPOINT_MODES")
        .unwrap_or("postcopy,stop-copy,tree,tree-postcopy,address".into());
    let actions = std::env::var("FAILPOINT_ACTIONS").unwrap_or("return,panic,unwind".into());
    let mut failures = Vec::new();
    let mut walked = 0;
    let t = Instant::now();
    for mode in modes.split(',') {
        for action in actions.split(',') {
            // A panic that unwinds is walked in stop-copy only, to keep the
            // walk short (post-copy's own steps, demand, push and the
            // keeper, are walked with return and panic).
            if action == "unwind" && mode != "stop-copy" {
                continue;
            }
            for name in names.iter().filter(|n| chosen(n)) {
                let r = walk(&agent, name, action, mode);
                walked += 1;
                eprintln!("{mode:9} {name:26} {action:6} {r:?}");
                if let Err(e) = r {
                    failures.push(format!("{mode} {name}={action}: {e}"));
                }
            }
        }
    }
    eprintln!("walked {walked} cases in {:?}", t.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
