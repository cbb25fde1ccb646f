//! A service address that moves with its process (`--move-address`), and
//! the established TCP connections on it, repaired on the destination:
//! three hosts on one switch, the client on host3.

use migrate_tests::bins::{bin, failpoint_agent};
use migrate_tests::require_lab;

mod common;
use common::*;

const PORT: &str = "7100";

/// The echo server on host1, bound to the service address, and a client
/// on host3 that sends `lines` lines, one every 5 ms, checking each echo.
fn server_and_client(c: &Cluster, lines: u32) -> (Proc, Proc) {
    server_and_client_at(c, SERVICE, lines)
}

/// [`server_and_client`] at the service address `addr`.
fn server_and_client_at(c: &Cluster, addr: &str, lines: u32) -> (Proc, Proc) {
    serve_address_at(c, addr);
    let server = Proc::start(
        c.h1(),
        c.path("server.out"),
        "python3",
        &[
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scripts/tcp_echo_server.py"
            ),
            addr,
            PORT,
        ],
    );
    let client = echo_client_of(c, "client.out", addr, PORT, lines, "0.005");
    assert!(client.wait_for("echoed 100", 30), "{}", client.text());
    (server, client)
}

/// The client ends with every one of its `lines` echoed, nothing lost,
/// repeated or changed, its connection never reset.
fn assert_client_ends_ok(c: &Cluster, client: &Proc, lines: u32) {
    assert!(
        client.wait_for("done ", 60),
        "{}\n{}",
        client.text(),
        c.logs()
    );
    assert!(
        client.text().contains(&format!("done {lines} ok")),
        "{}\n{}",
        client.text(),
        c.logs()
    );
}

/// A new client of the server at the service address is served.
fn assert_a_new_client_is_served(c: &Cluster) {
    let again = echo_client(c, "again.out", PORT, 20, "0.001");
    assert!(again.wait_for("done ", 30), "{}", again.text());
    assert!(again.text().contains("done 20 ok"), "{}", again.text());
}

#[test]
fn an_echo_server_moves_with_its_address_and_back_and_its_client_sees_nothing() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    let (server, client) = server_and_client(&c, 2000);
    let echoed = || {
        client
            .text()
            .lines()
            .filter(|l| l.starts_with("echoed "))
            .count()
    };
    let pid = server.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2", "--move-address", SERVICE]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(echoed() < 15, "the client was done before the move");
    // The address is on host2 only, where the server now runs.
    assert!(has_service(c.h2()));
    assert!(!has_service(c.h1()));
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert!(c.h2().root_path(format!("proc/{new_pid}/cmdline")).exists());
    // The connection carries on there; then it all moves back.
    let there = echoed();
    assert!(
        wait_until(30, || echoed() >= there + 2),
        "{}\n{}",
        client.text(),
        c.logs()
    );
    let new = new_pid.to_string();
    let back = c.migrate_from(c.h2(), &[&new, "--to", "host1", "--move-address", SERVICE]);
    assert_eq!(back.status.code(), Some(0), "{}", c.logs());
    assert!(has_service(c.h1()));
    assert!(!has_service(c.h2()));
    assert!(echoed() < 20, "the client was done before the move back");
    // Every byte came back, none lost, repeated or changed, and the
    // connection was never reset: the client says so at its end.
    assert_client_ends_ok(&c, &client, 2000);
    // A new client reaches it.
    assert_a_new_client_is_served(&c);
}

#[test]
fn an_ipv6_echo_server_moves_with_its_address_announced_to_its_neighbours() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    let (server, client) = server_and_client_at(&c, SERVICE6, 1000);
    // host3 knows the address at host1's interface.
    let mac = |h: &migrate_tests::lab::Host, dev: &str| {
        let out = h
            .command("ip")
            .args(["-o", "link", "show", dev])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let at = text.find("link/ether ").expect("a hardware address") + 11;
        text[at..at + 17].to_string()
    };
    let neighbour = || {
        let out = c
            .h3()
            .command("ip")
            .args(["-6", "neigh", "show", SERVICE6])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        neighbour().contains(&mac(c.h1(), "mgl0")),
        "{}",
        neighbour()
    );
    // host2 knows host3 already, so it need not ask for it from the
    // service address once there (a solicitation would tell host3 too).
    let ping = c
        .h2()
        .command("ping")
        .args(["-6", "-c", "1", "-W", "5", &c.h3().addr6().to_string()])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    let pid = server.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2", "--move-address", SERVICE6]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(has_address(c.h2(), SERVICE6) && !has_address(c.h1(), SERVICE6));
    // host2 told host3 it has the address now (an unsolicited neighbour
    // advertisement): without it host3 would go on sending to host1 until
    // its entry timed out.
    let host2 = mac(c.h2(), "mgl1");
    assert!(
        wait_until(3, || neighbour().contains(&host2)),
        "{}\n{}",
        neighbour(),
        c.logs()
    );
    assert_client_ends_ok(&c, &client, 1000);
}

#[test]
fn a_forking_server_moves_as_a_tree_with_its_address_and_its_child_keeps_the_client() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    serve_address(&c);
    // A tree keeps its pids: they start where host2 has none taken.
    let server = Proc::start(
        c.h1(),
        c.path("server.out"),
        "sh",
        &[
            "-c",
            "echo 8000 > /proc/sys/kernel/ns_last_pid; python3 \"$0\" \"$@\" & wait",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/scripts/tcp_echo_server.py"
            ),
            SERVICE,
            PORT,
            "fork",
        ],
    );
    let client = echo_client(&c, "client.out", PORT, 1500, "0.005");
    assert!(client.wait_for("echoed 100", 30), "{}", client.text());
    let said = |what: &str| -> i32 {
        server
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {what:?} in {}", server.text()))
    };
    let (root, child) = (said("pid "), said("child "));
    let out = c.migrate(&[
        &root.to_string(),
        "--to",
        "host2",
        "--move-address",
        SERVICE,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    assert!(has_service(c.h2()) && !has_service(c.h1()));
    // Both run on host2, the child still holding the client's connection
    // (which it inherited: the parent holds it too), losing, repeating or
    // changing no byte.
    for pid in [root, child] {
        assert!(
            c.h2().root_path(format!("proc/{pid}/cmdline")).exists(),
            "{pid} on host2\n{}",
            c.logs()
        );
    }
    assert_client_ends_ok(&c, &client, 1500);
    // The parent, moved with its listening socket, serves a new client.
    assert_a_new_client_is_served(&c);
    for pid in [root, child] {
        end_in(c.h2(), pid);
    }
}

#[test]
fn a_failure_before_the_commit_gives_the_address_back_and_the_connection_goes_on() {
    require_lab!();
    let c = Cluster::start_switched(
        &failpoint_agent(),
        [&[("FAILPOINTS", "source.after-ready=return")], &[]],
    );
    let (server, client) = server_and_client(&c, 600);
    let pid = server.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2", "--move-address", SERVICE]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{}", c.logs());
    assert!(stderr.contains("runs on here"), "{stderr}");
    // As if nothing happened: the address is back on host1 alone, and the
    // same connection carries on to its end with the original.
    assert!(has_service(c.h1()));
    assert!(!has_service(c.h2()));
    assert_client_ends_ok(&c, &client, 600);
    assert!(c.h1().root_path(format!("proc/{pid}/cmdline")).exists());
}

#[test]
fn a_copy_lost_with_its_agent_owed_pages_never_closes_its_connections_cleanly() {
    require_lab!();
    // host2's agent dies once the copy runs, pages still owed: its keeper
    // kills the copy.
    let c = Cluster::start_switched(
        &failpoint_agent(),
        [&[], &[("FAILPOINTS", "dest.after-resume=panic")]],
    );
    serve_address(&c);
    let at = format!("{SERVICE}:{PORT}");
    let server = Proc::start(
        c.h1(),
        c.path("server.out"),
        env!("CARGO_BIN_EXE_workload"),
        &["--mib", "64", "--echo", &at],
    );
    let client = echo_client(&c, "client.out", PORT, 3000, "0.005");
    assert!(client.wait_for("echoed 100", 30), "{}", client.text());
    let pid = server.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2", "--move-address", SERVICE]);
    assert_ne!(out.status.code(), Some(0), "{}", c.logs());
    // The copy is gone, and what the client sees is never the server's
    // clean close (a FIN) that would read as the end of the service's
    // answer: its connection went quiet (the keeper put it in repair mode
    // before the kill), and at most the host answers a reset.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !client.text().contains("closed by the server"),
        "{}\n{}",
        client.text(),
        c.logs()
    );
    assert!(!client.text().contains("done "), "{}", client.text());
}

#[test]
fn addresses_that_cannot_move_are_refused_before_the_freeze() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    let (server, client) = server_and_client(&c, 400);
    let pid = server.pid.to_string();
    // Without the address, its connection cannot move.
    let out = c.migrate(&[&pid, "--to", "host2"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--move-address"), "{err}");
    // Not an address of host1; host1's own (the agents' link).
    for (addr, why) in [
        ("10.77.0.200", "is not an address of this host"),
        ("10.77.0.1", "this agent's own"),
        ("fe80::1", "is link-local"),
    ] {
        let out = c.migrate(&[&pid, "--to", "host2", "--move-address", addr]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{addr}: {err}");
    }
    // The server ran on untouched, its address still here.
    assert!(has_service(c.h1()));
    assert_client_ends_ok(&c, &client, 400);
}

#[test]
fn redis_moves_with_its_address_under_a_benchmark_of_eight_clients() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    serve_address(&c);
    let port = "6391";
    let p = Proc::start(
        c.h1(),
        c.path("redis.out"),
        "sh",
        &[
            "-c",
            &format!(
                "echo pid $$; exec {CLOSED} redis-server --port {port} --bind {SERVICE} \
                 --save '' --appendonly no --daemonize no --protected-mode no"
            ),
        ],
    );
    assert!(
        p.wait_for("Ready to accept connections", 30),
        "{}",
        p.text()
    );
    // Eight clients, each waiting for every answer: any reset, error or
    // lost reply ends redis-benchmark with an error.
    let mut bench = c
        .h3()
        .command("redis-benchmark")
        .args(["-h", SERVICE, "-p", port, "-c", "8", "-n", "300000"])
        .args(["-t", "set,get", "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = c.migrate(&[
        &p.pid.to_string(),
        "--to",
        "host2",
        "--move-address",
        SERVICE,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", c.logs());
    assert!(
        bench.try_wait().unwrap().is_none(),
        "the benchmark ended before the move"
    );
    let done = bench.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(done.status.success(), "{text}\n{}", c.logs());
    for t in ["SET", "GET"] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{t}: ")) && l.contains("requests per second")),
            "{text}"
        );
    }
    // It runs on host2, with what the benchmark wrote.
    assert!(has_service(c.h2()) && !has_service(c.h1()));
    let got = c
        .h3()
        .command("redis-cli")
        .args(["-h", SERVICE, "-p", port, "GET", "key:__rand_int__"])
        .output()
        .unwrap();
    // (Its value: 3 random bytes.)
    assert_eq!(
        got.stdout.len(),
        4,
        "{:?}",
        String::from_utf8_lossy(&got.stdout)
    );
    let (new_pid, _) = parse_summary(&stdout);
    end_in(c.h2(), new_pid);
}

#[test]
fn a_user_moves_only_the_addresses_the_agent_hands_over() {
    require_lab!();
    let c = Cluster::start_authed(
        migrate_tests::lab::Lab::start_switched().expect("lab"),
        &bin("migrate-agent"),
        [&["--hand-over", SERVICE], &[]],
        [&[], &[]],
    );
    serve_address(&c);
    let other = "10.77.0.101";
    let st = c
        .h1()
        .command("ip")
        .args(["addr", "add", &format!("{other}/24"), "dev", "mgl0"])
        .status()
        .unwrap();
    assert!(st.success());
    // A server of user nobody's (the workload, echoing), its output a file
    // nobody may open on host2 too.
    let at = format!("{SERVICE}:{PORT}");
    let server = start_as_nobody(
        c.h1(),
        nobody_file(c.path("server.out")),
        env!("CARGO_BIN_EXE_workload"),
        &["--mib", "8", "--echo", &at],
    );
    let client = echo_client(&c, "client.out", PORT, 1200, "0.005");
    assert!(client.wait_for("echoed 100", 30), "{}", client.text());
    let pid = server.pid.to_string();
    // An address the agent does not hand over: root's to move.
    let refused = c.migrate_as(
        Some(NOBODY),
        &[
            &pid,
            "--to",
            "host2",
            "--move-address",
            SERVICE,
            "--move-address",
            other,
        ],
    );
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("address {other}: only root")),
        "{err}"
    );
    assert!(!err.contains(&format!("address {SERVICE}")), "{err}");
    // The one it hands over.
    let moved = c.migrate_as(
        Some(NOBODY),
        &[&pid, "--to", "host2", "--move-address", SERVICE],
    );
    assert_eq!(moved.status.code(), Some(0), "{}", c.logs());
    assert!(has_service(c.h2()) && !has_service(c.h1()));
    assert_client_ends_ok(&c, &client, 1200);
}

#[test]
fn a_connected_udp_socket_on_the_address_keeps_talking_from_host2() {
    require_lab!();
    let c = Cluster::start_switched(&bin("migrate-agent"), [&[], &[]]);
    serve_address(&c);
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts");
    let _answerer = Proc::start(
        c.h3(),
        c.path("answerer.out"),
        "python3",
        &[&format!("{scripts}/udp_answerer.py"), "7201"],
    );
    let pinger = Proc::start(
        c.h1(),
        c.path("pinger.out"),
        "python3",
        &[
            &format!("{scripts}/udp_pinger.py"),
            SERVICE,
            "7200",
            "10.77.0.3",
            "7201",
        ],
    );
    let got = |p: &Proc| p.text().lines().filter(|l| l.starts_with("got ")).count();
    assert!(wait_until(20, || got(&pinger) >= 20), "{}", pinger.text());
    // Without its address, it cannot move.
    let pid = pinger.pid.to_string();
    let out = c.migrate(&[&pid, "--to", "host2"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connected UDP socket") && err.contains("--move-address"),
        "{err}"
    );
    let out = c.migrate(&[&pid, "--to", "host2", "--move-address", SERVICE]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    // The same socket, bound and connected as before, talks from host2:
    // the answers keep coming.
    let moved = got(&pinger);
    assert!(
        wait_until(20, || got(&pinger) >= moved + 50),
        "{}\n{}",
        pinger.text(),
        c.logs()
    );
    // A datagram may be lost in the move ("miss"); a send never fails.
    assert!(!pinger.text().contains("error"), "{}", pinger.text());
    assert!(has_service(c.h2()) && !has_service(c.h1()));
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    end_in(c.h2(), new_pid);
}
