//! Demand faults in a kept trace (`bench __faults FILE`): each fault of
//! the workload followed through the threads of both agents, from the
//! scheduler's events alone (`sched_waking`, `sched_switch`, recorded by
//! `bench --trace`).
//!
//! A fault's cycle begins when the workload wakes the destination's fault
//! loop (the kernel does, in the faulting thread, as it queues the fault
//! on the userfaultfd) and ends when the workload runs again. Between the
//! two the request and the reply cross four more threads, each woken by
//! the one before (directly, or through the network's receive path); the
//! agent names them by role (`fault-loop`, `demand-serve`, `demand-read`,
//! `push-read`, `push-send`). Each hop is split in two: from a thread's
//! wake-up to its running (the wait for a vCPU: an idle vCPU wakes on
//! this VM only when its host runs it; a busy one runs the woken thread
//! when the one it runs lets go), and from its running to its waking the
//! next one. A fault whose fault loop was already awake logs no wake-up
//! and is not counted; nor is a stage whose ends the trace does not show
//! in order.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::stops::{field, parse_line, Event, What};

/// The agents' threads on a fault's path, in the order a fault meets
/// them (see `migrate_agent::postcopy::spawn_named`).
const FAULT_LOOP: &str = "fault-loop";
const DEMAND_SERVE: &str = "demand-serve";
const DEMAND_READ: &str = "demand-read";
/// The ticking workload's name (`tests/workloads`).
const WORKLOAD: &str = "workload";
/// What ran on the vCPU a thread was woken onto, at the wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Onto {
    /// Nothing: the vCPU idled (on this VM, halted).
    Idle,
    /// This thread (pid), until it let go of the vCPU.
    Busy(i32),
    /// The trace had not yet shown what ran there (counted as neither).
    #[default]
    Unknown,
}

/// The points of one fault's cycle, trace clock (ns); `None` where the
/// trace did not show it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Cycle {
    /// The workload woke the fault loop.
    fault: u64,
    fault_loop_runs: Option<u64>,
    /// The fault loop woken again by another thread before it asked the
    /// source: it had slept on a lock; when, and by whom.
    fault_loop_let_go: Option<(u64, i32)>,
    serve_woken: Option<(u64, i32, Onto)>,
    serve_runs: Option<u64>,
    read_woken: Option<(u64, i32, Onto)>,
    read_runs: Option<u64>,
    /// Who woke the workload, when, and onto what.
    workload_woken: Option<(u64, i32, Onto)>,
    workload_runs: Option<u64>,
    /// What ran where the fault loop was woken onto.
    fault_onto: Onto,
}

/// The thread names a trace shows, by pid (from the woken threads'
/// `comm=` and the switched-to threads' `next_comm=`).
fn names(text: &str) -> HashMap<i32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let (name_key, pid_key, fields) = if let Some(i) = line.find(": sched_waking: ") {
            ("comm", "pid", &line[i + 16..])
        } else if let Some(i) = line.find(" ==> ") {
            ("next_comm", "next_pid", &line[i + 5..])
        } else {
            continue;
        };
        let (Some(name), Some(pid)) = (field(fields, name_key), field(fields, pid_key)) else {
            continue;
        };
        if let Ok(pid) = pid.parse() {
            names.insert(pid, name.to_string());
        }
    }
    names
}

/// The pids named `name`.
fn pids(names: &HashMap<i32, String>, name: &str) -> Vec<i32> {
    names
        .iter()
        .filter(|(_, n)| n.as_str() == name)
        .map(|(p, _)| *p)
        .collect()
}

/// Follows every fault in `events` (in time order).
fn cycles(events: &[Event], names: &HashMap<i32, String>) -> Vec<Cycle> {
    let is = |pid: i32, name: &str| names.get(&pid).is_some_and(|n| n == name);
    let mut running: HashMap<u32, i32> = HashMap::new();
    // Each workload thread's open cycle.
    let mut open: HashMap<i32, Cycle> = HashMap::new();
    let mut done = Vec::new();
    for e in events {
        let onto = |target: u32| match running.get(&target) {
            None => Onto::Unknown,
            Some(0) => Onto::Idle,
            Some(&p) => Onto::Busy(p),
        };
        match e.what {
            What::Waking { pid, target } if is(pid, FAULT_LOOP) && is(e.task, WORKLOAD) => {
                open.insert(
                    e.task,
                    Cycle {
                        fault: e.at,
                        fault_onto: onto(target),
                        ..Cycle::default()
                    },
                );
            }
            What::Waking { pid, target } => {
                let onto = onto(target);
                let woken = names.get(&pid).map(String::as_str);
                for c in open.values_mut() {
                    match woken {
                        Some(FAULT_LOOP)
                            if c.fault_loop_runs.is_some()
                                && c.fault_loop_let_go.is_none()
                                && c.serve_woken.is_none() =>
                        {
                            c.fault_loop_let_go = Some((e.at, e.task));
                        }
                        Some(DEMAND_SERVE)
                            if c.fault_loop_runs.is_some() && c.serve_woken.is_none() =>
                        {
                            c.serve_woken = Some((e.at, e.task, onto));
                        }
                        Some(DEMAND_READ) if c.serve_runs.is_some() && c.read_woken.is_none() => {
                            c.read_woken = Some((e.at, e.task, onto));
                        }
                        _ => {}
                    }
                }
                if let Some(c) = open.get_mut(&pid).filter(|c| c.workload_woken.is_none()) {
                    c.workload_woken = Some((e.at, e.task, onto));
                }
            }
            What::Switch { next } => {
                running.insert(e.cpu, next);
                for c in open.values_mut() {
                    if is(next, FAULT_LOOP) && c.fault_loop_runs.is_none() {
                        c.fault_loop_runs = Some(e.at);
                    } else if is(next, DEMAND_SERVE)
                        && c.serve_woken.is_some()
                        && c.serve_runs.is_none()
                    {
                        c.serve_runs = Some(e.at);
                    } else if is(next, DEMAND_READ)
                        && c.read_woken.is_some()
                        && c.read_runs.is_none()
                    {
                        c.read_runs = Some(e.at);
                    }
                }
                if let Some(mut c) = open.remove(&next) {
                    if c.workload_woken.is_some() {
                        c.workload_runs = Some(e.at);
                        done.push(c);
                    } else {
                        // Ran again without a wake-up the trace shows:
                        // not a cycle to count.
                        open.insert(next, c);
                    }
                }
            }
            _ => {}
        }
    }
    done.sort_by_key(|c| c.fault);
    done
}

/// Median and 90th percentile of `v` (µs), with the count.
fn spread(mut v: Vec<f64>) -> Option<(usize, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((v.len(), at(0.5), at(0.9)))
}

fn us(from: u64, to: u64) -> Option<f64> {
    (to >= from).then(|| (to - from) as f64 / 1e3)
}

/// The cycles' stages as a table: each stage's count, median and 90th
/// percentile (µs); each wake-up split by what ran on the vCPU it went
/// to (nothing, the agent's thread keeping it awake, or another); who
/// woke whom.
fn report(cs: &[Cycle], names: &HashMap<i32, String>) -> String {
    let name = |pid: i32| match pid {
        0 => "an interrupt on an idle vCPU".to_string(),
        p => names.get(&p).cloned().unwrap_or_else(|| format!("pid {p}")),
    };
    let mut out = String::new();
    let Some((n, p50, p90)) = spread(
        cs.iter()
            .filter_map(|c| us(c.fault, c.workload_runs?))
            .collect(),
    ) else {
        return "no fault cycle in the trace (the workload woke no fault-loop thread)\n".into();
    };
    out.push_str(&format!(
        "{n} faults, from the fault to the workload running again: p50 {p50:.0} µs, p90 {p90:.0} µs\n"
    ));
    out.push_str(&format!(
        "{:<52} {:>5} {:>8} {:>8}\n",
        "stage", "n", "p50 µs", "p90 µs"
    ));
    let mut row = |label: &str, v: Vec<f64>| {
        if let Some((n, p50, p90)) = spread(v) {
            out.push_str(&format!("{label:<52} {n:>5} {p50:>8.1} {p90:>8.1}\n"));
        }
    };
    type Wake = fn(&Cycle) -> Option<(u64, i32, Onto)>;
    type At = fn(&Cycle) -> Option<u64>;
    let fault_wake: Wake = |c| Some((c.fault, 0, c.fault_onto));
    let serve_wake: Wake = |c| c.serve_woken;
    let read_wake: Wake = |c| c.read_woken;
    let workload_wake: Wake = |c| c.workload_woken;
    let hops: [(&str, Wake, At); 4] = [
        ("fault-loop", fault_wake, |c| c.fault_loop_runs),
        ("demand-serve (source)", serve_wake, |c| c.serve_runs),
        ("demand-read", read_wake, |c| c.read_runs),
        ("workload", workload_wake, |c| c.workload_runs),
    ];
    let mut ran: Option<At> = None;
    let mut held = Vec::new();
    for (who, wake, runs) in hops {
        if let Some(before) = ran {
            row(
                &format!("  runs, until it wakes {who}"),
                cs.iter()
                    .filter_map(|c| us(before(c)?, wake(c)?.0))
                    .collect(),
            );
        }
        let waits = |idle: bool| -> Vec<(i32, f64)> {
            cs.iter()
                .filter_map(|c| {
                    let (at, _, onto) = wake(c)?;
                    let held = match onto {
                        Onto::Idle if idle => 0,
                        Onto::Busy(p) if !idle => p,
                        _ => return None,
                    };
                    Some((held, us(at, runs(c)?)?))
                })
                .collect()
        };
        row(
            &format!("{who} woken onto an idle vCPU, until it runs"),
            waits(true).iter().map(|w| w.1).collect(),
        );
        let busy = waits(false);
        row(
            &format!("{who} woken onto a busy vCPU, until it runs"),
            busy.iter().map(|w| w.1).collect(),
        );
        held.push((who, busy));
        ran = Some(runs);
    }
    let lock = cs
        .iter()
        .filter_map(|c| us(c.fault_loop_runs?, c.fault_loop_let_go?.0))
        .collect();
    row("fault-loop slept on a lock, runs until let go", lock);
    // Who held the busy vCPUs, and how long each kept the woken thread.
    for (who, busy) in held {
        let mut by: HashMap<String, Vec<f64>> = HashMap::new();
        for (pid, wait) in busy {
            by.entry(name(pid)).or_default().push(wait);
        }
        let mut by: Vec<_> = by.into_iter().collect();
        by.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let each: Vec<String> = by
            .into_iter()
            .filter_map(|(n, w)| {
                let (k, p50, _) = spread(w)?;
                Some(format!("{n} {k} (p50 {p50:.0} µs)"))
            })
            .collect();
        if !each.is_empty() {
            out.push_str(&format!(
                "{who} woken onto a busy vCPU, held by: {}\n",
                each.join(", ")
            ));
        }
    }
    let mut by = |label: &str, who: Vec<i32>| {
        let mut count: HashMap<String, usize> = HashMap::new();
        for pid in who {
            *count.entry(name(pid)).or_default() += 1;
        }
        let mut count: Vec<_> = count.into_iter().collect();
        count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let each: Vec<String> = count.iter().map(|(n, k)| format!("{n} {k}")).collect();
        if !each.is_empty() {
            out.push_str(&format!("{label}: {}\n", each.join(", ")));
        }
    };
    by(
        "fault-loop let go by",
        cs.iter()
            .filter_map(|c| Some(c.fault_loop_let_go?.1))
            .collect(),
    );
    by(
        "demand-serve woken by",
        cs.iter().filter_map(|c| Some(c.serve_woken?.1)).collect(),
    );
    by(
        "demand-read woken by",
        cs.iter().filter_map(|c| Some(c.read_woken?.1)).collect(),
    );
    by(
        "workload woken by",
        cs.iter()
            .filter_map(|c| Some(c.workload_woken?.1))
            .collect(),
    );
    out
}

/// Reads a trace kept beside a run's JSON (`bench __faults FILE`) and
/// follows its demand faults.
pub fn reread(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
    let names = names(&text);
    if pids(&names, WORKLOAD).is_empty() {
        return Err(format!(
            "{}: no thread named {WORKLOAD} in it (not a trace kept by bench --trace?)",
            path.display()
        ));
    }
    if pids(&names, FAULT_LOOP).is_empty() {
        return Err(format!(
            "{}: no thread named {FAULT_LOOP} in it (an agent from before the threads were named, or a run without post-copy)",
            path.display()
        ));
    }
    Ok(report(&cycles(&events, &names), &names))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace line (trace clock in µs).
    fn line(task: (&str, i32), cpu: u32, at_us: u64, event: &str) -> String {
        format!(
            "{:>16}-{:<7} [{cpu:03}] d..2. {}.{:06}: {event}",
            task.0,
            task.1,
            at_us / 1_000_000,
            at_us % 1_000_000
        )
    }

    fn waking(who: (&str, i32), target: u32) -> String {
        format!(
            "sched_waking: comm={} pid={} prio=120 target_cpu={target:03}",
            who.0, who.1
        )
    }

    fn switch(from: (&str, i32), to: (&str, i32)) -> String {
        format!(
            "sched_switch: prev_comm={} prev_pid={} prev_prio=120 prev_state=S ==> next_comm={} next_pid={} next_prio=120",
            from.0, from.1, to.0, to.1
        )
    }

    const W: (&str, i32) = ("workload", 10);
    const FL: (&str, i32) = ("fault-loop", 20);
    const DS: (&str, i32) = ("demand-serve", 30);
    const DR: (&str, i32) = ("demand-read", 40);
    const PR: (&str, i32) = ("push-read", 50);
    const IDLE: (&str, i32) = ("swapper/1", 0);

    /// One fault: the workload (vCPU 0) wakes the fault loop onto idle
    /// vCPU 1 at 1000 µs; the fault loop runs at 1030, sleeps on the lock
    /// until push-read lets it go at 1100, wakes demand-serve at 1120
    /// onto busy vCPU 0; it runs at 1150, wakes demand-read at 1170 onto
    /// vCPU 1 (idle again); it runs at 1200 and wakes the workload at
    /// 1210 onto vCPU 0, where demand-serve runs until 1260.
    fn one_fault() -> String {
        [
            line(IDLE, 1, 900, &switch(PR, IDLE)),
            line(W, 0, 950, &switch(IDLE, W)),
            line(W, 0, 1000, &waking(FL, 1)),
            line(W, 0, 1001, &switch(W, PR)),
            line(IDLE, 1, 1030, &switch(IDLE, FL)),
            line(FL, 1, 1040, &switch(FL, IDLE)),
            line(PR, 0, 1100, &waking(FL, 1)),
            line(IDLE, 1, 1105, &switch(IDLE, FL)),
            line(FL, 1, 1120, &waking(DS, 0)),
            line(FL, 1, 1125, &switch(FL, IDLE)),
            line(PR, 0, 1150, &switch(PR, DS)),
            line(DS, 0, 1170, &waking(DR, 1)),
            line(IDLE, 1, 1200, &switch(IDLE, DR)),
            line(DR, 1, 1210, &waking(W, 0)),
            line(DS, 0, 1260, &switch(DS, W)),
        ]
        .join("\n")
    }

    #[test]
    fn a_fault_is_followed_through_every_thread_it_crosses() {
        let text = one_fault();
        let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
        let names = names(&text);
        assert_eq!(pids(&names, "fault-loop"), vec![20]);
        let cs = cycles(&events, &names);
        let ns = |us: u64| us * 1000;
        assert_eq!(
            cs,
            vec![Cycle {
                fault: ns(1000),
                fault_onto: Onto::Idle,
                fault_loop_runs: Some(ns(1030)),
                fault_loop_let_go: Some((ns(1100), 50)),
                serve_woken: Some((ns(1120), 20, Onto::Busy(50))),
                serve_runs: Some(ns(1150)),
                read_woken: Some((ns(1170), 30, Onto::Idle)),
                read_runs: Some(ns(1200)),
                workload_woken: Some((ns(1210), 40, Onto::Busy(30))),
                workload_runs: Some(ns(1260)),
            }]
        );
        let r = report(&cs, &names);
        assert!(r.starts_with("1 faults, from the fault to the workload running again: p50 260 µs"));
        let row = |label: &str| {
            r.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no row {label:?} in\n{r}"))
                .split_whitespace()
                .rev()
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(row("fault-loop woken onto an idle vCPU"), "30.0");
        assert_eq!(row("  runs, until it wakes demand-serve"), "90.0");
        assert_eq!(row("demand-serve (source) woken onto a busy vCPU"), "30.0");
        assert_eq!(row("demand-read woken onto an idle vCPU"), "30.0");
        assert_eq!(row("workload woken onto a busy vCPU"), "50.0");
        assert_eq!(row("fault-loop slept on a lock"), "70.0");
        assert!(r.contains("fault-loop let go by: push-read 1\n"));
        assert!(r.contains("workload woken by: demand-read 1\n"));
        assert!(
            r.contains("workload woken onto a busy vCPU, held by: demand-serve 1 (p50 50 µs)\n")
        );
        assert!(r.contains(
            "demand-serve (source) woken onto a busy vCPU, held by: push-read 1 (p50 30 µs)\n"
        ));
    }

    #[test]
    fn a_wake_onto_a_vcpu_the_trace_has_not_shown_counts_as_neither_idle_nor_busy() {
        // The same fault without its first line: vCPU 1 shows nothing
        // before the workload wakes the fault loop onto it.
        let text: String = one_fault().lines().skip(1).collect::<Vec<_>>().join("\n");
        let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
        let names = names(&text);
        let cs = cycles(&events, &names);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].fault_onto, Onto::Unknown);
        let r = report(&cs, &names);
        for label in [
            "fault-loop woken onto an idle vCPU",
            "fault-loop woken onto a busy vCPU",
        ] {
            assert!(
                !r.lines().any(|l| l.starts_with(label)),
                "{label} counted the unknown wake-up:\n{r}"
            );
        }
    }

    #[test]
    fn a_workload_that_sleeps_and_wakes_without_a_fault_is_no_cycle() {
        let text = [
            line(W, 0, 100, &switch(W, IDLE)),
            line(IDLE, 0, 5100, &waking(W, 0)),
            line(IDLE, 0, 5110, &switch(IDLE, W)),
            // The fault loop woken by something else than the workload.
            line(PR, 1, 5200, &waking(FL, 0)),
        ]
        .join("\n");
        let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
        assert!(cycles(&events, &names(&text)).is_empty());
    }
}
