//! Agents authenticate each other and encrypt every lane: a capture of the
//! link during a migration holds none of the process's memory (and does
//! with `--insecure`, which shows the capture would see it); an agent of
//! another cluster, or one running in plaintext, gets nothing and the
//! process runs on untouched.

use std::fs;
use std::process::{Command, Stdio};

use migrate_tests::bins::bin;
use migrate_tests::lab::Lab;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// A process holding a 48-byte marker 40000 times; SIGUSR1 checks it.
const HOLDER: &str = include_str!("scripts/security_holder.py");

fn marker() -> Vec<u8> {
    (0..48u32)
        .map(|i| 65 + ((i * 7 + i / 3) % 26) as u8)
        .collect()
}

/// Captures every frame on host1's end of the link (AF_PACKET) until the
/// stop file appears, at most two minutes.
const SNIFFER: &str = include_str!("scripts/security_sniffer.py");

/// Migrates the marker holder from host1 to host2 while capturing the
/// link; returns the capture after checking the memory arrived intact.
fn captured_migration(c: &Cluster) -> Vec<u8> {
    let (cap, stop, log) = (c.path("link.cap"), c.path("stop"), c.path("sniff.out"));
    let mut sniffer = c
        .h1()
        .command("python3")
        .args(["-c", SNIFFER])
        .arg(&cap)
        .arg(&stop)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(20, || fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening")));
    let script = c.path("holder.py");
    fs::write(&script, HOLDER).unwrap();
    let p = Proc::start(
        c.h1(),
        c.path("holder.out"),
        "python3",
        &[script.to_str().unwrap()],
    );
    assert!(p.wait_for("ready", 60));
    let out = c.migrate(&[&p.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    signal_in(c.h2(), new_pid, "-USR1");
    assert!(p.wait_for("verify ", 30), "{}", p.text());
    assert!(p.text().contains("verify ok"), "{}", p.text());
    signal_in(c.h2(), new_pid, "-KILL");
    fs::write(&stop, "").unwrap();
    assert!(wait_until(20, || fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("done")));
    let _ = sniffer.wait();
    fs::read(&cap).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_link_carries_no_memory_in_the_clear_unless_insecure() {
    require_lab!();
    let c = Cluster::start();
    let cap = captured_migration(&c);
    // The process's memory (about 2 MB of marker) crossed this link.
    assert!(cap.len() > 2 << 20, "captured only {} bytes", cap.len());
    assert!(
        !contains(&cap, &marker()),
        "the process's memory crossed the link in the clear"
    );
    drop(c);

    // The same capture sees it when the agents run --insecure.
    let c = Cluster::start_with([&["--insecure"], &["--insecure"]]);
    let cap = captured_migration(&c);
    assert!(
        contains(&cap, &marker()),
        "the capture missed the plaintext memory ({} bytes)",
        cap.len()
    );
}

#[test]
fn an_agent_of_another_cluster_or_in_plaintext_gets_nothing() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let other = lab.shared_dir().join("other");
    let st = Command::new(bin("migrate-agent"))
        .arg("keygen")
        .arg(&other)
        .args(["--hosts", "host1,host2"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let own = lab.shared_dir().join("cluster");
    let (own, other) = (own.to_str().unwrap(), other.to_str().unwrap());
    let c = Cluster::start_in(lab, [&["--auth", own], &["--auth", other]]);
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w.wait_for("ready 16", 60));
    let pid = w.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2"]);
    assert_refused(&out, 1, "not a member of this cluster");
    assert_untouched(&c, &w);
    let nothing_on_host2 = |c: &Cluster| {
        assert!(
            pids_named(c.h2(), "workload").is_empty(),
            "a process appeared on host2"
        );
    };
    nothing_on_host2(&c);

    // host2 now runs in plaintext: refused too, with the reason.
    let mut c = c;
    c.agents[1].kill();
    c.agents[1] = c
        .h2()
        .spawn_agent_with(
            &bin("migrate-agent"),
            &[c.h1()],
            &c.path("agent2b.log"),
            &["--insecure"],
        )
        .expect("plaintext agent on host2");
    let out = c.migrate(&[&pid, "--to", "host2"]);
    assert_refused(&out, 1, "runs --insecure");
    assert_untouched(&c, &w);
    nothing_on_host2(&c);
    assert_eq!(verify_memory(&c, c.h1(), w.pid, &w), "verify ok 4096");
}

const RELAY: &str = include_str!("scripts/replay_relay.py");
const REPLAY: &str = include_str!("scripts/replay_send.py");

/// Replays the recording in `rec` to host2's agent from host1 and says
/// whether a process named `workload` appeared on host2 meanwhile.
fn replay_rebuilds(c: &Cluster, rec: &std::path::Path) -> bool {
    let h2 = c.h2().addr().to_string();
    let mut replay = c
        .h1()
        .command("python3")
        .args(["-c", REPLAY, &h2, "7070", rec.to_str().unwrap(), "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = false;
    let ended = wait_until(30, || {
        seen |= !pids_named(c.h2(), "workload").is_empty();
        matches!(replay.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = replay.kill();
    }
    let out = replay.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("replayed "),
        "the replay did not run: {out:?}"
    );
    seen || !pids_named(c.h2(), "workload").is_empty()
}

/// A migration between insecure agents recorded on the wire (a relay on
/// host1 in front of host2's agent) and replayed byte for byte to host2
/// once its copy is gone: refused by its id, also after host2's agent
/// restarted. Replayed to an agent that forgot the id, the same bytes
/// rebuild the process: the replay is faithful, only the guard stops it.
#[test]
fn a_replayed_migration_is_refused_by_its_id_even_after_a_restart() {
    require_lab!();
    let mut c = Cluster::start_with([&["--insecure"], &["--insecure"]]);
    let rec = c.path("recording");
    let h2 = c.h2().addr().to_string();
    let relay_out = c.path("relay.out");
    let mut relay = c
        .h1()
        .command("python3")
        .args(["-c", RELAY, "7171", &h2, "7070", rec.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&relay_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(10, || fs::read_to_string(&relay_out)
            .unwrap_or_default()
            .contains("listening")),
        "the relay did not start"
    );
    let w = Proc::start(
        c.h1(),
        c.path("w.out"),
        WORKLOAD,
        &["--mib", "16", "--tick-ms", "5"],
    );
    assert!(w.wait_for("ready 16", 60));
    let out = c.migrate(&[
        &w.pid.to_string(),
        "--to",
        "127.0.0.1:7171",
        "--mode",
        "stop-copy",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let (copy, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    let _ = relay.kill();
    let _ = relay.wait();
    signal_in(c.h2(), copy, "-KILL");
    assert!(wait_until(10, || !alive_in(c.h2(), copy)));
    // Gone, not only dead: a zombie copy not yet reaped would be counted
    // by the replay's look for a rebuilt workload.
    assert!(
        wait_until(10, || pids_named(c.h2(), "workload").is_empty()),
        "the killed copy {copy} is still listed on host2"
    );

    let restart = |c: &mut Cluster, log: &str| {
        c.agents[1].kill();
        c.agents[1] = c
            .h2()
            .spawn_agent_with(
                &bin("migrate-agent"),
                &[c.h1()],
                &c.path(log),
                &["--insecure"],
            )
            .expect("agent on host2 again");
    };
    restart(&mut c, "agent2-restarted.log");
    assert!(
        !replay_rebuilds(&c, &rec),
        "a replayed migration was rebuilt on host2\n{}",
        c.logs()
    );
    // The same, to an agent that forgot what it received.
    c.agents[1].kill();
    fs::remove_file(c.h2().root_path("run/migrate/state/received.log")).unwrap();
    restart(&mut c, "agent2-forgot.log");
    assert!(
        replay_rebuilds(&c, &rec),
        "the replay rebuilt nothing even without the guard: it proves nothing\n{}",
        c.logs()
    );
}
