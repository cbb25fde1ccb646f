//! Pictures of migration records, as SVG: bytes per lane and faults over
//! time, several migrations compared, and the time-space diagram of the
//! messages between the two agents.

use migrate_proto::record::MigrationRecord;
use migrate_proto::PAGE_SIZE;
use plotters::prelude::*;

type DrawResult = Result<(), String>;
type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A line from `a` to `b` and a label at `at`, in `color`.
fn labelled_line(
    c: &mut Chart<'_>,
    (a, b): ((f64, f64), (f64, f64)),
    width: u32,
    color: RGBColor,
    (label, at, size): (String, (f64, f64), u32),
) -> DrawResult {
    c.draw_series(std::iter::once(PathElement::new(
        vec![a, b],
        color.stroke_width(width),
    )))
    .map_err(err)?;
    c.draw_series(std::iter::once(Text::new(
        label,
        at,
        ("sans-serif", size).into_font().color(&color),
    )))
    .map_err(err)?;
    Ok(())
}

/// The series legend, lower right.
fn legend(c: &mut Chart<'_>) -> DrawResult {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing: {e:?}")
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Cumulative bytes moved over time (ms since the request): pre-copy and
/// eager bytes as steps at their phases, the push from its samples, and
/// demand faults (each sample counted as one page).
fn cumulative(r: &MigrationRecord) -> Vec<(f64, f64)> {
    let t = &r.timeline;
    let mut pts = vec![(0.0, 0.0)];
    let mut total = 0u64;
    if r.lanes.precopy > 0 {
        pts.push((ms(t.precopy as i64), 0.0));
        total += r.lanes.precopy;
        pts.push((ms(t.freeze as i64), mib(total)));
    }
    total += r.lanes.eager;
    pts.push((ms(t.restored as i64), mib(total)));
    let base = total;
    let mut events: Vec<(i64, u64)> = r
        .push_progress
        .iter()
        .map(|&(at, pages)| (at as i64, pages * PAGE_SIZE))
        .collect();
    let mut demand = 0u64;
    let mut faults: Vec<i64> = r
        .faults
        .iter()
        .map(|f| t.resume as i64 + f.at_us as i64)
        .collect();
    faults.sort_unstable();
    let mut pushed = 0u64;
    let mut merged: Vec<(i64, u64)> = Vec::new();
    events.sort_unstable();
    let (mut i, mut j) = (0, 0);
    while i < events.len() || j < faults.len() {
        if j >= faults.len() || (i < events.len() && events[i].0 <= faults[j]) {
            pushed = events[i].1;
            merged.push((events[i].0, base + pushed + demand));
            i += 1;
        } else {
            demand += PAGE_SIZE;
            merged.push((faults[j], base + pushed + demand));
            j += 1;
        }
    }
    for (at, b) in merged {
        pts.push((ms(at), mib(b)));
    }
    if t.complete > 0 {
        let all = r.lanes.precopy + r.lanes.eager + r.lanes.demand + r.lanes.bulk;
        pts.push((ms(t.complete as i64), mib(all)));
    }
    pts
}

/// Bytes per lane and faults over time for one migration.
pub fn timeline(r: &MigrationRecord, path: &str) -> DrawResult {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(420);
    let t = &r.timeline;
    let end = ms(t.complete.max(t.resume) as i64).max(1.0) * 1.05;
    let pts = cumulative(r);
    let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let title = format!(
        "migration {:016x}: pid {} -> {} (pid {}), {}, downtime {:.1} ms",
        r.id,
        r.pid,
        r.to,
        r.new_pid,
        r.mode,
        r.downtime_us as f64 / 1000.0
    );
    let mut c = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("ms since the request")
        .y_desc("MiB moved")
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(pts, &BLUE))
        .map_err(err)?
        .label(format!(
            "all lanes: pre-copy {:.1}, eager {:.1}, demand {:.1}, push {:.1} MiB",
            mib(r.lanes.precopy),
            mib(r.lanes.eager),
            mib(r.lanes.demand),
            mib(r.lanes.bulk)
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let push: Vec<(f64, f64)> = r
        .push_progress
        .iter()
        .map(|&(at, p)| (ms(at as i64), mib(p * PAGE_SIZE)))
        .collect();
    c.draw_series(LineSeries::new(push, &GREEN))
        .map_err(err)?
        .label("push lane")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    for (at, label, color) in [
        (t.freeze, "freeze", RED),
        (t.resume, "resume", MAGENTA),
        (t.complete, "complete", BLACK),
    ] {
        if at == 0 && label != "freeze" {
            continue;
        }
        let x = ms(at as i64);
        labelled_line(
            &mut c,
            ((x, 0.0), (x, ymax)),
            1,
            color,
            (label.to_string(), (x, ymax * 0.97), 13),
        )?;
    }
    legend(&mut c)?;

    let lat: Vec<(f64, f64)> = r
        .faults
        .iter()
        .map(|f| (ms(t.resume as i64 + f.at_us as i64), f.latency_us as f64))
        .collect();
    let lmax = lat.iter().map(|p| p.1).fold(100.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            if r.faults.len() as u64 >= r.demand_requests {
                format!("{} demand faults served over the network", r.faults.len())
            } else {
                format!(
                    "demand faults served over the network: {} of {} requests, sampled evenly",
                    r.faults.len(),
                    r.demand_requests
                )
            },
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..lmax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("ms since the request")
        .y_desc("latency µs")
        .draw()
        .map_err(err)?;
    c.draw_series(lat.into_iter().map(|p| Circle::new(p, 2, RED.filled())))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Cumulative bytes of several migrations on one chart, time from each
/// one's request.
pub fn compare(records: &[MigrationRecord], path: &str) -> DrawResult {
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let series: Vec<Vec<(f64, f64)>> = records.iter().map(cumulative).collect();
    let xmax = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let ymax = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "migrations compared: MiB moved over time",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("ms since the request")
        .y_desc("MiB moved")
        .draw()
        .map_err(err)?;
    for (k, (r, pts)) in records.iter().zip(series).enumerate() {
        let color = Palette99::pick(k).to_rgba();
        c.draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(format!(
                "{:016x} {} -> {}: downtime {:.1} ms",
                r.id,
                r.mode,
                r.to,
                r.downtime_us as f64 / 1000.0
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    legend(&mut c)?;
    root.present().map_err(err)
}

/// The time-space diagram: one line per host, time downwards, an arrow for
/// each message between the agents (faults and push batches aggregated).
pub fn timespace(r: &MigrationRecord, source_host: &str, path: &str) -> DrawResult {
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let t = &r.timeline;
    let end = ms(t.complete.max(t.resume) as i64).max(1.0);
    let at_dest = |what: &str, fallback: u64| {
        r.events
            .iter()
            .find(|e| e.host == r.to && e.what == what)
            .map(|e| ms(e.at_us))
            .unwrap_or(ms(fallback as i64))
    };
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "migration {:016x}: {} -> {} ({}); clocks aligned within ±{} µs",
                r.id, source_host, r.to, r.mode, r.clock_uncertainty_us
            ),
            ("sans-serif", 16),
        )
        .margin(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, (end * 1.05)..(-end * 0.03))
        .map_err(err)?;
    c.configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("ms since the request")
        .draw()
        .map_err(err)?;
    let (xs, xd) = (0.2, 0.8);
    for (x, name) in [(xs, source_host), (xd, r.to.as_str())] {
        labelled_line(
            &mut c,
            ((x, 0.0), (x, end)),
            2,
            BLACK,
            (name.to_string(), (x - 0.03, -end * 0.02), 16),
        )?;
    }
    let mut arrows: Vec<(f64, f64, bool, String, RGBColor)> = Vec::new();
    let blue = RGBColor(30, 80, 200);
    let dest_resumed = at_dest("resumed", t.resume);
    arrows.push((0.0, 0.0, true, "file check, clock probes".into(), blue));
    if t.precopy > 0 {
        let rounds = r.precopy_rounds.len();
        arrows.push((
            ms(t.precopy as i64),
            ms(t.freeze as i64),
            true,
            format!("pre-copy: {rounds} rounds, {:.1} MiB", mib(r.lanes.precopy)),
            GREEN,
        ));
    }
    arrows.push((
        ms(t.dump as i64),
        at_dest("core received", t.dump),
        true,
        format!("core + eager ({:.1} MiB)", mib(r.lanes.eager)),
        RED,
    ));
    arrows.push((
        at_dest("rebuilt", t.restored),
        ms(t.restored as i64),
        false,
        "ready".into(),
        blue,
    ));
    arrows.push((
        ms(t.restored as i64),
        dest_resumed,
        true,
        "commit".into(),
        RED,
    ));
    arrows.push((
        dest_resumed,
        ms(t.resume as i64),
        false,
        "resumed".into(),
        blue,
    ));
    if !r.faults.is_empty() {
        let first = ms(t.resume as i64 + r.faults[0].at_us as i64);
        arrows.push((
            first,
            first,
            false,
            format!(
                "demand faults: {} requests, {:.1} MiB",
                r.demand_requests,
                mib(r.lanes.demand)
            ),
            MAGENTA,
        ));
    }
    // Push batches, aggregated into at most eight arrows.
    let step = r.push_progress.len().div_ceil(8).max(1);
    for (k, w) in r.push_progress.chunks(step).enumerate() {
        let (at, pages) = w[w.len() - 1];
        let x = ms(at as i64);
        arrows.push((
            x,
            x,
            true,
            if k == 0 {
                format!("push ({:.1} MiB in all)", mib(r.lanes.bulk))
            } else {
                format!("push: {:.0} MiB", mib(pages * PAGE_SIZE))
            },
            GREEN,
        ));
    }
    if t.complete > 0 {
        let done = at_dest("every page in", t.complete);
        arrows.push((done, ms(t.complete as i64), false, "complete".into(), BLACK));
    }
    for (from_t, to_t, forward, label, color) in arrows {
        let (x0, x1) = if forward { (xs, xd) } else { (xd, xs) };
        labelled_line(
            &mut c,
            ((x0, from_t), (x1, to_t)),
            2,
            color,
            (label, ((x0 + x1) / 2.0 - 0.12, (from_t + to_t) / 2.0), 13),
        )?;
        c.draw_series(std::iter::once(Circle::new((x1, to_t), 4, color.filled())))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_proto::record::{Event, FaultSample, LaneBytes, Timeline};

    /// A post-copy of 64 MiB as a record would show it.
    fn sample() -> MigrationRecord {
        let mut r = MigrationRecord {
            id: 0xabcdef,
            mode: "hybrid".into(),
            pid: 4,
            to: "host2".into(),
            new_pid: 8,
            downtime_us: 20_000,
            timeline: Timeline {
                precopy: 1_000,
                freeze: 60_000,
                dump: 70_000,
                restored: 75_000,
                resume: 80_000,
                complete: 300_000,
            },
            precopy_rounds: vec![16384],
            lanes: LaneBytes {
                precopy: 64 << 20,
                eager: 1 << 20,
                demand: 2 << 20,
                bulk: 8 << 20,
            },
            clock_uncertainty_us: 40,
            ..Default::default()
        };
        for k in 0..50u64 {
            r.faults.push(FaultSample {
                at_us: k * 4000,
                addr: 0x7f00_0000_0000 + k * 4096,
                latency_us: 100 + k * 3,
                tid: 8,
            });
            r.push_progress.push((80_000 + k * 4000, k * 40));
        }
        for (at, host, what) in [
            (70_500, "host2", "core received"),
            (74_000, "host2", "rebuilt"),
            (79_000, "host2", "resumed"),
            (299_000, "host2", "every page in"),
        ] {
            r.events.push(Event {
                at_us: at,
                host: host.into(),
                what: what.into(),
            });
        }
        r
    }

    #[test]
    fn pictures_render_as_svg_with_their_labels() {
        let dir = std::env::temp_dir().join(format!("migrate-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = sample();
        let mut other = sample();
        other.id = 0x1234;
        other.mode = "postcopy".into();
        other.lanes.precopy = 0;
        other.timeline.precopy = 0;
        for (name, draw, needle) in [
            ("t.svg", 0, "freeze"),
            ("c.svg", 1, "postcopy"),
            ("s.svg", 2, "commit"),
        ] {
            let p = dir.join(name);
            let p = p.to_str().unwrap();
            match draw {
                0 => timeline(&r, p),
                1 => compare(&[r.clone(), other.clone()], p),
                _ => timespace(&r, "host1", p),
            }
            .unwrap();
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.starts_with("<svg"));
            assert!(text.contains(needle), "{name} lacks {needle}");
        }
        if std::env::var_os("KEEP_REPORTS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
