//! Paths of the workspace's binaries (`migrate`, `migrate-agent`).

use std::path::PathBuf;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of workspace binary `name`. The first call brings every
/// workspace binary up to date (`cargo test -p migrate-tests` alone would
/// otherwise run stale agents).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let path = target_dir().join(name);
    let mut built = None;
    if std::env::var_os("CARGO").is_some() || !path.exists() {
        built = Some(*BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = target_dir().file_name().is_some_and(|n| n == "release");
            std::process::Command::new(cargo)
                .args(["build", "--workspace", "--bins", "-q"])
                .args(release.then_some("--release"))
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        }));
    }
    assert!(
        path.exists(),
        "{} is missing{}; run `cargo build --workspace --bins` in {}",
        path.display(),
        match built {
            Some(false) => " (`cargo build --workspace --bins` failed)",
            _ => "",
        },
        concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
    );
    path
}

/// The agent built with its failpoints (`--features failpoints`), in a
/// target directory of its own beside the usual one; built on first use.
pub fn failpoint_agent() -> PathBuf {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let profile = target_dir();
    let release = profile.file_name().is_some_and(|n| n == "release");
    let dir = profile.parent().expect("target dir").join("failpoints");
    let path = dir
        .join(if release { "release" } else { "debug" })
        .join("migrate-agent");
    let built = *BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        std::process::Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "migrate-agent",
                "--features",
                "failpoints",
            ])
            .arg("--target-dir")
            .arg(&dir)
            .args(release.then_some("--release"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(
        built && path.exists(),
        "building the agent with failpoints failed ({})",
        path.display()
    );
    path
}
