//! Simulated hosts on one machine: each its own network namespace (two
//! joined by a veth pair, 10.77.0.1/24 and 10.77.0.2/24; or three, .3 a
//! client, on a bridge in a namespace of its own), PID namespace
//! with its own `/proc`, mount namespace with private `/tmp` and `/run`,
//! UTS and IPC namespaces. Dropping the [`Lab`] tears it all down, also
//! while a test unwinds from a panic.
//!
//! Lab addresses are only reachable from inside the hosts: run everything
//! that talks to them through [`Host::command`].

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bins::bin;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Port the agents listen on.
pub const AGENT_PORT: u16 = 7070;

/// Longest a host's init may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest [`Host::spawn_agent`] waits for the control socket.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest teardown waits for a killed process to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One simulated host.
pub struct Host {
    name: String,
    netns: String,
    addr: Ipv4Addr,
    /// `nsenter … unshare --fork`: the init's parent, which reaps it.
    unshare: Option<Child>,
    init: i32,
    /// The lab cluster's credentials (`migrate-agent keygen`).
    auth: PathBuf,
}

/// The hosts and a directory all can see.
pub struct Lab {
    hosts: Vec<Host>,
    shared: PathBuf,
    /// The namespace of the switch the hosts' links meet on, if they do
    /// (three hosts); two hosts are joined by one veth pair.
    switch: Option<String>,
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn ip(args: &[&str]) -> io::Result<()> {
    run(Command::new("ip").args(args))
}

/// Children of `pid` (outer namespace), from `/proc`.
fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits, bounded by [`EXIT_TIMEOUT`], for `child` to exit by itself, then
/// kills it if it has not; always reaps it.
fn reap(child: &mut Child) {
    let t = Instant::now();
    while t.elapsed() < EXIT_TIMEOUT {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn sigkill(pid: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with integer arguments; callers pass only pids of
        // processes this harness started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Lab {
    /// Builds the lab: hosts `host1` (10.77.0.1) and `host2` (10.77.0.2),
    /// network namespaces `mgl-<pid>-<n>-h1`/`-h2`, and a shared directory
    /// `/var/tmp/migrate-lab-<pid>-<n>`.
    pub fn start() -> io::Result<Lab> {
        Lab::start_hosts(2)
    }

    /// Three hosts on one switch (a bridge in a namespace of its own):
    /// host1 and host2 (10.77.0.1, .2) for agents, host3 (10.77.0.3) for
    /// clients, so that an address can move between host1 and host2 and
    /// host3 follow it.
    pub fn start_switched() -> io::Result<Lab> {
        Lab::start_hosts(3)
    }

    fn start_hosts(n: u8) -> io::Result<Lab> {
        let tag = format!(
            "mgl-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let shared = PathBuf::from(format!("/var/tmp/migrate-lab-{}", &tag[4..]));
        std::fs::create_dir_all(&shared)?;
        // From here on, Drop cleans up whatever exists.
        let mut lab = Lab {
            hosts: Vec::new(),
            shared,
            switch: None,
        };
        for i in 1..=n {
            let netns = format!("{tag}-h{i}");
            ip(&["netns", "add", &netns])?;
            lab.hosts.push(Host {
                name: format!("host{i}"),
                netns,
                addr: Ipv4Addr::new(10, 77, 0, i),
                unshare: None,
                init: 0,
                auth: lab.shared.join("cluster"),
            });
        }
        let ns: Vec<String> = lab.hosts.iter().map(|h| h.netns.clone()).collect();
        if n == 2 {
            // Both ends are born inside their namespaces: nothing outside.
            ip(&[
                "link", "add", "mgl0", "netns", &ns[0], "type", "veth", "peer", "name", "mgl1",
                "netns", &ns[1],
            ])?;
        } else {
            let sw = format!("{tag}-sw");
            ip(&["netns", "add", &sw])?;
            lab.switch = Some(sw.clone());
            ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", "br0", "up"])?;
            for (i, ns) in ns.iter().enumerate() {
                let (dev, port) = (format!("mgl{i}"), format!("sw{i}"));
                ip(&[
                    "link", "add", &dev, "netns", ns, "type", "veth", "peer", "name", &port,
                    "netns", &sw,
                ])?;
                ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
                ip(&["-n", &sw, "link", "set", &port, "up"])?;
            }
        }
        for (i, h) in lab.hosts.iter().enumerate() {
            let dev = format!("mgl{i}");
            let addr = format!("{}/24", h.addr);
            ip(&["-n", &h.netns, "addr", "add", &addr, "dev", &dev])?;
            let addr6 = format!("{}/64", h.addr6());
            ip(&[
                "-n", &h.netns, "-6", "addr", "add", &addr6, "dev", &dev, "nodad",
            ])?;
            ip(&["-n", &h.netns, "link", "set", &dev, "up"])?;
            ip(&["-n", &h.netns, "link", "set", "lo", "up"])?;
        }
        // The cluster's credentials, as `migrate-agent keygen` makes them.
        run(Command::new(bin("migrate-agent"))
            .arg("keygen")
            .arg(lab.shared.join("cluster"))
            .args(["--hosts", "host1,host2"]))?;
        let init_bin = bin("lab-init");
        for h in &mut lab.hosts {
            h.boot(&init_bin)?;
        }
        Ok(lab)
    }

    /// The host named `name` (`host1`, `host2`, `host3` in a switched
    /// lab); panics on another name.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A directory at the same path in both hosts and in the test; removed
    /// with the lab.
    pub fn shared_dir(&self) -> &Path {
        &self.shared
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut u) = h.unshare.take() {
                // Killing the init makes the kernel kill its whole PID
                // namespace; `unshare` exits once it has reaped the init,
                // which is after every process of the namespace is gone.
                let init = if h.init > 0 {
                    vec![h.init]
                } else {
                    children(u.id())
                };
                init.into_iter().for_each(sigkill);
                reap(&mut u);
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &h.netns])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(sw) = self.switch.take() {
            let _ = Command::new("ip")
                .args(["netns", "del", &sw])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.shared);
    }
}

impl Host {
    /// Starts the host's init in its namespaces and waits (bounded) for it.
    fn boot(&mut self, init_bin: &Path) -> io::Result<()> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["unshare", "--pid", "--fork", "--mount", "--mount-proc"])
            .args(["--propagation", "private", "--uts", "--ipc"])
            .arg(init_bin)
            .arg(&self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take();
        if let Some(err) = child.stderr.take() {
            // util-linux 2.38's `unshare --fork` says "sigprocmask unblock
            // failed" whenever its child ends; everything else is passed on.
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if !line.contains("sigprocmask unblock failed") {
                        eprintln!("{line}");
                    }
                }
            });
        }
        self.unshare = Some(child);
        let out = out.ok_or_else(|| io::Error::other("no stdout from the host init"))?;
        // The reader thread ends when the init's stdout closes (at the
        // latest when teardown kills it).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(out).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::other(format!(
                    "{} did not come up within {READY_TIMEOUT:?}",
                    self.name
                )))
            }
        };
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "{} did not come up (init said {:?})",
                self.name,
                line.trim()
            )));
        }
        let id = self.unshare.as_ref().map_or(0, Child::id);
        self.init = children(id)
            .first()
            .copied()
            .ok_or_else(|| io::Error::other(format!("init of {} not found", self.name)))?;
        Ok(())
    }

    /// `host1` or `host2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's IPv6 address on the lab's link (`fd77::N/64`).
    pub fn addr6(&self) -> std::net::Ipv6Addr {
        let [.., i] = self.addr.octets();
        std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, u16::from(i))
    }

    /// The host's address on the lab's link.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Bytes the host has received and sent on its lab links so far, as
    /// the kernel counts them on its veth (every interface but loopback).
    pub fn link_bytes(&self) -> (u64, u64) {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-s", "-j", "link", "show"])
            .stdin(Stdio::null())
            .output()
            .expect("ip -s link");
        let links: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("ip -j gives JSON");
        let mut sum = (0, 0);
        for l in links.as_array().into_iter().flatten() {
            if l["ifname"] == "lo" {
                continue;
            }
            let n = |dir: &str| l["stats64"][dir]["bytes"].as_u64().unwrap_or(0);
            sum = (sum.0 + n("rx"), sum.1 + n("tx"));
        }
        sum
    }

    /// Pid (outer namespace) of the host's init.
    pub fn init_pid(&self) -> i32 {
        self.init
    }

    /// A command that runs inside every namespace of the host
    /// (`nsenter -t <init> --net --pid --mount --uts --ipc -- program`).
    /// The spawned [`Child`] is the `nsenter` (outer namespace), which
    /// forks `program` into the host's PID namespace and waits for it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string()])
            .args(["--net", "--pid", "--mount", "--uts", "--ipc", "--"])
            .arg(program);
        c
    }

    /// A host-private path as the test can reach it:
    /// `/proc/<init>/root/<p>`.
    pub fn root_path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        let rel = p.strip_prefix("/").unwrap_or(p);
        PathBuf::from(format!("/proc/{}/root", self.init)).join(rel)
    }

    /// The proportional set size of `pids` in this host together, KiB
    /// (pages shared by n of them count 1/n each; a pid gone counts 0).
    pub fn pss_kib(&self, pids: &[i32]) -> u64 {
        pids.iter()
            .map(|pid| {
                std::fs::read_to_string(self.root_path(format!("proc/{pid}/smaps_rollup")))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Starts `agent_bin --name <host> --listen <addr>:7070 --socket
    /// /run/migrate/agent.sock --peer <peer>=<addr>:7070…` in this host,
    /// stdout and stderr to `log`, and waits (at most 10 s) for its control
    /// socket. An agent that exits first is an error carrying its log's
    /// tail.
    pub fn spawn_agent(&self, agent_bin: &Path, peers: &[&Host], log: &Path) -> io::Result<Agent> {
        let auth = self.auth.to_string_lossy().into_owned();
        self.spawn_agent_with(agent_bin, peers, log, &["--auth", &auth])
    }

    /// As [`Host::spawn_agent`], with `security` (e.g. `--insecure`, or
    /// `--auth DIR` of another cluster) instead of the lab's credentials.
    pub fn spawn_agent_with(
        &self,
        agent_bin: &Path,
        peers: &[&Host],
        log: &Path,
        security: &[&str],
    ) -> io::Result<Agent> {
        self.spawn_agent_env(agent_bin, peers, log, security, &[])
    }

    /// As [`Host::spawn_agent_with`], with `env` added to the agent's
    /// environment (e.g. `FAILPOINTS`).
    pub fn spawn_agent_env(
        &self,
        agent_bin: &Path,
        peers: &[&Host],
        log: &Path,
        security: &[&str],
        env: &[(&str, &str)],
    ) -> io::Result<Agent> {
        let f = std::fs::File::create(log)?;
        let mut c = self.command(agent_bin);
        c.envs(env.iter().copied());
        c.args(security);
        // State in the host's private /run: it outlives an agent restart,
        // not the lab.
        c.args(["--state-dir", "/run/migrate/state"]);
        c.args(["--name", &self.name])
            .args(["--listen", &format!("{}:{AGENT_PORT}", self.addr)])
            .args(["--socket", "/run/migrate/agent.sock"]);
        for p in peers {
            c.arg("--peer")
                .arg(format!("{}={}:{AGENT_PORT}", p.name, p.addr));
        }
        let child = c
            .env(
                "RUST_LOG",
                // The dump's steps too: a test that fails shows how far
                // the freeze got.
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "info,migrate_agent::capture::dump=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()?;
        let mut agent = Agent { child };
        let sock = self.root_path("/run/migrate/agent.sock");
        let t = Instant::now();
        while t.elapsed() < AGENT_TIMEOUT {
            // Listening, not merely present: a killed agent leaves its
            // socket file behind. (The agent binds its TCP port first.)
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok(agent);
            }
            if let Ok(Some(st)) = agent.child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(io::Error::other(format!(
                    "agent on {} exited ({st}) before opening its socket; {} ends:\n{}",
                    self.name,
                    log.display(),
                    tail.join("\n")
                )));
            }
            sleep(Duration::from_millis(10));
        }
        agent.kill();
        Err(io::Error::other(format!(
            "agent on {} did not open {} within {AGENT_TIMEOUT:?}; log: {}",
            self.name,
            sock.display(),
            log.display()
        )))
    }
}

/// A running agent, behind the `nsenter` that started it in its host.
/// Dropping it kills the agent.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Pid (outer namespace) of the `nsenter` wrapper; the agent itself is
    /// its only child (`/proc/<pid>/task/<pid>/children`).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `within` for the agent to end by itself; its exit
    /// status (that of `nsenter`, which passes it on), or None if it
    /// still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if t.elapsed() > within {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the agent by pid, waits (bounded) until `nsenter` has
    /// reaped it, and reaps `nsenter`. Idempotent.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            children(self.child.id()).into_iter().for_each(sigkill);
        }
        reap(&mut self.child);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
