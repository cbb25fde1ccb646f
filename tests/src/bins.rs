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
        built = Some(*BUILT.get_or_init(|| cargo_build(&["--workspace", "--bins"], None)));
    }
    // A failed rebuild must not leave the tests running an older binary.
    assert!(
        built != Some(false),
        "`cargo build --workspace --bins` failed in {}: not running the tests on stale binaries",
        concat!(env!("CARGO_MANIFEST_DIR"), "/..")
    );
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --workspace --bins` in {}",
        path.display(),
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
        cargo_build(
            &["-p", "migrate-agent", "--features", "failpoints"],
            Some(&dir),
        )
    });
    assert!(
        built && path.exists(),
        "building the agent with failpoints failed ({})",
        path.display()
    );
    path
}

/// `cargo build -q ARGS` in the workspace, in the profile these tests were
/// built with, into target directory `into` if given; whether it
/// succeeded.
fn cargo_build(args: &[&str], into: Option<&std::path::Path>) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = target_dir().file_name().is_some_and(|n| n == "release");
    let mut c = std::process::Command::new(cargo);
    c.args(["build", "-q"]).args(args);
    if let Some(dir) = into {
        c.arg("--target-dir").arg(dir);
    }
    c.args(release.then_some("--release"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .is_ok_and(|s| s.success())
}
