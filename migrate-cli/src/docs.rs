//! The command's manual pages and shell completions, made from the same
//! clap definitions that parse its arguments: `migrate completions SHELL`
//! prints a completion script, `migrate __man DIR` writes `migrate.1` and
//! one `migrate-SUB.1` per subcommand.

use std::path::Path;

use clap::{Command, CommandFactory};

use crate::{CheckArgs, ListArgs, MigrateArgs, ReportArgs, ResolveArgs, RunArgs, StatusArgs};

/// The subcommands, in the order `migrate --help` lists them.
fn subcommands() -> Vec<Command> {
    vec![
        CheckArgs::command().name("check"),
        StatusArgs::command().name("status"),
        ListArgs::command().name("list"),
        RunArgs::command().name("run"),
        ReportArgs::command().name("report"),
        ResolveArgs::command().name("resolve"),
        Command::new("completions")
            .about("Prints a completion script for SHELL (bash, zsh, fish, elvish, powershell)")
            .arg(
                clap::Arg::new("shell")
                    .required(true)
                    .value_parser(clap::value_parser!(clap_complete::Shell))
                    .help("The shell"),
            ),
    ]
}

/// The whole command: `migrate PID --to HOST` and its subcommands.
pub fn command() -> Command {
    MigrateArgs::command()
        .args_conflicts_with_subcommands(true)
        .subcommands(subcommands())
}

/// `migrate completions SHELL`.
pub fn completions(shell: &str) -> Result<(), String> {
    let shell: clap_complete::Shell = shell
        .parse()
        .map_err(|_| format!("unknown shell {shell:?} (bash, zsh, fish, elvish, powershell)"))?;
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "migrate", &mut std::io::stdout());
    Ok(())
}

/// `migrate __man DIR`: the manual pages.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command(), dir)
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
    fn man_pages_cover_every_subcommand() {
        let dir = std::env::temp_dir().join(format!("migrate-man-{}", std::process::id()));
        man_pages(&dir).unwrap();
        let main = std::fs::read_to_string(dir.join("migrate.1")).unwrap();
        for sub in subcommands() {
            let name = sub.get_name().to_string();
            let page = std::fs::read_to_string(dir.join(format!("migrate-{name}.1")))
                .unwrap_or_else(|e| panic!("migrate-{name}.1: {e}"));
            assert!(page.contains(".TH"), "{name}: not a man page");
            assert!(main.contains(&name), "migrate.1 does not name {name}");
        }
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
    }
}
