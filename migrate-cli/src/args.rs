//! The command line, defined once: what parses the arguments also makes
//! `--help`, `migrate help SUBCOMMAND`, the manual pages and the shell
//! completions ([`crate::docs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_SOCKET: &str = "/run/migrate/agent.sock";

/// What `--help` and the manual say last.
const EXIT_STATUS: &str = "Exit status: 0 migrated (or the subcommand did what it was asked); \
    1 refused or failed, the process still runs here; 2 usage; 3 no agent; 4 the process \
    was lost.";

/// Moves a running process to another host, live (post-copy).
///
/// `migrate PID --to HOST` moves a process; the subcommands check, list,
/// follow and explain migrations, and start cooperating processes.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    subcommand_negates_reqs = true,
    override_usage = "migrate [OPTIONS] PID --to HOST\n       migrate [--socket PATH] [--json] COMMAND [ARGS]",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// `migrate PID --to HOST`.
    #[command(flatten)]
    pub migrate: MoveArgs,
}

/// Options every subcommand takes, before or after its name.
#[derive(Debug, Args)]
pub struct Global {
    /// The local agent's control socket.
    #[arg(
        long,
        global = true,
        env = "MIGRATE_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,
    /// Print the answer as JSON on standard output (one object; a
    /// refusal as {"refused": [...], "detail": [...]}, any other error as
    /// {"error": "..."}).
    #[arg(long, global = true)]
    pub json: bool,
}

impl Cli {
    /// Parses `args`: a subcommand, or the short form's pid and options,
    /// never both (`migrate 7 --to h list` is not a listing).
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        let m = cmd.try_get_matches_from_mut(args)?;
        if let Some((sub, _)) = m.subcommand() {
            let moving = cmd
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .find(|a| {
                    m.value_source(a.get_id().as_str())
                        == Some(clap::parser::ValueSource::CommandLine)
                });
            if let Some(a) = moving {
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "`{}` moves a process: it does not go with the subcommand `{sub}`",
                        a.get_long()
                            .map(|l| format!("--{l}"))
                            .unwrap_or_else(|| a.get_id().to_string().to_uppercase())
                    ),
                ));
            }
        }
        Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))
    }
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Runs the pre-flight checks on a process without touching it.
    Check {
        /// The process to check.
        pid: i32,
    },
    /// Shows one migration's record: the latest, or the one with this id.
    Status {
        /// Migration id (as `migrate list --history` prints it; a unique
        /// prefix is enough).
        id: Option<String>,
        /// Follow a migration still under way (one that returned with
        /// `--detach`): its progress, until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Lists the processes that can be migrated from this host
    /// (cooperating ones marked), or past migrations (`--history`).
    List {
        /// Past and running migrations started from this host.
        #[arg(long)]
        history: bool,
    },
    /// Starts a command on this host as a cooperating process: with the
    /// shim (`libmigrate_shim.so`) preloaded and registered with the local
    /// agent.
    Run {
        /// What the process's established TCP connections become when it
        /// moves without its address: reset (`close`), or connected again
        /// from the destination on the same descriptor (`reconnect`).
        /// Without it a process holding one moves only with its address.
        #[arg(long, value_enum)]
        tcp: Option<TcpArg>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Draws a migration's record as SVG (with `--json` and no `-o`,
    /// prints the record instead).
    Report {
        /// Migration id (a unique prefix is enough).
        id: String,
        /// Overlay these migrations too (MiB moved over time).
        #[arg(long, num_args = 1.., value_name = "ID")]
        compare: Vec<String>,
        /// Draw the time-space diagram of the messages between the agents.
        #[arg(long)]
        timespace: bool,
        /// With `--timespace`: a self-contained HTML page instead, the
        /// diagram zoomable (wheel) and movable (drag) in a browser, with
        /// no network [default output: migration.html].
        #[arg(long, requires = "timespace")]
        html: bool,
        /// Output file [default: migration.svg].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Decides the fate of an original kept frozen after its destination
    /// was lost: end it, or run it again here.
    Resolve {
        /// Migration id (a unique prefix is enough).
        id: String,
        /// End the kept original.
        #[arg(long, conflicts_with = "resume", required_unless_present = "resume")]
        kill: bool,
        /// Run the kept original here again (waits until the copy on the
        /// destination is known gone).
        #[arg(long)]
        resume: bool,
    },
    /// Prints a completion script for SHELL.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Writes the manual pages into DIR (for packaging).
    #[command(name = "__man", hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

/// `migrate PID --to HOST [options]`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The process to move.
    #[arg(required = true)]
    pub pid: Option<i32>,
    /// Destination: a peer name known to the agent, or ADDR:PORT.
    #[arg(long, required = true, value_name = "HOST")]
    pub to: Option<String>,
    /// Return once the process runs on the destination, before all its
    /// memory has followed (`migrate status ID --follow` follows the rest).
    #[arg(long)]
    pub detach: bool,
    /// How memory moves.
    #[arg(long, value_enum, default_value = "postcopy")]
    pub mode: ModeArg,
    /// Cap on the background push in MiB/s (0: no push, pages move only
    /// when the process touches them).
    #[arg(long, value_name = "MIB")]
    pub push_rate: Option<u64>,
    /// Pages fetched per fault, the faulting one included (default: one
    /// for a fault on its own, up to 16 for faults in address order).
    #[arg(long, value_name = "N")]
    pub prefetch: Option<u32>,
    /// Most pre-copy rounds before the freeze (precopy mode).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_rounds: u32,
    /// A pre-copy round that finds at most this many written pages is the
    /// last before the freeze.
    #[arg(long, default_value_t = 1024, value_name = "PAGES")]
    pub converge_pages: u64,
    /// Pages sent in the freeze besides the core.
    #[arg(long, value_enum, default_value = "stack")]
    pub eager: EagerArg,
    /// With `--eager dirty`: at most this much of it (MiB).
    #[arg(long, value_name = "MIB")]
    pub eager_budget: Option<u64>,
    /// Order of the background push.
    #[arg(long, value_enum, default_value = "sequential")]
    pub push_order: PushOrderArg,
    /// Compress pages with LZ4 on every lane.
    #[arg(long, value_enum, default_value = "off")]
    pub compress: CompressArg,
    /// If the destination is lost after the commit (and its copy does not
    /// run with every page), the frozen original here is resumed once the
    /// destination says its copy is gone (kept frozen while that is not
    /// known), killed, or kept (until `migrate resolve`).
    #[arg(long, value_enum, default_value = "resume")]
    pub on_loss: OnLossArg,
    /// A service address of this host that moves with the process (taken
    /// off here at the freeze, put on the destination before it resumes):
    /// its TCP connections on it move intact. Repeatable.
    #[arg(long = "move-address", value_name = "ADDR")]
    pub move_address: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnLossArg {
    /// Keep it frozen until `migrate resolve ID --kill|--resume`.
    Keep,
    /// Kill it: the process is lost unless its copy runs on.
    Kill,
    /// Run it here again once the destination says the copy is gone; kept
    /// frozen while that is not known.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpArg {
    /// Reset them at the freeze: the application sees a connection reset.
    Close,
    /// Connect again from the destination to the same address, on the same
    /// descriptor (reset if that fails).
    Reconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// Pages travel as they are.
    Off,
    /// LZ4 blocks (pages that do not shrink travel as they are).
    Lz4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EagerArg {
    /// Only what rebuilding needs (thread blocks, rseq areas).
    None,
    /// Also the top of each thread's stack.
    Stack,
    /// Also every page not already on the destination (with hybrid: those
    /// written since the pre-copy round), up to --eager-budget.
    Dirty,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PushOrderArg {
    /// By address.
    Sequential,
    /// From the latest demand fault on, wrapping around.
    NearFaults,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Core and a small eager set at the freeze, the rest after resume.
    Postcopy,
    /// Everything during the freeze.
    StopCopy,
    /// Rounds of copying while the process runs, then the last written
    /// pages during the freeze; the source is free at resume.
    Precopy,
    /// One pre-copy round, then post-copy for what was written since.
    Hybrid,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_from_args(std::iter::once("migrate").chain(args.iter().copied()))
    }

    #[test]
    fn the_short_form_moves_a_process() {
        let c = parse(&["4242", "--to", "host2", "--mode", "precopy"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.migrate.pid, Some(4242));
        assert_eq!(c.migrate.to.as_deref(), Some("host2"));
        assert!(parse(&["4242"]).is_err(), "--to is required");
        assert!(parse(&[]).is_err(), "a pid or a subcommand is");
    }

    #[test]
    fn global_options_go_before_or_after_a_subcommand() {
        for args in [
            &["--socket", "/x", "--json", "list"][..],
            &["list", "--socket", "/x", "--json"],
            &["--json", "list", "--socket=/x"],
        ] {
            let c = parse(args).unwrap();
            assert!(matches!(c.command, Some(Sub::List { history: false })));
            assert_eq!(c.global.socket, PathBuf::from("/x"), "{args:?}");
            assert!(c.global.json, "{args:?}");
        }
        let c = parse(&["--socket", "/x", "7", "--to", "h"]).unwrap();
        assert_eq!(c.global.socket, PathBuf::from("/x"));
    }

    #[test]
    fn help_names_a_subcommand() {
        let e = parse(&["help", "status"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("--follow"), "{e}");
        let e = parse(&["list", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn a_subcommand_takes_no_migration_options() {
        assert!(parse(&["list", "--to", "host2"]).is_err());
        assert!(parse(&["7", "--to", "h", "list"]).is_err());
    }
}
