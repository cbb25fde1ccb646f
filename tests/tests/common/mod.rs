//! Helpers shared by the lab's integration tests.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_tests::bins::bin;
use migrate_tests::lab::{Agent, Host, Lab};

/// Longest a `migrate` command may take in a test.
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// The ticking workload.
const WORKLOAD_BIN: &str = env!("CARGO_BIN_EXE_workload");

static MIGRATE_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A lab with both agents running.
pub struct Cluster {
    pub lab: Lab,
    pub agents: Vec<Agent>,
}

impl Cluster {
    /// Both agents with the lab cluster's credentials.
    pub fn start() -> Cluster {
        let lab = Lab::start().expect("lab");
        let auth = lab.shared_dir().join("cluster");
        let auth = auth.to_string_lossy().into_owned();
        Cluster::start_in(lab, [&["--auth", &auth], &["--auth", &auth]])
    }

    /// Both agents with `security` flags each (e.g. `--insecure`).
    pub fn start_with(security: [&[&str]; 2]) -> Cluster {
        Cluster::start_in(Lab::start().expect("lab"), security)
    }

    pub fn start_in(lab: Lab, security: [&[&str]; 2]) -> Cluster {
        Cluster::start_agents(lab, &bin("migrate-agent"), security, [&[], &[]])
    }

    /// Both agents of the lab's cluster from `agent` (the build with
    /// failpoints, say), each with its `env` added.
    pub fn start_env(agent: &std::path::Path, env: [&[(&str, &str)]; 2]) -> Cluster {
        Cluster::start_authed(Lab::start().expect("lab"), agent, [&[], &[]], env)
    }

    /// Agents on host1 and host2 of a lab of three hosts on one switch
    /// (host3 a client), from `agent`, each with its `env` added.
    pub fn start_switched(agent: &std::path::Path, env: [&[(&str, &str)]; 2]) -> Cluster {
        Cluster::start_authed(Lab::start_switched().expect("lab"), agent, [&[], &[]], env)
    }

    /// Both agents of `lab` from `agent`, with the lab cluster's
    /// credentials and each its `flags` and `env` added.
    pub fn start_authed(
        lab: Lab,
        agent: &std::path::Path,
        flags: [&[&str]; 2],
        env: [&[(&str, &str)]; 2],
    ) -> Cluster {
        let auth = lab.shared_dir().join("cluster");
        let auth = auth.to_string_lossy().into_owned();
        let with = |f: &[&str]| -> Vec<String> {
            ["--auth", auth.as_str()]
                .iter()
                .chain(f)
                .map(|a| a.to_string())
                .collect()
        };
        let (one, two) = (with(flags[0]), with(flags[1]));
        let one: Vec<&str> = one.iter().map(String::as_str).collect();
        let two: Vec<&str> = two.iter().map(String::as_str).collect();
        Cluster::start_agents(lab, agent, [&one, &two], env)
    }

    /// Both agents of `lab` from `agent`, each with its `security` flags
    /// (and any others) and its `env` added.
    pub fn start_agents(
        lab: Lab,
        agent: &std::path::Path,
        security: [&[&str]; 2],
        env: [&[(&str, &str)]; 2],
    ) -> Cluster {
        let a1 = lab
            .host("host1")
            .spawn_agent_env(
                agent,
                &[lab.host("host2")],
                &lab.shared_dir().join("agent1.log"),
                security[0],
                env[0],
            )
            .expect("agent on host1");
        let a2 = lab
            .host("host2")
            .spawn_agent_env(
                agent,
                &[lab.host("host1")],
                &lab.shared_dir().join("agent2.log"),
                security[1],
                env[1],
            )
            .expect("agent on host2");
        Cluster {
            lab,
            agents: vec![a1, a2],
        }
    }

    pub fn h1(&self) -> &Host {
        self.lab.host("host1")
    }

    pub fn h2(&self) -> &Host {
        self.lab.host("host2")
    }

    /// The client host of a switched lab.
    pub fn h3(&self) -> &Host {
        self.lab.host("host3")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.lab.shared_dir().join(name)
    }

    /// Runs `migrate ARGS` on host1.
    pub fn migrate(&self, args: &[&str]) -> Output {
        self.migrate_as(None, args)
    }

    /// Starts `migrate ARGS` on host1 in the background, its output
    /// captured.
    pub fn spawn_migrate(&self, args: &[&str]) -> Child {
        self.h1()
            .command(bin("migrate"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("migrate")
    }

    /// Runs `migrate ARGS` on `host`.
    pub fn migrate_from(&self, host: &Host, args: &[&str]) -> Output {
        self.run_migrate(host.command(bin("migrate")), args)
    }

    /// Migrates `pid` from `host` to `to`, which must succeed; returns
    /// its pid there.
    pub fn moved(&self, host: &Host, pid: i32, to: &str) -> i32 {
        let out = self.migrate_from(host, &[&pid.to_string(), "--to", to]);
        assert_eq!(out.status.code(), Some(0), "{}", self.logs());
        parse_summary(&String::from_utf8_lossy(&out.stdout)).0
    }

    pub fn migrate_as(&self, uid: Option<u32>, args: &[&str]) -> Output {
        let c = match uid {
            None => self.h1().command(bin("migrate")),
            Some(NOBODY) => as_nobody(self.h1(), bin("migrate")),
            Some(u) => {
                let mut c = self.h1().command("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--clear-groups")
                    .arg(bin("migrate"));
                c
            }
        };
        self.run_migrate(c, args)
    }

    fn run_migrate(&self, mut c: std::process::Command, args: &[&str]) -> Output {
        // Bounded: a migration that never ends fails the test (the lab's
        // teardown then kills everything left in its hosts).
        let n = MIGRATE_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (o, e) = (
            self.path(&format!("migrate{n}.out")),
            self.path(&format!("migrate{n}.err")),
        );
        let mut child = c
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&o).unwrap())
            .stderr(fs::File::create(&e).unwrap())
            .spawn()
            .expect("run migrate");
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if t.elapsed() > MIGRATE_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "migrate {args:?} did not end within {MIGRATE_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            sleep(Duration::from_millis(20));
        };
        let out = Output {
            status,
            stdout: fs::read(&o).unwrap_or_default(),
            stderr: fs::read(&e).unwrap_or_default(),
        };
        eprintln!(
            "migrate {args:?} -> {:?}\n  stdout: {}  stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["agent1.log", "agent2.log"] {
            s += &format!(
                "--- {f}\n{}\n",
                fs::read_to_string(self.path(f)).unwrap_or_default()
            );
        }
        s
    }
}

/// A process started in a host with its stdout in a file.
pub struct Proc {
    pub child: Child,
    pub out: PathBuf,
    pub pid: i32,
}

impl Proc {
    /// Starts `program` in `host`, its output appended to file `out` (in
    /// append mode, so that an original and its copy writing there in
    /// turn, both with the file, leave their lines in time order).
    pub fn start(host: &Host, out: PathBuf, program: &str, args: &[&str]) -> Proc {
        // Emptied, not made again: a file made for another user (see
        // `nobody_file`) keeps its owner.
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        file.set_len(0).unwrap();
        let child = host
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start workload");
        let mut p = Proc { child, out, pid: 0 };
        assert!(
            p.wait_for("pid ", 30),
            "workload did not start: {}",
            p.text()
        );
        let text = p.text();
        p.pid = text
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("pid line");
        p
    }

    pub fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn wait_for(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.text().contains(needle))
    }

    pub fn ticks(&self) -> Vec<(u64, u64)> {
        self.text()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("tick ")?.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uid and gid of user nobody.
pub const NOBODY: u32 = 65534;

/// `program` in `host`, to run as user nobody (uid and gid 65534, no
/// supplementary groups).
pub fn as_nobody(host: &Host, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut c = host.command("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    c
}

/// Starts `program ARGS` in `host` as user nobody, its output in `out`
/// (see [`Proc::start`]).
pub fn start_as_nobody(host: &Host, out: PathBuf, program: &str, args: &[&str]) -> Proc {
    let mut all = vec!["--reuid=65534", "--regid=65534", "--clear-groups", program];
    all.extend_from_slice(args);
    Proc::start(host, out, "setpriv", &all)
}

/// A new empty file at `path` owned by nobody, for the output of a process
/// of nobody's: the destination opens it again as that user.
pub fn nobody_file(path: PathBuf) -> PathBuf {
    fs::File::create(&path).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    path
}

pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

/// Whether `pid` is a live (not zombie) process inside `host`.
pub fn alive_in(host: &Host, pid: i32) -> bool {
    state_in(host, pid).is_some_and(|s| !matches!(s, 'Z' | 'X'))
}

/// Whether `pid` runs in `host`: alive and not stopped (a frozen
/// original is `t`, stopped by its tracer).
pub fn runs_in(host: &Host, pid: i32) -> bool {
    state_in(host, pid).is_some_and(|s| !matches!(s, 'Z' | 'X' | 't' | 'T'))
}

/// The state letter of `pid` in `host` (`/proc/PID/stat` field 3).
fn state_in(host: &Host, pid: i32) -> Option<char> {
    let stat = fs::read_to_string(host.root_path(format!("proc/{pid}/stat"))).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `/proc/PID/status` lines of `pid` in `host` that start with `key`.
pub fn status_line(host: &Host, pid: i32, key: &str) -> String {
    fs::read_to_string(host.root_path(format!("proc/{pid}/status")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(key))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ends process `pid` in `host` if it still runs (a test's cleanup: the
/// process may have ended by itself).
pub fn end_in(host: &Host, pid: i32) {
    let _ = host
        .command("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

pub fn signal_in(host: &Host, pid: i32, sig: &str) {
    let st = host
        .command("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid} failed in {}", host.name());
}

/// Parses `migrated A -> H (pid B): downtime X ms, ...`.
pub fn parse_summary(stdout: &str) -> (i32, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("migrated "))
        .expect("summary line");
    let new_pid = line
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .expect("new pid");
    let downtime = line
        .split("downtime ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .and_then(|s| s.parse().ok())
        .expect("downtime");
    (new_pid, downtime)
}

/// The migration id in a message that says how to resolve a kept
/// original (`migrate resolve ID ...`).
pub fn resolve_id(message: &str) -> String {
    message
        .split("migrate resolve ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a resolve command in the message")
        .to_string()
}

/// Asserts `out` is a refusal with exit status `code` naming `needle`.
pub fn assert_refused(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// The lines `p` printed that start with `prefix`.
pub fn lines_of(p: &Proc, prefix: &str) -> Vec<String> {
    p.text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Sends `sig` to `pid` in `host` and returns the next line starting with
/// `prefix` that `p` prints.
pub fn answer(p: &Proc, host: &Host, pid: i32, sig: &str, prefix: &str, secs: u64) -> String {
    let n = lines_of(p, prefix).len();
    signal_in(host, pid, sig);
    assert!(
        wait_until(secs, || lines_of(p, prefix).len() > n),
        "no {prefix:?} line from {pid} in {}: {}",
        host.name(),
        p.text()
    );
    lines_of(p, prefix)[n].clone()
}

/// Asserts `p` still runs on host1 under its own pid and goes on printing
/// (for a program that prints lines other than ticks).
pub fn assert_untouched_lines(c: &Cluster, p: &Proc) {
    assert!(alive_in(c.h1(), p.pid));
    let n = p.text().lines().count();
    assert!(
        wait_until(10, || p.text().lines().count() > n + 3),
        "stopped running"
    );
}

/// Asserts the workload still ticks on host1 under its own pid.
pub fn assert_untouched(c: &Cluster, w: &Proc) {
    assert!(
        alive_in(c.h1(), w.pid),
        "process {} is gone from host1",
        w.pid
    );
    let n = w.ticks().len();
    assert!(
        wait_until(10, || w.ticks().len() > n + 3),
        "process {} stopped ticking",
        w.pid
    );
}

/// A memory figure of the agent in `host` (`key`: `VmRSS:`, `VmHWM:`),
/// KiB, from its `/proc/PID/status`.
pub fn agent_memory_kib(host: &Host, key: &str) -> u64 {
    status_line(host, agent_pid_in(host), key)
        .strip_prefix(key)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The pid of the agent as seen inside `host`.
pub fn agent_pid_in(host: &Host) -> i32 {
    pids_named(host, "migrate-agent")[0]
}

/// Pids (as seen inside `host`) of the processes called exactly `name`.
pub fn pids_named(host: &Host, name: &str) -> Vec<i32> {
    let out = host
        .command("pgrep")
        .args(["-x", name])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Outer-namespace pid of the agent process behind `agent`'s nsenter.
pub fn agent_outer_pid(agent: &Agent) -> i32 {
    let n = agent.pid();
    fs::read_to_string(format!("/proc/{n}/task/{n}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("agent pid")
}

/// Asks the workload `w`, running as `pid` on `host`, to check its memory;
/// waits for its next `verify` line and returns it.
pub fn verify_memory(c: &Cluster, host: &Host, pid: i32, w: &Proc) -> String {
    let answer = try_verify_memory(host, pid, w, 60);
    answer.unwrap_or_else(|| panic!("no verification answer from {pid}\n{}", c.logs()))
}

/// As [`verify_memory`], for a process that may be gone: its answer, or
/// None if it could not be asked or said nothing within `secs`.
pub fn try_verify_memory(host: &Host, pid: i32, w: &Proc, secs: u64) -> Option<String> {
    let lines = |w: &Proc| -> Vec<String> {
        w.text()
            .lines()
            .filter(|l| l.starts_with("verify"))
            .map(String::from)
            .collect()
    };
    let before = lines(w).len();
    let asked = host
        .command("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !asked || !wait_until(secs, || lines(w).len() > before) {
        return None;
    }
    lines(w).get(before).cloned()
}

/// Starts a 1 GiB workload on host1 and a stop-copy of it to host2, and
/// calls `interrupt` while the pages cross: once host2 has received 64 MiB
/// more than before (its veth's counter; the workload is frozen by then).
/// Returns the workload, `migrate`'s output and how long it took.
pub fn interrupted_stop_copy(c: &Cluster, interrupt: impl FnOnce()) -> (Proc, Output, Duration) {
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD_BIN, &["--mib", "1024"]);
    assert!(w.wait_for("ready 1024", 120));
    let pid = w.pid.to_string();
    let (before, _) = c.h2().link_bytes();
    let t = Instant::now();
    let out = std::thread::scope(|s| {
        let m = s.spawn(|| c.migrate(&[&pid, "--to", "host2", "--mode", "stop-copy"]));
        let crossing = wait_until(60, || {
            m.is_finished() || c.h2().link_bytes().0 > before + (64 << 20)
        });
        assert!(
            crossing && !m.is_finished(),
            "the migration ended before its pages crossed, or they never did"
        );
        interrupt();
        m.join().unwrap()
    });
    (w, out, t.elapsed())
}

/// Makes sure pid `pid` is in use inside `host` (so that a process
/// migrated there cannot get it back): by a process started for it, ended
/// on drop, unless something there already has it.
pub struct PidHolder<'a> {
    host: &'a Host,
    /// The holder started for it, if one was needed.
    started: Option<i32>,
}

impl<'a> PidHolder<'a> {
    /// Takes `pid` in `host` by setting the namespace's last pid just
    /// below it before a fork; `None` if something else got there first.
    pub fn take(host: &'a Host, pid: i32) -> Option<PidHolder<'a>> {
        if host.root_path(format!("proc/{pid}")).exists() {
            return Some(PidHolder {
                host,
                started: None,
            });
        }
        let script = format!(
            "echo {} > /proc/sys/kernel/ns_last_pid && {{ sleep 600 <&- >&- 2>&- & echo $!; }}",
            pid - 1
        );
        // The shell itself may get the pid: it is free again once the
        // shell is gone, and the next try gets it.
        for _ in 0..5 {
            let out = host.command("sh").args(["-c", &script]).output().ok()?;
            let got: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            let holder = PidHolder {
                host,
                started: Some(got),
            };
            if got == pid {
                return Some(holder);
            }
        }
        None
    }
}

impl Drop for PidHolder<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.started {
            let _ = self
                .host
                .command("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The service address the network tests move, on the lab's network.
pub const SERVICE: &str = "10.77.0.100";

/// The IPv6 service address, on the lab's IPv6 network.
pub const SERVICE6: &str = "fd77::100";

/// Puts the service address on host1, beside its own.
pub fn serve_address(c: &Cluster) {
    serve_address_at(c, SERVICE);
}

/// Puts `addr` (the lab's network: a /24 or a /64) on host1, beside its
/// own.
pub fn serve_address_at(c: &Cluster, addr: &str) {
    let (family, prefix, nodad) = match addr.contains(':') {
        true => ("-6", 64, &["nodad"][..]),
        false => ("-4", 24, &[][..]),
    };
    let st = c
        .h1()
        .command("ip")
        .args([
            family,
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            "mgl0",
        ])
        .args(nodad)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Whether `host` has the service address.
pub fn has_service(host: &Host) -> bool {
    has_address(host, SERVICE)
}

/// Whether `host` has `addr`.
pub fn has_address(host: &Host, addr: &str) -> bool {
    let out = host.command("ip").args(["-o", "addr"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {addr}/"))
}

/// A client on host3 of an echo server at the service address and
/// `port`: `lines` numbered lines, one every `delay` seconds, each checked
/// as it comes back; its output in `out`.
pub fn echo_client(c: &Cluster, out: &str, port: &str, lines: u32, delay: &str) -> Proc {
    echo_client_of(c, out, SERVICE, port, lines, delay)
}

/// [`echo_client`] of a server at `addr`.
pub fn echo_client_of(
    c: &Cluster,
    out: &str,
    addr: &str,
    port: &str,
    lines: u32,
    delay: &str,
) -> Proc {
    Proc::start(
        c.h3(),
        c.path(out),
        "python3",
        &[
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scripts/tcp_echo_client.py"
            ),
            addr,
            port,
            &lines.to_string(),
            delay,
        ],
    )
}

/// A command prefix that runs the rest with only the standard streams
/// open (whatever runs the tests may leave descriptors open that would
/// lead outside a moved tree; dash cannot close those above 9).
pub const CLOSED: &str =
    "python3 -c 'import os, sys; os.closerange(3, 4096); os.execvp(sys.argv[1], sys.argv[1:])'";
