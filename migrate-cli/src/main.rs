//! `migrate`: asks the local agent to move a process to another host.
//!
//! Exit status: 0 the process runs on the destination; 1 refused or
//! failed with the original still running here; 2 bad usage; 3 no agent;
//! 4 the process was lost (failure after the commit).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use migrate_proto::frame;
use migrate_proto::msg::{
    EagerSet, LossPolicy, MigrateOptions, Mode, PushOrder, Reason, Reply, Request, Resolution,
};
use migrate_proto::record::MigrationRecord;
use migrate_proto::PAGE_SIZE;

mod docs;
mod report;

const DEFAULT_SOCKET: &str = "/run/migrate/agent.sock";

/// Moves a running process to another host, live (post-copy).
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    after_help = "Subcommands (each with its own --help):\n  \
        migrate check PID          the pre-flight checks only\n  \
        migrate status [ID]        a migration's record\n  \
        migrate list [--history]   what can move from here; past migrations\n  \
        migrate run [--tcp P] CMD  start CMD as a cooperating process\n  \
        migrate report ID          draw a migration as SVG\n  \
        migrate resolve ID         decide on an original kept after a lost destination\n  \
        migrate completions SHELL  a shell completion script\n\n\
        Exit status: 0 migrated; 1 refused or failed, the process still runs here; 2 usage; 3 no agent; 4 the process was lost."
)]
struct MigrateArgs {
    /// The process to move.
    pid: i32,
    /// Destination: a peer name known to the agent, or ADDR:PORT.
    #[arg(long)]
    to: String,
    /// Return once the process runs on the destination, before all its
    /// memory has followed.
    #[arg(long)]
    detach: bool,
    /// Print the migration record as JSON instead of the summary line.
    #[arg(long)]
    json: bool,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// How memory moves.
    #[arg(long, value_enum, default_value = "postcopy")]
    mode: ModeArg,
    /// Cap on the background push in MiB/s (0: no push, pages move only
    /// when the process touches them).
    #[arg(long, value_name = "MIB")]
    push_rate: Option<u64>,
    /// Pages fetched per fault, the faulting one included.
    #[arg(long, default_value_t = 16)]
    prefetch: u32,
    /// Most pre-copy rounds before the freeze (precopy mode).
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_rounds: u32,
    /// A pre-copy round that finds at most this many written pages is the
    /// last before the freeze.
    #[arg(long, default_value_t = 1024, value_name = "PAGES")]
    converge_pages: u64,
    /// Pages sent in the freeze besides the core.
    #[arg(long, value_enum, default_value = "stack")]
    eager: EagerArg,
    /// With `--eager dirty`: at most this much of it (MiB).
    #[arg(long, value_name = "MIB")]
    eager_budget: Option<u64>,
    /// Order of the background push.
    #[arg(long, value_enum, default_value = "sequential")]
    push_order: PushOrderArg,
    /// Compress pages with LZ4 on every lane.
    #[arg(long, value_enum, default_value = "off")]
    compress: CompressArg,
    /// If the destination is lost after the commit (and its copy does not
    /// run with every page), the frozen original here is resumed once the
    /// destination says its copy is gone (kept frozen while that is not
    /// known), killed, or kept (until `migrate resolve`).
    #[arg(long, value_enum, default_value = "resume")]
    on_loss: OnLossArg,
    /// A service address of this host that moves with the process (taken
    /// off here at the freeze, put on the destination before it resumes):
    /// its TCP connections on it move intact. Repeatable.
    #[arg(long = "move-address", value_name = "ADDR")]
    move_address: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnLossArg {
    /// Keep it frozen until `migrate resolve ID --kill|--resume`.
    Keep,
    /// Kill it: the process is lost unless its copy runs on.
    Kill,
    /// Run it here again once the destination says the copy is gone; kept
    /// frozen while that is not known.
    Resume,
}

/// Decides the fate of an original kept frozen after its destination was
/// lost: end it, or run it again here.
#[derive(Debug, Parser)]
#[command(name = "migrate resolve")]
struct ResolveArgs {
    /// Migration id (hex prefix, as `migrate list --history` prints it).
    id: String,
    /// End the kept original.
    #[arg(long, conflicts_with = "resume", required_unless_present = "resume")]
    kill: bool,
    /// Run the kept original here again (waits until the copy on the
    /// destination is known gone).
    #[arg(long)]
    resume: bool,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TcpArg {
    /// Reset them at the freeze: the application sees a connection reset.
    Close,
    /// Connect again from the destination to the same address, on the same
    /// descriptor (reset if that fails).
    Reconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressArg {
    /// Pages travel as they are.
    Off,
    /// LZ4 blocks (pages that do not shrink travel as they are).
    Lz4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EagerArg {
    /// Only what rebuilding needs (thread blocks, rseq areas).
    None,
    /// Also the top of each thread's stack.
    Stack,
    /// Also every page not already on the destination (with hybrid: those
    /// written since the pre-copy round), up to --eager-budget.
    Dirty,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PushOrderArg {
    /// By address.
    Sequential,
    /// From the latest demand fault on, wrapping around.
    NearFaults,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
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

/// Runs the pre-flight checks on a process without touching it.
#[derive(Debug, Parser)]
#[command(name = "migrate check")]
struct CheckArgs {
    /// The process to check.
    pid: i32,
    /// A refusal's reasons as JSON on standard output (each with its
    /// stable `code` and its `text`).
    #[arg(long)]
    json: bool,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Shows one migration's record: the latest, or the one with this id.
#[derive(Debug, Parser)]
#[command(name = "migrate status")]
struct StatusArgs {
    /// Migration id (hex, as `migrate list --history` prints it; a unique
    /// prefix is enough).
    id: Option<String>,
    /// Print the whole record as JSON.
    #[arg(long)]
    json: bool,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Starts a command on this host as a cooperating process: with the shim
/// (`libmigrate_shim.so`) preloaded and registered with the local agent.
#[derive(Debug, Parser)]
#[command(name = "migrate run")]
struct RunArgs {
    /// What the process's established TCP connections become when it
    /// moves: reset (`close`), or connected again from the destination on
    /// the same descriptor (`reconnect`). Without it a process holding one
    /// is not migrated.
    #[arg(long, value_enum)]
    tcp: Option<TcpArg>,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Lists the processes that can be migrated from this host (cooperating
/// ones marked), or past migrations (`--history`).
#[derive(Debug, Parser)]
#[command(name = "migrate list")]
struct ListArgs {
    /// Past and running migrations started from this host.
    #[arg(long)]
    history: bool,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Draws a migration's record as SVG.
#[derive(Debug, Parser)]
#[command(name = "migrate report")]
struct ReportArgs {
    /// Migration id (hex prefix).
    id: String,
    /// Overlay these migrations too (MiB moved over time).
    #[arg(long, num_args = 1.., value_name = "ID")]
    compare: Vec<String>,
    /// Draw the time-space diagram of the messages between the agents.
    #[arg(long)]
    timespace: bool,
    /// Output file.
    #[arg(short, long, default_value = "migration.svg")]
    output: String,
    /// The local agent's control socket.
    #[arg(long, env = "MIGRATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// A failure with its exit status.
struct Exit(u8, anyhow::Error);

fn connect(socket: &PathBuf) -> Result<UnixStream, Exit> {
    connect_named(socket).map(|(s, _)| s)
}

/// Connects to the agent; returns the stream and the agent's host name.
fn connect_named(socket: &PathBuf) -> Result<(UnixStream, String), Exit> {
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

fn mib(pages: u64) -> f64 {
    (pages * PAGE_SIZE) as f64 / 1048576.0
}

fn summary(r: &MigrationRecord, complete: bool) -> String {
    let precopy = if r.precopy_rounds.is_empty() {
        String::new()
    } else {
        let n = r.precopy_rounds.len();
        format!(
            "{:.1} MiB pre-copied in {n} round{}, ",
            mib(r.precopy_rounds.iter().sum()),
            if n == 1 { "" } else { "s" }
        )
    };
    let kin = match r.kin.len() {
        0 => String::new(),
        1 => " with 1 descendant".into(),
        n => format!(" with {n} descendants"),
    };
    let head = format!(
        "migrated {}{kin} -> {} (pid {}): downtime {:.1} ms, {precopy}{:.1} MiB eager, {:.1} MiB lazy",
        r.pid,
        r.to,
        r.new_pid,
        r.downtime_us as f64 / 1000.0,
        mib(r.eager_pages),
        mib(r.lazy_pages)
    );
    if complete {
        format!("{head}, complete after {:.2} s", r.residual_us as f64 / 1e6)
    } else {
        format!("{head} to follow")
    }
}

/// A refusal: exit 1, each reason said with its stable code in brackets,
/// then any detail; with `json`, also `{"refused": [{"code", "text"}],
/// "detail": [...]}` on standard output.
fn refused(reasons: &[Reason], detail: &[String], json: bool) -> Exit {
    if json {
        let v = serde_json::json!({ "refused": reasons, "detail": detail });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
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

fn run_check(args: CheckArgs) -> Result<(), Exit> {
    let mut s = connect(&args.socket)?;
    match ask_json(&mut s, &Request::Check { pid: args.pid }, args.json)? {
        Reply::Movable { summary } => {
            println!("{summary}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// The records the agent keeps, oldest first, and its host name.
fn history(socket: &PathBuf) -> Result<(Vec<MigrationRecord>, String), Exit> {
    let (mut s, name) = connect_named(socket)?;
    match ask(&mut s, &Request::History)? {
        Reply::Records(v) => Ok((v, name)),
        other => Err(unexpected(other)),
    }
}

/// Sends `req` to the agent and reads its answer: a refusal is exit 1, a
/// broken conversation exit 3.
fn ask(s: &mut UnixStream, req: &Request) -> Result<Reply, Exit> {
    ask_json(s, req, false)
}

/// As [`ask`]; with `json` a refusal is also printed as JSON.
fn ask_json(s: &mut UnixStream, req: &Request, json: bool) -> Result<Reply, Exit> {
    match req.ask(s) {
        Ok(Reply::Refused { reasons, detail }) => Err(refused(&reasons, &detail, json)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Exit(
            3,
            anyhow::Error::new(e).context("talking to the agent"),
        )),
    }
}

fn unexpected(reply: Reply) -> Exit {
    Exit(3, anyhow::anyhow!("unexpected answer: {reply:?}"))
}

fn find<'a>(records: &'a [MigrationRecord], id: &str) -> Result<&'a MigrationRecord, Exit> {
    let want = id.trim_start_matches("0x").to_lowercase();
    // A whole id (as `migrate list` prints it, 16 digits, or without its
    // leading zeros, or in decimal) names its migration even when it is
    // also the start of another's; otherwise any prefix of the 16 digits.
    let whole = |r: &&MigrationRecord| {
        format!("{:016x}", r.id) == want
            || format!("{:x}", r.id) == want
            || r.id.to_string() == want
    };
    let mut hits: Vec<&MigrationRecord> = records.iter().filter(whole).collect();
    if hits.is_empty() {
        hits = records
            .iter()
            .filter(|r| format!("{:016x}", r.id).starts_with(&want))
            .collect();
    }
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(Exit(
            1,
            anyhow::anyhow!("no migration {id} in this agent's history"),
        )),
        _ => Err(Exit(
            1,
            anyhow::anyhow!("{id} names {} migrations: give more digits", hits.len()),
        )),
    }
}

fn one_line(r: &MigrationRecord) -> String {
    format!(
        "{:016x}  pid {:>7} -> {} (pid {})  {:<9}  downtime {:>8.1} ms  {}",
        r.id,
        r.pid,
        r.to,
        r.new_pid,
        r.mode,
        r.downtime_us as f64 / 1000.0,
        r.outcome
    )
}

fn run_status(args: StatusArgs) -> Result<(), Exit> {
    let (records, _) = history(&args.socket)?;
    let r = match &args.id {
        Some(id) => find(&records, id)?,
        None => records.last().ok_or_else(|| {
            Exit(
                1,
                anyhow::anyhow!("no migration started from this host yet"),
            )
        })?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).map_err(|e| Exit(1, e.into()))?
        );
        return Ok(());
    }
    println!("{}", one_line(r));
    println!(
        "  pages: {} eager, {} lazy ({} on demand in {} requests, {} pushed, {} discarded), {} pre-copied, {} stored",
        r.eager_pages,
        r.lazy_pages,
        r.demand_pages,
        r.demand_requests,
        r.pushed_pages,
        r.discarded_pages,
        r.precopy_rounds.iter().sum::<u64>(),
        r.stored_pages
    );
    println!(
        "  clocks: {} is {} µs ahead, ±{} µs",
        r.to, r.clock_offset_us, r.clock_uncertainty_us
    );
    for e in &r.events {
        println!(
            "  {:>10.3} ms  {:<8} {}",
            e.at_us as f64 / 1000.0,
            e.host,
            e.what
        );
    }
    Ok(())
}

/// Where the shim is: `MIGRATE_SHIM`, or beside this binary.
fn shim_path() -> Result<PathBuf, Exit> {
    let path = match std::env::var_os("MIGRATE_SHIM") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| Exit(2, anyhow::anyhow!("cannot find this program: {e}")))?
            .with_file_name("libmigrate_shim.so"),
    };
    if !path.is_file() {
        return Err(Exit(
            2,
            anyhow::anyhow!(
                "the shim is not at {} (build the workspace, or set MIGRATE_SHIM)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

fn run_run(args: RunArgs) -> Result<(), Exit> {
    use std::os::unix::process::CommandExt;
    let shim = shim_path()?;
    let (mut s, host) = connect_named(&args.socket)?;
    let me = std::process::id() as i32;
    let tcp = match args.tcp {
        None => migrate_proto::image::TcpPolicy::Refuse,
        Some(TcpArg::Close) => migrate_proto::image::TcpPolicy::Close,
        Some(TcpArg::Reconnect) => migrate_proto::image::TcpPolicy::Reconnect,
    };
    match ask(&mut s, &Request::Register { pid: me, tcp })? {
        Reply::Registered => {}
        other => return Err(unexpected(other)),
    }
    drop(s);
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", shim.display()),
        _ => shim.display().to_string(),
    };
    // The same pid, now running the command.
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("LD_PRELOAD", preload)
        .env("MIGRATE_HOME", host)
        .exec();
    Err(Exit(
        2,
        anyhow::anyhow!("cannot run {}: {err}", args.command[0]),
    ))
}

fn run_list(args: ListArgs) -> Result<(), Exit> {
    if !args.history {
        let mut s = connect(&args.socket)?;
        let procs = match ask(&mut s, &Request::List)? {
            Reply::Processes(p) => p,
            other => return Err(unexpected(other)),
        };
        println!(
            "{:>8}  {:<16} {:>5} {:>9}  {:<5} COMMAND",
            "PID", "ORIGIN", "MOVES", "RSS MiB", "COOP"
        );
        for p in procs {
            println!(
                "{:>8}  {:<16} {:>5} {:>9.1}  {:<5} {}",
                p.pid,
                p.lineage.home,
                p.lineage.moves,
                p.rss_kib as f64 / 1024.0,
                if p.lineage.cooperating { "yes" } else { "-" },
                p.comm
            );
        }
        return Ok(());
    }
    let (records, _) = history(&args.socket)?;
    for r in &records {
        println!("{}", one_line(r));
    }
    Ok(())
}

fn run_report(args: ReportArgs) -> Result<(), Exit> {
    let (records, host) = history(&args.socket)?;
    let main = find(&records, &args.id)?;
    let drawn = if !args.compare.is_empty() {
        let mut all = vec![main.clone()];
        for id in &args.compare {
            all.push(find(&records, id)?.clone());
        }
        report::compare(&all, &args.output)
    } else if args.timespace {
        report::timespace(main, &host, &args.output)
    } else {
        report::timeline(main, &args.output)
    };
    drawn.map_err(|e| Exit(1, anyhow::anyhow!(e)))?;
    println!("written: {}", args.output);
    Ok(())
}

/// Post-copy progress: a bar on a terminal, a plain line per second on
/// stderr otherwise, nothing with `--json`.
struct Meter {
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    last_line: Option<std::time::Instant>,
}

impl Meter {
    fn new(quiet: bool) -> Meter {
        Meter {
            quiet,
            bar: None,
            last_line: None,
        }
    }

    fn update(&mut self, moved: u64, total: u64, elapsed_us: u64) {
        use std::io::IsTerminal;
        if self.quiet || total == 0 {
            return;
        }
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total * PAGE_SIZE);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "post-copy [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            });
            bar.set_position(moved.min(total) * PAGE_SIZE);
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.last_line = Some(std::time::Instant::now());
            eprintln!(
                "post-copy: {:.1} of {:.1} MiB moved after {:.1} s",
                mib(moved.min(total)),
                mib(total),
                elapsed_us as f64 / 1e6
            );
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn run_migrate(args: MigrateArgs) -> Result<(), Exit> {
    let mut s = connect(&args.socket)?;
    let opts = MigrateOptions {
        mode: match args.mode {
            ModeArg::Postcopy => Mode::PostCopy,
            ModeArg::StopCopy => Mode::StopCopy,
            ModeArg::Precopy => Mode::PreCopy,
            ModeArg::Hybrid => Mode::Hybrid,
        },
        push_rate_mib: args.push_rate,
        prefetch_pages: args.prefetch.max(1),
        max_rounds: args.max_rounds.max(1),
        converge_pages: args.converge_pages,
        eager: match args.eager {
            EagerArg::None => EagerSet::None,
            EagerArg::Stack => EagerSet::Stack,
            EagerArg::Dirty => EagerSet::Dirty,
        },
        eager_budget_pages: args
            .eager_budget
            .map(|m| m.saturating_mul(1 << 20) / PAGE_SIZE)
            .unwrap_or(u64::MAX),
        push_order: match args.push_order {
            PushOrderArg::Sequential => PushOrder::Sequential,
            PushOrderArg::NearFaults => PushOrder::NearFaults,
        },
        compress: args.compress == CompressArg::Lz4,
        on_loss: match args.on_loss {
            OnLossArg::Keep => LossPolicy::Keep,
            OnLossArg::Kill => LossPolicy::Kill,
            OnLossArg::Resume => LossPolicy::Resume,
        },
        move_addresses: args.move_address.clone(),
    };
    let req = Request::Migrate {
        pid: args.pid,
        to: args.to.clone(),
        detach: args.detach,
        opts,
    };
    // Which process the pid is now: after an agent's death, whether that
    // process runs on here tells the outcome.
    let started = proc_start(args.pid);
    frame::write_msg(&mut s, &req)
        .map_err(|e| Exit(3, anyhow::Error::new(e).context("talking to the agent")))?;
    let print = |r: &MigrationRecord, complete: bool| -> Result<(), Exit> {
        if args.json {
            let j = serde_json::to_string_pretty(r).map_err(|e| Exit(1, e.into()))?;
            println!("{j}");
        } else {
            println!("{}", summary(r, complete));
        }
        Ok(())
    };
    let mut meter = Meter::new(args.json);
    loop {
        match frame::read_msg::<Reply>(&mut s) {
            Ok(Reply::Resumed(r)) => {
                if args.detach {
                    return print(&r, false);
                }
            }
            Ok(Reply::Progress {
                moved_pages,
                total_pages,
                elapsed_us,
            }) => meter.update(moved_pages, total_pages, elapsed_us),
            Ok(Reply::Complete(r)) => {
                meter.finish();
                return print(&r, true);
            }
            Ok(Reply::Refused { reasons, detail }) => {
                return Err(refused(&reasons, &detail, args.json))
            }
            Ok(Reply::Failed {
                error,
                resumed_original,
                ..
            }) => {
                return Err(if resumed_original {
                    Exit(
                        1,
                        anyhow::anyhow!(
                            "failed: {error}; pid {} runs on here, untouched",
                            args.pid
                        ),
                    )
                } else {
                    Exit(4, anyhow::anyhow!("failed after commit: {error}"))
                })
            }
            Ok(other) => return Err(Exit(3, anyhow::anyhow!("unexpected answer: {other:?}"))),
            Err(e) => {
                // The agent died. Before the commit the kernel lets the
                // frozen original go on as the agent's ptrace ends (and the
                // destination discards its copy); after it, the kernel
                // kills the original (PTRACE_O_EXITKILL).
                if runs_again(args.pid, started) {
                    return Err(Exit(
                        1,
                        anyhow::anyhow!(
                            "the agent ended before the commit ({e}); pid {} runs on here",
                            args.pid
                        ),
                    ));
                }
                return Err(Exit(
                    4,
                    anyhow::Error::new(e).context(
                        "the agent closed the connection mid-migration (did it die?): the outcome is unknown",
                    ),
                ));
            }
        }
    }
}

/// State and start time of process `pid` (`/proc/PID/stat` fields 3 and
/// 22), the start time telling it from a later process with its pid.
fn proc_state(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// Start time of process `pid`, to know it again.
fn proc_start(pid: i32) -> Option<u64> {
    proc_state(pid).map(|(_, start)| start)
}

/// Whether the process that was `pid` at `started` runs on, within a
/// second of its tracer's death: seen running (not stopped by a tracer,
/// not dead) for 250 ms in a row. A process the kernel is killing (the
/// tracer died after the commit: `PTRACE_O_EXITKILL`) may show as running
/// for a moment on its way out.
fn runs_again(pid: i32, started: Option<u64>) -> bool {
    let mut running_for = 0;
    for _ in 0..40 {
        match proc_state(pid) {
            Some((_, start)) if Some(start) != started => return false,
            None | Some(('Z' | 'X', _)) => return false,
            Some(('t' | 'T', _)) => running_for = 0,
            Some(_) => running_for += 1,
        }
        if running_for > 5 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let sub = |a: &[String]| {
        let mut a = a.to_vec();
        a.remove(1);
        a
    };
    let result = match argv.get(1).map(String::as_str) {
        Some("check") => match CheckArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_check(a),
            Err(e) => usage(e),
        },
        Some("status") => match StatusArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_status(a),
            Err(e) => usage(e),
        },
        Some("list") => match ListArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_list(a),
            Err(e) => usage(e),
        },
        Some("report") => match ReportArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_report(a),
            Err(e) => usage(e),
        },
        Some("run") => match RunArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_run(a),
            Err(e) => usage(e),
        },
        Some("resolve") => match ResolveArgs::try_parse_from(sub(&argv)) {
            Ok(a) => run_resolve(a),
            Err(e) => usage(e),
        },
        Some("completions") => match argv.get(2) {
            Some(shell) if argv.len() == 3 => {
                docs::completions(shell).map_err(|e| Exit(2, anyhow::anyhow!(e)))
            }
            _ => Err(Exit(
                2,
                anyhow::anyhow!("usage: migrate completions bash|zsh|fish|elvish|powershell"),
            )),
        },
        Some("__man") => match argv.get(2) {
            Some(dir) => docs::man_pages(std::path::Path::new(dir))
                .map_err(|e| Exit(2, anyhow::anyhow!("writing manual pages to {dir}: {e}"))),
            None => Err(Exit(2, anyhow::anyhow!("usage: migrate __man DIR"))),
        },
        _ => match MigrateArgs::try_parse_from(&argv) {
            Ok(a) => run_migrate(a),
            Err(e) => usage(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, e)) => {
            eprintln!("migrate: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn run_resolve(args: ResolveArgs) -> Result<(), Exit> {
    let (records, _) = history(&args.socket)?;
    let id = find(&records, &args.id)?.id;
    let mut s = connect(&args.socket)?;
    let action = if args.kill {
        Resolution::Kill
    } else {
        Resolution::Resume
    };
    match ask(&mut s, &Request::Resolve { id, action })? {
        Reply::Resolved(what) => {
            println!("{what}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

fn usage(e: clap::Error) -> Result<(), Exit> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        std::process::exit(0);
    }
    let _ = e.print();
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_with_a_leading_zero_is_found_however_it_is_written() {
        let records = [
            MigrationRecord {
                id: 0x0f73_0d54_116c_b23d,
                ..Default::default()
            },
            MigrationRecord {
                id: 0xf730_d541_16cb_23d0,
                ..Default::default()
            },
        ];
        for given in [
            "0f730d54116cb23d",
            "f730d54116cb23d",
            "0f73",
            "0x0f730d54116cb23d",
        ] {
            let hit = find(&records, given).map(|r| r.id).ok();
            assert_eq!(hit, Some(0x0f73_0d54_116c_b23d), "{given}");
        }
        assert_eq!(
            find(&records, "f730d541").map(|r| r.id).ok(),
            Some(0xf730_d541_16cb_23d0)
        );
        assert!(find(&records, "1234").is_err());
    }

    #[test]
    fn summary_line() {
        let r = MigrationRecord {
            pid: 4242,
            to: "host2".into(),
            new_pid: 311,
            downtime_us: 7900,
            eager_pages: 3174,
            lazy_pages: 127_514,
            residual_us: 610_000,
            ..Default::default()
        };
        assert_eq!(
            summary(&r, true),
            "migrated 4242 -> host2 (pid 311): downtime 7.9 ms, 12.4 MiB eager, 498.1 MiB lazy, complete after 0.61 s"
        );
    }
}
