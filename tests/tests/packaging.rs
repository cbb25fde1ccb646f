//! What a real installation uses: the systemd unit passes
//! `systemd-analyze verify` (against a root holding the binary where the
//! unit expects it), and the provisioning scripts parse.

use std::path::Path;
use std::process::Command;

use migrate_tests::bins::bin;

mod common;

const VAGRANT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vagrant");

#[test]
fn the_systemd_unit_verifies() {
    if !migrate_tests::gate::tool_available(
        "the_systemd_unit_verifies",
        "systemd-analyze",
        "systemd",
    ) {
        return;
    }
    let root = std::env::temp_dir().join(format!("migrate-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::copy(
        bin("migrate-agent"),
        root.join("usr/local/bin/migrate-agent"),
    )
    .unwrap();
    // ExecReload's.
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let unit = units.join("migrate-agent.service");
    std::fs::copy(Path::new(VAGRANT).join("migrate-agent.service"), &unit).unwrap();
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
    assert!(out.status.success(), "{said}");
    // It only warns about some mistakes: any word about our unit is one.
    assert!(!said.contains("migrate-agent"), "{said}");
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
