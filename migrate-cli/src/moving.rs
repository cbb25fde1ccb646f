//! Moving a process: `migrate PID --to HOST` (with its progress), and
//! `migrate run`, which starts a cooperating one.

use std::path::PathBuf;

use migrate_proto::frame;
use migrate_proto::msg::{
    EagerSet, LossPolicy, MigrateOptions, Mode, Prefetch, PushOrder, Reply, Request,
};
use migrate_proto::record::MigrationRecord;
use migrate_proto::PAGE_SIZE;

use crate::args::{
    CompressArg, EagerArg, Global, ModeArg, MoveArgs, OnLossArg, PushOrderArg, TcpArg,
};
use crate::{ask, connect, connect_named, json, refused, unexpected, Exit};

pub fn mib(pages: u64) -> f64 {
    (pages * PAGE_SIZE) as f64 / 1048576.0
}

pub fn summary(r: &MigrationRecord, complete: bool) -> String {
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
    let id = json::id_text(r.id);
    if complete {
        format!(
            "{head}, complete after {:.2} s; migration {id}",
            r.residual_us as f64 / 1e6
        )
    } else {
        format!("{head} to follow; migration {id} (migrate status {id} --follow)")
    }
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

pub fn run_migrate(g: &Global, args: MoveArgs) -> Result<(), Exit> {
    let (Some(pid), Some(to)) = (args.pid, args.to.clone()) else {
        return Err(Exit(2, anyhow::anyhow!("a pid and --to HOST are needed")));
    };
    let mut s = connect(&g.socket)?;
    let opts = MigrateOptions {
        mode: match args.mode {
            ModeArg::Postcopy => Mode::PostCopy,
            ModeArg::StopCopy => Mode::StopCopy,
            ModeArg::Precopy => Mode::PreCopy,
            ModeArg::Hybrid => Mode::Hybrid,
        },
        push_rate_mib: args.push_rate,
        prefetch: match args.prefetch {
            Some(n) => Prefetch::Fixed(n.max(1)),
            None => Prefetch::default(),
        },
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
        pid,
        to,
        detach: args.detach,
        opts,
    };
    // Which process the pid is now: after an agent's death, whether that
    // process runs on here tells the outcome.
    let started = proc_start(pid);
    frame::write_msg(&mut s, &req)
        .map_err(|e| Exit(3, anyhow::Error::new(e).context("talking to the agent")))?;
    let print = |r: &MigrationRecord, complete: bool| -> Result<(), Exit> {
        if g.json {
            json::print(&json::record_json(r));
        } else {
            println!("{}", summary(r, complete));
        }
        Ok(())
    };
    let mut meter = Meter::new(g.json);
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
                return Err(refused(&reasons, &detail, g.json))
            }
            Ok(Reply::Failed {
                error,
                resumed_original,
                ..
            }) => {
                return Err(if resumed_original {
                    Exit(
                        1,
                        anyhow::anyhow!("failed: {error}; pid {} runs on here, untouched", pid),
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
                if runs_again(pid, started) {
                    return Err(Exit(
                        1,
                        anyhow::anyhow!(
                            "the agent ended before the commit ({e}); pid {} runs on here",
                            pid
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

/// Where the shim is: `MIGRATE_SHIM`; else where a package puts it
/// (`../lib/migrate/` from this binary: `/usr/lib/migrate` beside
/// `/usr/bin/migrate`), or beside this binary (a build tree).
fn shim_path() -> Result<PathBuf, Exit> {
    const SHIM: &str = "libmigrate_shim.so";
    if let Some(p) = std::env::var_os("MIGRATE_SHIM") {
        let path = PathBuf::from(p);
        return match path.is_file() {
            true => Ok(path),
            false => Err(Exit(
                2,
                anyhow::anyhow!("MIGRATE_SHIM names {}: not a file", path.display()),
            )),
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| Exit(2, anyhow::anyhow!("cannot find this program: {e}")))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    let places = [dir.join("../lib/migrate").join(SHIM), dir.join(SHIM)];
    places.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Exit(
            2,
            anyhow::anyhow!(
                "the shim is not at {} nor {} (install the package, build the workspace, or set \
                 MIGRATE_SHIM)",
                places[0].display(),
                places[1].display()
            ),
        )
    })
}

pub fn run_run(g: &Global, tcp: Option<TcpArg>, command: &[String]) -> Result<(), Exit> {
    use std::os::unix::process::CommandExt;
    let shim = shim_path()?;
    let (mut s, host) = connect_named(&g.socket)?;
    let me = std::process::id() as i32;
    let tcp = match tcp {
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
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("LD_PRELOAD", preload)
        .env("MIGRATE_HOME", host)
        .exec();
    Err(Exit(2, anyhow::anyhow!("cannot run {}: {err}", command[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            id: 0x0f73_0d54_116c_b23d,
            ..Default::default()
        };
        assert_eq!(
            summary(&r, true),
            "migrated 4242 -> host2 (pid 311): downtime 7.9 ms, 12.4 MiB eager, 498.1 MiB lazy, complete after 0.61 s; migration 0f730d54116cb23d"
        );
        assert!(summary(&r, false).ends_with(
            "to follow; migration 0f730d54116cb23d (migrate status 0f730d54116cb23d --follow)"
        ));
    }
}
