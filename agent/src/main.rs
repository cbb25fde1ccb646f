//! `migrate-agent`: the per-host daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::{Parser, Subcommand};
use migrate_agent::config::{Flags, Settings};

/// The per-host agent of `migrate`: freezes local processes and sends them
/// to peer agents, and rebuilds processes that peers send here.
#[derive(Debug, Parser)]
#[command(name = "migrate-agent", version)]
struct Args {
    /// Name of this host, as peers and users call it.
    #[arg(long)]
    name: Option<String>,
    /// Address for peer agents, ADDR:PORT.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Control socket for the `migrate` command [default: /run/migrate/agent.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A peer agent, NAME=ADDR:PORT (repeatable).
    #[arg(long = "peer", value_name = "NAME=ADDR:PORT")]
    peers: Vec<String>,
    /// TOML file with the same settings (flags override it; every key is
    /// described in agent.toml.example) [default: /etc/migrate/agent.toml
    /// if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Largest open file whose content is shipped when the destination
    /// lacks it or it was deleted, MiB [default: 64].
    #[arg(long, value_name = "MIB")]
    ship_limit_mib: Option<u64>,
    /// Most migrations received at once; more are refused before the
    /// source freezes anything [default: 8].
    #[arg(long, value_name = "N")]
    max_incoming: Option<usize>,
    /// Where the agent keeps its state: the history of migrations started
    /// here and the record of those received
    /// [default: /var/lib/migrate].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Directory of the cluster's credentials, made by `keygen`
    /// [default: /etc/migrate/cluster if it exists].
    #[arg(long, value_name = "DIR")]
    auth: Option<PathBuf>,
    /// Talk to peers in plaintext without authentication: anyone who can
    /// reach the listening port can then make this agent run a process.
    #[arg(long)]
    insecure: bool,
    /// A service address of this host that any user may move with a
    /// process (`migrate --move-address`); root may move any. Repeatable.
    #[arg(long = "hand-over", value_name = "ADDR")]
    hand_over: Vec<std::net::IpAddr>,
    /// What to log: error, warn, info, debug, trace, or RUST_LOG's
    /// directives (`info,migrate_agent::postcopy=debug`) [default:
    /// RUST_LOG if set, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// How to log (to stderr): lines for people, or one JSON object per
    /// line [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<migrate_agent::config::LogFormat>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics [default:
    /// none].
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a cluster's credentials in DIR: give each host `cluster.key`,
    /// `hosts` and its own `NAME.key`, and start its agent with `--auth DIR`.
    Keygen {
        /// Directory to create them in (never overwritten).
        dir: PathBuf,
        /// The cluster's hosts, as their agents are named (`--name`).
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
    },
    /// Prints what this host supports and lacks for each mode (each
    /// kernel feature tried; ptrace and TCP_REPAIR by the capabilities they
    /// need), and each configured peer's clock
    /// offset, kernel and vDSO; exits 1 if post-copy cannot work here.
    Check,
    /// Prints a completion script for SHELL.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Writes the manual pages (migrate-agent.8, migrate-agent-keygen.8)
    /// into DIR.
    #[command(hide = true, name = "__man")]
    Man {
        /// Directory to write them in.
        dir: PathBuf,
    },
}

/// The manual pages: `migrate-agent.8` and one per subcommand shown,
/// each with the sections clap does not know.
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Args::command();
    let mut pages = vec![("migrate-agent".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("migrate-agent-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).section("8").render(&mut out)?;
        let see_also: Vec<String> = names
            .iter()
            .filter(|n| **n != name)
            .map(|n| format!("\\fB{n}\\fR(8)"))
            .chain(["\\fBmigrate\\fR(1)".to_string()])
            .collect();
        write!(
            out,
            r#".SH "EXIT STATUS"
.TP
0
Stopped after draining (SIGTERM), or the subcommand did what it was asked.
.TP
1
Could not start (its sockets, its credentials, its state), or \fBcheck\fR found that post-copy cannot work here.
.TP
2
Bad usage or bad settings.
.SH ENVIRONMENT
.TP
.B RUST_LOG
What to log, when neither \fB\-\-log\-level\fR nor \fIlog_level\fR is set.
.TP
.B NOTIFY_SOCKET
Set by systemd: the agent says READY=1 and STOPPING=1 there.
.TP
.B FAILPOINTS
Faults to inject, in builds with the \fBfailpoints\fR feature only (for tests).
.SH FILES
.TP
.I {config}
Its settings (every key: \fI/usr/share/doc/migrate/agent.toml.example\fR).
.TP
.I /etc/migrate/cluster
The cluster's credentials (\fBmigrate\-agent keygen\fR).
.TP
.I {socket}
The control socket \fBmigrate\fR(1) talks to.
.TP
.I {state}
Its state: \fIhistory.jsonl\fR, \fIreceived.log\fR, and the notes of what it holds for migrations in flight.
.SH "SEE ALSO"
{see}
"#,
            config = migrate_agent::config::DEFAULT_CONFIG,
            socket = migrate_agent::config::DEFAULT_SOCKET,
            state = migrate_agent::config::DEFAULT_STATE_DIR,
            see = see_also.join(", "),
        )?;
        std::fs::write(dir.join(format!("{name}.8")), out)?;
    }
    Ok(())
}

/// `migrate-agent check`: the probe's report; 1 if post-copy cannot work.
fn check_host(settings: &Settings) -> ExitCode {
    use migrate_agent::session::probe;
    let mut report = probe::Report::of_this_host();
    let asked = settings
        .read()
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let sec = migrate_agent::daemon::security(&config).map_err(|e| e.to_string())?;
            for (name, addr) in &config.peers {
                let said = probe::ask_peer(*addr, &config.name, &sec);
                report.peers.push((name.clone(), said));
            }
            Ok(())
        });
    let mut out = std::io::stdout().lock();
    let _ = report.print(&mut out);
    if let Err(e) = asked {
        let _ = writeln!(out, "(peers not asked: {e})");
    }
    if report.works(probe::Use::PostCopy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logs to stderr at `level` (else `RUST_LOG`, else info) in `format`.
fn start_logging(
    level: Option<&str>,
    format: migrate_agent::config::LogFormat,
) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let filter = match level {
        // A word alone must be a level (else it would name a module).
        Some(l) if !l.contains(['=', ',', ':']) && !LEVELS.contains(&l) => {
            return Err(format!(
                "log level {l:?}: not one of {} (or RUST_LOG's directives)",
                LEVELS.join(", ")
            ))
        }
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("log level {l:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        migrate_agent::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        migrate_agent::config::LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("__stub") {
        migrate_agent::host::sys::run_stub();
    }
    if std::env::args().nth(1).as_deref() == Some("__deputy") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        migrate_agent::session::deputy::run(&args);
    }
    if std::env::args().nth(1).as_deref() == Some("__keeper") {
        migrate_agent::postcopy::keeper::run();
    }
    if std::env::args().nth(1).as_deref() == Some("__failpoints") {
        if !migrate_agent::failpoints::ENABLED {
            eprintln!("migrate-agent: built without the `failpoints` feature");
            return ExitCode::from(2);
        }
        for name in migrate_agent::failpoints::NAMES {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match &args.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "migrate-agent",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Man { dir }) => {
            return match man_pages(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "migrate-agent: writing manual pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    if let Some(Command::Keygen { dir, hosts }) = &args.command {
        return match migrate_agent::net::secure::keygen(dir, hosts) {
            Ok(()) => {
                println!(
                    "cluster credentials for {} written to {}",
                    hosts.join(", "),
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("migrate-agent keygen: {e}");
                ExitCode::from(2)
            }
        };
    }
    let checking = matches!(args.command, Some(Command::Check));
    let file = migrate_agent::config::settings_file(
        args.config,
        std::path::Path::new(migrate_agent::config::DEFAULT_CONFIG),
    );
    let settings = Settings {
        file,
        flags: Flags {
            name: args.name,
            listen: args.listen,
            socket: args.socket,
            peers: args.peers,
            ship_limit_mib: args.ship_limit_mib,
            max_incoming: args.max_incoming,
            state_dir: args.state_dir,
            auth: args.auth,
            insecure: args.insecure,
            hand_over: args.hand_over,
            log_level: args.log_level,
            log_format: args.log_format,
            metrics: args.metrics,
        },
    };
    if checking {
        return check_host(&settings);
    }
    let config = match settings.read() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("migrate-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = start_logging(config.log_level.as_deref(), config.log_format) {
        eprintln!("migrate-agent: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = migrate_agent::failpoints::setup() {
        eprintln!("migrate-agent: {e}");
        return ExitCode::from(2);
    }
    match migrate_agent::daemon::run(config, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument says what it is (`--help`, the manual).
    #[test]
    fn every_argument_has_help() {
        let cmd = Args::command();
        let mut missing = Vec::new();
        for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
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
    fn man_pages_are_written() {
        let dir = std::env::temp_dir().join(format!("migrate-agent-man-{}", std::process::id()));
        man_pages(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("migrate-agent.8")).unwrap();
        assert!(
            page.contains(".TH") && page.contains("max\\-incoming"),
            "{page}"
        );
        assert!(dir.join("migrate-agent-keygen.8").is_file());
        assert!(dir.join("migrate-agent-check.8").is_file());
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
            assert!(page.contains(section), "lacks {section}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
