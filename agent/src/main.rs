//! `migrate-agent`: the per-host daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use migrate_agent::config::{Config, Flags};

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
    /// TOML file with the same settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Largest open file whose content is shipped when the destination
    /// lacks it or it was deleted, MiB [default: 64].
    #[arg(long, value_name = "MIB")]
    ship_limit_mib: Option<u64>,
    /// Most migrations received at once; more are refused before the
    /// source freezes anything [default: 8].
    #[arg(long, value_name = "N")]
    max_incoming: Option<usize>,
    /// Where the agent keeps its state: the history of migrations
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
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("__stub") {
        migrate_agent::sys::run_stub();
    }
    if std::env::args().nth(1).as_deref() == Some("__deputy") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        migrate_agent::deputy::run(&args);
    }
    if std::env::args().nth(1).as_deref() == Some("__keeper") {
        migrate_agent::keeper::run();
    }
    let args = Args::parse();
    if let Some(Command::Keygen { dir, hosts }) = &args.command {
        return match migrate_agent::secure::keygen(dir, hosts) {
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::build(
        args.config.as_deref(),
        Flags {
            name: args.name,
            listen: args.listen,
            socket: args.socket,
            peers: args.peers,
            ship_limit_mib: args.ship_limit_mib,
            max_incoming: args.max_incoming,
            state_dir: args.state_dir,
            auth: args.auth,
            insecure: args.insecure,
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("migrate-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match migrate_agent::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
