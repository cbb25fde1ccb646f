//! Failpoints: named places in a migration's steps where a test makes the
//! step fail as a real error there would (`return`), ends the whole agent
//! as a crash would (`panic`), or waits (`sleep(MS)`).
//!
//! They exist only in builds with the `failpoints` feature, configured by
//! the environment variable `FAILPOINTS` (`NAME=ACTION`, several joined by
//! `;`); in other builds [`hit`] compiles to nothing. In builds with the
//! feature a panic in any thread ends the agent ([`setup`]), unless
//! `FAILPOINTS_UNWIND` is set: then, as in normal builds, a panic unwinds
//! its own thread only (one migration's), whose owners undo its state.

use thiserror::Error;

/// Every failpoint, in the order a migration meets them.
pub const NAMES: &[&str] = &[
    // Source, before the freeze.
    "source.after-file-check",
    "source.before-freeze",
    // Source, frozen: inside the dump, inside an injected syscall (the
    // original's registers are the injection's), between two.
    "source.dump.in-syscall",
    "source.dump.injecting",
    "source.before-core",
    "source.after-core",
    "source.after-ready",
    // Source, the commit and after.
    "source.after-commit-sent",
    "source.after-resumed",
    "source.demand",
    "source.push",
    "source.after-complete",
    // Destination, before the commit.
    "dest.after-file-check",
    "dest.after-core",
    "dest.rebuild.injecting",
    "dest.after-keeper",
    "dest.before-ready",
    "dest.after-ready",
    // Destination, the commit and after.
    "dest.after-commit",
    "dest.after-resume",
    "dest.demand",
    "dest.push",
    "dest.keeper-release",
    "dest.before-complete",
    "dest.after-complete",
];

/// Whether this build has failpoints.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// A step failed at a failpoint.
#[derive(Debug, Error)]
#[error("failpoint {0}")]
pub struct Injected(pub &'static str);

/// Passes failpoint `name`: `Err` where it is set to `return`.
#[inline]
pub fn hit(name: &'static str) -> Result<(), Injected> {
    debug_assert!(NAMES.contains(&name), "undeclared failpoint {name}");
    fail::fail_point!(name, |_| Err(Injected(name)));
    Ok(())
}

/// Why `FAILPOINTS` was refused.
#[derive(Debug, Error)]
pub enum SetupError {
    /// Failpoints were asked of a build without them.
    #[error("FAILPOINTS is set, but this agent was built without the `failpoints` feature")]
    NotBuilt,
    /// A part of it names no failpoint or says no action.
    #[error("FAILPOINTS: {0:?} is not NAME=ACTION with a NAME from `migrate-agent __failpoints`")]
    Malformed(String),
    /// The action was not understood.
    #[error("FAILPOINTS: {name}: {why}")]
    Action {
        /// The failpoint.
        name: String,
        /// What the fail crate said.
        why: String,
    },
}

/// Configures the failpoints from `FAILPOINTS`, if set. In builds with
/// the feature, also makes a panic in any thread end the process (unless
/// `FAILPOINTS_UNWIND` is set).
pub fn setup() -> Result<(), SetupError> {
    if ENABLED && std::env::var_os("FAILPOINTS_UNWIND").is_none() {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
    }
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, action) = parse(part)?;
        if !ENABLED {
            return Err(SetupError::NotBuilt);
        }
        configure(name, action)?;
    }
    Ok(())
}

fn parse(part: &str) -> Result<(&str, &str), SetupError> {
    match part.split_once('=') {
        Some((name, action)) if NAMES.contains(&name.trim()) && !action.trim().is_empty() => {
            Ok((name.trim(), action.trim()))
        }
        _ => Err(SetupError::Malformed(part.to_string())),
    }
}

#[cfg(feature = "failpoints")]
fn configure(name: &str, action: &str) -> Result<(), SetupError> {
    fail::cfg(name, action).map_err(|why| SetupError::Action {
        name: name.to_string(),
        why,
    })
}

#[cfg(not(feature = "failpoints"))]
fn configure(_: &str, _: &str) -> Result<(), SetupError> {
    Err(SetupError::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NAMES` is exactly the failpoints the code passes.
    #[test]
    fn every_failpoint_is_declared_and_used() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    sources(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        sources(
            concat!(env!("CARGO_MANIFEST_DIR"), "/src").as_ref(),
            &mut files,
        );
        let mut used = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, _) in text.match_indices("failpoints::hit(\"") {
                let rest = &text[i + "failpoints::hit(\"".len()..];
                used.push(rest[..rest.find('"').unwrap()].to_string());
            }
        }
        used.sort();
        used.dedup();
        let mut declared: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        declared.sort();
        assert_eq!(used, declared);
    }

    #[test]
    fn a_malformed_spec_is_named() {
        assert!(parse("source.before-core=return").is_ok());
        for bad in ["nope=return", "source.before-core", "source.before-core="] {
            assert!(
                matches!(parse(bad), Err(SetupError::Malformed(p)) if p == bad),
                "{bad}"
            );
        }
    }
}
