//! The benchmark: in the lab, the ticking workload at several sizes is
//! migrated with each mode, and the link itself is measured in the same
//! run. Prints a table and writes it as JSON and Markdown.
//!
//! Run as root: `tests/bench [--sizes 64,512,2048] [--modes LIST]
//! [--repeat N] [--out DIR] [--criu PATH] [--trace]`; `BENCH_AGENT_LOGS=DIR`
//! keeps the agents' logs of every run; `--trace` finds in the kernel's
//! trace the vCPUs this VM's host stopped during each run ([`stops`]).
//! `tests/bench --service` measures a service moved with its address
//! instead ([`service`]).
//!
//! Every figure is measured here. With `--criu PATH` CRIU migrates the same
//! workload in the same lab too (rows `criu-stop-copy` and `criu-lazy`), and
//! the "vs CRIU lazy" ratios and targets use its measured lazy downtime;
//! without it they use the CRIU figures recorded in `../shared/REFERENCES.md`
//! (measured on this kind of machine) and say so.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use migrate_tests::bins::bin;
use migrate_tests::lab::{Host, Lab};
use serde_json::{json, Value};

mod faults;
mod service;
mod steal;
mod stops;
mod targets;

/// The workload's tick, ms.
const TICK_MS: u64 = 5;
/// Pages the workload writes per tick.
const DIRTY_PAGES: u64 = 16;
/// Port of the link measurement.
const LINK_PORT: u16 = 7171;

/// CRIU 3.17.1 (with the vDSO fix) measured on this machine kind, used
/// without `--criu`,
/// from `../shared/REFERENCES.md`: (MiB, stop-and-copy downtime ms, lazy
/// downtime ms, lazy: all pages in s).
const CRIU_RECORDED: [(u64, f64, f64, f64); 3] = [
    (64, 409.0, 63.0, 0.69),
    (512, 3110.0, 106.0, 5.08),
    (2048, 10300.0, 254.0, 15.1),
];

/// A way to migrate: label, `migrate` flags. Agents authenticate and
/// encrypt, as by default, except for the `-insecure` mode (plaintext
/// agents: the cost of the encryption). `postcopy-capped` pushes at 128
/// MiB/s and checks the memory a second after the resume, faulting ahead
/// of the push (its downtime covers only that second); `postcopy-paced`
/// pushes at 400 MiB/s, about the default push's own pace here, and
/// is timed as `postcopy` is. `postcopy-quiet` is `postcopy` with a
/// workload that only ticks, writing none of its memory: almost no demand
/// faults after the resume, the push alone beside the ticks.
/// `postcopy-zeros` is `postcopy` with a workload whose memory is half
/// zeros (in runs of 50 pages, written: in memory, reading as zeros). The `tree-`
/// modes move a tree of four workloads in stop-and-copy (or post-copy,
/// `-postcopy`):
/// `tree-own`, four processes of a quarter of the size each with memory
/// of their own (the same bytes as one process of the size);
/// `tree-shared`, a process of the size with three children sharing all
/// of it copy-on-write.
const MODES: [(&str, &[&str]); 15] = [
    ("postcopy", &["--mode", "postcopy"]),
    ("postcopy-quiet", &["--mode", "postcopy"]),
    ("postcopy-zeros", &["--mode", "postcopy"]),
    (
        "postcopy-prefetch16",
        &["--mode", "postcopy", "--prefetch", "16"],
    ),
    ("postcopy-insecure", &["--mode", "postcopy"]),
    ("postcopy-lz4", &["--mode", "postcopy", "--compress", "lz4"]),
    (
        "postcopy-capped",
        &["--mode", "postcopy", "--push-rate", "128"],
    ),
    (
        "postcopy-paced",
        &["--mode", "postcopy", "--push-rate", "400"],
    ),
    ("hybrid", &["--mode", "hybrid"]),
    ("precopy", &["--mode", "precopy"]),
    ("stop-copy", &["--mode", "stop-copy"]),
    ("tree-own", &["--mode", "stop-copy"]),
    ("tree-shared", &["--mode", "stop-copy"]),
    ("tree-own-postcopy", &["--mode", "postcopy"]),
    ("tree-shared-postcopy", &["--mode", "postcopy"]),
];

/// Children of the root in the `tree-` modes.
const TREE_CHILDREN: usize = 3;

/// The pids of the `child PID` lines of the workload's output.
fn tree_children(out: &Path) -> Vec<i32> {
    fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("child ")?.trim().parse().ok())
        .collect()
}

struct Args {
    sizes: Vec<u64>,
    modes: Vec<String>,
    repeat: usize,
    out: PathBuf,
    criu: Option<PathBuf>,
    /// `--service`: the service benchmark alone.
    service: bool,
    /// `--stall-floor-rate`, `--stall-floor-sink`.
    stall_floor: StallFloorStream,
    /// `--trace`: find the vCPU stops of each run in the kernel's trace
    /// ([`stops`]).
    trace: bool,
}

fn usage() -> String {
    let modes: Vec<&str> = MODES.iter().map(|(m, _)| *m).collect();
    let sinks: Vec<&str> = StallFloorSink::ALL.iter().map(|s| s.name()).collect();
    format!(
        "usage: bench [--service] [--sizes 64,512,2048] [--modes {}] [--repeat N] [--out DIR] \
         [--criu PATH] [--stall-floor-rate MIBPS] [--stall-floor-sink {}] [--trace]",
        modes.join(","),
        sinks.join("|")
    )
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sizes: vec![64, 512, 2048],
        modes: MODES.iter().map(|(m, _)| m.to_string()).collect(),
        repeat: 1,
        out: PathBuf::from("target/bench"),
        criu: None,
        service: false,
        stall_floor: StallFloorStream::default(),
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| format!("{k} needs a value\n{}", usage()))
        };
        match k.as_str() {
            "--sizes" => {
                a.sizes = v()?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--modes" => {
                a.modes = v()?.split(',').map(String::from).collect();
                for m in &a.modes {
                    if !MODES.iter().any(|(n, _)| n == m) {
                        return Err(format!("unknown mode {m:?}\n{}", usage()));
                    }
                }
            }
            "--service" => a.service = true,
            "--trace" => a.trace = true,
            "--repeat" => a.repeat = v()?.parse().map_err(|_| "bad --repeat".to_string())?,
            "--out" => a.out = PathBuf::from(v()?),
            "--criu" => {
                let p = PathBuf::from(v()?);
                let p = p
                    .canonicalize()
                    .map_err(|e| format!("--criu {}: {e}", p.display()))?;
                if p.starts_with("/tmp") || p.starts_with("/run") {
                    return Err(format!(
                        "--criu {}: the lab's hosts have their own /tmp and /run; \
                         put CRIU elsewhere (e.g. /opt/criu/criu)",
                        p.display()
                    ));
                }
                a.criu = Some(p)
            }
            "--stall-floor-rate" => {
                let r = v()?;
                match r.parse() {
                    Ok(n) if n > 0 => a.stall_floor.rate_mibps = Some(n),
                    _ => return Err(format!("--stall-floor-rate: {r:?} is not a positive MiB/s")),
                }
            }
            "--stall-floor-sink" => {
                let name = v()?;
                a.stall_floor.sink = StallFloorSink::ALL
                    .into_iter()
                    .find(|s| s.name() == name)
                    .ok_or_else(|| {
                        format!("--stall-floor-sink: {name:?} is not one of\n{}", usage())
                    })?;
            }
            "-h" | "--help" => return Err(usage()),
            _ => return Err(format!("unknown argument {k:?}\n{}", usage())),
        }
    }
    Ok(a)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// On SIGINT, SIGTERM or SIGHUP: kill every process this run started (our
/// descendants, by pid), delete this run's lab namespaces and directories,
/// and exit.
fn teardown_on_signal() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
    }
    std::thread::spawn(|| loop {
        sleep(Duration::from_millis(100));
        if !STOP.load(Ordering::Relaxed) {
            continue;
        }
        eprintln!("\nbench: interrupted; tearing the lab down");
        let me = std::process::id() as i32;
        for pid in descendants(me) {
            // SAFETY: kill(2) with integers, on processes this run started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        sleep(Duration::from_millis(300));
        restore_pipe_max();
        stops::put_back();
        let tag = format!("mgl-{me}-");
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output();
        let list = list.map(|o| o.stdout).unwrap_or_default();
        for ns in String::from_utf8_lossy(&list).lines() {
            let ns = ns.split_whitespace().next().unwrap_or("");
            if ns.starts_with(&tag) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .status();
            }
        }
        if let Ok(dir) = fs::read_dir("/var/tmp") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("migrate-lab-{me}-")) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        std::process::exit(130);
    });
}

/// Every live descendant of `root`, from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent is the second field after the ")" closing the name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if let Some(pp) = ppid {
            parent.insert(pid, pp);
        }
    }
    let mut out = Vec::new();
    for &pid in parent.keys() {
        let mut cur = pid;
        for _ in 0..64 {
            match parent.get(&cur) {
                Some(&pp) if pp == root => {
                    out.push(pid);
                    break;
                }
                Some(&pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    // Helpers the benchmark runs inside the lab's hosts.
    match args.next().as_deref() {
        Some("__sink") => return helper(sink()),
        Some("__echo") => return helper(echo()),
        Some("__send") => {
            let (addr, bytes) = (args.next().unwrap_or_default(), args.next());
            return helper(send(&addr, bytes.and_then(|b| b.parse().ok()).unwrap_or(0)));
        }
        Some("__ping") => return helper(ping(&args.next().unwrap_or_default())),
        Some(verb @ ("__stops" | "__faults")) => {
            let file = args.next().unwrap_or_default();
            let reread = match verb {
                "__stops" => stops::reread,
                _ => faults::reread,
            };
            return match reread(Path::new(&file)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("__fresh") => {
            return helper(fresh(args.next().and_then(|m| m.parse().ok()).unwrap_or(0)))
        }
        _ => {}
    }
    teardown_on_signal();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.service {
        service::run(&args.out, args.criu.as_deref())
    } else {
        run(&args)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some runs failed their memory check (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn helper(r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench helper: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- link measurement helpers (run inside a host) ----

fn sink() -> std::io::Result<()> {
    let l = TcpListener::bind(("0.0.0.0", LINK_PORT))?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut s, _) = l.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    s.write_all(&n.to_le_bytes())
}

fn send(addr: &str, bytes: u64) -> std::io::Result<()> {
    let mut s = TcpStream::connect((addr, LINK_PORT))?;
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    println!("{} {}", u64::from_le_bytes(ack), t.elapsed().as_micros());
    Ok(())
}

fn echo() -> std::io::Result<()> {
    let l = TcpListener::bind(("0.0.0.0", LINK_PORT))?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    let mut b = [0u8; 1];
    while s.read(&mut b)? == 1 {
        s.write_all(&b)?;
    }
    Ok(())
}

fn ping(addr: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect((addr, LINK_PORT))?;
    s.set_nodelay(true)?;
    let mut rtts = Vec::new();
    let mut b = [1u8; 1];
    for _ in 0..2000 {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    rtts.sort_unstable();
    println!("{} {}", rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100]);
    Ok(())
}

/// Starts `args` of this binary in `server` (waiting for it to listen),
/// then `client_args` in `client`; returns the client's output line. With
/// `cpus`, the server runs on CPU `cpus.0` and the client on `cpus.1`
/// (`taskset`).
fn link_pair(
    server: &Host,
    client: &Host,
    srv: &str,
    cli: &[&str],
    cpus: Option<(u32, u32)>,
) -> Result<String, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let on = |host: &Host, cpu: Option<u32>| match cpu {
        Some(c) => {
            let mut cmd = host.command("taskset");
            cmd.args(["-c", &c.to_string()]).arg(&me);
            cmd
        }
        None => host.command(&me),
    };
    let mut s = on(server, cpus.map(|c| c.0))
        .arg(srv)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = [0u8; 10];
    let ready = s
        .stdout
        .as_mut()
        .map(|o| o.read_exact(&mut line).is_ok())
        .unwrap_or(false);
    if !ready {
        kill(&mut s);
        return Err(format!("{srv} did not start"));
    }
    let out = on(client, cpus.map(|c| c.1)).args(cli).output();
    let _ = wait_bounded(&mut s, Duration::from_secs(10));
    let out = out.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{cli:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn wait_bounded(c: &mut Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if !matches!(c.try_wait(), Ok(None)) {
            return true;
        }
        sleep(Duration::from_millis(10));
    }
    kill(c);
    false
}

/// Writes `mib` MiB into memory the process never touched and prints the
/// µs it took: what a destination pays to hold a migrated process's pages
/// (each page allocated, zeroed by the kernel, written), which on a VM
/// includes the host backing guest memory that was handed back to it.
fn fresh(mib: u64) -> std::io::Result<()> {
    let mut v = vec![0u8; (mib << 20) as usize];
    let t = Instant::now();
    v.fill(0x5a);
    let us = t.elapsed().as_micros();
    std::hint::black_box(&v);
    println!("{us}");
    Ok(())
}

/// "64 MiB in 0.03 s (2237 MB/s), …".
fn fresh_text(fresh: &[(u64, f64)]) -> String {
    fresh
        .iter()
        .map(|&(mib, t)| {
            format!(
                "{mib} MiB in {t:.2} s ({:.0} MB/s)",
                (mib << 20) as f64 / t / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds `host` takes to write `mib` MiB into fresh memory.
fn measure_fresh_memory(host: &Host, mib: u64) -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = host
        .command(&me)
        .args(["__fresh", &mib.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let us: Option<u64> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    match us {
        Some(us) if out.status.success() => Ok(us as f64 / 1e6),
        _ => Err(format!(
            "fresh-memory test ({mib} MiB) failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// TCP round trip (p50, p99 µs) between the hosts, both ends on the CPUs
/// `cpus` if given.
fn measure_round_trip(
    h1: &Host,
    h2: &Host,
    cpus: Option<(u32, u32)>,
) -> Result<(f64, f64), String> {
    let addr = h2.addr().to_string();
    let line = link_pair(h2, h1, "__echo", &["__ping", &addr], cpus)?;
    let ns: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match ns[..] {
        [p50, p99] => Ok((p50 as f64 / 1000.0, p99 as f64 / 1000.0)),
        _ => Err(format!("round-trip test printed {line:?}")),
    }
}

/// Link throughput (MB/s, for `bytes`) and TCP round trip (p50, p99 µs).
fn measure_link(h1: &Host, h2: &Host, bytes: u64) -> Result<(f64, f64, f64), String> {
    let addr = h2.addr().to_string();
    let line = link_pair(
        h2,
        h1,
        "__sink",
        &["__send", &addr, &bytes.to_string()],
        None,
    )?;
    let mut w = line
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (got, us) = (w.next().unwrap_or(0), w.next().unwrap_or(1));
    if got != bytes {
        return Err(format!("link test: {got} of {bytes} bytes arrived"));
    }
    let mbps = bytes as f64 / us as f64;
    let (p50, p99) = measure_round_trip(h1, h2, None)?;
    Ok((mbps, p50, p99))
}

/// How the floor's faults come: back to back, or as the ticking workload
/// makes them (`DIRTY_PAGES` pages, then `TICK_MS` asleep), alone or
/// beside a stream that host2 writes into fresh memory as fast as the link
/// brings it (what post-copy's push does beside its faults).
#[derive(Clone, Copy)]
enum FaultPattern {
    BackToBack,
    Ticking,
    TickingBesideStream,
}

/// The floor's figures: p50 and p99 µs, and the MiB the stream beside it
/// carried (0 without one).
type Floor = (f64, f64, f64);

/// `workloads/fault_floor.c`, in `lab`'s shared directory: compiled once
/// per benchmark (a compiler run just before each migration would load the
/// CPUs the migration is timed on), copied into each lab after that.
fn fault_floor_exe(lab: &Lab) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let exe = lab.shared_dir().join("fault_floor");
    let built = BUILT.get_or_init(|| {
        let st = std::process::Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&exe)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/workloads/fault_floor.c"
            ))
            .status()
            .map_err(|e| format!("cc: {e}"))?;
        if !st.success() {
            return Err("compiling fault_floor.c failed".into());
        }
        fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))
    });
    let bytes = built.as_ref().map_err(Clone::clone)?;
    if !exe.exists() {
        fs::write(&exe, bytes).map_err(|e| format!("{}: {e}", exe.display()))?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", exe.display()))?;
    }
    Ok(exe)
}

/// Where `fault_floor` serves its faults' pages, and its stream.
const FLOOR_PORT: &str = "7557";
const FLOOR_STREAM_PORT: &str = "7558";

/// The nice of the agents' push at both ends (`BULK_NICE` in the agent's
/// `net/peer.rs`), which the stall floor's stream takes too.
const PUSH_NICE: &str = "10";

/// Starts `fault_floor ARGS` (a role, its port, ...) on `h` and waits
/// until it listens.
fn start_floor_server(h: &Host, exe: &Path, args: &[&str]) -> Result<Child, String> {
    let role = args.first().copied().unwrap_or_default();
    let mut server = h
        .command(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = [0u8; 10];
    let ready = server
        .stdout
        .as_mut()
        .is_some_and(|o| o.read_exact(&mut line).is_ok());
    if !ready {
        kill(&mut server);
        return Err(format!("fault_floor {role} did not start"));
    }
    Ok(server)
}

/// The floor of a demand fault over the lab link (`workloads/fault_floor.c`):
/// p50 and p99 µs of fault -> request -> reply -> UFFDIO_COPY, host2
/// faulting as `pattern` says, host1 serving, 2000 faults.
fn measure_fault_floor(
    lab: &Lab,
    h1: &Host,
    h2: &Host,
    pattern: FaultPattern,
) -> Result<Floor, String> {
    let exe = fault_floor_exe(lab)?;
    let beside = matches!(pattern, FaultPattern::TickingBesideStream);
    let stream: &[&str] = &["stream", FLOOR_STREAM_PORT];
    let out = beside_floor_servers(h1, &exe, beside.then_some(stream), || {
        let mut fault = h2.command(&exe);
        fault.args(["fault", &h1.addr().to_string(), FLOOR_PORT, "2000"]);
        if !matches!(pattern, FaultPattern::BackToBack) {
            fault.args([DIRTY_PAGES.to_string(), (TICK_MS * 1000).to_string()]);
        }
        if beside {
            fault.arg(FLOOR_STREAM_PORT);
        }
        fault.output()
    })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v[..] {
        [p50, p99] if out.status.success() && !beside => Ok((p50, p99, 0.0)),
        [p50, p99, mib] if out.status.success() && beside => Ok((p50, p99, mib)),
        _ => Err(format!(
            "fault_floor said {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Runs `faulting` (on host2) while `fault_floor serve` and, given its
/// arguments, `fault_floor stream ...` run on `h1`; then gives both up to
/// 10 s to end and kills what is left.
fn beside_floor_servers(
    h1: &Host,
    exe: &Path,
    stream: Option<&[&str]>,
    faulting: impl FnOnce() -> std::io::Result<std::process::Output>,
) -> Result<std::process::Output, String> {
    let mut server = start_floor_server(h1, exe, &["serve", FLOOR_PORT])?;
    let mut streamer = match stream.map(|a| start_floor_server(h1, exe, a)).transpose() {
        Ok(s) => s,
        Err(e) => {
            kill(&mut server);
            return Err(e);
        }
    };
    let out = faulting();
    for s in [Some(&mut server), streamer.as_mut()].into_iter().flatten() {
        let _ = wait_bounded(s, Duration::from_secs(10));
        kill(s);
    }
    out.map_err(|e| e.to_string())
}

/// How the stall floor's stream runs (`--stall-floor-rate`,
/// `--stall-floor-sink`): by default at the link's speed into fresh memory,
/// as a push does.
#[derive(Clone, Copy, Default)]
struct StallFloorStream {
    /// No faster than this (MiB/s).
    rate_mibps: Option<u64>,
    /// Where the stream goes.
    sink: StallFloorSink,
}

/// Where the stall floor's stream goes on host2 (`--stall-floor-sink`).
#[derive(Clone, Copy, Default)]
enum StallFloorSink {
    /// Fresh memory of the run's size, written with `memcpy`.
    #[default]
    Fresh,
    /// One 64 MiB area touched before the ticks, overwritten again and
    /// again: the stream without the VM's cost of new pages.
    Warm,
    /// Fresh memory of the run's size, installed with `UFFDIO_COPY` in
    /// pieces of 16 pages, as the agent installs its push.
    Uffd,
}

impl StallFloorSink {
    const ALL: [Self; 3] = [Self::Fresh, Self::Warm, Self::Uffd];

    fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Warm => "warm",
            Self::Uffd => "uffd",
        }
    }

    /// The last argument of `fault_floor ticks`, if any.
    fn arg(self) -> Option<&'static str> {
        match self {
            Self::Fresh => None,
            other => Some(other.name()),
        }
    }
}

/// The stall floor at `mib` (`fault_floor ticks`): a program on host2
/// ticks as the workload does, each page it touches a fault served from
/// host1 over the link, while host2 writes a stream of `mib` MiB from host1
/// into as much fresh memory at the push's nice, until it has. What this
/// VM gives the downtime's figure (the largest gap anywhere) with none of
/// the agents' work: the least a post-copy of `mib` could show here.
struct StallFloor {
    /// The largest gap between ticks, less the tick (ms).
    largest_ms: f64,
    /// How long the host kept each vCPU from running in that gap (ms).
    stolen_ms: Vec<f64>,
    /// The largest gap once each has lost the most one vCPU was stolen in
    /// it (ms), as [`largest_gap_net_ms`].
    net_of_steal_ms: f64,
    /// From the first tick to the last: about as long as the stream (s).
    stream_s: f64,
}

fn measure_stall_floor(
    lab: &Lab,
    h1: &Host,
    h2: &Host,
    mib: u64,
    shape: StallFloorStream,
) -> Result<StallFloor, String> {
    let exe = fault_floor_exe(lab)?;
    let rate_arg = shape.rate_mibps.map(|r| r.to_string());
    let mut stream = vec!["stream", FLOOR_STREAM_PORT, PUSH_NICE];
    stream.extend(rate_arg.as_deref());
    let steal = steal::StealSampler::start();
    let out = beside_floor_servers(h1, &exe, Some(&stream), || {
        h2.command(&exe)
            .args([
                "ticks",
                &h1.addr().to_string(),
                FLOOR_PORT,
                FLOOR_STREAM_PORT,
                &mib.to_string(),
                &DIRTY_PAGES.to_string(),
                &(TICK_MS * 1000).to_string(),
                PUSH_NICE,
            ])
            .args(shape.sink.arg())
            .output()
    });
    let steal = steal.finish();
    let out = out?;
    let t = parse_ticks(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() || t.len() < 2 {
        return Err(format!(
            "fault_floor ticks: {} ticks, {} {}",
            t.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let (largest_ms, began, ended) = freeze(&t, 0, u64::MAX);
    let span_ns = t.last().map_or(0, |l| l.1).saturating_sub(t[0].1);
    Ok(StallFloor {
        largest_ms,
        stolen_ms: steal.stolen_ms(began, ended),
        net_of_steal_ms: largest_gap_net_ms(gaps(&t, 0, u64::MAX), TICK_MS as f64, |a, b| {
            steal.stolen_ms(a, b)
        }),
        stream_s: span_ns as f64 / 1e9,
    })
}

// ---- one migration ----

fn wait_for(out: &Path, needle: &str, secs: u64) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if fs::read_to_string(out).unwrap_or_default().contains(needle) {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

fn ticks(out: &Path) -> Vec<(u64, u64)> {
    parse_ticks(&fs::read_to_string(out).unwrap_or_default())
}

/// The `tick N NS` lines of `text`.
fn parse_ticks(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("tick ")?.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// Bytes through host1's end of the link, both directions.
fn link_bytes(h1: &Host) -> u64 {
    let out = h1
        .command("ip")
        .args(["-s", "-j", "link", "show", "mgl0"])
        .output()
        .ok();
    let v: Value = out
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null);
    let s = &v[0]["stats64"];
    s["tx"]["bytes"].as_u64().unwrap_or(0) + s["rx"]["bytes"].as_u64().unwrap_or(0)
}

/// Peak resident memory (KiB) of the agent behind `nsenter` pid `outer`.
fn agent_hwm(outer: i32) -> u64 {
    let child = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<i32>().ok());
    let Some(pid) = child else { return 0 };
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Reads `r` to its end on a thread of its own; the bytes and when the end
/// came (nothing if reading failed).
fn read_to_end_timed<R: Read + Send + 'static>(
    mut r: R,
) -> std::thread::JoinHandle<(Vec<u8>, Option<Instant>)> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let end = r.read_to_end(&mut buf).ok().map(|_| Instant::now());
        (buf, end)
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i])
}

/// Ticks per second within `[from, to)` (realtime ns).
fn rate(t: &[(u64, u64)], from: u64, to: u64) -> Option<f64> {
    let n = t.iter().filter(|(_, at)| *at >= from && *at < to).count();
    (to > from && n > 0).then(|| n as f64 / ((to - from) as f64 / 1e9))
}

/// The gaps between ticks that end in `[from, to)`: (the tick before,
/// the tick that ends it), realtime ns.
fn gaps(t: &[(u64, u64)], from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    t.windows(2)
        .map(|p| (p[0].1, p[1].1))
        .filter(move |&(_, ended)| ended >= from && ended < to)
}

/// The largest of `gaps` ((began, ended), realtime ns) once each has lost
/// `workload_tick_ms` and the most one vCPU lost in it (ms; `lost` gives
/// each vCPU's loss in a span): what is left of the downtime once the
/// host's steal or stops are taken out (a thread on a vCPU the host holds
/// cannot move, so one vCPU held can stall the workload).
fn largest_gap_net_ms(
    gaps: impl Iterator<Item = (u64, u64)>,
    workload_tick_ms: f64,
    lost: impl Fn(u64, u64) -> Vec<f64>,
) -> f64 {
    gaps.map(|(began, ended)| {
        let gap = ended.saturating_sub(began) as f64 / 1e6;
        let most = lost(began, ended).into_iter().fold(0.0, f64::max);
        (gap - workload_tick_ms - most).max(0.0)
    })
    .fold(0.0, f64::max)
}

/// The freeze: the largest gap between ticks in `[from, to)` minus the
/// tick (ms), and when it began and ended (realtime ns).
fn freeze(t: &[(u64, u64)], from: u64, to: u64) -> (f64, u64, u64) {
    let (gap, ended, began) = gaps(t, from, to)
        .map(|(began, ended)| (ended.saturating_sub(began), ended, began))
        .max()
        .unwrap_or((0, from, from));
    ((gap as f64 / 1e6 - TICK_MS as f64).max(0.0), began, ended)
}

/// What the gap that ended at the tick stamped `ended` (realtime ns) went
/// on, as the workload's line for that tick says (ms): the last tick's
/// line being written, the sleep (of `TICK_MS` asked) and the page
/// writes; `None` if no line has those parts.
fn gap_parts(text: &str, ended: u64) -> Option<Value> {
    text.lines()
        .filter_map(tick_parts)
        .find(|(at, _)| *at == ended)
        .map(|(_, [write, sleep, touch])| {
            json!({
                "write": write as f64 / 1e3,
                "sleep": sleep as f64 / 1e3,
                "touch": touch as f64 / 1e3,
            })
        })
}

/// A tick line's time stamp (realtime ns) and its parts (µs: the last
/// line's write, the sleep, the page writes); `None` for other lines and
/// ticks without the parts.
fn tick_parts(line: &str) -> Option<(u64, [u64; 3])> {
    let w: Vec<u64> = line
        .strip_prefix("tick ")?
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match w[..] {
        [_, at, write, sleep, touch] => Some((at, [write, sleep, touch])),
        _ => None,
    }
}

/// How long the workload's page writes took per tick, for the ticks
/// stamped in `[from, to)` (realtime ns): p50, p99 and the most (ms), and
/// how many ticks; `None` without ticks that carry the parts. In
/// post-copy each tick's 16 writes meet the demand faults, so this is a
/// fault's cost as the process sees it, from the fault to its thread
/// running again, the agents' waits included.
fn touch_ms(text: &str, from: u64, to: u64) -> Option<Value> {
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(tick_parts)
        .filter(|(at, _)| (from..to).contains(at))
        .map(|(_, [_, _, touch])| touch as f64 / 1e3)
        .collect();
    let n = v.len();
    Some(json!({
        "p50": percentile(&mut v, 0.5)?,
        "p99": percentile(&mut v, 0.99)?,
        "max": percentile(&mut v, 1.0)?,
        "ticks": n,
    }))
}

/// The tick gap across the freeze alone, minus the tick (ms): from the
/// last tick before `frozen_ns` to the first at or after `resumed_ns`
/// (the source agent's clock, which is this VM's); `None` if a tick fell
/// between the two.
fn freeze_gap(t: &[(u64, u64)], frozen_ns: u64, resumed_ns: u64) -> Option<f64> {
    let p = t
        .windows(2)
        .find(|p| p[0].1 <= frozen_ns && p[1].1 >= resumed_ns)?;
    Some(((p[1].1 - p[0].1) as f64 / 1e6 - TICK_MS as f64).max(0.0))
}

/// Waits until the workload writing to `out` has filled its `mib`, lets it
/// tick a second and a half (the rate to compare with), and returns its pid.
fn ready_pid(out: &Path, mib: u64) -> Result<String, String> {
    if !wait_for(out, &format!("ready {mib}"), 300) {
        return Err("the workload did not fill its memory".to_string());
    }
    sleep(Duration::from_millis(1500));
    let text = fs::read_to_string(out).unwrap_or_default();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .ok_or("no pid line")?
        .trim()
        .to_string())
}

/// Whether the workload writing to `out` answered its memory check (sent
/// already) with every page of its `mib` intact; waits up to 120 s.
/// Whether the tick counter went up by one from each tick to the next: a
/// copy and its original both running (a repeat, or a jump back) or a
/// replayed stretch shows as a break, which this names.
fn ticks_continuous(t: &[(u64, u64)]) -> Result<(), String> {
    match t.windows(2).find(|p| p[1].0 != p[0].0 + 1) {
        Some(p) => Err(format!("tick {} followed tick {}", p[1].0, p[0].0)),
        None if t.is_empty() => Err("no ticks".into()),
        None => Ok(()),
    }
}

fn verified(out: &Path, mib: u64) -> bool {
    wait_for(out, "verify ", 120)
        && fs::read_to_string(out)
            .unwrap_or_default()
            .contains(&format!("verify ok {}", mib * 256))
}

fn run_one(
    mib: u64,
    mode: &str,
    flags: &[&str],
    stall_floor_stream: StallFloorStream,
    tracing: Option<(&stops::Tracer, &Path)>,
) -> Result<Value, String> {
    let lab = Lab::start().map_err(|e| format!("lab: {e}"))?;
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    let agent = bin("migrate-agent");
    let cluster = lab.shared_dir().join("cluster");
    let cluster = cluster.to_string_lossy().into_owned();
    let security: &[&str] = if mode.ends_with("-insecure") {
        &["--insecure"]
    } else {
        &["--auth", &cluster]
    };
    let a1 = h1
        .spawn_agent_with(
            &agent,
            &[h2],
            &lab.shared_dir().join("agent1.log"),
            security,
        )
        .map_err(|e| e.to_string())?;
    let a2 = h2
        .spawn_agent_with(
            &agent,
            &[h1],
            &lab.shared_dir().join("agent2.log"),
            security,
        )
        .map_err(|e| e.to_string())?;
    let out = lab.shared_dir().join("workload.out");
    let tree = mode.strip_prefix("tree-");
    // Each process's own memory.
    let own_mib = if tree.is_some_and(|t| t.starts_with("own")) {
        mib / (TREE_CHILDREN as u64 + 1)
    } else {
        mib
    };
    let workload = bin("workload");
    let mut args = vec![
        "--mib".to_string(),
        own_mib.to_string(),
        "--tick-ms".into(),
        TICK_MS.to_string(),
        "--dirty-pages".into(),
        // The quiet workload writes none of its memory: after the resume
        // it touches only its stack and output buffer, so almost no page
        // is asked for ahead of the push.
        if mode.ends_with("-quiet") {
            "0".into()
        } else {
            DIRTY_PAGES.to_string()
        },
    ];
    if mode.ends_with("-zeros") {
        args.extend(["--zeros".into(), "50".into()]);
    }
    let mut w = match tree {
        None => h1.command(&workload),
        Some(how) => {
            args.extend(["--fork".into(), TREE_CHILDREN.to_string()]);
            if how.starts_with("own") {
                args.push("--own".into());
            }
            // A tree keeps its pids: past those host2 uses.
            let mut c = h1.command("sh");
            c.args([
                "-c",
                "echo 9000 > /proc/sys/kernel/ns_last_pid; \"$0\" \"$@\" & wait",
            ])
            .arg(&workload);
            c
        }
    };
    let mut w = w
        .args(&args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let pid = ready_pid(&out, own_mib)?;
        let children = tree_children(&out);
        if tree.is_some() {
            let ready = || {
                let text = fs::read_to_string(&out).unwrap_or_default();
                text.lines()
                    .filter(|l| l.starts_with("child ready "))
                    .count()
            };
            let t = Instant::now();
            while ready() < TREE_CHILDREN && t.elapsed() < Duration::from_secs(300) {
                sleep(Duration::from_millis(100));
            }
            if children.len() != TREE_CHILDREN || ready() < TREE_CHILDREN {
                return Err("the tree's children did not fill their memory".into());
            }
        }
        let mut members: Vec<i32> = children.clone();
        members.extend(pid.parse::<i32>().ok());
        // Fresh memory in the migration's conditions: host2 writing as
        // much while the workload holds its memory on host1, just before
        // the migration; then 4 s for this VM to take the pages back (it
        // hands free 2 MiB blocks, `page_reporting_order` 9 here, back to
        // its host within the kernel's 2 s reporting delay), so that the
        // migration's writes meet memory as cold as this figure's.
        // (Before it, the demand-fault floor in this run's lab: it swings
        // between runs on this VM more than the faults do, and the
        // post-copy p50 is judged against it; then the stall floor at the
        // run's size, beside the downtime it may explain, and 4 s for the
        // memory it wrote to go back too: fresh memory timed after warm
        // pages was 1.1-2.3 s at 2 GiB against 3.5-6.5 s cold.)
        let floor = (mode == "postcopy")
            .then(|| measure_fault_floor(&lab, h1, h2, FaultPattern::BackToBack).ok())
            .flatten();
        let stall_floor = (mode == "postcopy")
            .then(|| measure_stall_floor(&lab, h1, h2, mib, stall_floor_stream))
            .transpose()?;
        if stall_floor.is_some() {
            sleep(Duration::from_secs(4));
        }
        let fresh_resident_s = measure_fresh_memory(h2, mib).ok();
        sleep(Duration::from_secs(4));
        let pss_source = h1.pss_kib(&members);
        let bytes0 = link_bytes(h1);
        let steal = steal::StealSampler::start();
        let recording = tracing.map(|(t, _)| t.begin());
        let start_ns = now_ns();
        let mut cmd = vec![pid.as_str(), "--to", "host2", "--json"];
        cmd.extend_from_slice(flags);
        // The total is timed from outside, as CRIU's is: from the command's
        // start until it exits (it answers once the source has let the
        // original go), seen as the end of its output.
        let t_cmd = Instant::now();
        let mut m = h1
            .command(bin("migrate"))
            .args(&cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        // Read from the start: the end of its output is when it exited,
        // even while the memory check below is being arranged.
        let stdout = m.stdout.take().map(read_to_end_timed);
        let stderr = m.stderr.take().map(read_to_end_timed);
        let capped = mode == "postcopy-capped";
        let mut verify_sent = false;
        // The memory check pauses the ticks: gaps from then on are not
        // the migration's.
        let mut verify_ns = u64::MAX;
        if capped {
            // A slow push: once the process runs on host2, its memory check
            // touches every page, faulting ahead of the push.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) && !verify_sent {
                sleep(Duration::from_millis(100));
                let found = h2.command("pgrep").args(["-x", "workload"]).output();
                let new_pid = found
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default();
                if !new_pid.is_empty() {
                    // Rebuilt there; resumed once ticks go on (the
                    // original is frozen from before the rebuild).
                    let n0 = ticks(&out).len();
                    let t1 = Instant::now();
                    while ticks(&out).len() < n0 + 20 && t1.elapsed() < Duration::from_secs(30) {
                        sleep(Duration::from_millis(20));
                    }
                    sleep(Duration::from_millis(1000));
                    verify_ns = now_ns();
                    let _ = h2.command("kill").args(["-USR1", &new_pid]).status();
                    verify_sent = true;
                }
            }
        }
        let status = m.wait().map_err(|e| e.to_string())?;
        let (stdout, out_end) = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
        let (stderr, err_end) = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        let total_s = out_end
            .max(err_end)
            .map(|end| end.duration_since(t_cmd).as_secs_f64());
        if !status.success() {
            return Err(format!(
                "migrate failed: {}",
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
        let bytes = link_bytes(h1).saturating_sub(bytes0);
        let rec: Value = serde_json::from_slice(&stdout).map_err(|e| format!("record: {e}"))?;
        let hwm = (agent_hwm(a1.pid()), agent_hwm(a2.pid()));
        let new_pid = rec["new_pid"].as_i64().unwrap_or(0);
        // A second of ticks after, then the memory check on host2.
        sleep(Duration::from_millis(1200));
        if !verify_sent {
            verify_ns = now_ns();
            let _ = h2
                .command("kill")
                .args(["-USR1", &new_pid.to_string()])
                .status();
        }
        let pss_destination = h2.pss_kib(&members);
        let mut verified = verified(&out, own_mib);
        for (k, child) in children.iter().enumerate() {
            // Each child checks its own copy too.
            let said = format!("verify ok {} child {}", own_mib * 256, k + 1);
            let _ = h2
                .command("kill")
                .args(["-USR1", &child.to_string()])
                .status();
            verified &= wait_for(&out, &said, 120);
        }
        let _ = h2
            .command("kill")
            .args(["-KILL", &new_pid.to_string()])
            .status();
        for child in &children {
            let _ = h2
                .command("kill")
                .args(["-KILL", &child.to_string()])
                .status();
        }

        let steal = steal.finish();
        let stops = recording.map(stops::Recording::finish);
        // Read once: the ticks, and the parts of the largest gap below.
        let text = fs::read_to_string(&out).unwrap_or_default();
        let t = parse_ticks(&text);
        let continuity = ticks_continuous(&t);
        let (downtime_ms, gap_began, resumed_at) = freeze(&t, start_ns, verify_ns);
        let started_ns = rec["started_unix_us"].as_u64().unwrap_or(0) * 1000;
        let at_ns =
            |milestone: &str| started_ns + rec["timeline"][milestone].as_u64().unwrap_or(0) * 1000;
        let freeze_gap_ms = freeze_gap(&t, at_ns("freeze"), at_ns("resume"));
        let before = rate(&t, start_ns.saturating_sub(1_000_000_000), start_ns);
        let residual_ns = rec["residual_us"].as_u64().unwrap_or(0) * 1000;
        let during = (residual_ns >= 100_000_000)
            .then(|| rate(&t, resumed_at, (resumed_at + residual_ns).min(verify_ns)))
            .flatten();
        let after = rate(&t, resumed_at, (resumed_at + 1_000_000_000).min(verify_ns));
        let mut lat: Vec<f64> = rec["faults"]
            .as_array()
            .map(|f| f.iter().filter_map(|s| s["latency_us"].as_f64()).collect())
            .unwrap_or_default();
        // The slowest fault and when it was raised (ms after the resume).
        let slowest = rec["faults"].as_array().and_then(|f| {
            f.iter()
                .filter_map(|s| Some((s["latency_us"].as_u64()?, s["at_us"].as_u64()?)))
                .max()
        });
        let p50 = percentile(&mut lat, 0.5);
        let p99 = percentile(&mut lat, 0.99);
        let kept_trace = match (&stops, tracing) {
            (Some(log), Some((_, dir))) => {
                let path = dir.join(format!("trace-{mib}-{mode}-{}.txt", start_ns / 1000));
                fs::create_dir_all(dir)
                    .and_then(|_| log.keep_around(gap_began, resumed_at, &path))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Some(path.display().to_string())
            }
            _ => None,
        };
        let mut run = json!({
            "mib": mib,
            "mode": mode,
            "verified": verified && continuity.is_ok(),
            "memory_verified": verified,
            "ticks_continuous": continuity.clone().err().unwrap_or_else(|| "yes".into()),
            "downtime_ms": downtime_ms,
            "downtime_reported_ms": rec["downtime_us"].as_f64().unwrap_or(0.0) / 1000.0,
            // The gap across the freeze alone; downtime is the largest gap
            // anywhere, a stall during post-copy included.
            "freeze_gap_ms": freeze_gap_ms,
            // When the workload's largest gap ended, ms after the request,
            // beside the source's timeline (µs after the request, freeze,
            // resume, completion): where a long gap comes from.
            "largest_gap_end_ms": resumed_at.saturating_sub(start_ns) as f64 / 1e6,
            // The request's wall-clock time: lines the run up with samples
            // taken outside it (the VM's steal time, a scheduler trace).
            "request_unix_us": start_ns / 1000,
            // How long this VM's host kept each vCPU from running (ms, to
            // a 10 ms clock tick): over the migration, and during the
            // workload's largest gap.
            "steal_ms": steal.stolen_ms(start_ns, at_ns("complete")),
            "steal_in_largest_gap_ms": steal.stolen_ms(gap_began, resumed_at),
            // What the workload says its largest gap went on: the last
            // line's write, the sleep, the page writes (ms).
            "largest_gap_parts_ms": gap_parts(&text, resumed_at),
            // The largest gap once each gap loses what the host took from
            // the vCPU it took most from: what the host's steal explains.
            "downtime_net_of_steal_ms":
                largest_gap_net_ms(gaps(&t, start_ns, verify_ns), TICK_MS as f64, |a, b| {
                    steal.stolen_ms(a, b)
                }),
            // With --trace: how long each vCPU was stopped in the largest
            // gap (from the kernel's trace), the largest gap once each gap
            // loses the most one vCPU was stopped in it, and the trace
            // around the largest gap.
            "vcpu_stop_in_largest_gap": stops.as_ref().map(|s| s.in_gap(gap_began, resumed_at)),
            "downtime_net_of_stops_ms": stops.as_ref().map(|s| {
                largest_gap_net_ms(gaps(&t, start_ns, verify_ns), TICK_MS as f64, |a, b| {
                    s.stopped_ms(a, b)
                })
            }),
            "trace_file": kept_trace,
            "timeline_us": rec["timeline"],
            "total_s": total_s,
            // The source agent's own view of the same span, for comparison.
            "total_agent_s": rec["timeline"]["complete"].as_f64().unwrap_or(0.0) / 1e6,
            "residual_s": residual_ns as f64 / 1e9,
            "wire_bytes": bytes,
            "faults": lat.len(),
            "fault_p50_us": p50,
            "fault_p99_us": p99,
            "fault_floor_us": floor.map(|(p50, p99, _)| json!({"p50": p50, "p99": p99})),
            "stall_floor_ms": stall_floor.as_ref().map(|f| f.largest_ms),
            "stall_floor_steal_in_largest_gap_ms": stall_floor.as_ref().map(|f| &f.stolen_ms),
            "stall_floor_net_of_steal_ms": stall_floor.as_ref().map(|f| f.net_of_steal_ms),
            "stall_floor_stream_s": stall_floor.as_ref().map(|f| f.stream_s),
            "stall_floor_rate_mibps": stall_floor.as_ref().and(stall_floor_stream.rate_mibps),
            "stall_floor_sink": stall_floor.as_ref().map(|_| stall_floor_stream.sink.name()),
            "fault_max_us": slowest.map(|m| m.0),
            "fault_max_at_ms": slowest.map(|m| m.1 as f64 / 1e3),
            "throughput_during": during.zip(before).map(|(d, b)| d / b),
            "throughput_after_1s": after.zip(before).map(|(a, b)| a / b),
            "agent_hwm_kib": [hwm.0, hwm.1],
            "precopy_rounds": rec["precopy_rounds"],
            // Processes moved, and their proportional set size on each
            // host (KiB): sharing kept shows as the same on both.
            "processes": members.len(),
            "pss_kib": [pss_source, pss_destination],
            "fresh_resident_s": fresh_resident_s,
        });
        // The page writes of each tick (ms): in the second before the
        // request, and from the resume until every page was in.
        run["tick_touch_ms_before"] = json!(touch_ms(
            &text,
            start_ns.saturating_sub(1_000_000_000),
            start_ns
        ));
        run["tick_touch_ms_during"] = json!(touch_ms(
            &text,
            at_ns("resume"),
            at_ns("complete").min(verify_ns)
        ));
        Ok(run)
    })();
    kill(&mut w);
    drop((a1, a2));
    keep_agent_logs(&lab, mib, mode);
    drop(lab);
    result
}

/// With `BENCH_AGENT_LOGS=DIR` in the environment, copies the two agents'
/// logs of each run there (`RUST_LOG=debug` makes them detailed, with the
/// dump's steps timed); the lab's own directory goes with the lab.
fn keep_agent_logs(lab: &Lab, mib: u64, mode: &str) {
    let Some(dir) = std::env::var_os("BENCH_AGENT_LOGS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = fs::create_dir_all(&dir);
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for (i, host) in [(1, "host1"), (2, "host2")] {
        let from = lab.shared_dir().join(format!("agent{i}.log"));
        let _ = fs::copy(from, dir.join(format!("{stamp}-{mib}-{mode}-{host}.log")));
    }
}

// ---- CRIU, measured in the same lab (`--criu PATH`) ----

/// The ways CRIU migrates the workload, each run at every size when
/// `--criu` is given.
const CRIU_MODES: [&str; 2] = ["criu-stop-copy", "criu-lazy"];
/// Port of CRIU's page server: on host2 for `criu-stop-copy` (the dump
/// sends to it), on host1 for `criu-lazy` (the dump serves from it).
const CRIU_PORT: u16 = 7272;
/// CRIU's images, in each host's private `/tmp` (a tmpfs).
const CRIU_IMAGES: &str = "/tmp/criu-img";
/// Working directory of `criu lazy-pages` and `criu restore --lazy-pages`
/// on host2: the daemon's socket path is relative to it.
const CRIU_WORK: &str = "/tmp/criu-work";
/// The workload's pid in host1 is at least this, so that the same pid is
/// free on host2, where CRIU restores it (the lab's pids start at 1).
const CRIU_PID_FLOOR: u32 = 1000;
/// `fs.pipe-max-size` CRIU's lazy page server needs: it sizes a pipe to
/// ~3.2 MiB, which without `CAP_SYS_RESOURCE` (root here lacks it) fails
/// above the limit (the dump then fails with "splice: Bad file descriptor").
const CRIU_PIPE_MAX: u64 = 4 << 20;
const PIPE_MAX_PATH: &str = "/proc/sys/fs/pipe-max-size";
/// Longest a CRIU daemon (page server, lazy-pages) takes to serve.
const CRIU_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one CRIU step (a dump, a restore, the lazy pull) may take.
const CRIU_STEP_TIMEOUT: Duration = Duration::from_secs(900);

/// `fs.pipe-max-size` before [`PipeMax::raise`] changed it (0: unchanged).
static PIPE_MAX_OLD: AtomicU64 = AtomicU64::new(0);

/// `fs.pipe-max-size` raised to [`CRIU_PIPE_MAX`] while it lives; dropping
/// it (or a signal's teardown) puts the old value back.
struct PipeMax;

impl PipeMax {
    fn raise() -> Result<PipeMax, String> {
        let old: u64 = fs::read_to_string(PIPE_MAX_PATH)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("cannot read {PIPE_MAX_PATH}"))?;
        if old < CRIU_PIPE_MAX {
            PIPE_MAX_OLD.store(old, Ordering::SeqCst);
            fs::write(PIPE_MAX_PATH, CRIU_PIPE_MAX.to_string())
                .map_err(|e| format!("raising {PIPE_MAX_PATH} to {CRIU_PIPE_MAX}: {e}"))?;
        }
        Ok(PipeMax)
    }
}

impl Drop for PipeMax {
    fn drop(&mut self) {
        restore_pipe_max();
    }
}

fn restore_pipe_max() {
    let old = PIPE_MAX_OLD.swap(0, Ordering::SeqCst);
    if old != 0 {
        if let Err(e) = fs::write(PIPE_MAX_PATH, old.to_string()) {
            eprintln!("bench: could not put {PIPE_MAX_PATH} back to {old}: {e}");
        }
    }
}

/// `criu --version`'s version, or why the binary does not run.
fn criu_version(criu: &Path) -> Result<String, String> {
    let out = std::process::Command::new(criu)
        .arg("--version")
        .output()
        .map_err(|e| format!("--criu {}: {e}", criu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string());
    match version {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(format!(
            "--criu {}: `--version` did not answer: {}",
            criu.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A pipe whose write end a CRIU process inherits as `--status-fd`: CRIU
/// writes a zero byte to it once it serves (a page server listening, the
/// lazy-pages daemon's socket open, a lazy dump's images written).
struct StatusPipe {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl StatusPipe {
    fn new() -> Result<StatusPipe, String> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The write end alone is inherited, by the child spawned next.
        // SAFETY: fcntl with integers on a descriptor we own.
        if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
        }
        Ok(StatusPipe {
            read,
            write: Some(write),
        })
    }

    /// The descriptor number the child inherits.
    fn fd(&self) -> String {
        self.write
            .as_ref()
            .map_or(-1, |w| w.as_raw_fd())
            .to_string()
    }

    /// Closes our copy of the write end (once the child has its own).
    fn close_write(&mut self) {
        self.write = None;
    }

    /// Waits, at most `limit`, for CRIU's byte; false if it exited first.
    fn ready(&self, limit: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = limit.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } != 1 {
            return false;
        }
        let mut b = [1u8; 1];
        // SAFETY: reads at most one byte into `b`.
        let n = unsafe { libc::read(self.read.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        n == 1 && b[0] == 0
    }
}

/// One CRIU process in a lab host, behind its `nsenter`; killed (by pid)
/// when dropped if still running.
struct Criu {
    what: String,
    line: String,
    child: Child,
    log: PathBuf,
    hwm_kib: u64,
    /// When this process was first seen to have exited (sampled every
    /// 10 ms while any CRIU step is awaited).
    exited: Option<Instant>,
}

impl Criu {
    /// Runs `criu args…` in `host`, logging to `<logs>/criu-<what>.log`
    /// (its stderr to `criu-<what>.err`). With `ready`, also passes
    /// `--status-fd` and waits that long for CRIU to say it serves.
    fn start(
        host: &Host,
        criu: &Path,
        what: &str,
        args: &[&str],
        logs: &Path,
        ready: Option<Duration>,
    ) -> Result<Criu, String> {
        let log = logs.join(format!("criu-{what}.log"));
        let err = fs::File::create(log.with_extension("err")).map_err(|e| e.to_string())?;
        let mut pipe = ready.map(|_| StatusPipe::new()).transpose()?;
        let mut cmd = host.command(criu);
        cmd.args(args).arg("--log-file").arg(&log);
        if let Some(p) = &pipe {
            cmd.args(["--status-fd", &p.fd()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("criu {what}: {e}"));
        if let Some(p) = &mut pipe {
            p.close_write();
        }
        let mut c = Criu {
            what: what.to_string(),
            line: format!("{host}# criu {}", args.join(" "), host = host.name()),
            child: child?,
            log,
            hwm_kib: 0,
            exited: None,
        };
        if let (Some(p), Some(limit)) = (&pipe, ready) {
            if !p.ready(limit) {
                c.kill();
                return Err(format!("criu {what} did not get ready: {}", c.errors()));
            }
        }
        Ok(c)
    }

    /// Follows the peak RSS of the CRIU process (under its `nsenter`), and
    /// notes when it exits.
    fn sample(&mut self) {
        self.hwm_kib = self.hwm_kib.max(agent_hwm(self.child.id() as i32));
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(Some(_))) {
            self.exited = Some(Instant::now());
        }
    }

    /// When the process exited, as first seen (now if never sampled so).
    fn exited_at(&self) -> Instant {
        self.exited.unwrap_or_else(Instant::now)
    }

    /// Waits, at most `limit`, for this process to exit, following its
    /// peak RSS and that of `also`; an error with CRIU's last errors if it
    /// failed or ran out of time (it is killed then).
    fn finish(&mut self, limit: Duration, also: &mut [&mut Criu]) -> Result<(), String> {
        let t = Instant::now();
        while t.elapsed() < limit {
            self.sample();
            also.iter_mut().for_each(|c| c.sample());
            match self.child.try_wait() {
                Ok(Some(st)) if st.success() => {
                    self.exited.get_or_insert_with(Instant::now);
                    return Ok(());
                }
                Ok(Some(st)) => {
                    return Err(format!(
                        "criu {} failed ({st}): {}",
                        self.what,
                        self.errors()
                    ))
                }
                Ok(None) => sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("criu {}: {e}", self.what)),
            }
        }
        self.kill();
        Err(format!(
            "criu {} did not finish within {limit:?}: {}",
            self.what,
            self.errors()
        ))
    }

    /// CRIU's last three error lines, from its log and its stderr.
    fn errors(&self) -> String {
        let mut lines: Vec<String> = fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            // Logged as an error by every run here (root lacks
            // CAP_SYS_RESOURCE), and harmless.
            .filter(|l| l.contains("Error (") && !l.contains("RLIMIT_NOFILE"))
            .map(|l| l.trim().to_string())
            .collect();
        let err = fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        lines.extend(err.lines().map(|l| l.trim().to_string()));
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        if tail.is_empty() {
            format!("nothing logged in {}", self.log.display())
        } else {
            tail
        }
    }

    /// SIGKILLs the CRIU process by pid (the child of its `nsenter`), then
    /// the `nsenter`, and reaps it.
    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let me = self.child.id();
            let inner =
                fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
            for pid in inner
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) with integers, on a process this run started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        kill(&mut self.child);
    }
}

impl Drop for Criu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the workload in `h1` as CRIU needs it: its standard streams
/// opened inside the host (CRIU looks a file up by its mount in the task's
/// mount namespace), in a session of its own (CRIU refuses a task whose
/// session leader is outside its pid namespace), with a pid of at least
/// [`CRIU_PID_FLOOR`] (CRIU restores the same pid on host2). Same binary
/// and arguments as for the project's modes.
fn spawn_workload_for_criu(h1: &Host, mib: u64, out: &Path) -> Result<Child, String> {
    let floor = format!("echo {} > /proc/sys/kernel/ns_last_pid", CRIU_PID_FLOOR - 1);
    let st = h1
        .command("sh")
        .args(["-c", &floor])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("setting host1's ns_last_pid failed ({st})"));
    }
    h1.command("sh")
        .arg("-c")
        .arg("out=$1; shift; exec setsid \"$@\" > \"$out\" 2> /dev/null < /dev/null")
        .arg("sh")
        .arg(out)
        .arg(bin("workload"))
        .args([
            "--mib",
            &mib.to_string(),
            "--tick-ms",
            &TICK_MS.to_string(),
            "--dirty-pages",
            &DIRTY_PAGES.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())
}

/// Copies CRIU's images from host1's directory to host2's, as a user does
/// with `scp` (outside the lab link; the pages a page server received are
/// on host2 already). Returns the bytes copied.
fn copy_images(h1: &Host, h2: &Host) -> Result<u64, String> {
    let (from, to) = (h1.root_path(CRIU_IMAGES), h2.root_path(CRIU_IMAGES));
    let mut n = 0;
    for e in fs::read_dir(&from).map_err(|e| format!("{}: {e}", from.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            n += fs::copy(e.path(), to.join(e.file_name()))
                .map_err(|err| format!("copying {}: {err}", e.path().display()))?;
        }
    }
    Ok(n)
}

/// The lab and the workload one CRIU migration works on.
struct CriuRun<'a> {
    criu: &'a Path,
    h1: &'a Host,
    h2: &'a Host,
    pid: &'a str,
    logs: &'a Path,
}

/// What one CRIU migration measured; times from the dump's start.
struct CriuTimes {
    start_ns: u64,
    /// The source `criu dump` exited: the source is released.
    source_s: f64,
    source_ns: u64,
    /// `criu restore` exited: the process runs on host2.
    restored_s: f64,
    /// Images copied from host1 to host2 outside the link.
    copied: u64,
    /// Peak RSS of CRIU on each host, KiB: host1 the dump; host2 the page
    /// server or lazy-pages daemon and the restore, the larger of the two
    /// when one ran after the other (stop-copy), their sum when they ran
    /// at once (lazy).
    hwm_kib: (u64, u64),
    commands: Vec<String>,
}

/// `criu-stop-copy`: the dump sends every page to a page server on host2
/// and kills the original; the rest of the images are copied over and
/// the process restored there.
fn criu_stop_copy(r: &CriuRun) -> Result<CriuTimes, String> {
    let (a2, port) = (r.h2.addr().to_string(), CRIU_PORT.to_string());
    let mut server = Criu::start(
        r.h2,
        r.criu,
        "page-server",
        &[
            "page-server",
            "--images-dir",
            CRIU_IMAGES,
            "--address",
            &a2,
            "--port",
            &port,
        ],
        r.logs,
        Some(CRIU_READY_TIMEOUT),
    )?;
    let start_ns = now_ns();
    let t0 = Instant::now();
    let mut dump = Criu::start(
        r.h1,
        r.criu,
        "dump",
        &[
            "dump",
            "-t",
            r.pid,
            "--images-dir",
            CRIU_IMAGES,
            "--page-server",
            "--address",
            &a2,
            "--port",
            &port,
        ],
        r.logs,
        None,
    )?;
    dump.finish(CRIU_STEP_TIMEOUT, &mut [&mut server])?;
    let source_s = dump.exited_at().duration_since(t0).as_secs_f64();
    let source_ns = start_ns + (source_s * 1e9) as u64;
    server.finish(CRIU_READY_TIMEOUT, &mut [])?;
    let copied = copy_images(r.h1, r.h2)?;
    let mut restore = Criu::start(
        r.h2,
        r.criu,
        "restore",
        &["restore", "-d", "--images-dir", CRIU_IMAGES],
        r.logs,
        None,
    )?;
    restore.finish(CRIU_STEP_TIMEOUT, &mut [])?;
    Ok(CriuTimes {
        start_ns,
        source_s,
        source_ns,
        restored_s: t0.elapsed().as_secs_f64(),
        copied,
        hwm_kib: (dump.hwm_kib, server.hwm_kib.max(restore.hwm_kib)),
        commands: vec![server.line.clone(), dump.line.clone(), restore.line.clone()],
    })
}

/// `criu lazy-pages` on `h2`, fetching from the lazy dump's page server on
/// `h1` ([`CRIU_PORT`]), in [`CRIU_WORK`] (the restore's working directory
/// too), once it serves.
fn start_lazy_pages(h1: &Host, h2: &Host, criu: &Path, logs: &Path) -> Result<Criu, String> {
    let (a1, port) = (h1.addr().to_string(), CRIU_PORT.to_string());
    Criu::start(
        h2,
        criu,
        "lazy-pages",
        &[
            "lazy-pages",
            "--page-server",
            "--address",
            &a1,
            "--port",
            &port,
            "--images-dir",
            CRIU_IMAGES,
            "--work-dir",
            CRIU_WORK,
        ],
        logs,
        Some(CRIU_READY_TIMEOUT),
    )
}

/// `criu-lazy`: the dump writes the images but the lazy pages and stays
/// as their page server on host1; on host2 the lazy-pages daemon fetches
/// them for the restored process, on its faults and in the background,
/// from the same working directory as the restore.
fn criu_lazy(r: &CriuRun) -> Result<CriuTimes, String> {
    let (a1, port) = (r.h1.addr().to_string(), CRIU_PORT.to_string());
    let start_ns = now_ns();
    let t0 = Instant::now();
    let mut dump = Criu::start(
        r.h1,
        r.criu,
        "dump",
        &[
            "dump",
            "-t",
            r.pid,
            "--images-dir",
            CRIU_IMAGES,
            "--lazy-pages",
            "--address",
            &a1,
            "--port",
            &port,
        ],
        r.logs,
        Some(CRIU_STEP_TIMEOUT),
    )?;
    let copied = copy_images(r.h1, r.h2)?;
    let mut daemon = start_lazy_pages(r.h1, r.h2, r.criu, r.logs)?;
    let mut restore = Criu::start(
        r.h2,
        r.criu,
        "restore",
        &[
            "restore",
            "-d",
            "--lazy-pages",
            "--images-dir",
            CRIU_IMAGES,
            "--work-dir",
            CRIU_WORK,
        ],
        r.logs,
        None,
    )?;
    restore.finish(CRIU_STEP_TIMEOUT, &mut [&mut dump, &mut daemon])?;
    let restored_s = restore.exited_at().duration_since(t0).as_secs_f64();
    dump.finish(CRIU_STEP_TIMEOUT, &mut [&mut daemon])?;
    let source_s = dump.exited_at().duration_since(t0).as_secs_f64();
    let source_ns = start_ns + (source_s * 1e9) as u64;
    daemon.finish(CRIU_READY_TIMEOUT, &mut [])?;
    Ok(CriuTimes {
        start_ns,
        source_s,
        source_ns,
        restored_s,
        copied,
        hwm_kib: (dump.hwm_kib, daemon.hwm_kib + restore.hwm_kib),
        commands: vec![dump.line.clone(), daemon.line.clone(), restore.line.clone()],
    })
}

/// One CRIU migration (`criu-stop-copy` or `criu-lazy`) of the ticking
/// workload from host1 to host2 in a fresh lab, measured as [`run_one`]
/// measures the project's: the workload's downtime, the time until the
/// source is released (its `criu dump` exits), bytes through the veth, and
/// the workload's memory check on host2.
fn run_criu(criu: &Path, mib: u64, mode: &str) -> Result<Value, String> {
    let lazy = mode == "criu-lazy";
    let _pipe_max = lazy.then(PipeMax::raise).transpose()?;
    let lab = Lab::start().map_err(|e| format!("lab: {e}"))?;
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    for dir in [
        h1.root_path(CRIU_IMAGES),
        h2.root_path(CRIU_IMAGES),
        h2.root_path(CRIU_WORK),
    ] {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let out = lab.shared_dir().join("workload.out");
    let mut w = spawn_workload_for_criu(h1, mib, &out)?;
    let result = (|| {
        let pid = ready_pid(&out, mib)?;
        let run = CriuRun {
            criu,
            h1,
            h2,
            pid: &pid,
            logs: lab.shared_dir(),
        };
        let bytes0 = link_bytes(h1);
        let m = if lazy {
            criu_lazy(&run)?
        } else {
            criu_stop_copy(&run)?
        };
        let bytes = link_bytes(h1).saturating_sub(bytes0);
        // A second of ticks after, then the memory check on host2.
        sleep(Duration::from_millis(1200));
        let verify_ns = now_ns();
        let _ = h2.command("kill").args(["-USR1", &pid]).status();
        let verified = verified(&out, mib);
        let _ = h2.command("kill").args(["-KILL", &pid]).status();

        let t = ticks(&out);
        let continuity = ticks_continuous(&t);
        let (downtime_ms, _, resumed_at) = freeze(&t, m.start_ns, verify_ns);
        let before = rate(&t, m.start_ns.saturating_sub(1_000_000_000), m.start_ns);
        // Lazy: from the resume until the last page is in (the source's
        // dump exits then).
        let residual_ns = m.source_ns.saturating_sub(resumed_at);
        let during = (lazy && residual_ns >= 100_000_000)
            .then(|| rate(&t, resumed_at, m.source_ns.min(verify_ns)))
            .flatten();
        let after = rate(&t, resumed_at, (resumed_at + 1_000_000_000).min(verify_ns));
        Ok(json!({
            "mib": mib,
            "mode": mode,
            "verified": verified && continuity.is_ok(),
            "memory_verified": verified,
            "ticks_continuous": continuity.clone().err().unwrap_or_else(|| "yes".into()),
            "downtime_ms": downtime_ms,
            "total_s": m.source_s,
            "restored_s": m.restored_s,
            "residual_s": if lazy { residual_ns as f64 / 1e9 } else { 0.0 },
            "wire_bytes": bytes,
            "images_copied_bytes": m.copied,
            "faults": Value::Null,
            "fault_p50_us": Value::Null,
            "fault_p99_us": Value::Null,
            "throughput_during": during.zip(before).map(|(d, b)| d / b),
            "throughput_after_1s": after.zip(before).map(|(a, b)| a / b),
            "agent_hwm_kib": [m.hwm_kib.0, m.hwm_kib.1],
            "criu_commands": m.commands,
        }))
    })();
    kill(&mut w);
    drop(lab);
    result
}

// ---- the report ----

fn f(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// How long this VM's idle vCPUs poll before they halt (ns), where the
/// guest has the haltpoll idle driver: a halted vCPU waits for its host
/// to wake it, so the setting decides how fast wake-ups are here.
fn guest_halt_poll_ns() -> Option<u64> {
    fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn run(args: &Args) -> Result<bool, String> {
    let criu = match &args.criu {
        Some(p) => Some((p.as_path(), criu_version(p)?)),
        None => None,
    };
    let date = String::from_utf8_lossy(
        &std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_string();
    println!(
        "bench {date}: sizes {:?} MiB, modes {:?}",
        args.sizes, args.modes
    );
    let halt_poll_ns = guest_halt_poll_ns();
    if let Some(ns) = halt_poll_ns {
        println!(
            "this VM's vCPUs poll up to {ns} ns before they halt when idle \
             (/sys/module/haltpoll/parameters/guest_halt_poll_ns)"
        );
    }
    match &criu {
        Some((p, v)) => println!(
            "CRIU {v} ({}) migrates the same workload in the same lab: rows {}",
            p.display(),
            CRIU_MODES.join(", ")
        ),
        None => println!(
            "CRIU columns: no --criu binary given, so they are the figures recorded in \
             ../shared/REFERENCES.md (CRIU 3.17.1 on this machine kind), not measured in this run"
        ),
    }

    // The link, in the same run.
    let max_mib = args.sizes.iter().copied().max().unwrap_or(64);
    let (link, fresh, pinned, floor, floor_ticking, floor_streamed) = {
        let lab = Lab::start().map_err(|e| format!("lab: {e}"))?;
        let (h1, h2) = (lab.host("host1"), lab.host("host2"));
        let link = measure_link(h1, h2, max_mib << 20)?;
        let floor = measure_fault_floor(&lab, h1, h2, FaultPattern::BackToBack)?;
        let floor_ticking = measure_fault_floor(&lab, h1, h2, FaultPattern::Ticking)?;
        let floor_streamed = measure_fault_floor(&lab, h1, h2, FaultPattern::TickingBesideStream)?;
        let mut fresh = Vec::new();
        for &mib in &args.sizes {
            fresh.push((mib, measure_fresh_memory(h2, mib)?));
        }
        let one = measure_round_trip(h1, h2, Some((0, 0)))?.0;
        let two = measure_round_trip(h1, h2, Some((0, 1)))?.0;
        (
            link,
            fresh,
            (one, two),
            floor,
            floor_ticking,
            floor_streamed,
        )
    };
    println!(
        "link: {:.0} MB/s TCP stream ({} MiB), round trip p50 {:.1} us, p99 {:.1} us",
        link.0, max_mib, link.1, link.2
    );
    println!("fresh memory: host2 writes {}", fresh_text(&fresh));
    println!(
        "demand-fault floor (fault_floor.c: fault, request, reply, UFFDIO_COPY over the link): \
         p50 {:.1} us, p99 {:.1} us back to back; p50 {:.1} us, p99 {:.1} us faulting as the \
         workload does ({DIRTY_PAGES} pages, then {TICK_MS} ms asleep); p50 {:.1} us, p99 {:.1} \
         us so beside a stream host2 writes into fresh memory, as the push does ({:.0} MiB of it \
         while the faults ran)",
        floor.0,
        floor.1,
        floor_ticking.0,
        floor_ticking.1,
        floor_streamed.0,
        floor_streamed.1,
        floor_streamed.2
    );
    println!(
        "round trip p50 with both ends on one CPU {:.1} us, on two CPUs {:.1} us",
        pinned.0, pinned.1
    );

    // Set up after the lab's own measurements, put back at the end.
    let tracer = args.trace.then(stops::Tracer::start).transpose()?;
    let tracing = tracer.as_ref().map(|t| (t, args.out.as_path()));
    let mut runs = Vec::new();
    let mut all_ok = true;
    for &mib in &args.sizes {
        let criu_modes = criu.iter().flat_map(|_| CRIU_MODES.map(String::from));
        for mode in args.modes.iter().cloned().chain(criu_modes) {
            let flags = MODES
                .iter()
                .find(|(m, _)| *m == mode)
                .map(|(_, f)| *f)
                .unwrap_or(&[]);
            for rep in 0..args.repeat {
                eprint!("{mib} MiB {mode} (run {}) ... ", rep + 1);
                let r = match &criu {
                    Some((path, _)) if mode.starts_with("criu-") => run_criu(path, mib, &mode),
                    _ => run_one(mib, &mode, flags, args.stall_floor, tracing),
                };
                match r {
                    Ok(r) => {
                        eprintln!(
                            "downtime {} ms, total {} s, memory verified {}, ticks continuous: {}{}{}{}{}{}",
                            f(&r["downtime_ms"], 1),
                            f(&r["total_s"], 2),
                            r["memory_verified"],
                            r["ticks_continuous"].as_str().unwrap_or("?"),
                            steal::in_gap_text(&r["steal_in_largest_gap_ms"])
                                .map(|s| format!(", vCPUs stolen in its largest gap {s}"))
                                .unwrap_or_default(),
                            stops::in_gap_text(&r["vcpu_stop_in_largest_gap"])
                                .map(|s| format!(", {s}"))
                                .unwrap_or_default(),
                            r["tick_touch_ms_during"]["p50"]
                                .as_f64()
                                .map(|d| format!(
                                    ", page writes a tick p50 {d:.2} ms in post-copy ({} before)",
                                    f(&r["tick_touch_ms_before"]["p50"], 2)
                                ))
                                .unwrap_or_default(),
                            r["largest_gap_parts_ms"]
                                .as_object()
                                .map(|p| format!(
                                    ", the gap: write {}, sleep {}, touch {} ms",
                                    f(&p["write"], 1),
                                    f(&p["sleep"], 1),
                                    f(&p["touch"], 1)
                                ))
                                .unwrap_or_default(),
                            r["stall_floor_ms"]
                                .as_f64()
                                .map(|s| format!(
                                    ", stall floor before it {s:.1} ms{} over {:.2} s",
                                    steal::in_gap_text(&r["stall_floor_steal_in_largest_gap_ms"])
                                        .map(|s| format!(" ({s} stolen)"))
                                        .unwrap_or_default(),
                                    r["stall_floor_stream_s"].as_f64().unwrap_or(f64::NAN)
                                ))
                                .unwrap_or_default()
                        );
                        all_ok &= r["verified"].as_bool().unwrap_or(false);
                        runs.push(r);
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        all_ok = false;
                        runs.push(json!({"mib": mib, "mode": mode, "error": e}));
                    }
                }
            }
        }
    }

    let summary = medians(&runs);
    let criu_version = criu.as_ref().map(|(_, v)| v.as_str());
    let md = markdown(
        &date,
        link,
        pinned,
        &fresh,
        &summary,
        args.repeat,
        criu_version,
    );
    let targets = targets::lines(&summary, link.0, &fresh, (floor.0, floor.1));
    let md = format!(
        "{md}\nTargets (each a ratio of figures of this run):\n\n{}\n",
        targets
            .iter()
            .map(|t| format!("- {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("\n{md}");
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let stamp = date.replace([' ', ':'], "-");
    let report = json!({
        "date": date,
        "link": {"mb_per_s": link.0, "rtt_p50_us": link.1, "rtt_p99_us": link.2},
        "fresh_memory_s": fresh.iter().map(|(m, t)| (m.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "rtt_p50_one_cpu_us": pinned.0,
        "rtt_p50_two_cpus_us": pinned.1,
        "fault_floor_us": {"p50": floor.0, "p99": floor.1},
        "fault_floor_ticking_us": {"p50": floor_ticking.0, "p99": floor_ticking.1},
        "fault_floor_beside_stream_us": {"p50": floor_streamed.0, "p99": floor_streamed.1, "streamed_mib": floor_streamed.2},
        "criu": criu_json(criu.as_ref()),
        "guest_halt_poll_ns": halt_poll_ns,
        "runs": runs,
        "summary": summary,
        "targets": targets,
    });
    let jpath = args.out.join(format!("bench-{stamp}.json"));
    let mpath = args.out.join(format!("bench-{stamp}.md"));
    fs::write(
        &jpath,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    fs::write(&mpath, &md).map_err(|e| e.to_string())?;
    println!("written: {} and {}", jpath.display(), mpath.display());
    Ok(all_ok)
}

/// One row per size and mode: the run with the median downtime, with the
/// median total time of all its runs; verified only if every run was.
fn medians(runs: &[Value]) -> Vec<Value> {
    let mut keys: Vec<(u64, String)> = Vec::new();
    for r in runs {
        let k = (
            r["mib"].as_u64().unwrap_or(0),
            r["mode"].as_str().unwrap_or("").to_string(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (mib, mode) in keys {
        let group: Vec<&Value> = runs
            .iter()
            .filter(|r| r["mib"] == mib && r["mode"] == mode.as_str())
            .collect();
        let mut ok: Vec<&Value> = group
            .iter()
            .copied()
            .filter(|r| r["error"].is_null())
            .collect();
        if ok.is_empty() {
            out.push(group[0].clone());
            continue;
        }
        ok.sort_by(|a, b| {
            a["downtime_ms"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["downtime_ms"].as_f64().unwrap_or(0.0))
        });
        let mut row = ok[ok.len() / 2].clone();
        let mut totals: Vec<f64> = ok.iter().filter_map(|r| r["total_s"].as_f64()).collect();
        row["total_s"] = json!(percentile(&mut totals, 0.5));
        let mut fresh: Vec<f64> = ok
            .iter()
            .filter_map(|r| r["fresh_resident_s"].as_f64())
            .collect();
        row["fresh_resident_s"] = json!((!fresh.is_empty()).then(|| percentile(&mut fresh, 0.5)));
        // Each run's fault p50 over the floor measured in its own lab.
        let paired: Vec<(f64, f64)> = ok
            .iter()
            .filter_map(|r| {
                Some((
                    r["fault_p50_us"].as_f64()?,
                    r["fault_floor_us"]["p50"].as_f64()?,
                ))
            })
            .filter(|&(_, floor)| floor > 0.0)
            .collect();
        let mut ratios: Vec<f64> = paired.iter().map(|(p50, floor)| p50 / floor).collect();
        row["fault_vs_floor"] = json!((!ratios.is_empty()).then(|| percentile(&mut ratios, 0.5)));
        row["fault_pairs_us"] = json!(paired);
        row["runs"] = json!(group.len());
        let mut gaps: Vec<f64> = ok
            .iter()
            .filter_map(|r| r["freeze_gap_ms"].as_f64())
            .collect();
        row["freeze_gap_ms"] = json!(percentile(&mut gaps, 0.5));
        for key in ["stall_floor_ms", "stall_floor_net_of_steal_ms"] {
            let mut v: Vec<f64> = ok.iter().filter_map(|r| r[key].as_f64()).collect();
            row[key] = json!(percentile(&mut v, 0.5));
        }
        let mut net: Vec<f64> = ok
            .iter()
            .filter_map(|r| r["downtime_net_of_steal_ms"].as_f64())
            .collect();
        row["downtime_net_of_steal_ms"] = json!(percentile(&mut net, 0.5));
        // With --trace: the same net of the vCPU stops in the trace, and
        // each run's downtime with the stops in its largest gap.
        let mut net: Vec<f64> = ok
            .iter()
            .filter_map(|r| r["downtime_net_of_stops_ms"].as_f64())
            .collect();
        row["downtime_net_of_stops_ms"] = json!(percentile(&mut net, 0.5));
        row["vcpu_stops_in_largest_gap_all"] = json!(ok
            .iter()
            .filter(|r| !r["vcpu_stop_in_largest_gap"].is_null())
            .map(|r| json!([r["downtime_ms"], r["vcpu_stop_in_largest_gap"]]))
            .collect::<Vec<_>>());
        // Each run's downtime with the steal during its largest gap.
        row["steal_in_largest_gap_ms_all"] = json!(ok
            .iter()
            .map(|r| json!([r["downtime_ms"], r["steal_in_largest_gap_ms"]]))
            .collect::<Vec<_>>());
        row["downtime_ms_all"] = json!(ok
            .iter()
            .map(|r| r["downtime_ms"].clone())
            .collect::<Vec<_>>());
        row["verified"] =
            json!(group.len() == ok.len() && ok.iter().all(|r| r["verified"] == true));
        out.push(row);
    }
    out
}

/// The CRIU part of the JSON report: what the comparison is with.
fn criu_json(criu: Option<&(&Path, String)>) -> Value {
    let recorded: Vec<Value> = CRIU_RECORDED
        .iter()
        .map(|c| json!({"mib": c.0, "stop_copy_downtime_ms": c.1, "lazy_downtime_ms": c.2, "lazy_all_in_s": c.3}))
        .collect();
    match criu {
        Some((p, v)) => json!({
            "source": "measured in this run: rows criu-stop-copy and criu-lazy",
            "binary": p.display().to_string(),
            "version": v,
            "recorded_for_reference": recorded,
        }),
        None => json!({
            "source": "recorded in ../shared/REFERENCES.md, not measured in this run",
            "figures": recorded,
        }),
    }
}

/// CRIU lazy's downtime (ms) at `mib` to compare with: with `measured`,
/// this run's verified `criu-lazy` row; otherwise the recorded figure.
fn criu_lazy_ms(runs: &[Value], mib: u64, measured: bool) -> Option<f64> {
    if measured {
        runs.iter()
            .find(|r| r["mib"] == mib && r["mode"] == "criu-lazy" && r["verified"] == true)
            .and_then(|r| r["downtime_ms"].as_f64())
    } else {
        CRIU_RECORDED.iter().find(|c| c.0 == mib).map(|c| c.2)
    }
}

fn markdown(
    date: &str,
    link: (f64, f64, f64),
    pinned: (f64, f64),
    fresh: &[(u64, f64)],
    runs: &[Value],
    repeat: usize,
    criu: Option<&str>,
) -> String {
    let criu_note = match criu {
        Some(v) => format!(
            "CRIU {v} migrated the same workload in the same lab (rows criu-*); \
             \"vs CRIU lazy\" is against its downtime measured in this run."
        ),
        None => {
            "CRIU figures are those recorded in REFERENCES.md (not measured in this run).".into()
        }
    };
    let mut s = format!(
        "Benchmark of {date}, two lab hosts on one 2-core VM (veth). Link: {:.0} MB/s TCP stream, \
         round trip p50 {:.1} µs (both ends on one CPU {:.1} µs, on two {:.1} µs); host2 writes fresh memory: {}. Workload: ticks every {TICK_MS} ms, writes {DIRTY_PAGES} pages per tick. \
         Downtime = largest gap between ticks minus the tick; total = from the command's start \
         until the source is free (`migrate` exits, CRIU's `criu dump` exits), timed by this \
         harness for both; a fault's latency runs from its read off the userfaultfd to its \
         thread woken, sampled evenly over the whole of post-copy; memory = the workload's own \
         byte-for-byte check on host2 and its tick counter going up by one at every tick (never \
         repeated, never back). Each row is the run with the median downtime of {repeat}, with \
         the median total time. {criu_note}\n\n",
        link.0,
        link.1,
        pinned.0,
        pinned.1,
        fresh_text(fresh)
    );
    s.push_str("| MiB | mode | downtime ms | vs CRIU lazy | total s | vs link | wire MiB | fault p50/p99 µs | work during post-copy | agents peak RSS MiB (src/dst) | memory |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let mib = r["mib"].as_u64().unwrap_or(0);
        if let Some(e) = r["error"].as_str() {
            s.push_str(&format!(
                "| {mib} | {} | failed: {e} |||||||||\n",
                r["mode"].as_str().unwrap_or("?")
            ));
            continue;
        }
        let down = r["downtime_ms"].as_f64().unwrap_or(0.0);
        let vs_criu = criu_lazy_ms(runs, mib, criu.is_some())
            .filter(|c| *c > 0.0)
            .map(|c| format!("{:.2}x", down / c))
            .unwrap_or_else(|| "—".into());
        let total = r["total_s"].as_f64().unwrap_or(0.0);
        let link_s = (mib << 20) as f64 / (link.0 * 1e6);
        let hwm = &r["agent_hwm_kib"];
        s.push_str(&format!(
            "| {mib} | {} | {:.1} | {vs_criu} | {:.2} | {:.2}x | {:.1} | {}/{} | {} | {:.1}/{:.1} | {} |\n",
            r["mode"].as_str().unwrap_or("?"),
            down,
            total,
            total / link_s,
            r["wire_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            f(&r["fault_p50_us"], 0),
            f(&r["fault_p99_us"], 0),
            r["throughput_during"]
                .as_f64()
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "—".into()),
            hwm[0].as_f64().unwrap_or(0.0) / 1024.0,
            hwm[1].as_f64().unwrap_or(0.0) / 1024.0,
            if r["verified"].as_bool() == Some(true) { "verified" } else { "FAILED" },
        ));
    }
    let trees: Vec<&Value> = runs
        .iter()
        .filter(|r| r["mode"].as_str().is_some_and(|m| m.starts_with("tree-")))
        .filter(|r| r["error"].is_null())
        .collect();
    if !trees.is_empty() {
        s.push_str(
            "\nProcess trees, in stop-and-copy (`-postcopy`: in post-copy), beside `stop-copy` \
             and `postcopy` of one process of the size: `tree-own` is four processes of a quarter of the size each, with memory of their own \
             (the same bytes in all); `tree-shared` is a process of the size and three children \
             sharing all of it copy-on-write. PSS: the processes' proportional set size together \
             on each host (sharing kept shows as the same on both).\n\n\
             | MiB | mode | processes | downtime ms | total s | wire MiB | PSS host1 MiB | PSS host2 MiB | memory |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for r in trees {
            let pss = &r["pss_kib"];
            s.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {} |\n",
                r["mib"],
                r["mode"].as_str().unwrap_or("?"),
                r["processes"],
                r["downtime_ms"].as_f64().unwrap_or(0.0),
                r["total_s"].as_f64().unwrap_or(0.0),
                r["wire_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                pss[0].as_f64().unwrap_or(0.0) / 1024.0,
                pss[1].as_f64().unwrap_or(0.0) / 1024.0,
                if r["verified"].as_bool() == Some(true) {
                    "verified"
                } else {
                    "FAILED"
                },
            ));
        }
    }
    if criu.is_some() {
        let copied = runs
            .iter()
            .filter_map(|r| r["images_copied_bytes"].as_u64())
            .max()
            .unwrap_or(0);
        s.push_str(&format!(
            "\nCRIU rows: `criu-stop-copy` is `criu dump` sending every page to `criu page-server` \
             on host2, then `criu restore` there; `criu-lazy` is `criu dump --lazy-pages` serving \
             pages from host1, `criu lazy-pages` and `criu restore --lazy-pages` on host2. Their \
             total is until the source's `criu dump` exits (stop-copy: before the restore; lazy: \
             once the last page is pulled); their peak RSS is the dump's on host1 and, on host2, \
             the larger of the page server's and the restore's (one after the other) or the sum \
             of the lazy-pages daemon's and the restore's (at the same time); their images other than the pages sent by the page server \
             (at most {:.1} MiB here) are copied between the hosts outside the link, as with scp.\n",
            copied as f64 / 1048576.0
        ));
        let restored: Vec<String> = runs
            .iter()
            .filter_map(|r| {
                let t = r["restored_s"].as_f64()?;
                Some(format!("{} MiB {} {t:.2} s", r["mib"], r["mode"].as_str()?))
            })
            .collect();
        if !restored.is_empty() {
            s.push_str(&format!(
                "CRIU's restore on host2 ended (from the dump's start): {}.\n",
                restored.join(", ")
            ));
        }
    }
    s.push_str("\nCRIU 3.17.1 recorded (REFERENCES.md), for reference: ");
    for c in CRIU_RECORDED {
        s.push_str(&format!(
            "{} MiB stop-and-copy {:.0} ms, lazy {:.0} ms (all in after {:.2} s); ",
            c.0, c.1, c.2, c.3
        ));
    }
    s.push('\n');
    s.push_str(&all_verified(runs));
    s
}

/// Whether every run verified the workload's memory afterwards (the
/// targets, each a ratio, follow in `targets.rs`).
fn all_verified(runs: &[Value]) -> String {
    let all = runs.iter().all(|r| r["verified"].as_bool() == Some(true));
    format!(
        "\nEvery run verified the workload's memory afterwards: {}\n",
        if all { "yes" } else { "NO" }
    )
}

/// Ticks numbered from 0 at `at_ms` (realtime ms), for tests.
#[cfg(test)]
fn ticks_at_ms(at_ms: &[u64]) -> Vec<(u64, u64)> {
    at_ms
        .iter()
        .enumerate()
        .map(|(i, at)| (i as u64, at * 1_000_000))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_freeze_gap_runs_from_the_last_tick_before_the_freeze_to_the_first_after_the_resume() {
        let ms = 1_000_000;
        // Ticks every 5 ms; frozen at 11 ms, resumed at 19 ms; the first
        // tick on host2 at 22 ms, then a stall of 30 ms during post-copy.
        let t = [
            (1, 0),
            (2, 5 * ms),
            (3, 10 * ms),
            (4, 22 * ms),
            (5, 27 * ms),
            (6, 57 * ms),
        ];
        let gap = freeze_gap(&t, 11 * ms, 19 * ms).expect("a gap");
        assert!((gap - 7.0).abs() < 1e-9, "{gap}");
        assert_eq!(freeze(&t, 0, u64::MAX).0, 25.0);
        // A tick between the two milestones: no gap is named.
        assert_eq!(freeze_gap(&t, 4 * ms, 19 * ms), None);
    }

    #[test]
    fn a_gaps_parts_come_from_the_line_of_the_tick_that_ended_it() {
        let text = "ready 64\ntick 1 1000 0 5100 20\ntick 2 2000 30000 5050 1500\n\
                    tick 3 3000 40 5000 10\nverify ok 16384\n";
        assert_eq!(
            gap_parts(text, 2000),
            Some(json!({"write": 30.0, "sleep": 5.05, "touch": 1.5}))
        );
        // No tick stamped so, or a line without the parts: none.
        assert_eq!(gap_parts(text, 2500), None);
        assert_eq!(gap_parts("tick 1 1000\n", 1000), None);
    }

    #[test]
    fn the_touch_figures_take_the_ticks_stamped_in_the_window() {
        let text = "tick 1 1000 0 5100 20\ntick 2 2000 30 5050 1500\ntick 3 3000 40 5000 10\n\
                    tick 4 4000 40 5000 900\ntick 5 5000\n";
        assert_eq!(
            touch_ms(text, 2000, 5000),
            Some(json!({"p50": 0.9, "p99": 1.5, "max": 1.5, "ticks": 3}))
        );
        assert_eq!(touch_ms(text, 5000, 6000), None);
    }
}
