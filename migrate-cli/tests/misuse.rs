//! Every misuse of `migrate` and `migrate-agent` ends with a clear error
//! first line, a non-zero exit and no panic. No agent is needed: the
//! socket named here does not exist.

use std::process::Command;

const MIGRATE: &str = env!("CARGO_BIN_EXE_migrate");

fn agent_bin() -> std::path::PathBuf {
    // Built by the same `cargo test --workspace` run, beside `migrate`.
    std::path::Path::new(MIGRATE).with_file_name("migrate-agent")
}

fn check(program: &std::path::Path, args: &[&str], code: i32, first: &str) {
    let out = Command::new(program)
        .args(args)
        .env("MIGRATE_SOCKET", "/nonexistent/agent.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().next().unwrap_or_default();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        line.contains(first),
        "{args:?}: first line {line:?} lacks {first:?}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.lines().count() <= 8, "{args:?}: too long:\n{err}");
}

#[test]
fn migrate_misuse_gives_a_clear_error_and_a_non_zero_exit() {
    let m = std::path::Path::new(MIGRATE);
    check(m, &[], 2, "error: the following required arguments");
    check(
        m,
        &["abc", "--to", "host2"],
        2,
        "error: invalid value 'abc'",
    );
    check(m, &["4242"], 2, "required arguments");
    check(
        m,
        &["4242", "--to", "host2", "--mode", "fast"],
        2,
        "invalid value 'fast'",
    );
    check(
        m,
        &["4242", "--to", "host2", "--prefetch", "-1"],
        2,
        "error:",
    );
    check(
        m,
        &["4242", "--to", "host2", "--compress", "zip"],
        2,
        "invalid value 'zip'",
    );
    check(
        m,
        &["4242", "--to", "host2", "--bogus"],
        2,
        "unexpected argument '--bogus'",
    );
    check(m, &["check"], 2, "required arguments");
    check(m, &["report"], 2, "required arguments");
    check(m, &["list"], 3, "no agent at");
    check(m, &["run"], 2, "required arguments");
    check(m, &["run", "--", "true"], 3, "no agent at");
    // Well-formed, but no agent behind the socket: exit 3, one line.
    check(
        m,
        &["4242", "--to", "host2"],
        3,
        "no agent at /nonexistent/agent.sock",
    );
    check(m, &["status"], 3, "no agent at");
    check(m, &["list", "--history"], 3, "no agent at");
    check(m, &["resolve"], 2, "required arguments");
    check(m, &["resolve", "ab12"], 2, "required arguments");
    check(
        m,
        &["resolve", "ab12", "--kill", "--resume"],
        2,
        "cannot be used with",
    );
    check(m, &["resolve", "ab12", "--kill"], 3, "no agent at");
    check(m, &["check", "4242"], 3, "no agent at");
    // Global options before or after the subcommand; a subcommand with
    // the short form's pid or options is refused.
    check(m, &["--socket", "/x/s", "status"], 3, "no agent at /x/s");
    check(
        m,
        &["status", "--follow", "--socket", "/x/s"],
        3,
        "no agent at /x/s",
    );
    check(m, &["4242", "--to", "h", "list"], 2, "does not go with");
    check(
        m,
        &["list", "--mode", "precopy"],
        2,
        "unexpected argument '--mode'",
    );
    // `help` is a subcommand, not a pid.
    let out = Command::new(m).args(["help", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--follow"));
    // With --json an error is JSON on standard output too.
    for args in [
        &["list", "--json"][..],
        &["--json", "status"],
        &["check", "1", "--json"],
    ] {
        let out = Command::new(m)
            .args(args)
            .env("MIGRATE_SOCKET", "/nonexistent/agent.sock")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["exit"], 3, "{args:?}");
        assert!(
            v["error"].as_str().unwrap().contains("no agent at"),
            "{args:?}"
        );
    }
}

#[test]
fn agent_misuse_gives_a_clear_error_and_a_non_zero_exit() {
    let a = agent_bin();
    assert!(a.exists(), "{} not built", a.display());
    check(&a, &["--listen", "nonsense"], 2, "invalid value 'nonsense'");
    check(&a, &["--name", "h"], 2, "missing setting");
    check(
        &a,
        &["--config", "/nonexistent.toml"],
        2,
        "/nonexistent.toml",
    );
    check(&a, &["--peer", "nocolon"], 2, "bad peer \"nocolon\"");
    check(
        &a,
        &[
            "--name",
            "h",
            "--listen",
            "127.0.0.1:1",
            "--auth",
            "/x",
            "--insecure",
        ],
        2,
        "--auth and --insecure exclude each other",
    );
    let dir = std::env::temp_dir().join(format!("migrate-misuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    // Safe by default: no credentials, no --insecure, no start. Where
    // this machine has cluster credentials, the agent runs in a mount
    // namespace that hides them (root only).
    let sock = format!("{d}/s");
    let plain = [
        "--name",
        "h",
        "--listen",
        "127.0.0.1:1",
        "--socket",
        sock.as_str(),
    ];
    let agent = a.to_string_lossy().into_owned();
    let hidden: Vec<&str> = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs none /etc/migrate && exec \"$@\"",
        "sh",
        agent.as_str(),
    ]
    .into_iter()
    .chain(plain)
    .collect();
    // /proc/self belongs to the effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    match (std::path::Path::new("/etc/migrate/cluster").exists(), root) {
        (false, _) => check(&a, &plain, 1, "no cluster credentials"),
        (true, true) => check(
            std::path::Path::new("unshare"),
            &hidden,
            1,
            "no cluster credentials",
        ),
        (true, false) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "/etc/migrate/cluster exists and this is not root: cannot check the start without credentials"
            );
            eprintln!(
                "skipped: the start without credentials (/etc/migrate/cluster exists, not root)"
            );
        }
    }
    check(&a, &["keygen", &d], 2, "required arguments");
    check(
        &a,
        &["keygen", &d, "--hosts", "a b"],
        2,
        "is not a host name",
    );
    let ok = Command::new(&a)
        .args(["keygen", &d, "--hosts", "h1,h2"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    check(&a, &["keygen", &d, "--hosts", "h1"], 2, "already holds");
    // Credentials of a host the cluster does not list, or readable by all.
    check(
        &a,
        &["--name", "h3", "--listen", "127.0.0.1:1", "--auth", &d],
        1,
        "h3.key",
    );
    std::fs::set_permissions(
        dir.join("h1.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    check(
        &a,
        &["--name", "h1", "--listen", "127.0.0.1:1", "--auth", &d],
        1,
        "chmod 600",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
