//! The performance targets, each a ratio of figures measured in this run,
//! said met or missed (`../shared` issue 23):
//! - post-copy total ≤ 1.25× (the link's time + host2 writing the same
//!   bytes into fresh memory, timed just before each run's migration while
//!   the workload holds its memory on host1; the figure timed on the idle
//!   lab before the runs is shown beside it), at every size measured;
//! - stop-copy downtime ≤ 0.8× CRIU stop-and-copy's (rows of this run);
//! - post-copy downtime ≤ 0.1× CRIU lazy's, and flat in size (the largest
//!   size's at most 1.5× the smallest's);
//! - the agents' peak RSS flat in size (the same 1.5×);
//! - demand-fault p50 ≤ 1.5× the floor (`workloads/fault_floor.c`: fault,
//!   request, reply, `UFFDIO_COPY` over the same link, in the same run):
//!   each post-copy run's p50 over the floor measured in its own lab
//!   before its migration, the median of those ratios (the floor swings
//!   between runs on this VM); the floor timed once before the runs is
//!   shown beside it.
//!
//! A target whose figures this run did not measure says so.

use serde_json::Value;

/// How far "flat in size" may rise from the smallest size to the largest.
const FLAT: f64 = 1.5;

fn row<'a>(runs: &'a [Value], mib: u64, mode: &str) -> Option<&'a Value> {
    runs.iter()
        .find(|r| r["mib"] == mib && r["mode"] == mode && r["error"].is_null())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// One line per target and size; `runs` are the summary rows, `link_mb_s`
/// the link's stream rate, `fresh` host2's seconds to write each size.
pub fn lines(
    runs: &[Value],
    link_mb_s: f64,
    fresh: &[(u64, f64)],
    (floor_p50, floor_p99): (f64, f64),
) -> Vec<String> {
    let mut out = Vec::new();
    let mut sizes: Vec<u64> = runs.iter().filter_map(|r| r["mib"].as_u64()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &mib in &sizes {
        let Some(r) = row(runs, mib, "postcopy") else {
            continue;
        };
        let total = r["total_s"].as_f64().unwrap_or(0.0);
        let link = (mib << 20) as f64 / (link_mb_s * 1e6);
        let Some(fresh) = fresh.iter().find(|f| f.0 == mib).map(|f| f.1) else {
            continue;
        };
        let floor = link + fresh;
        let ratio = total / floor;
        // Fresh memory measured on host2 just before each run's migration,
        // the workload resident on host1 (median): the conditions its
        // writes met.
        let resident = r["fresh_resident_s"].as_f64();
        let judged = resident.map_or(ratio, |f| total / (link + f));
        out.push(format!(
            "post-copy total at {mib} MiB: {total:.2} s = {ratio:.2}x (link {link:.2} s + fresh \
             memory {fresh:.2} s before the runs; {:.2}x the larger of the two){}: target <= \
             1.25x, {}",
            total / link.max(fresh),
            resident.map_or(String::new(), |f| format!(
                "; {judged:.2}x with fresh memory as measured just before each run, the workload \
                 resident ({f:.2} s)"
            )),
            verdict(judged <= 1.25)
        ));
    }
    for &mib in &sizes {
        let (Some(ours), Some(criu)) = (
            row(runs, mib, "stop-copy"),
            row(runs, mib, "criu-stop-copy"),
        ) else {
            continue;
        };
        let (a, b) = (
            ours["downtime_ms"].as_f64().unwrap_or(0.0),
            criu["downtime_ms"].as_f64().unwrap_or(f64::MAX),
        );
        out.push(format!(
            "stop-copy downtime at {mib} MiB: {a:.1} ms = {:.2}x CRIU stop-and-copy's {b:.1} ms: \
             target <= 0.8x, {}",
            a / b,
            verdict(a / b <= 0.8)
        ));
    }
    for &mib in &sizes {
        let (Some(ours), Some(criu)) = (row(runs, mib, "postcopy"), row(runs, mib, "criu-lazy"))
        else {
            continue;
        };
        let (a, b) = (
            ours["downtime_ms"].as_f64().unwrap_or(0.0),
            criu["downtime_ms"].as_f64().unwrap_or(f64::MAX),
        );
        out.push(format!(
            "post-copy downtime at {mib} MiB: {a:.1} ms = {:.3}x CRIU lazy's {b:.1} ms: target \
             <= 0.1x, {}",
            a / b,
            verdict(a / b <= 0.1)
        ));
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        if small < large {
            if let (Some(s), Some(l)) = (row(runs, small, "postcopy"), row(runs, large, "postcopy"))
            {
                let (a, b) = (
                    s["downtime_ms"].as_f64().unwrap_or(0.0),
                    l["downtime_ms"].as_f64().unwrap_or(0.0),
                );
                // Where a downtime that is not flat comes from: the
                // freeze, or a stall after it.
                let across = match (s["freeze_gap_ms"].as_f64(), l["freeze_gap_ms"].as_f64()) {
                    (Some(fa), Some(fb)) => format!(
                        " (the gap across the freeze alone, median of the runs: {fb:.1} ms at \
                         {large} MiB = {:.2}x {fa:.1} ms at {small} MiB; downtime is the largest \
                         gap anywhere, a stall during post-copy included)",
                        fb / fa
                    ),
                    _ => String::new(),
                };
                // Whether the host took the VM's CPUs during the gaps.
                let stolen = each_run(&l["steal_in_largest_gap_ms_all"], super::steal::in_gap_text);
                let stolen = if stolen.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; this VM's host kept its vCPUs from running during the largest gap \
                         of each run at {large} MiB (downtime: steal per vCPU, to a 10 ms \
                         tick): {}",
                        stolen.join(", ")
                    )
                };
                let net = match (
                    s["downtime_net_of_steal_ms"].as_f64(),
                    l["downtime_net_of_steal_ms"].as_f64(),
                ) {
                    (Some(na), Some(nb)) if na > 0.0 => format!(
                        "; net of the host's steal (each gap less the most one vCPU was stolen \
                         in it, median of the runs) {nb:.1} ms at {large} MiB = {:.2}x {na:.1} ms \
                         at {small} MiB",
                        nb / na
                    ),
                    _ => String::new(),
                };
                // What this VM gives the same figure with none of the
                // agents' work (the stall floor, one before each run).
                let floor_net = match (
                    s["stall_floor_net_of_steal_ms"].as_f64(),
                    l["stall_floor_net_of_steal_ms"].as_f64(),
                ) {
                    (Some(na), Some(nb)) if na > 0.0 => {
                        format!(
                            ", net of the host's steal {nb:.1} ms = {:.2}x {na:.1} ms",
                            nb / na
                        )
                    }
                    _ => String::new(),
                };
                // With --trace: the vCPU stops the kernel's trace shows.
                let stopped = each_run(
                    &l["vcpu_stops_in_largest_gap_all"],
                    super::stops::in_gap_text,
                );
                let stopped = match (
                    s["downtime_net_of_stops_ms"].as_f64(),
                    l["downtime_net_of_stops_ms"].as_f64(),
                ) {
                    (Some(na), Some(nb)) if na > 0.0 => format!(
                        "; the vCPU stops in the kernel's trace (--trace) of each run's largest \
                         gap at {large} MiB: {}; net of them (each gap less the most one vCPU \
                         was stopped in it, median of the runs) {nb:.1} ms at {large} MiB = \
                         {:.2}x {na:.1} ms at {small} MiB",
                        stopped.join(", "),
                        nb / na
                    ),
                    _ => String::new(),
                };
                let floor = match (s["stall_floor_ms"].as_f64(), l["stall_floor_ms"].as_f64()) {
                    (Some(fa), Some(fb)) if fa > 0.0 && fb > 0.0 => format!(
                        "; the stall floor (fault_floor.c ticking as the workload does, its \
                         faults served over the link, beside a stream of the size that host2 \
                         writes into as much fresh memory at the push's nice; median of one \
                         before each run) {fb:.1} ms at {large} MiB = {:.2}x {fa:.1} ms at \
                         {small} MiB, the downtime {:.2}x and {:.2}x the floor{floor_net}",
                        fb / fa,
                        a / fa,
                        b / fb
                    ),
                    _ => String::new(),
                };
                out.push(format!(
                    "post-copy downtime flat in size: {b:.1} ms at {large} MiB = {:.2}x {a:.1} ms \
                     at {small} MiB: target <= {FLAT}x, {}{across}{stolen}{net}{stopped}{floor}",
                    b / a,
                    verdict(b / a <= FLAT)
                ));
                for (i, host) in ["source", "destination"].iter().enumerate() {
                    let (a, b) = (
                        s["agent_hwm_kib"][i].as_f64().unwrap_or(0.0) / 1024.0,
                        l["agent_hwm_kib"][i].as_f64().unwrap_or(0.0) / 1024.0,
                    );
                    out.push(format!(
                        "{host} agent's peak RSS in post-copy flat in size: {b:.1} MiB at \
                         {large} MiB = {:.2}x {a:.1} MiB at {small} MiB: target <= {FLAT}x, {}",
                        b / a,
                        verdict(b / a <= FLAT)
                    ));
                }
            }
        }
    }
    for &mib in &sizes {
        let Some(p50) = row(runs, mib, "postcopy").and_then(|r| r["fault_p50_us"].as_f64()) else {
            continue;
        };
        let r = row(runs, mib, "postcopy");
        let paired = r.and_then(|r| Some((r["fault_vs_floor"].as_f64()?, &r["fault_pairs_us"])));
        let before = format!(
            "{:.2}x the floor's {floor_p50:.0} us timed before the runs \
             (fault_floor.c over the same link; its p99 {floor_p99:.0} us)",
            p50 / floor_p50
        );
        out.push(match paired {
            Some((ratio, pairs)) => {
                let pairs = pairs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some(format!("{:.0}/{:.0}", p[0].as_f64()?, p[1].as_f64()?)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "demand-fault p50 at {mib} MiB: {ratio:.2}x the floor timed in each run's lab \
                     before its migration (median; p50/floor us: {pairs}); the row's {p50:.0} \
                     us = {before}: target <= 1.5x, {}",
                    verdict(ratio <= 1.5)
                )
            }
            None => format!(
                "demand-fault p50 at {mib} MiB: {p50:.0} us = {before}: target <= 1.5x, {}",
                verdict(p50 / floor_p50 <= 1.5)
            ),
        });
    }
    out
}

/// Each run of a row's `[downtime, figure]` pairs as "downtime ms: text",
/// the figure said by `text` (runs it says nothing of left out).
fn each_run(pairs: &Value, text: fn(&Value) -> Option<String>) -> Vec<String> {
    pairs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| Some(format!("{:.1} ms: {}", run[0].as_f64()?, text(&run[1])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_are_said_met_or_missed() {
        let runs = vec![
            json!({"mib": 512, "mode": "postcopy", "total_s": 1.0, "downtime_ms": 10.0,
                   "agent_hwm_kib": [10240, 20480], "fault_p50_us": 300.0}),
            json!({"mib": 2048, "mode": "postcopy", "total_s": 5.0, "downtime_ms": 12.0,
                   "agent_hwm_kib": [10240, 40960]}),
            json!({"mib": 2048, "mode": "stop-copy", "downtime_ms": 1000.0}),
            json!({"mib": 2048, "mode": "criu-stop-copy", "downtime_ms": 2000.0}),
            json!({"mib": 2048, "mode": "criu-lazy", "downtime_ms": 200.0}),
        ];
        // 1000 MB/s: 512 MiB is 0.54 s on the link.
        let l = lines(&runs, 1000.0, &[(512, 0.3), (2048, 1.2)], (100.0, 200.0));
        let has = |s: &str| l.iter().any(|x| x.contains(s));
        assert!(has("post-copy total at 512 MiB: 1.00 s = 1.19x"), "{l:?}");
        assert!(has("target <= 1.25x, met"));
        assert!(has("post-copy total at 2048 MiB: 5.00 s = 1.49x"), "{l:?}");
        assert!(has("target <= 1.25x, MISSED"));
        assert!(
            has("stop-copy downtime at 2048 MiB: 1000.0 ms = 0.50x"),
            "{l:?}"
        );
        assert!(
            has("post-copy downtime at 2048 MiB: 12.0 ms = 0.060x"),
            "{l:?}"
        );
        assert!(has("flat in size: 12.0 ms at 2048 MiB = 1.20x"), "{l:?}");
        assert!(has(
            "destination agent's peak RSS in post-copy flat in size: 40.0 MiB"
        ));
        assert!(
            has("2.00x 20.0 MiB at 512 MiB: target <= 1.5x, MISSED"),
            "{l:?}"
        );
        assert!(
            has("demand-fault p50 at 512 MiB: 300 us = 3.00x the floor's 100 us timed before"),
            "{l:?}"
        );
        assert!(has("p99 200 us): target <= 1.5x, MISSED"), "{l:?}");
    }

    #[test]
    fn a_downtime_not_flat_says_what_the_freeze_alone_took() {
        let runs = vec![
            json!({"mib": 512, "mode": "postcopy", "downtime_ms": 8.0, "freeze_gap_ms": 8.0,
                "downtime_net_of_steal_ms": 8.0, "stall_floor_ms": 4.0,
                "stall_floor_net_of_steal_ms": 4.0, "downtime_net_of_stops_ms": 8.0}),
            json!({"mib": 2048, "mode": "postcopy", "downtime_ms": 24.0, "freeze_gap_ms": 9.0,
                "downtime_net_of_steal_ms": 14.0, "stall_floor_ms": 16.0,
                "stall_floor_net_of_steal_ms": 6.0,
                "steal_in_largest_gap_ms_all": [[24.0, [20.0, 10.0]], [6.5, [0.0, 0.0]]],
                "downtime_net_of_stops_ms": 6.0,
                "vcpu_stops_in_largest_gap_all": [
                    [24.0, {"stopped_ms": [18.0, 0.0], "cause": "late timer"}],
                    [6.5, {"stopped_ms": [0.0, 0.0], "cause": null}]]}),
        ];
        let l = lines(&runs, 1000.0, &[], (30.0, 90.0));
        let flat = l
            .iter()
            .find(|x| x.contains("downtime flat in size"))
            .expect("the line");
        assert!(
            flat.contains("24.0 ms at 2048 MiB = 3.00x 8.0 ms at 512 MiB: target <= 1.5x, MISSED"),
            "{flat}"
        );
        assert!(
            flat.contains(
                "the freeze alone, median of the runs: 9.0 ms at 2048 MiB = 1.12x 8.0 ms"
            ),
            "{flat}"
        );
        assert!(
            flat.contains("to a 10 ms tick): 24.0 ms: 20/10 ms, 6.5 ms: 0/0 ms"),
            "{flat}"
        );
        assert!(
            flat.contains("median of the runs) 14.0 ms at 2048 MiB = 1.75x 8.0 ms at 512 MiB"),
            "{flat}"
        );
        assert!(
            flat.contains(
                "largest gap at 2048 MiB: 24.0 ms: vCPUs stopped 18.0/0.0 ms of it (late timer), \
                 6.5 ms: no vCPU stop found in it; net of them (each gap less the most one vCPU \
                 was stopped in it, median of the runs) 6.0 ms at 2048 MiB = 0.75x 8.0 ms"
            ),
            "{flat}"
        );
        assert!(
            flat.contains(
                "before each run) 16.0 ms at 2048 MiB = 4.00x 4.0 ms at 512 MiB, the downtime \
                 2.00x and 1.50x the floor, net of the host's steal 6.0 ms = 1.50x 4.0 ms"
            ),
            "{flat}"
        );
        // The verdict is still the downtime's own.
        assert!(flat.contains("target <= 1.5x, MISSED"), "{flat}");
    }

    #[test]
    fn the_fault_p50_is_judged_against_the_floor_of_its_own_runs() {
        let runs = vec![json!({"mib": 512, "mode": "postcopy", "fault_p50_us": 60.0,
            "fault_vs_floor": 1.2, "fault_pairs_us": [[60.0, 50.0], [70.0, 40.0], [50.0, 50.0]]})];
        let l = lines(&runs, 1000.0, &[], (30.0, 90.0));
        let has = |s: &str| l.iter().any(|x| x.contains(s));
        assert!(
            has("demand-fault p50 at 512 MiB: 1.20x the floor timed in each run's lab"),
            "{l:?}"
        );
        assert!(has("p50/floor us: 60/50, 70/40, 50/50"), "{l:?}");
        assert!(has("the row's 60 us = 2.00x the floor's 30 us"), "{l:?}");
        assert!(has("target <= 1.5x, met"), "{l:?}");
    }
}
