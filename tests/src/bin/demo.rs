//! The demo: two simulated hosts, an agent on each, a 256 MiB workload on
//! host1 migrated live to host2, its memory checked there, then teardown.
//! Run as root: `tests/demo`.

use std::fs;
use std::process::{ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_tests::bins::bin;
use migrate_tests::lab::Lab;

fn step(s: &str) {
    println!("\n== {s}");
}

fn last_ticks(out: &std::path::Path, n: usize) -> Vec<String> {
    let text = fs::read_to_string(out).unwrap_or_default();
    let ticks: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("tick "))
        .map(String::from)
        .collect();
    ticks[ticks.len().saturating_sub(n)..].to_vec()
}

fn wait_for(out: &std::path::Path, needle: &str, secs: u64) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if fs::read_to_string(out).unwrap_or_default().contains(needle) {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    step("building the lab: host1 (10.77.0.1) and host2 (10.77.0.2), own network, pid and mount namespaces");
    let lab = Lab::start().map_err(|e| format!("lab: {e}"))?;
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    let agent = bin("migrate-agent");
    let _a1 = h1
        .spawn_agent(&agent, &[h2], &lab.shared_dir().join("agent1.log"))
        .map_err(|e| e.to_string())?;
    let _a2 = h2
        .spawn_agent(&agent, &[h1], &lab.shared_dir().join("agent2.log"))
        .map_err(|e| e.to_string())?;
    println!("agents running; logs in {}", lab.shared_dir().display());

    step("starting a workload on host1: 256 MiB of patterned memory, a tick every 20 ms");
    let out = lab.shared_dir().join("workload.out");
    let mut w = h1
        .command(bin("workload"))
        .args(["--mib", "256", "--tick-ms", "20"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if !wait_for(&out, "tick 10 ", 60) {
        let _ = w.kill();
        return Err("the workload did not start".into());
    }
    let text = fs::read_to_string(&out).unwrap_or_default();
    let pid = text
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .unwrap_or("?")
        .to_string();
    println!("workload is pid {pid} on host1; its last ticks:");
    for l in last_ticks(&out, 3) {
        println!("  {l}");
    }

    step(&format!("host1# migrate {pid} --to host2"));
    let m = h1
        .command(bin("migrate"))
        .args([&pid, "--to", "host2"])
        .output()
        .map_err(|e| e.to_string())?;
    print!("{}", String::from_utf8_lossy(&m.stdout));
    eprint!("{}", String::from_utf8_lossy(&m.stderr));
    if !m.status.success() {
        let _ = w.kill();
        return Err(format!("migrate exited with {}", m.status));
    }
    let summary = String::from_utf8_lossy(&m.stdout).into_owned();
    let new_pid = summary
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or("?")
        .to_string();

    step(&format!(
        "the workload goes on counting on host2 as pid {new_pid}"
    ));
    sleep(Duration::from_secs(2));
    for l in last_ticks(&out, 3) {
        println!("  {l}");
    }
    let alive = h1.root_path(format!("/proc/{pid}/stat"));
    println!(
        "pid {pid} on host1: {}",
        if alive.exists() {
            "still there"
        } else {
            "gone"
        }
    );

    step(&format!(
        "host2# kill -USR1 {new_pid}   (the workload checks every byte of its memory)"
    ));
    let _ = h2.command("kill").args(["-USR1", &new_pid]).status();
    let ok = wait_for(&out, "verify ", 60);
    let text = fs::read_to_string(&out).unwrap_or_default();
    if let Some(l) = text.lines().find(|l| l.starts_with("verify")) {
        println!("  {l}");
    }
    let _ = h2.command("kill").args(["-KILL", &new_pid]).status();
    let _ = w.kill();
    let _ = w.wait();
    step("tearing the lab down");
    drop(lab);
    if ok && text.contains("verify ok") {
        println!("demo complete");
        Ok(())
    } else {
        Err("the memory check did not pass".into())
    }
}
