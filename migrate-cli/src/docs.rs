//! The command's manual pages and shell completions, made from the one
//! clap definition that parses its arguments ([`crate::args::Cli`]):
//! `migrate completions SHELL` prints a completion script, `migrate __man
//! DIR` writes `migrate.1` and one `migrate-SUB.1` per subcommand, each
//! with the sections clap does not know (FILES, ENVIRONMENT, EXIT STATUS,
//! SEE ALSO).

use std::io::Write;
use std::path::Path;

use clap::{Command, CommandFactory};

use crate::args::{Cli, DEFAULT_SOCKET};

/// The whole command: `migrate PID --to HOST` and its subcommands.
pub fn command() -> Command {
    Cli::command()
}

/// `migrate completions SHELL`.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "migrate", &mut std::io::stdout());
}

/// The visible subcommands, `help` left out.
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// `migrate __man DIR`: the manual pages.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let pages: Vec<String> = std::iter::once("migrate".to_string())
        .chain(subcommands(&cmd).map(|s| format!("migrate-{}", s.get_name())))
        .collect();
    page(&cmd, dir, &pages)?;
    for sub in subcommands(&cmd) {
        page(sub, dir, &pages)?;
    }
    Ok(())
}

/// Writes `cmd`'s page, clap's sections then ours.
fn page(cmd: &Command, dir: &Path, pages: &[String]) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut f = std::fs::File::create(dir.join(man.get_filename()))?;
    man.render(&mut f)?;
    let me = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let see_also: Vec<String> = pages
        .iter()
        .filter(|p| **p != me)
        .map(|p| format!("\\fB{p}\\fR(1)"))
        .chain(std::iter::once("\\fBmigrate-agent\\fR(8)".to_string()))
        .collect();
    write!(
        f,
        r#".SH "EXIT STATUS"
.TP
0
The process runs on the destination, or the subcommand did what it was asked.
.TP
1
Refused or failed: the process still runs here, untouched.
.TP
2
Bad usage.
.TP
3
No agent answers at the control socket.
.TP
4
The process was lost: a failure after the commit.
.SH ENVIRONMENT
.TP
.B MIGRATE_SOCKET
The local agent's control socket (as \fB\-\-socket\fR).
.TP
.B MIGRATE_SHIM
The shim \fBmigrate run\fR preloads, instead of the installed one.
.TP
.B RUST_LOG
The agent's log filter (\fBmigrate\-agent\fR(8)); its \fB\-\-log\-level\fR wins.
.TP
.B FAILPOINTS
Faults to inject, in agents built with the \fBfailpoints\fR feature only (for tests).
.SH FILES
.TP
.I {DEFAULT_SOCKET}
The local agent's control socket.
.TP
.I /etc/migrate/agent.toml
The agent's settings.
.TP
.I /var/lib/migrate
The agent's state: the history of migrations (\fIhistory.jsonl\fR) and what it holds for them.
.TP
.I /usr/lib/migrate/libmigrate_shim.so
The shim \fBmigrate run\fR preloads into a cooperating process.
.TP
.I /usr/include/migrate.h
The cooperating process's interface.
.SH "SEE ALSO"
{}
"#,
        see_also.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is.
    #[test]
    fn every_argument_has_help() {
        let cmd = command();
        let mut missing = Vec::new();
        for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            if c.get_about().is_none() {
                missing.push(format!("{}: no description", c.get_name()));
            }
            for a in c.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() {
                    missing.push(format!("{} {}", c.get_name(), a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn man_pages_cover_every_subcommand_with_our_sections() {
        let dir = std::env::temp_dir().join(format!("migrate-man-{}", std::process::id()));
        man_pages(&dir).unwrap();
        let main = std::fs::read_to_string(dir.join("migrate.1")).unwrap();
        let cmd = command();
        let subs: Vec<&Command> = subcommands(&cmd)
            .filter(|s| s.get_name() != "help")
            .collect();
        assert!(subs.len() >= 7, "{}", subs.len());
        for sub in subs {
            let name = sub.get_name().to_string();
            let page = std::fs::read_to_string(dir.join(format!("migrate-{name}.1")))
                .unwrap_or_else(|e| panic!("migrate-{name}.1: {e}"));
            assert!(page.contains(".TH"), "{name}: not a man page");
            for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
                assert!(page.contains(section), "migrate-{name}.1 lacks {section}");
            }
            assert!(main.contains(&name), "migrate.1 does not name {name}");
        }
        assert!(main.contains("MIGRATE_SHIM") && main.contains("migrate\\-agent"));
        assert!(!dir.join("migrate-__man.1").exists(), "a hidden page");
        let run = std::fs::read_to_string(dir.join("migrate-run.1")).unwrap();
        assert!(run.contains("reconnect"), "migrate-run.1 lacks --tcp");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_know_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command(),
            "migrate",
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        for sub in ["check", "status", "list", "run", "report", "resolve"] {
            assert!(text.contains(sub), "bash completion lacks {sub}");
        }
        assert!(text.contains("--tcp") && text.contains("--on-loss"));
        assert!(text.contains("--follow") && text.contains("--json"));
    }
}
