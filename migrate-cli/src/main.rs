//! `migrate`: asks the local agent to move a process to another host.
//!
//! Exit status: 0 the process runs on the destination (or the subcommand
//! did what it was asked); 1 refused or failed with the original still
//! running here; 2 bad usage; 3 no agent; 4 the process was lost (failure
//! after the commit).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use migrate_proto::msg::{Reason, Reply, Request};
use migrate_proto::record::MigrationRecord;

mod args;
mod docs;
mod json;
mod moving;
mod query;
mod report;
mod timespace;

use args::{Cli, Sub};

/// Whether a JSON answer went out already (a refusal's): then an error
/// is not said again as JSON.
static JSON_SAID: AtomicBool = AtomicBool::new(false);

/// A failure with its exit status.
pub struct Exit(pub u8, pub anyhow::Error);

pub fn connect(socket: &PathBuf) -> Result<UnixStream, Exit> {
    connect_named(socket).map(|(s, _)| s)
}

/// Connects to the agent; returns the stream and the agent's host name.
pub fn connect_named(socket: &PathBuf) -> Result<(UnixStream, String), Exit> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        Exit(
            3,
            anyhow::anyhow!(
                "no agent at {}: {e} (is migrate-agent running? see --socket)",
                socket.display()
            ),
        )
    })?;
    match Request::hello(&mut s) {
        Ok(Reply::Welcome { name, .. }) => Ok((s, name)),
        Ok(Reply::Refused { reasons, .. }) => Err(Exit(
            3,
            anyhow::anyhow!(migrate_proto::refusal::texts(&reasons, "; ")),
        )),
        Ok(other) => Err(Exit(
            3,
            anyhow::anyhow!("unexpected answer from the agent: {other:?}"),
        )),
        Err(e) => Err(Exit(
            3,
            anyhow::Error::new(e).context("talking to the agent"),
        )),
    }
}

/// A refusal: exit 1, each reason said with its stable code in brackets,
/// then any detail; with `json`, also `{"refused": [{"code", "text"}],
/// "detail": [...]}` on standard output.
pub fn refused(reasons: &[Reason], detail: &[String], json: bool) -> Exit {
    if json {
        json::print(&serde_json::json!({ "refused": reasons, "detail": detail }));
        JSON_SAID.store(true, Ordering::Relaxed);
    }
    let lines: Vec<String> = reasons
        .iter()
        .map(|r| format!("{} [{}]", r.text, r.code.as_str()))
        .chain(detail.iter().cloned())
        .collect();
    let msg = if lines.len() > 1 {
        format!("refused:\n  {}", lines.join("\n  "))
    } else {
        format!("refused: {}", lines.join(""))
    };
    Exit(1, anyhow::anyhow!(msg))
}

/// The records the agent keeps, oldest first, and its host name.
pub fn history(socket: &PathBuf) -> Result<(Vec<MigrationRecord>, String), Exit> {
    let (mut s, name) = connect_named(socket)?;
    match ask(&mut s, &Request::History)? {
        Reply::Records(v) => Ok((v, name)),
        other => Err(unexpected(other)),
    }
}

/// Sends `req` to the agent and reads its answer: a refusal is exit 1, a
/// broken conversation exit 3.
pub fn ask(s: &mut UnixStream, req: &Request) -> Result<Reply, Exit> {
    ask_json(s, req, false)
}

/// As [`ask`]; with `json` a refusal is also printed as JSON.
pub fn ask_json(s: &mut UnixStream, req: &Request, json: bool) -> Result<Reply, Exit> {
    match req.ask(s) {
        Ok(Reply::Refused { reasons, detail }) => Err(refused(&reasons, &detail, json)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Exit(
            3,
            anyhow::Error::new(e).context("talking to the agent"),
        )),
    }
}

pub fn unexpected(reply: Reply) -> Exit {
    Exit(3, anyhow::anyhow!("unexpected answer: {reply:?}"))
}

fn main() -> ExitCode {
    let cli = match Cli::parse_from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => usage(e),
    };
    let g = &cli.global;
    let result = match cli.command {
        None => moving::run_migrate(g, cli.migrate),
        Some(Sub::Check { pid }) => query::run_check(g, pid),
        Some(Sub::Status { id, follow }) => query::run_status(g, id.as_deref(), follow),
        Some(Sub::List { history }) => query::run_list(g, history),
        Some(Sub::Run { tcp, command }) => moving::run_run(g, tcp, &command),
        Some(Sub::Report {
            id,
            compare,
            timespace,
            html,
            output,
        }) => query::run_report(g, &id, &compare, (timespace, html), output),
        Some(Sub::Resolve { id, kill, .. }) => query::run_resolve(g, &id, kill),
        Some(Sub::Completions { shell }) => {
            docs::completions(shell);
            Ok(())
        }
        Some(Sub::Man { dir }) => docs::man_pages(&dir).map_err(|e| {
            Exit(
                2,
                anyhow::anyhow!("writing manual pages to {}: {e}", dir.display()),
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, e)) => {
            if g.json && !JSON_SAID.load(Ordering::Relaxed) {
                json::print(&json::error_json(&format!("{e:#}"), code));
            }
            eprintln!("migrate: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn usage(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        std::process::exit(0);
    }
    std::process::exit(2);
}
