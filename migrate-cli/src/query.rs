//! Asking the agent about processes and migrations: `check`, `status`,
//! `list`, `report`, `resolve`.

use std::path::PathBuf;

use migrate_proto::msg::{Reply, Request, Resolution};
use migrate_proto::record::MigrationRecord;

use crate::args::Global;
use crate::json::{self, id_text, record_json};
use crate::moving::mib;
use crate::{ask, ask_json, connect, history, report, unexpected, Exit};

pub fn run_check(g: &Global, pid: i32) -> Result<(), Exit> {
    let mut s = connect(&g.socket)?;
    match ask_json(&mut s, &Request::Check { pid }, g.json)? {
        Reply::Movable { summary } if g.json => {
            json::print(&serde_json::json!({ "pid": pid, "movable": true, "summary": summary }));
            Ok(())
        }
        Reply::Movable { summary } => {
            println!("{summary}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

pub fn find<'a>(records: &'a [MigrationRecord], id: &str) -> Result<&'a MigrationRecord, Exit> {
    let want = id.trim_start_matches("0x").to_lowercase();
    // A whole id (as `migrate list` prints it, 16 digits, or without its
    // leading zeros, or in decimal) names its migration even when it is
    // also the start of another's; otherwise any prefix of the 16 digits.
    let whole = |r: &&MigrationRecord| {
        id_text(r.id) == want || format!("{:x}", r.id) == want || r.id.to_string() == want
    };
    let mut hits: Vec<&MigrationRecord> = records.iter().filter(whole).collect();
    if hits.is_empty() {
        hits = records
            .iter()
            .filter(|r| id_text(r.id).starts_with(&want))
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
        "{}  pid {:>7} -> {} (pid {})  {:<9}  downtime {:>8.1} ms  {}",
        id_text(r.id),
        r.pid,
        r.to,
        r.new_pid,
        r.mode,
        r.downtime_us as f64 / 1000.0,
        r.outcome
    )
}

/// The record `id` names (the latest without one).
fn pick(records: &[MigrationRecord], id: Option<&str>) -> Result<MigrationRecord, Exit> {
    match id {
        Some(id) => find(records, id).cloned(),
        None => records.last().cloned().ok_or_else(|| {
            Exit(
                1,
                anyhow::anyhow!("no migration started from this host yet"),
            )
        }),
    }
}

/// Whether the migration is still under way (running on the
/// destination, pages still coming).
fn under_way(r: &MigrationRecord) -> bool {
    r.outcome == "resumed"
}

/// How often `status --follow` asks, and for how long at most.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
const FOLLOW_AT_MOST: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn run_status(g: &Global, id: Option<&str>, follow: bool) -> Result<(), Exit> {
    let (records, _) = history(&g.socket)?;
    let mut r = pick(&records, id)?;
    if !follow {
        if g.json {
            json::print(&record_json(&r));
        } else {
            print_status(&r);
        }
        return Ok(());
    }
    // Followed by its id from now on: the latest may change meanwhile.
    let id = id_text(r.id);
    let t = std::time::Instant::now();
    let mut said: Option<(String, u64)> = None;
    loop {
        let now = (r.outcome.clone(), r.moved_pages);
        if said.as_ref() != Some(&now) {
            if g.json {
                json::print(&record_json(&r));
            } else if under_way(&r) {
                println!(
                    "{id}  running there, post-copy: {:.1} of {:.1} MiB in on {}",
                    mib(r.moved_pages),
                    mib(r.lazy_pages),
                    r.to
                );
            }
            said = Some(now);
        }
        if !under_way(&r) {
            if !g.json {
                print_status(&r);
            }
            return Ok(());
        }
        if t.elapsed() > FOLLOW_AT_MOST {
            return Err(Exit(
                1,
                anyhow::anyhow!("{id} is still under way after a day"),
            ));
        }
        std::thread::sleep(FOLLOW_EVERY);
        let (records, _) = history(&g.socket)?;
        r = find(&records, &id)?.clone();
    }
}

fn print_status(r: &MigrationRecord) {
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
}

pub fn run_list(g: &Global, history_too: bool) -> Result<(), Exit> {
    if !history_too {
        let mut s = connect(&g.socket)?;
        let procs = match ask(&mut s, &Request::List)? {
            Reply::Processes(p) => p,
            other => return Err(unexpected(other)),
        };
        if g.json {
            json::print(&serde_json::json!({ "processes": procs }));
            return Ok(());
        }
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
    let (records, _) = history(&g.socket)?;
    if g.json {
        let all: Vec<_> = records.iter().map(record_json).collect();
        json::print(&serde_json::json!({ "migrations": all }));
        return Ok(());
    }
    for r in &records {
        println!("{}", one_line(r));
    }
    Ok(())
}

pub fn run_report(
    g: &Global,
    id: &str,
    compare: &[String],
    (timespace, html): (bool, bool),
    output: Option<PathBuf>,
) -> Result<(), Exit> {
    let (records, host) = history(&g.socket)?;
    let main = find(&records, id)?;
    let mut all = vec![main.clone()];
    for id in compare {
        all.push(find(&records, id)?.clone());
    }
    if g.json && output.is_none() {
        let all: Vec<_> = all.iter().map(record_json).collect();
        json::print(&serde_json::json!({ "migrations": all }));
        return Ok(());
    }
    let output = output.unwrap_or_else(|| {
        PathBuf::from(if html {
            "migration.html"
        } else {
            "migration.svg"
        })
    });
    let path = output.to_string_lossy().into_owned();
    let drawn = if html && !crate::timespace::has_messages(main) {
        Err("this record has no messages to draw (an agent before protocol 15 made it)".into())
    } else if html {
        std::fs::write(&path, crate::timespace::html(main, &host))
            .map_err(|e| format!("writing {path}: {e}"))
    } else if !compare.is_empty() {
        report::compare(&all, &path)
    } else if timespace && crate::timespace::has_messages(main) {
        std::fs::write(&path, crate::timespace::svg(main, &host))
            .map_err(|e| format!("writing {path}: {e}"))
    } else if timespace {
        // A record of an agent before protocol 15: no messages logged.
        report::timespace(main, &host, &path)
    } else {
        report::timeline(main, &path)
    };
    drawn.map_err(|e| Exit(1, anyhow::anyhow!(e)))?;
    if g.json {
        json::print(&serde_json::json!({ "written": path }));
    } else {
        println!("written: {path}");
    }
    Ok(())
}

pub fn run_resolve(g: &Global, id: &str, kill: bool) -> Result<(), Exit> {
    let (records, _) = history(&g.socket)?;
    let id = find(&records, id)?.id;
    let mut s = connect(&g.socket)?;
    let action = if kill {
        Resolution::Kill
    } else {
        Resolution::Resume
    };
    match ask_json(&mut s, &Request::Resolve { id, action }, g.json)? {
        Reply::Resolved(what) if g.json => {
            json::print(&serde_json::json!({ "id": id_text(id), "resolved": what }));
            Ok(())
        }
        Reply::Resolved(what) => {
            println!("{what}");
            Ok(())
        }
        other => Err(unexpected(other)),
    }
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
}
