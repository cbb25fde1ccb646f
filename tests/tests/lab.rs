//! The lab harness itself: hosts come up isolated, talk over the veth
//! link, run the workloads, and leave nothing behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_tests::bins::bin;
use migrate_tests::lab::{Host, Lab};
use migrate_tests::require_lab;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const UFFD_EVENTS: &str = env!("CARGO_BIN_EXE_uffd_events");
const PY_OBJECTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/py_objects.py");

fn netns_names() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mgl-<pid>-<n>-`: the prefix of this lab's namespaces, read off its
/// shared directory `/var/tmp/migrate-lab-<pid>-<n>`.
fn ns_prefix(lab: &Lab) -> String {
    let dir = lab.shared_dir().file_name().unwrap().to_string_lossy();
    format!("mgl-{}-", dir.strip_prefix("migrate-lab-").unwrap())
}

fn ours(prefix: &str) -> Vec<String> {
    netns_names()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn gone(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z"))
        .unwrap_or(true)
}

/// Asserts a dropped lab left nothing: namespaces, inits, shared dir.
fn assert_torn_down(prefix: &str, inits: [i32; 2], shared: &Path) {
    let left = ours(prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for p in inits {
        assert!(gone(p), "host init {p} survived teardown");
    }
    assert!(!shared.exists(), "{} survived teardown", shared.display());
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(10));
    }
    false
}

/// A program running in a host, stdout in a file; killed by pid on drop.
struct InHost<'a> {
    host: &'a Host,
    nsenter: Child,
    out: PathBuf,
    pid: i32,
}

impl<'a> InHost<'a> {
    fn start(host: &'a Host, out: PathBuf, program: &str, args: &[&str]) -> InHost<'a> {
        let nsenter = host
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start in host");
        let mut p = InHost {
            host,
            nsenter,
            out,
            pid: 0,
        };
        assert!(p.wait_for("pid ", 30), "{program} did not start");
        p.pid = p
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|v| v.trim().parse().ok())
            .expect("pid line");
        p
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.text().contains(needle))
    }

    fn signal(&self, sig: &str) {
        let st = self
            .host
            .command("kill")
            .args([sig, &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig} {} failed", self.pid);
    }
}

impl Drop for InHost<'_> {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ = self
                .host
                .command("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // nsenter exits once its child is gone.
        if !wait_until(5, || !matches!(self.nsenter.try_wait(), Ok(None))) {
            let _ = self.nsenter.kill();
        }
        let _ = self.nsenter.wait();
    }
}

#[test]
fn hosts_are_isolated_linked_and_torn_down() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    assert_eq!((h1.name(), h2.name()), ("host1", "host2"));
    assert_eq!(h1.addr().to_string(), "10.77.0.1");
    assert_eq!(h2.addr().to_string(), "10.77.0.2");
    let inits = [h1.init_pid(), h2.init_pid()];
    let prefix = ns_prefix(&lab);
    let shared = lab.shared_dir().to_path_buf();
    assert!(shared.is_dir());
    assert_eq!(ours(&prefix).len(), 2, "{}", netns_names());

    // Own PID namespace: small pids, own hostname.
    let out = h1
        .command("sh")
        .args(["-c", "echo $$; hostname"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!(pid < 100, "pid {pid} is not from a fresh namespace");
    assert_eq!(lines.next(), Some("host1"));

    // Private /tmp; the shared directory is the same everywhere.
    let st = h1
        .command("sh")
        .args(["-c", "echo hi > /tmp/only-h1"])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(h1.root_path("/tmp/only-h1").exists());
    assert!(!h2.root_path("/tmp/only-h1").exists());
    assert!(!Path::new("/tmp/only-h1").exists());
    let st = h2
        .command("sh")
        .arg("-c")
        .arg(format!("echo from-h2 > {}/note", shared.display()))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fs::read_to_string(shared.join("note")).unwrap(),
        "from-h2\n"
    );
    assert!(h1.root_path("/run/migrate").is_dir());

    // Each host sees only its own network devices.
    let out = h1.command("ip").args(["-o", "addr"]).output().unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains("10.77.0.1/24"), "{addrs}");
    assert!(!addrs.contains("10.77.0.2/24"), "{addrs}");

    // host1 reaches host2 over the veth link, from inside the hosts only:
    // ping where installed, else a TCP exchange.
    if ["/usr/bin/ping", "/bin/ping"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        let st = h1
            .command("ping")
            .args(["-c1", "-W2", "10.77.0.2"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ping host1 -> host2 failed");
    }
    let mut server = h2
        .command("python3")
        .args(["-c", include_str!("scripts/lab_pong_server.py")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "up");
    let out = h1
        .command("python3")
        .args(["-c", include_str!("scripts/lab_pong_client.py")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong");
    let _ = server.wait();

    drop(lab);
    assert_torn_down(&prefix, inits, &shared);
}

#[test]
fn two_labs_at_once_do_not_collide() {
    require_lab!();
    let a = Lab::start().expect("lab a");
    let b = Lab::start().expect("lab b");
    assert_ne!(ns_prefix(&a), ns_prefix(&b));
    assert_ne!(a.shared_dir(), b.shared_dir());
    for lab in [&a, &b] {
        // Same addresses in both labs, each on its own link.
        let out = lab
            .host("host2")
            .command("ip")
            .args(["-o", "addr"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.77.0.2/24"));
    }
    let (pa, pb) = (ns_prefix(&a), ns_prefix(&b));
    let ia = [a.host("host1").init_pid(), a.host("host2").init_pid()];
    let sa = a.shared_dir().to_path_buf();
    drop(a);
    assert_torn_down(&pa, ia, &sa);
    assert_eq!(ours(&pb).len(), 2, "lab b lost its namespaces");
    assert!(b.host("host1").root_path("/run/migrate").is_dir());
}

#[test]
fn a_panicking_test_still_tears_its_lab_down() {
    require_lab!();
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::start().expect("lab");
        *seen.lock().unwrap() = Some((
            ns_prefix(&lab),
            [lab.host("host1").init_pid(), lab.host("host2").init_pid()],
            lab.shared_dir().to_path_buf(),
        ));
        panic!("a test failing on purpose with its lab up");
    });
    assert!(r.is_err());
    let (prefix, inits, shared) = seen.lock().unwrap().take().expect("lab started");
    assert_torn_down(&prefix, inits, &shared);
}

#[test]
#[should_panic(expected = "no host host3")]
fn an_unknown_host_name_panics() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    lab.host("host3");
}

#[test]
fn workload_ticks_and_verifies_its_memory() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let h1 = lab.host("host1");
    let w = InHost::start(
        h1,
        lab.shared_dir().join("w.out"),
        WORKLOAD,
        &["--mib", "8", "--tick-ms", "5"],
    );
    assert!(w.pid < 100, "pid {} is not the host's", w.pid);
    assert!(w.wait_for("ready 8\n", 30), "{}", w.text());
    assert!(w.wait_for("\ntick 20 ", 10), "no ticks: {}", w.text());
    let ticks: Vec<(u64, u64)> = w
        .text()
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("tick ")?.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(ticks[0].0, 1);
    for p in ticks.windows(2) {
        assert_eq!(p[1].0, p[0].0 + 1, "tick numbers jump: {p:?}");
        assert!(p[1].1 > p[0].1, "clock went back: {p:?}");
    }
    w.signal("-USR1");
    assert!(w.wait_for("verify ok 2048", 20), "{}", w.text());
    assert!(!w.text().contains("FAIL"), "{}", w.text());
}

#[test]
fn uffd_events_checks_pass_without_migration() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let p = InHost::start(
        lab.host("host1"),
        lab.shared_dir().join("ev.out"),
        UFFD_EVENTS,
        &["--mib", "8"],
    );
    assert!(p.wait_for("ready", 30), "{}", p.text());
    p.signal("-USR2");
    assert!(p.wait_for("done", 30), "{}", p.text());
    let text = p.text();
    for check in ["fork ok", "dontneed ok", "mremap ok", "first ok", "all ok"] {
        assert!(text.contains(check), "{check} missing:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn py_objects_prints_the_same_result_on_both_hosts() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let result = |host: &str| {
        let out = lab
            .host(host)
            .command("python3")
            .args([PY_OBJECTS, "--mib", "10", "--fast"])
            .stdin(Stdio::null())
            .output()
            .expect("python3");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("\nready\n"), "{text}");
        text.lines()
            .find(|l| l.starts_with("result "))
            .expect("result line")
            .to_string()
    };
    let a = result("host1");
    assert_eq!(a.len(), "result ".len() + 64, "{a}");
    assert_eq!(a, result("host2"));
}

#[test]
fn spawn_agent_reports_an_agent_that_exits() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let fake = lab.shared_dir().join("fake-agent");
    fs::write(
        &fake,
        "#!/bin/sh\necho \"args: $*\"\necho 'the daemon is not built yet' >&2\nexit 2\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let log = lab.shared_dir().join("fake.log");
    let t = Instant::now();
    let err = match lab
        .host("host1")
        .spawn_agent(&fake, &[lab.host("host2")], &log)
    {
        Ok(_) => panic!("a failing agent was reported as running"),
        Err(e) => e.to_string(),
    };
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("the daemon is not built yet"), "{err}");
    assert!(err.contains("exit status: 2"), "{err}");
    let cluster = lab.shared_dir().join("cluster");
    assert!(
        err.contains(&format!("args: --auth {} ", cluster.display())),
        "{err}"
    );
    assert!(
        err.contains(
            "--name host1 --listen 10.77.0.1:7070 --socket /run/migrate/agent.sock \
             --peer host2=10.77.0.2:7070"
        ),
        "{err}"
    );
}

#[test]
fn an_agent_opens_its_socket_and_dies_with_its_handle() {
    require_lab!();
    let lab = Lab::start().expect("lab");
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    let log = lab.shared_dir().join("agent1.log");
    let mut agent = h1
        .spawn_agent(&bin("migrate-agent"), &[h2], &log)
        .expect("agent");
    assert!(h1.root_path("/run/migrate/agent.sock").exists());
    assert!(!h2.root_path("/run/migrate/agent.sock").exists());
    let wrapper = agent.pid();
    let inner: Vec<i32> = fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(inner.len(), 1, "{inner:?}");
    agent.kill();
    assert!(gone(inner[0]), "agent {} survived kill()", inner[0]);
    assert!(gone(wrapper), "nsenter {wrapper} survived kill()");
    agent.kill(); // idempotent
    drop(agent);
}

#[test]
fn three_hosts_on_a_switch_reach_each_other_and_are_torn_down() {
    require_lab!();
    let lab = Lab::start_switched().expect("lab");
    let h3 = lab.host("host3");
    assert_eq!(h3.addr().to_string(), "10.77.0.3");
    let prefix = ns_prefix(&lab);
    // Three hosts and the switch.
    assert_eq!(ours(&prefix).len(), 4, "{}", netns_names());
    let inits = [lab.host("host1").init_pid(), lab.host("host2").init_pid()];
    let shared = lab.shared_dir().to_path_buf();
    // The client reaches each of the other two over the bridge, and each
    // answers as itself.
    let serve = "import socket, sys\n\
                 s = socket.socket(); s.settimeout(10)\n\
                 s.bind((sys.argv[1], 7777)); s.listen(); print('up', flush=True)\n\
                 c, _ = s.accept(); c.sendall(sys.argv[2].encode())\n";
    let ask = "import socket, sys\n\
               print(socket.create_connection((sys.argv[1], 7777), timeout=5).recv(16).decode())\n";
    for name in ["host1", "host2"] {
        let h = lab.host(name);
        let addr = h.addr().to_string();
        let mut server = h
            .command("python3")
            .args(["-c", serve, &addr, name])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "up");
        let out = h3
            .command("python3")
            .args(["-c", ask, &addr])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
        let _ = server.wait();
    }
    drop(lab);
    assert_torn_down(&prefix, inits, &shared);
}
