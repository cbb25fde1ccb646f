//! `bench --service`: redis on host1 bound to a service address, eight
//! clients on host3 (each doing SET then GET, one request at a time,
//! checking every answer), moved with its address (`--move-address`)
//! while they run. Measured from the clients: requests per second before,
//! during (from `migrate`'s start to its end) and after the move, and the
//! longest a client waited for an answer.

use std::fs;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use migrate_tests::bins::bin;
use migrate_tests::lab::{Host, Lab};
use serde_json::{json, Value};

const SERVICE: &str = "10.77.0.100";
const PORT: &str = "6391";
const CLIENTS: u32 = 8;
/// How long the clients run, and when the move starts.
const LOAD_S: f64 = 12.0;
const MOVE_AT_S: f64 = 4.0;

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

/// Runs the service benchmark once; prints its row and writes it as JSON
/// under `out`.
pub fn run(out: &std::path::Path, criu: bool) -> Result<bool, String> {
    let lab = Lab::start_switched().map_err(|e| format!("lab: {e}"))?;
    let (h1, h2, h3) = (lab.host("host1"), lab.host("host2"), lab.host("host3"));
    let agent = bin("migrate-agent");
    let cluster = lab.shared_dir().join("cluster");
    let cluster = cluster.to_string_lossy().into_owned();
    let security = ["--auth", cluster.as_str()];
    let _a1 = h1
        .spawn_agent_with(
            &agent,
            &[h2],
            &lab.shared_dir().join("agent1.log"),
            &security,
        )
        .map_err(|e| e.to_string())?;
    let _a2 = h2
        .spawn_agent_with(
            &agent,
            &[h1],
            &lab.shared_dir().join("agent2.log"),
            &security,
        )
        .map_err(|e| e.to_string())?;
    ip(
        h1,
        &["addr", "add", &format!("{SERVICE}/24"), "dev", "mgl0"],
    )?;
    let log = lab.shared_dir().join("redis.out");
    let closed = "python3 -c 'import os, sys; os.closerange(3, 4096); \
                  os.execvp(sys.argv[1], sys.argv[1:])'";
    let mut redis = h1
        .command("sh")
        .args([
            "-c",
            &format!(
                "echo pid $$; exec {closed} redis-server --port {PORT} --bind {SERVICE} \
                 --save '' --appendonly no --daemonize no --protected-mode no"
            ),
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
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
        let moved = h1
            .command(bin("migrate"))
            .args([&pid, "--to", "host2", "--move-address", SERVICE])
            .output()
            .map_err(|e| e.to_string())?;
        let ended = unix_now();
        let said = String::from_utf8_lossy(&moved.stdout).into_owned();
        let done = clients.wait_with_output().map_err(|e| e.to_string())?;
        if !moved.status.success() {
            return Err(format!(
                "migrate failed: {}",
                String::from_utf8_lossy(&moved.stderr)
            ));
        }
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
        let downtime_ms = said
            .split("downtime ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse::<f64>().ok());
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
    let r = result?;
    let num = |k: &str, d: usize| match r[k].as_f64() {
        Some(v) => format!("{v:.d$}"),
        None => "-".into(),
    };
    println!(
        "service: redis with {CLIENTS} clients on host3, moved with its address in post-copy: \
         {} req/s before, {} during the move (the 100 ms buckets it overlaps; it took {} ms, \
         downtime {} ms), {} after; longest \
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
    if criu {
        println!(
            "service under CRIU: not measured: this benchmark does not move the address for \
             CRIU's tcp-established restore yet"
        );
    }
    fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let path = out.join("service.json");
    fs::write(&path, serde_json::to_string_pretty(&r).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    println!("written: {}", path.display());
    Ok(r["ok"].as_bool().unwrap_or(false))
}
