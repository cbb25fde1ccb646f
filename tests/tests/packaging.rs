//! What a real installation uses: the systemd unit passes
//! `systemd-analyze verify` (against a root holding the binary where the
//! unit expects it), and the provisioning scripts parse.

use std::path::Path;
use std::process::Command;

use migrate_tests::bins::bin;

const VAGRANT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vagrant");

#[test]
fn the_systemd_unit_verifies() {
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
