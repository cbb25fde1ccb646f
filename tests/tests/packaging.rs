//! What a real installation uses: the systemd units pass
//! `systemd-analyze verify` (against a root holding the binary where each
//! unit expects it), the provisioning scripts parse, and the Debian
//! package holds everything and its binaries migrate.

use std::path::Path;
use std::process::Command;

use migrate_tests::bins::bin;

mod common;

const VAGRANT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vagrant");

#[test]
fn the_systemd_units_verify() {
    if !migrate_tests::gate::tool_available(
        "the_systemd_units_verify",
        "systemd-analyze",
        "systemd",
    ) {
        return;
    }
    // Vagrant's (the binary in /usr/local/bin) and the package's (in
    // /usr/sbin).
    verify_unit(
        &Path::new(VAGRANT).join("migrate-agent.service"),
        "usr/local/bin",
    );
    verify_unit(
        &Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/debian"))
            .join("migrate-agent.service"),
        "usr/sbin",
    );
}

/// `systemd-analyze verify` of `unit` in a root holding the agent in
/// `bin_dir`.
fn verify_unit(unit_file: &Path, bin_dir: &str) {
    let root = std::env::temp_dir().join(format!("migrate-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.join(bin_dir)).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::copy(
        bin("migrate-agent"),
        root.join(bin_dir).join("migrate-agent"),
    )
    .unwrap();
    // ExecReload's.
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let unit = units.join("migrate-agent.service");
    std::fs::copy(unit_file, &unit).unwrap();
    // The system's own units (targets the unit refers to), links kept.
    let st = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(out.status.success(), "{}: {said}", unit_file.display());
    // It only warns about some mistakes: any word about our unit is one.
    assert!(
        !said.contains("migrate-agent"),
        "{}: {said}",
        unit_file.display()
    );
}

/// Vagrant checks the Vagrantfile's settings (without a provider or a
/// box, neither of which this machine can run).
#[test]
fn the_vagrantfile_validates() {
    if !migrate_tests::gate::tool_available("the_vagrantfile_validates", "vagrant", "vagrant") {
        return;
    }
    let home = std::env::temp_dir().join(format!("migrate-vagrant-{}", std::process::id()));
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(VAGRANT)
        .env("VAGRANT_HOME", &home)
        .env("VAGRANT_DOTFILE_PATH", home.join("dot"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_provisioning_scripts_parse() {
    for script in ["setup-agent.sh", "provision.sh", "demo.sh"] {
        let st = Command::new("sh")
            .arg("-n")
            .arg(Path::new(VAGRANT).join(script))
            .status()
            .unwrap();
        assert!(st.success(), "{script} does not parse");
    }
}

/// The Vagrant demo, run in the lab's host1: the counter goes to host2 by
/// `migrate` and comes back by asking (migrate_request through the shim,
/// from Python's ctypes).
#[test]
fn the_vagrant_demo_moves_a_counter_there_and_back() {
    migrate_tests::require_lab!();
    let c = common::Cluster::start();
    let dir = c.path("demo");
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = bin("migrate").parent().unwrap().to_path_buf();
    // Its output to a file: the counter in the background (and its tee)
    // keep the demo's standard streams open after the demo ends.
    let log = dir.join("demo.log");
    let mut demo = c
        .h1()
        .command("sh")
        .arg(Path::new(VAGRANT).join("demo.sh"))
        .arg("host2")
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("MIGRATE_DEMO_HOME", "host1")
        .env("MIGRATE_DEMO_DIR", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    common::wait_until(120, || {
        status = demo.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = demo.kill();
    }
    let said = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("demo.err")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{said}\n{}",
        c.logs()
    );
    let counted = std::fs::read_to_string(dir.join("migrate-demo.out")).unwrap();
    let pid = std::fs::read_to_string(dir.join("migrate-demo.pid")).unwrap();
    assert!(
        counted.contains(&format!("on host2, pid {pid}, moved 1 times")),
        "{counted}"
    );
    assert!(counted.contains("asking to go home to host1"), "{counted}");
    assert!(
        counted.contains(&format!("on host1, pid {pid}, moved 2 times")),
        "{counted}"
    );
}

/// `tests/package` (of the debug build the tests use), unpacked: the
/// files are where Debian puts them, the unit verifies, and the installed
/// binaries move a cooperating process between the lab's hosts, its shim
/// found where the package put it.
#[test]
fn the_debian_package_holds_everything_and_its_binaries_migrate() {
    migrate_tests::require_lab!();
    // (The shim and both binaries, built.)
    for b in ["migrate", "migrate-agent"] {
        assert!(bin(b).is_file());
    }
    // (Under /var/tmp: the lab's hosts have a /tmp of their own.)
    let root = std::path::PathBuf::from(format!("/var/tmp/migrate-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/package"))
        .args(["--debug", "--out"])
        .arg(root.join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(deb.ends_with("migrate_0.1.0_amd64.deb"), "{deb}");
    let info = |what: &str| {
        let o = Command::new("dpkg-deb")
            .args(["-f", &deb, what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(info("Package"), "migrate");
    assert!(info("Depends").contains("libc6"), "{}", info("Depends"));
    let conffiles = Command::new("dpkg-deb")
        .args(["--ctrl-tarfile", &deb])
        .output()
        .unwrap();
    assert!(conffiles.status.success());
    let files = root.join("files");
    let st = Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(&files)
        .status()
        .unwrap();
    assert!(st.success());
    for f in [
        "usr/bin/migrate",
        "usr/sbin/migrate-agent",
        "usr/lib/migrate/libmigrate_shim.so",
        "usr/include/migrate.h",
        "usr/share/man/man1/migrate.1.gz",
        "usr/share/man/man1/migrate-status.1.gz",
        "usr/share/man/man8/migrate-agent.8.gz",
        "usr/share/bash-completion/completions/migrate",
        "usr/share/zsh/vendor-completions/_migrate",
        "usr/share/fish/vendor_completions.d/migrate.fish",
        "lib/systemd/system/migrate-agent.service",
        "etc/migrate/agent.toml",
        "usr/share/doc/migrate/agent.toml.example",
    ] {
        assert!(files.join(f).is_file(), "{f} is not in the package");
    }
    // The conffile is declared one; the unit starts the installed agent
    // with its state and runtime directories.
    let ctrl = root.join("ctrl");
    std::fs::create_dir_all(&ctrl).unwrap();
    let st = Command::new("dpkg-deb")
        .args(["-e", &deb])
        .arg(&ctrl)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/migrate/agent.toml"
    );
    let unit =
        std::fs::read_to_string(files.join("lib/systemd/system/migrate-agent.service")).unwrap();
    for line in [
        "ExecStart=/usr/sbin/migrate-agent ",
        "StateDirectory=migrate",
        "RuntimeDirectory=migrate",
    ] {
        assert!(unit.contains(line), "{line} not in the unit");
    }
    // The manual page is a page.
    let man = Command::new("zcat")
        .arg(files.join("usr/share/man/man1/migrate.1.gz"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".SH FILES"));

    // Its binaries at work: agents from the package, and a cooperating
    // process started with the package's `migrate run` (no MIGRATE_SHIM:
    // the shim is found in ../lib/migrate) and moved with its `migrate`.
    let agent = files.join("usr/sbin/migrate-agent");
    let migrate = files.join("usr/bin/migrate");
    let c = common::Cluster::start_authed(
        migrate_tests::lab::Lab::start().expect("lab"),
        &agent,
        [&[], &[]],
        [&[], &[]],
    );
    let p = common::Proc::start(
        c.h1(),
        c.path("w.out"),
        migrate.to_str().unwrap(),
        &["run", "--", env!("CARGO_BIN_EXE_workload"), "--mib", "8"],
    );
    assert!(p.wait_for("ready 8", 60), "{}", p.text());
    let maps = std::fs::read_to_string(c.h1().root_path(format!("proc/{}/maps", p.pid))).unwrap();
    assert!(
        maps.contains(&format!(
            "{}",
            files.join("usr/lib/migrate/libmigrate_shim.so").display()
        )),
        "the package's shim is not loaded"
    );
    let moved = c
        .h1()
        .command(&migrate)
        .args([&p.pid.to_string(), "--to", "host2", "--json"])
        .env_remove("MIGRATE_SHIM")
        .output()
        .unwrap();
    assert_eq!(moved.status.code(), Some(0), "{}", c.logs());
    let rec: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(rec["outcome"], "complete");
    let new_pid = rec["new_pid"].as_i64().unwrap() as i32;
    assert!(c.h2().root_path(format!("proc/{new_pid}/cmdline")).exists());
    common::end_in(c.h2(), new_pid);
    drop(c);
    let _ = std::fs::remove_dir_all(&root);
}
