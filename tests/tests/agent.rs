//! The agent's edges as an operator meets them: its log (level and
//! format), its host probe (`migrate-agent check`), its metrics.

use migrate_tests::bins::bin;
use migrate_tests::require_lab;

mod common;
use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

#[test]
fn an_agent_logs_at_its_level_as_text_or_json() {
    require_lab!();
    let c = Cluster::start_authed(
        migrate_tests::lab::Lab::start().expect("lab"),
        &bin("migrate-agent"),
        [
            &["--log-format", "json", "--log-level", "debug"],
            &["--log-level", "warn"],
        ],
        [&[], &[]],
    );
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "8"]);
    assert!(w.wait_for("ready", 60));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    // host1: every line one JSON object, debug lines among them.
    let one = std::fs::read_to_string(c.path("agent1.log")).unwrap();
    let lines: Vec<serde_json::Value> = one
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() > 5, "{one}");
    let level = |l: &serde_json::Value| l["level"].as_str().unwrap_or("").to_string();
    assert!(lines.iter().any(|l| level(l) == "DEBUG"), "{one}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"].as_str() == Some("migration requested")),
        "{one}"
    );
    // host2 at warn: its migration's info lines are not there.
    let two = std::fs::read_to_string(c.path("agent2.log")).unwrap();
    assert!(
        !two.contains(" INFO ") && !two.contains("incoming migration"),
        "{two}"
    );
    let (new_pid, _) = parse_summary(&String::from_utf8_lossy(&out.stdout));
    end_in(c.h2(), new_pid);
}

#[test]
fn check_says_what_each_mode_needs_and_asks_the_peers() {
    require_lab!();
    let c = Cluster::start();
    let auth = c.path("cluster");
    let auth = auth.to_string_lossy().into_owned();
    let check = |user: Option<&str>| {
        let peer = format!("host2={}:{}", c.h2().addr(), migrate_tests::lab::AGENT_PORT);
        let args = [
            "--name",
            "host1",
            "--listen",
            "127.0.0.1:1",
            "--auth",
            &auth,
            "--peer",
            &peer,
            "check",
        ];
        let agent = bin("migrate-agent");
        let out = match user {
            None => c.h1().command(&agent).args(args).output(),
            Some(uid) => c
                .h1()
                .command("setpriv")
                .args(["--reuid", uid, "--regid", uid, "--clear-groups", "--"])
                .arg(&agent)
                .args(args)
                .output(),
        }
        .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        (out.status.code(), format!("{said}{err}"))
    };
    // As root (the agent's user): every mode works, and host2 answers with
    // its clock and the same vDSO.
    let (code, said) = check(None);
    assert_eq!(code, Some(0), "{said}");
    for line in [
        "ok   userfaultfd ",
        "ok   PAGEMAP_SCAN ",
        "ok   peer host2 ",
        "the same as here",
        "postcopy        works here",
        "precopy         works here",
    ] {
        assert!(said.contains(line), "{line:?} not in\n{said}");
    }
    let offset: i64 = said
        .split("clock ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no clock offset in\n{said}"));
    // Both lab hosts read one machine's clock.
    assert!(offset.abs() < 50_000, "{offset} µs\n{said}");
    // Without root's capabilities nothing can be traced, and (with
    // vm.unprivileged_userfaultfd at 0) no page can follow: exit 1.
    let (code, said) = check(Some("65534"));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("LACK ptrace"), "{said}");
    assert!(said.contains("LACK clone3 with set_tid"), "{said}");
    assert!(said.contains("postcopy        cannot work here"), "{said}");
}

/// GET `path` from the agent's metrics endpoint inside host1: the status
/// line and the body.
fn scrape(c: &Cluster, path: &str) -> (String, String) {
    let script = format!(
        "import urllib.request, urllib.error\n\
         try:\n    r = urllib.request.urlopen('http://127.0.0.1:9190{path}', timeout=5)\n    \
         print(r.status); print(r.read().decode())\n\
         except urllib.error.HTTPError as e:\n    print(e.code)\n"
    );
    let out = c
        .h1()
        .command("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), body.to_string())
}

/// The value of the sample `name` (with its labels) in `body`.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

#[test]
fn metrics_count_what_the_users_were_told() {
    require_lab!();
    let c = Cluster::start_authed(
        migrate_tests::lab::Lab::start().expect("lab"),
        &bin("migrate-agent"),
        [&["--metrics", "127.0.0.1:9190"], &[]],
        [&[], &[]],
    );
    let (status, body) = scrape(&c, "/metrics");
    assert_eq!(status, "200", "{body}");
    assert_eq!(sample(&body, "migrate_migrations_started_total"), 0.0);
    // One that moves, one refused.
    let w = Proc::start(c.h1(), c.path("w.out"), WORKLOAD, &["--mib", "16"]);
    assert!(w.wait_for("ready", 60));
    let out = c.migrate(&[&w.pid.to_string(), "--to", "host2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", c.logs());
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = c.migrate(&["999999", "--to", "host2"]);
    assert_eq!(refused.status.code(), Some(1));
    // The code the user read, in brackets.
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    let code = said
        .rsplit_once('[')
        .and_then(|(_, c)| c.split_once(']'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_else(|| panic!("no code in {said}"));
    let (_, body) = scrape(&c, "/metrics");
    assert_eq!(sample(&body, "migrate_migrations_started_total"), 2.0);
    assert_eq!(sample(&body, "migrate_migrations_succeeded_total"), 1.0);
    assert_eq!(
        sample(
            &body,
            &format!("migrate_migrations_refused_total{{reason=\"{code}\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&body, "migrate_migrations_in_flight"), 0.0);
    assert_eq!(sample(&body, "migrate_downtime_seconds_count"), 1.0);
    let downtime = rec["downtime_us"].as_f64().unwrap() / 1e6;
    assert!(
        (sample(&body, "migrate_downtime_seconds_sum") - downtime).abs() < 1e-6,
        "{body}"
    );
    assert_eq!(
        sample(&body, "migrate_pages_total{kind=\"eager\"}"),
        rec["eager_pages"].as_f64().unwrap()
    );
    assert_eq!(
        sample(&body, "migrate_lane_bytes_total{lane=\"demand\"}")
            + sample(&body, "migrate_lane_bytes_total{lane=\"bulk\"}"),
        rec["lanes"]["demand"].as_f64().unwrap() + rec["lanes"]["bulk"].as_f64().unwrap()
    );
    // host2's agent has no endpoint; host1's answers nothing else.
    let (status, _) = scrape(&c, "/other");
    assert_eq!(status, "404");
    let new_pid = rec["new_pid"].as_i64().unwrap() as i32;
    end_in(c.h2(), new_pid);
}

#[test]
fn a_log_level_that_is_none_is_refused() {
    let out = std::process::Command::new(bin("migrate-agent"))
        .args(["--name", "h", "--listen", "127.0.0.1:1", "--insecure"])
        .args(["--log-level", "loud", "--socket", "/nonexistent/s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log level \"loud\""), "{err}");
}
