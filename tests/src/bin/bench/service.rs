//! `bench --service`: redis on host1 bound to a service address, eight
//! clients on host3 (each doing SET then GET, one request at a time,
//! checking every answer), moved with its address (`--move-address`)
//! while they run. Measured from the clients: requests per second before,
//! during (from `migrate`'s start to its end) and after the move, and the
//! longest a client waited for an answer; in post-copy and in pre-copy,
//! each in a lab of its own. With `--criu PATH`, the same under CRIU,
//! stop-and-copy and lazy (`criu dump/restore --tcp-established`, with
//! `--lazy-pages` and `criu lazy-pages` for the second; the address moved
//! with `ip addr` and announced with `arping -U`).

use std::fs;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use std::path::Path;

use migrate_tests::bins::bin;
use migrate_tests::lab::{Host, Lab};
use serde_json::{json, Value};

use super::{
    copy_images, start_lazy_pages, Criu, PipeMax, CRIU_IMAGES, CRIU_PORT, CRIU_STEP_TIMEOUT,
    CRIU_WORK,
};

const SERVICE: &str = "10.77.0.100";
const PORT: &str = "6391";
const CLIENTS: u32 = 8;
/// How long the clients run, and when the move starts.
const LOAD_S: f64 = 12.0;
const MOVE_AT_S: f64 = 4.0;
/// redis's pid in host1 is at least this, free on host2 (CRIU restores
/// the same pid).
const PID_FLOOR: u32 = 1000;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ip(host: &Host, args: &[&str]) -> Result<(), String> {
    let st = host
        .command("ip")
        .args(args)
        .status()
        .map_err(|e| e.to_string())?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("ip {args:?} failed"))
}

/// Mean requests per second of `counts` (per `bucket_s`, from `t0`) in
/// the whole buckets inside `[from, to)`, unix seconds (`covering`: in
/// the buckets that overlap it).
fn rate(
    counts: &[u64],
    t0: f64,
    bucket_s: f64,
    (from, to): (f64, f64),
    covering: bool,
) -> Option<f64> {
    let (a, b) = ((from - t0) / bucket_s, (to - t0) / bucket_s);
    let (a, b) = if covering {
        (a.floor(), b.ceil())
    } else {
        (a.ceil(), b.floor())
    };
    if b <= a || a < 0.0 {
        return None;
    }
    let (a, b) = (a as usize, (b as usize).min(counts.len()));
    let n: u64 = counts.get(a..b)?.iter().sum();
    Some(n as f64 / ((b - a) as f64 * bucket_s))
}

/// How the service moves: the project's `migrate` in a mode, or CRIU.
enum Mover<'a> {
    /// `migrate --mode MODE --move-address`.
    Migrate(&'a str),
    /// `criu dump --tcp-established` on host1, the address moved by hand
    /// (`ip addr`), the images copied over, `criu restore -d
    /// --tcp-established` on host2, then a gratuitous ARP (`arping -U`):
    /// what a user of CRIU does. With `lazy`, the dump stays as the page
    /// server (`--lazy-pages`) and host2 runs `criu lazy-pages` beside the
    /// restore.
    Criu { path: &'a Path, lazy: bool },
}

/// Runs the service benchmark (and, with `criu`, the same under CRIU);
/// prints its rows and writes them as JSON under `out`.
pub fn run(out: &Path, criu: Option<&Path>) -> Result<bool, String> {
    let mut needed = vec![("redis-server", "redis-server"), ("python3", "python3")];
    if criu.is_some() {
        needed.extend(CRIU_TOOLS);
    }
    check_tools(&needed)?;
    let mut all = serde_json::Map::new();
    for mode in ["postcopy", "precopy"] {
        let r = measure(&Mover::Migrate(mode))?;
        print_row(
            &format!("service ({mode})"),
            &format!("moved with its address in {mode}"),
            "downtime",
            &r,
        );
        all.insert(mode.to_string(), r);
    }
    if let Some(path) = criu {
        for (name, lazy) in [("criu", false), ("criu-lazy", true)] {
            let r = measure(&Mover::Criu { path, lazy })?;
            print_row(
                &format!("service under CRIU ({name})"),
                "dumped with --tcp-established, its address moved by hand",
                "from the dump's start to the restore's end",
                &r,
            );
            all.insert(name.to_string(), r);
        }
    }
    let all = Value::Object(all);
    fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let path = out.join("service.json");
    fs::write(
        &path,
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("written: {}", path.display());
    let ok = all
        .as_object()
        .is_some_and(|m| m.values().all(|v| v["ok"].as_bool().unwrap_or(false)));
    Ok(ok)
}

/// What CRIU's row needs beside CRIU, with the Debian package of each:
/// its network lock for `--tcp-established` runs `iptables`, and the
/// moved address is announced with `arping -U`.
const CRIU_TOOLS: [(&str, &str); 2] = [("iptables", "iptables"), ("arping", "iputils-arping")];

/// Fails with one message naming every tool in `tools` (command, package)
/// not on `PATH`, before any lab is built: without it, CRIU's dump fails
/// only after the rows before it have run ("Failed to lock TCP
/// connection").
fn check_tools(tools: &[(&str, &str)]) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = tools
        .iter()
        .filter(|(cmd, _)| !std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
        .map(|(cmd, pkg)| format!("{cmd} (Debian's {pkg})"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--service needs {} on PATH; install it first",
        missing.join(", ")
    ))
}

fn print_row(what: &str, how: &str, downtime: &str, r: &Value) {
    let num = |k: &str, d: usize| match r[k].as_f64() {
        Some(v) => format!("{v:.d$}"),
        None => "-".into(),
    };
    println!(
        "{what}: redis with {CLIENTS} clients on host3, {how}: \
         {} req/s before, {} during the move (the 100 ms buckets it overlaps; it took {} ms, \
         {downtime} {} ms), {} after; longest \
         stall a client saw {} ms ({} s after the move began); client errors: {}",
        num("rps_before", 0),
        num("rps_during", 0),
        num("migrate_ms", 0),
        num("downtime_ms", 1),
        num("rps_after", 0),
        num("longest_stall_ms", 1),
        num("stall_at_s_after_move_start", 2),
        r["client_errors"]
    );
}

/// One run in a lab of its own: redis on host1 under the clients on
/// host3, moved to host2 by `mover` while they run.
fn measure(mover: &Mover) -> Result<Value, String> {
    let lab = Lab::start_switched().map_err(|e| format!("lab: {e}"))?;
    let (h1, h2, h3) = (lab.host("host1"), lab.host("host2"), lab.host("host3"));
    let logs = lab.shared_dir();
    let mut agents = Vec::new();
    if let Mover::Migrate(_) = mover {
        let agent = bin("migrate-agent");
        let cluster = logs.join("cluster");
        let cluster = cluster.to_string_lossy().into_owned();
        let security = ["--auth", cluster.as_str()];
        for (h, peer, log) in [(h1, h2, "agent1.log"), (h2, h1, "agent2.log")] {
            agents.push(
                h.spawn_agent_with(&agent, &[peer], &logs.join(log), &security)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    ip(
        h1,
        &["addr", "add", &format!("{SERVICE}/24"), "dev", "mgl0"],
    )?;
    // In a session of its own, its streams opened inside host1 and a pid
    // free on host2 (CRIU's needs; the same for both).
    let floor = format!("echo {} > /proc/sys/kernel/ns_last_pid", PID_FLOOR - 1);
    ip_ok(
        h1.command("sh").args(["-c", &floor]).status(),
        "ns_last_pid",
    )?;
    // Where both hosts see it: CRIU opens it again on host2.
    let log = logs.join("redis.out");
    let log = log.to_string_lossy().into_owned();
    let closed = "python3 -c 'import os, sys; os.closerange(3, 4096); \
                  os.execvp(sys.argv[1], sys.argv[1:])'";
    let mut redis = h1
        .command("sh")
        .args([
            "-c",
            &format!(
                "echo pid $$ > {log}; exec setsid {closed} redis-server --port {PORT} \
                 --bind {SERVICE} --save '' --appendonly no --daemonize no \
                 --protected-mode no >> {log} 2> /dev/null < /dev/null"
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        // (Before the clients: made at the move, it would count.)
        if let Mover::Criu { .. } = mover {
            let dirs = [
                h1.root_path(CRIU_IMAGES),
                h2.root_path(CRIU_IMAGES),
                h2.root_path(CRIU_WORK),
            ];
            for dir in dirs {
                fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        let ready = (0..300).any(|_| {
            sleep(Duration::from_millis(100));
            fs::read_to_string(&log).is_ok_and(|t| t.contains("Ready to accept connections"))
        });
        let text = fs::read_to_string(&log).unwrap_or_default();
        let pid = text
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .map(str::to_string)
            .filter(|_| ready)
            .ok_or_else(|| format!("redis did not start: {text}"))?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/service_client.py");
        let clients = h3
            .command("python3")
            .args([
                script,
                SERVICE,
                PORT,
                &CLIENTS.to_string(),
                &LOAD_S.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        sleep(Duration::from_secs_f64(MOVE_AT_S));
        let started = unix_now();
        let moved = match mover {
            Mover::Migrate(mode) => migrate(h1, &pid, mode),
            Mover::Criu { path, lazy } => criu_move((h1, h2), path, *lazy, &pid, logs),
        };
        let ended = unix_now();
        let done = clients.wait_with_output().map_err(|e| e.to_string())?;
        let downtime_ms = moved?;
        let load: Value = serde_json::from_slice(&done.stdout).map_err(|e| {
            format!(
                "the clients said {:?}: {e} ({})",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            )
        })?;
        let counts: Vec<u64> = load["counts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let t0 = load["t0"].as_f64().unwrap_or(0.0);
        let before = rate(&counts, t0, 0.1, (t0 + 1.0, started), false);
        // The 100 ms buckets the move overlaps.
        let during = rate(&counts, t0, 0.1, (started, ended), true);
        let after = rate(&counts, t0, 0.1, (ended + 0.5, t0 + LOAD_S - 0.5), false);
        let errors = load["errors"].as_array().map_or(0, Vec::len);
        Ok(json!({
            "clients": CLIENTS,
            "rps_before": before,
            "rps_during": during,
            "rps_after": after,
            "migrate_ms": (ended - started) * 1000.0,
            "downtime_ms": downtime_ms,
            "longest_stall_ms": load["max_gap_ms"],
            "stall_at_s_after_move_start": load["max_gap_at"].as_f64().map(|a| a - started),
            "client_errors": load["errors"],
            "ok": errors == 0,
        }))
    })();
    let _ = redis.kill();
    let _ = redis.wait();
    drop(agents);
    result
}

fn ip_ok(st: std::io::Result<std::process::ExitStatus>, what: &str) -> Result<(), String> {
    match st {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("{what} failed ({st})")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// `migrate PID --to host2 --move-address SERVICE` on host1; the downtime
/// it reports.
fn migrate(h1: &Host, pid: &str, mode: &str) -> Result<Option<f64>, String> {
    let moved = h1
        .command(bin("migrate"))
        .args([
            pid,
            "--to",
            "host2",
            "--move-address",
            SERVICE,
            "--mode",
            mode,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !moved.status.success() {
        return Err(format!(
            "migrate failed: {}",
            String::from_utf8_lossy(&moved.stderr)
        ));
    }
    let said = String::from_utf8_lossy(&moved.stdout).into_owned();
    Ok(said
        .split("downtime ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse::<f64>().ok()))
}

/// CRIU's way, as its user would: dump with the connections (locked by
/// CRIU's network lock meanwhile) and the process killed, the address
/// taken off host1 and put on host2, the images copied over, the process
/// restored with its connections, and the address announced. Its
/// downtime: from the dump's start (the freeze) to the restore's end.
fn criu_move(
    (h1, h2): (&Host, &Host),
    criu: &Path,
    lazy: bool,
    pid: &str,
    logs: &Path,
) -> Result<Option<f64>, String> {
    let _pipe_max = lazy.then(PipeMax::raise).transpose()?;
    let (a1, port) = (h1.addr().to_string(), CRIU_PORT.to_string());
    let t0 = std::time::Instant::now();
    let mut dump_args = vec![
        "dump",
        "-t",
        pid,
        "--tcp-established",
        "--images-dir",
        CRIU_IMAGES,
    ];
    if lazy {
        dump_args.extend(["--lazy-pages", "--address", &a1, "--port", &port]);
    }
    // Lazy: the dump says it is ready once its images are written, then
    // serves the pages until the last is pulled.
    let ready = lazy.then_some(CRIU_STEP_TIMEOUT);
    let mut dump = Criu::start(h1, criu, "dump", &dump_args, logs, ready)?;
    if !lazy {
        dump.finish(CRIU_STEP_TIMEOUT, &mut [])?;
    }
    ip(
        h1,
        &["addr", "del", &format!("{SERVICE}/24"), "dev", "mgl0"],
    )?;
    ip(
        h2,
        &["addr", "add", &format!("{SERVICE}/24"), "dev", "mgl1"],
    )?;
    copy_images(h1, h2)?;
    let mut daemon = None;
    let mut restore_args = vec![
        "restore",
        "-d",
        "--tcp-established",
        "--images-dir",
        CRIU_IMAGES,
    ];
    if lazy {
        daemon = Some(start_lazy_pages(h1, h2, criu, logs)?);
        restore_args.extend(["--lazy-pages", "--work-dir", CRIU_WORK]);
    }
    let mut restore = Criu::start(h2, criu, "restore", &restore_args, logs, None)?;
    restore.finish(CRIU_STEP_TIMEOUT, &mut [])?;
    let downtime_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Sent at once; arping then waits a second for answers that never
    // come to an announcement, which is not the move's.
    h2.command("arping")
        .args(["-U", "-c", "1", "-I", "mgl1", SERVICE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("arping -U (Debian's iputils-arping): {e}"))?;
    if let Some(mut d) = daemon {
        // The rest of the pages, pulled while the clients run.
        d.finish(CRIU_STEP_TIMEOUT, &mut [&mut dump])?;
        dump.finish(CRIU_STEP_TIMEOUT, &mut [])?;
    }
    Ok(Some(downtime_ms))
}
