//! Skipping tests that need the lab, loudly, and never under CI.

use std::path::Path;

/// Whether the lab can be built here (root, `ip`, `nsenter`, `unshare`,
/// and `setpriv`/`pgrep`, which the migration tests use). Otherwise prints
/// `SKIP <test>: <reason>` to stderr and returns false, or panics with the
/// reason when `CI=true`: CI must run every test.
pub fn lab_available(test: &str) -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    verdict(test, missing().as_deref(), ci, &mut |line| {
        eprintln!("{line}")
    })
}

/// Whether the program `tool` (from Debian's `package`) is installed:
/// as [`lab_available`], a skip with the reason outside CI, a failure
/// under `CI=true`.
pub fn tool_available(test: &str, tool: &str, package: &str) -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists());
    let why = format!("`{tool}` is not installed (apt-get install {package})");
    verdict(test, (!found).then_some(why.as_str()), ci, &mut |line| {
        eprintln!("{line}")
    })
}

/// Decides, reporting a skip line through `report`.
fn verdict(test: &str, missing: Option<&str>, ci: bool, report: &mut dyn FnMut(String)) -> bool {
    match missing {
        None => true,
        Some(why) if ci => panic!("{test} cannot run under CI=true: {why}"),
        Some(why) => {
            report(format!("SKIP {test}: {why}"));
            false
        }
    }
}

fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (namespaces, ptrace, userfaultfd)".into());
    }
    for tool in ["ip", "nsenter", "unshare", "setpriv", "pgrep"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The path of the function this macro is expanded in, e.g.
/// `lab::hosts_are_isolated_linked_and_torn_down`.
#[doc(hidden)]
#[macro_export]
macro_rules! __function_name {
    () => {{
        fn __here() {}
        fn __name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        let n = __name_of(__here);
        n.strip_suffix("::__here").unwrap_or(n)
    }};
}

/// First line of a lab test: returns from it (after `SKIP <test>: <why>`)
/// unless the lab is available; panics instead under `CI=true`.
/// `require_lab!()` names the test after the enclosing function;
/// `require_lab!("name")` names it explicitly.
#[macro_export]
macro_rules! require_lab {
    () => {
        if !$crate::gate::lab_available($crate::__function_name!()) {
            return;
        }
    };
    ($name:expr) => {
        if !$crate::gate::lab_available($name) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn available_runs() {
        let mut lines = Vec::new();
        assert!(verdict("t", None, false, &mut |l| lines.push(l)));
        assert!(verdict("t", None, true, &mut |l| lines.push(l)));
        assert!(lines.is_empty());
    }

    #[test]
    fn missing_skips_outside_ci() {
        let mut lines = Vec::new();
        assert!(!verdict("t", Some("needs root"), false, &mut |l| lines.push(l)));
        assert_eq!(lines, ["SKIP t: needs root"]);
    }

    #[test]
    #[should_panic(expected = "t cannot run under CI=true: needs root")]
    fn missing_panics_under_ci() {
        verdict("t", Some("needs root"), true, &mut |_| {});
    }

    #[test]
    fn the_macro_names_the_test() {
        assert_eq!(
            crate::__function_name!(),
            "migrate_tests::gate::tests::the_macro_names_the_test"
        );
    }
}
