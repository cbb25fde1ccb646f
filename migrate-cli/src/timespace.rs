//! The time-space diagram of a migration, drawn from its record's
//! messages: one vertical line per host, time downwards, each control
//! message an arrow from its send to its receipt (slanted by its latency),
//! every send and receipt labelled with its Lamport timestamp `L<n>`.
//! Two panels side by side: the protocol, from the first message to the
//! resume, zoomed; and the whole migration, with a sample of the demand
//! faults as request/reply pairs. Labels never overlap: each column of
//! labels is stacked, or (in the whole migration) a label that would
//! overlap is left to the zoomed panel.

use std::fmt::Write as _;

use migrate_proto::record::{Message, MigrationRecord};

const PANEL_W: f64 = 600.0;
const TOP: f64 = 90.0;
const BOTTOM: f64 = 70.0;
const MIN_PLOT_H: f64 = 760.0;
/// Vertical room of one label.
const LINE: f64 = 13.0;
/// Faults drawn: the first few and the slowest few.
const FIRST_FAULTS: usize = 3;
const SLOWEST_FAULTS: usize = 3;

/// A message with both ends, on the record's time axis (µs).
struct Arrow<'a> {
    m: &'a Message,
    from_source: bool,
    sent: f64,
    received: f64,
}

/// Column of labels that never overlap: each goes at its wanted height or
/// just below the one before.
#[derive(Default)]
struct Stack {
    last: f64,
}

impl Stack {
    fn place(&mut self, want: f64) -> f64 {
        let y = want.max(self.last + LINE);
        self.last = y;
        y
    }

    /// The wanted height if free, else none (the label is left out).
    fn place_if_free(&mut self, want: f64) -> Option<f64> {
        (want >= self.last + LINE).then(|| {
            self.last = want;
            want
        })
    }
}

/// A column of labels placed in any order: each keeps clear of every one
/// already there.
#[derive(Default)]
struct Column {
    taken: Vec<f64>,
}

impl Column {
    fn is_free(&self, y: f64) -> bool {
        self.taken.iter().all(|t| (t - y).abs() >= LINE)
    }

    /// At `want` or the nearest free height below it.
    fn take(&mut self, want: f64) -> f64 {
        let mut y = want;
        while !self.is_free(y) {
            y += 1.0;
        }
        self.taken.push(y);
        y
    }

    /// At `want` if free, else none (the label is left out).
    fn take_if_free(&mut self, want: f64) -> Option<f64> {
        self.is_free(want).then(|| {
            self.taken.push(want);
            want
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The messages of `r` with both ends, in the order they were sent.
fn arrows<'a>(r: &'a MigrationRecord, source_host: &str) -> Vec<Arrow<'a>> {
    r.messages
        .iter()
        .filter_map(|m| {
            Some(Arrow {
                m,
                from_source: m.from == source_host,
                sent: m.sent_us? as f64,
                received: m.received_us? as f64,
            })
        })
        .collect()
}

/// Whether `r` can be drawn from its messages (records of agents before
/// protocol 15 have none).
pub fn has_messages(r: &MigrationRecord) -> bool {
    r.messages
        .iter()
        .any(|m| m.sent_us.is_some() && m.received_us.is_some())
}

/// A time axis in pixels with its idle stretches shortened, so that a
/// protocol of microseconds and a pre-copy of seconds are both readable:
/// between two consecutive events time is drawn to scale, but never
/// closer than one label's height nor longer than `cap` (such a gap is
/// marked as a break).
struct Axis {
    /// Event times, sorted, and their heights (pixels from the first).
    events: Vec<(f64, f64)>,
    /// Longest gap drawn to scale, µs.
    cap: f64,
}

impl Axis {
    /// Aiming at about `target` pixels for everything.
    fn broken(mut times: Vec<f64>, target: f64) -> Axis {
        times.sort_by(f64::total_cmp);
        times.dedup();
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        // Gaps up to a few times the typical one keep their length.
        let typical = sorted.get(sorted.len() * 3 / 4).copied().unwrap_or(1.0);
        let cap = (typical * 4.0).max(50.0);
        let kept: f64 = gaps.iter().map(|g| g.min(cap)).sum::<f64>().max(1.0);
        let px_per_us = target / kept;
        let mut events = Vec::with_capacity(times.len());
        let mut y = 0.0;
        for (i, &t) in times.iter().enumerate() {
            if i > 0 {
                let g = gaps[i - 1];
                y += (g.min(cap) * px_per_us).clamp(LINE, (cap * px_per_us).max(3.0 * LINE));
            }
            events.push((t, y));
        }
        Axis { events, cap }
    }

    /// Height of `t`, pixels from the first event.
    fn at(&self, t: f64) -> f64 {
        let e = &self.events;
        let Some(&(first, _)) = e.first() else {
            return 0.0;
        };
        if t <= first {
            return 0.0;
        }
        for w in e.windows(2) {
            let ((t0, y0), (t1, y1)) = (w[0], w[1]);
            if t <= t1 {
                return y0 + (t - t0) / (t1 - t0).max(1e-9) * (y1 - y0);
            }
        }
        e[e.len() - 1].1
    }

    fn height(&self) -> f64 {
        self.events.last().map_or(0.0, |e| e.1)
    }

    /// The shortened gaps: (start, end) times.
    fn breaks(&self) -> Vec<(f64, f64)> {
        self.events
            .windows(2)
            .filter(|w| w[1].0 - w[0].0 > self.cap)
            .map(|w| (w[0].0, w[1].0))
            .collect()
    }
}

/// One panel: its left edge, its time range (µs), its plot height, and
/// its axis: linear, or with idle stretches shortened.
struct Panel {
    x: f64,
    t0: f64,
    t1: f64,
    h: f64,
    axis: Option<Axis>,
}

impl Panel {
    fn y(&self, t: f64) -> f64 {
        match &self.axis {
            Some(a) => TOP + 2.0 * LINE + a.at(t),
            None => TOP + (t - self.t0) / (self.t1 - self.t0).max(1.0) * self.h,
        }
    }
    fn src_x(&self) -> f64 {
        self.x + 150.0
    }
    fn dst_x(&self) -> f64 {
        self.x + PANEL_W - 150.0
    }
    fn holds(&self, t: f64) -> bool {
        t >= self.t0 && t <= self.t1
    }
}

fn frame(out: &mut String, p: &Panel, title: &str, hosts: (&str, &str)) {
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="40" font-size="15" text-anchor="middle">{}</text>"#,
        p.x + PANEL_W / 2.0,
        esc(title)
    );
    for (x, name) in [(p.src_x(), hosts.0), (p.dst_x(), hosts.1)] {
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
            TOP - 12.0,
            esc(name)
        );
        let _ = writeln!(
            out,
            r#"<line class="host" x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{:.1}" stroke="black" stroke-width="2"/>"#,
            TOP + p.h
        );
    }
    // Times: at the panel's ends and around each shortened stretch,
    // marked across both host lines.
    let mut marks = vec![p.t0, p.t1];
    let mut column = Column::default();
    let breaks = p.axis.as_ref().map(Axis::breaks).unwrap_or_default();
    for (a, b) in breaks {
        let (ya, yb) = (p.y(a), p.y(b));
        let mid = (ya + yb) / 2.0;
        for x in [p.src_x(), p.dst_x()] {
            let _ = writeln!(
                out,
                r#"<polyline class="break" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="white" stroke="black"/>"#,
                x - 8.0,
                mid - 3.0,
                x - 3.0,
                mid - 6.0,
                x + 3.0,
                mid + 0.0,
                x + 8.0,
                mid - 3.0
            );
        }
        // The length left out, in the time column beside the break (the
        // middle between the hosts is the arrows' labels').
        let y = column.take(mid + 3.0);
        let _ = writeln!(
            out,
            r##"<text class="shortened" x="{:.1}" y="{y:.1}" font-size="9" fill="#555">⋯ {:.1} ms shortened</text>"##,
            p.x + 8.0,
            (b - a) / 1000.0
        );
        marks.extend([a, b]);
    }
    marks.sort_by(f64::total_cmp);
    for t in marks {
        if let Some(y) = column.take_if_free(p.y(t) + 3.0) {
            let _ = writeln!(
                out,
                r##"<text class="time" x="{:.1}" y="{y:.1}" font-size="10" fill="#555">{:.3} ms</text>"##,
                p.x + 8.0,
                t / 1000.0
            );
        }
    }
}

/// Draws `a` in panel `p`; labels its kind in the middle and its two
/// Lamport timestamps beside the host lines, through the stacks given
/// (stacked, or left out where they would overlap).
fn arrow(
    out: &mut String,
    p: &Panel,
    a: &Arrow<'_>,
    color: &str,
    unc_us: f64,
    stacks: &mut [Stack; 3],
    stack_all: bool,
) {
    let (x0, x1) = if a.from_source {
        (p.src_x(), p.dst_x())
    } else {
        (p.dst_x(), p.src_x())
    };
    let (y0, y1) = (p.y(a.sent), p.y(a.received));
    // The clock offset's uncertainty, at the destination's end.
    let (xd, yd) = if a.from_source { (x1, y1) } else { (x0, y0) };
    let band = (unc_us / (p.t1 - p.t0).max(1.0) * p.h).max(0.5);
    let _ = writeln!(
        out,
        r#"<rect class="uncertainty" x="{:.1}" y="{:.1}" width="10" height="{:.1}" fill="{color}" fill-opacity="0.12"/>"#,
        xd - 5.0,
        yd - band,
        2.0 * band
    );
    let _ = writeln!(
        out,
        r#"<line class="msg" data-kind="{}" x1="{x0:.1}" y1="{y0:.2}" x2="{x1:.1}" y2="{y1:.2}" stroke="{color}" stroke-width="1.5"/>"#,
        esc(&a.m.kind)
    );
    // The arrowhead, along the line.
    let (dx, dy) = (x1 - x0, y1 - y0);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let (ux, uy) = (dx / len, dy / len);
    let (bx, by) = (x1 - 9.0 * ux, y1 - 9.0 * uy);
    let _ = writeln!(
        out,
        r#"<polygon points="{x1:.1},{y1:.2} {:.1},{:.2} {:.1},{:.2}" fill="{color}"/>"#,
        bx - 4.0 * uy,
        by + 4.0 * ux,
        bx + 4.0 * uy,
        by - 4.0 * ux
    );
    let place = |s: &mut Stack, want: f64| {
        if stack_all {
            Some(s.place(want))
        } else {
            s.place_if_free(want)
        }
    };
    // Lamport timestamps: outside each host's line.
    let ends = [
        (a.from_source, y0, a.m.lamport_sent),
        (!a.from_source, y1, a.m.lamport_received),
    ];
    for (at_source, y, l) in ends {
        let Some(l) = l else { continue };
        let (col, x, anchor) = if at_source {
            (0, p.src_x() - 8.0, "end")
        } else {
            (2, p.dst_x() + 8.0, "start")
        };
        if let Some(ly) = place(&mut stacks[col], y + 4.0) {
            let _ = writeln!(
                out,
                r#"<text class="lamport" x="{x:.1}" y="{ly:.1}" font-size="10" text-anchor="{anchor}" fill="{color}">L{l}</text>"#
            );
        }
    }
    if let Some(ly) = place(&mut stacks[1], (y0 + y1) / 2.0) {
        let _ = writeln!(
            out,
            r#"<text class="kind" x="{:.1}" y="{ly:.1}" font-size="11" text-anchor="middle" fill="{color}">{}</text>"#,
            (x0 + x1) / 2.0,
            esc(&a.m.kind)
        );
    }
}

fn color_of(kind: &str) -> &'static str {
    match kind {
        "Commit" | "Core" | "CoreTree" | "Abort" => "#c62828",
        "Heartbeat" => "#9e9e9e",
        "ClockProbe" | "Clock" => "#6a1b9a",
        "Complete" | "Done" => "#212121",
        _ => "#1e50c8",
    }
}

/// The diagram of `r` (whose source is `source_host`) as SVG text.
pub fn svg(r: &MigrationRecord, source_host: &str) -> String {
    let arrows = arrows(r, source_host);
    let unc = r.clock_uncertainty_us as f64;
    let hosts = (source_host, r.to.as_str());
    // The protocol: from the first message to the resume's answer.
    let first = arrows.iter().map(|a| a.sent).fold(f64::MAX, f64::min);
    let resumed = arrows
        .iter()
        .find(|a| a.m.kind == "Resumed")
        .map(|a| a.received)
        .unwrap_or_else(|| arrows.iter().map(|a| a.received).fold(0.0, f64::max));
    let zoomed: Vec<&Arrow<'_>> = arrows
        .iter()
        .filter(|a| a.sent <= resumed && a.received <= resumed)
        .collect();
    let axis = Axis::broken(
        zoomed.iter().flat_map(|a| [a.sent, a.received]).collect(),
        MIN_PLOT_H - 4.0 * LINE,
    );
    let h = MIN_PLOT_H.max(axis.height() + 4.0 * LINE);
    let left = Panel {
        x: 0.0,
        t0: first,
        t1: resumed,
        h,
        axis: Some(axis),
    };
    let end = arrows
        .iter()
        .map(|a| a.received.max(a.sent))
        .fold(r.timeline.complete.max(r.timeline.resume) as f64, f64::max);
    let right = Panel {
        x: PANEL_W,
        t0: first.min(0.0),
        t1: end * 1.03 + 1.0,
        h,
        axis: None,
    };
    let height = TOP + h + BOTTOM;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{height:.0}" viewBox="0 0 {:.0} {height:.0}" font-family="sans-serif">"#,
        2.0 * PANEL_W,
        2.0 * PANEL_W
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{:.0}" y="20" font-size="16" text-anchor="middle">migration {:016x}: {} to {} ({}); clocks aligned within ±{} µs (shaded at each arrow's {} end)</text>"#,
        PANEL_W,
        r.id,
        esc(source_host),
        esc(&r.to),
        esc(&r.mode),
        r.clock_uncertainty_us,
        esc(&r.to)
    );
    frame(
        &mut out,
        &left,
        "the protocol to the resume (idle stretches shortened)",
        hosts,
    );
    let mut stacks: [Stack; 3] = Default::default();
    for a in &zoomed {
        arrow(
            &mut out,
            &left,
            a,
            color_of(&a.m.kind),
            unc,
            &mut stacks,
            true,
        );
    }
    frame(&mut out, &right, "the whole migration", hosts);
    let mut stacks: [Stack; 3] = Default::default();
    for a in arrows
        .iter()
        .filter(|a| right.holds(a.sent) && right.holds(a.received))
    {
        arrow(
            &mut out,
            &right,
            a,
            color_of(&a.m.kind),
            unc,
            &mut stacks,
            false,
        );
    }
    faults(&mut out, r, &right);
    let _ = writeln!(
        out,
        r##"<text x="{:.0}" y="{:.0}" font-size="11" fill="#555">L&lt;n&gt;: the Lamport timestamp of a send or a receipt on that host. {} messages{}.</text>"##,
        10.0,
        height - 12.0,
        arrows.len(),
        if r.messages_unlogged > 0 {
            format!(" ({} more not logged)", r.messages_unlogged)
        } else {
            String::new()
        }
    );
    out.push_str("</svg>\n");
    out
}

/// The diagram of `r` in a self-contained HTML page: the wheel zooms
/// around the pointer, a drag moves, a double click shows all again. No
/// network: everything is in the page.
pub fn html(r: &MigrationRecord, source_host: &str) -> String {
    let svg = svg(r, source_host);
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>migration {id:016x}: time-space diagram</title>
<style>body{{margin:0;font-family:sans-serif}}#view{{width:100vw;height:100vh;overflow:hidden;cursor:grab}}#view svg{{width:100%;height:100%}}#help{{position:fixed;right:8px;top:4px;font-size:12px;color:#555;background:#fff}}</style>
</head><body>
<div id="help">wheel: zoom · drag: move · double click: all</div>
<div id="view">
{svg}</div>
<script>
(function () {{
  const svg = document.querySelector('#view svg');
  const all = svg.getAttribute('viewBox').split(' ').map(Number);
  let vb = all.slice();
  const set = () => svg.setAttribute('viewBox', vb.join(' '));
  const at = (e) => {{
    const r = svg.getBoundingClientRect();
    return [vb[0] + (e.clientX - r.left) / r.width * vb[2],
            vb[1] + (e.clientY - r.top) / r.height * vb[3]];
  }};
  svg.addEventListener('wheel', (e) => {{
    e.preventDefault();
    const [x, y] = at(e);
    const k = e.deltaY < 0 ? 0.8 : 1.25;
    vb = [x - (x - vb[0]) * k, y - (y - vb[1]) * k, vb[2] * k, vb[3] * k];
    set();
  }}, {{ passive: false }});
  let drag = null;
  svg.addEventListener('mousedown', (e) => {{ drag = [e.clientX, e.clientY, vb[0], vb[1]]; }});
  window.addEventListener('mouseup', () => {{ drag = null; }});
  window.addEventListener('mousemove', (e) => {{
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    vb[0] = drag[2] - (e.clientX - drag[0]) / r.width * vb[2];
    vb[1] = drag[3] - (e.clientY - drag[1]) / r.height * vb[3];
    set();
  }});
  svg.addEventListener('dblclick', () => {{ vb = all.slice(); set(); }});
}})();
</script>
</body></html>
"#,
        id = r.id
    )
}

/// The first and the slowest demand faults as request/reply pairs in the
/// whole migration's panel, the rest summarised.
fn faults(out: &mut String, r: &MigrationRecord, p: &Panel) {
    if r.faults.is_empty() {
        return;
    }
    let mut chosen: Vec<usize> = (0..r.faults.len().min(FIRST_FAULTS)).collect();
    let mut by_latency: Vec<usize> = (0..r.faults.len()).collect();
    by_latency.sort_by_key(|&i| std::cmp::Reverse(r.faults[i].latency_us));
    for i in by_latency.into_iter().take(SLOWEST_FAULTS) {
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    let color = "#ad1457";
    for i in chosen {
        let f = &r.faults[i];
        let t = r.timeline.resume as f64 + f.at_us as f64;
        let (asked, answered) = (t, t + f.latency_us as f64);
        let mid = (asked + answered) / 2.0;
        let (yd0, ys, yd1) = (p.y(asked), p.y(mid), p.y(answered));
        let _ = writeln!(
            out,
            r#"<polyline class="fault" points="{:.1},{yd0:.2} {:.1},{ys:.2} {:.1},{yd1:.2}" fill="none" stroke="{color}" stroke-width="1" stroke-dasharray="3,2"/>"#,
            p.dst_x(),
            p.src_x(),
            p.dst_x()
        );
    }
    let mut lat: Vec<u64> = r.faults.iter().map(|f| f.latency_us).collect();
    lat.sort_unstable();
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{:.0}" font-size="11" fill="{color}">demand faults: {} requests ({} sampled), p50 {} µs, slowest {} µs;</text><text x="{:.0}" y="{:.0}" font-size="11" fill="{color}">dashed: the first {FIRST_FAULTS} and the slowest {SLOWEST_FAULTS}, request and reply</text>"#,
        p.x + 10.0,
        TOP + p.h + 30.0,
        r.demand_requests,
        r.faults.len(),
        lat[lat.len() / 2],
        lat[lat.len() - 1],
        p.x + 10.0,
        TOP + p.h + 44.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_proto::record::{FaultSample, Timeline};

    fn message(from_source: bool, kind: &str, seq: u64, t: (i64, i64), l: (u64, u64)) -> Message {
        let (a, b) = if from_source {
            ("host1", "host2")
        } else {
            ("host2", "host1")
        };
        Message {
            from: a.into(),
            to: b.into(),
            kind: kind.into(),
            seq,
            sent_us: Some(t.0),
            received_us: Some(t.1),
            lamport_sent: Some(l.0),
            lamport_received: Some(l.1),
        }
    }

    fn sample() -> MigrationRecord {
        let mut r = MigrationRecord {
            id: 0xabc,
            mode: "postcopy".into(),
            to: "host2".into(),
            timeline: Timeline {
                resume: 9_000,
                complete: 400_000,
                ..Default::default()
            },
            clock_uncertainty_us: 30,
            demand_requests: 10,
            ..Default::default()
        };
        let mut l = 0;
        let mut seq = (0, 0);
        let mut t = 0;
        for (from_source, kind) in [
            (true, "FileCheck"),
            (false, "FileVerdict"),
            (true, "ClockProbe"),
            (false, "Clock"),
            (true, "Core"),
            (false, "Ready"),
            (true, "Commit"),
            (false, "Resumed"),
            (true, "Heartbeat"),
            (false, "Complete"),
        ] {
            let s = if from_source { &mut seq.0 } else { &mut seq.1 };
            l += 1;
            let sent = l;
            l += 1;
            r.messages
                .push(message(from_source, kind, *s, (t, t + 60), (sent, l)));
            *s += 1;
            t += if kind == "Resumed" { 200_000 } else { 1_000 };
        }
        for k in 0..10u64 {
            r.faults.push(FaultSample {
                at_us: k * 1000,
                addr: 0x1000 * k,
                latency_us: 80 + k,
                tid: 5,
            });
        }
        r
    }

    #[test]
    fn every_message_is_a_slanted_arrow_with_its_lamport_stamps() {
        let r = sample();
        let svg = svg(&r, "host1");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // The zoomed panel holds the eight messages up to Resumed, the
        // whole one all ten: one arrow each.
        assert_eq!(svg.matches(r#"<line class="msg""#).count(), 8 + 10);
        for line in svg
            .lines()
            .filter(|l| l.starts_with(r#"<line class="msg""#))
        {
            let num = |k: &str| -> f64 {
                let at = line.find(&format!(" {k}=\"")).unwrap() + k.len() + 3;
                line[at..].split('"').next().unwrap().parse().unwrap()
            };
            assert!(num("y2") > num("y1"), "not slanted downwards: {line}");
        }
        for l in 1..=16 {
            assert!(svg.contains(&format!(">L{l}<")), "no L{l}");
        }
        assert_eq!(svg.matches(r#"class="fault""#).count(), 6);
    }

    #[test]
    fn the_page_holds_the_picture_and_fetches_nothing() {
        let page = html(&sample(), "host1");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg").count(), 1);
        assert!(page.contains(r#"<line class="msg""#) && page.contains("addEventListener('wheel'"));
        // Only the SVG namespace names a URL; nothing is loaded.
        assert_eq!(page.matches("http").count(), 1, "{page}");
        for needle in ["src=", "<link", "import ", "fetch("] {
            assert!(!page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn labels_never_overlap_in_a_column() {
        let mut r = sample();
        // Forty messages within a microsecond of each other.
        for k in 0..40 {
            r.messages.insert(
                2,
                message(true, "ShippedData", 100 + k, (1500, 1501), (100, 101)),
            );
        }
        let svg = svg(&r, "host1");
        let mut ys: std::collections::HashMap<String, Vec<f64>> = Default::default();
        for line in svg
            .lines()
            .filter(|l| l.contains("class=\"kind\"") || l.contains("class=\"lamport\""))
        {
            let get = |k: &str| -> String {
                let at = line.find(&format!(" {k}=\"")).unwrap() + k.len() + 3;
                line[at..].split('"').next().unwrap().to_string()
            };
            ys.entry(get("x"))
                .or_default()
                .push(get("y").parse().unwrap());
        }
        for (x, mut v) in ys {
            v.sort_by(f64::total_cmp);
            for w in v.windows(2) {
                assert!(w[1] - w[0] >= LINE - 0.01, "labels at x {x} overlap: {w:?}");
            }
        }
    }

    /// A label's box, estimated from its text.
    struct LabelBox {
        left: f64,
        right: f64,
        top: f64,
        bottom: f64,
    }

    impl LabelBox {
        fn apart(&self, o: &LabelBox) -> bool {
            self.right <= o.left
                || o.right <= self.left
                || self.bottom <= o.top
                || o.bottom <= self.top
        }
    }

    fn label_box(line: &str) -> LabelBox {
        let get = |k: &str| -> Option<String> {
            let at = line.find(&format!(" {k}=\""))? + k.len() + 3;
            Some(line[at..].split('"').next()?.to_string())
        };
        let num = |k: &str| get(k).unwrap().parse::<f64>().unwrap();
        let (x, y, size) = (num("x"), num("y"), num("font-size"));
        let text = &line[line.find('>').unwrap() + 1..line.rfind("</").unwrap()];
        let w = text.chars().count() as f64 * 0.6 * size;
        let left = match get("text-anchor").as_deref() {
            Some("middle") => x - w / 2.0,
            Some("end") => x - w,
            _ => x,
        };
        LabelBox {
            left,
            right: left + w,
            top: y - size,
            bottom: y,
        }
    }

    #[test]
    fn a_break_s_length_sits_clear_of_every_other_label() {
        let mut r = sample();
        // A long idle stretch between the clock's probe and the core.
        for m in r.messages.iter_mut().skip(4) {
            m.sent_us = m.sent_us.map(|t| t + 300_000);
            m.received_us = m.received_us.map(|t| t + 300_000);
        }
        // And a message in flight across it: its kind label falls in the
        // middle of the break.
        r.messages
            .insert(4, message(true, "Pages", 9, (3_500, 303_500), (7, 8)));
        let svg = svg(&r, "host1");
        let labels: Vec<(&str, LabelBox)> = svg
            .lines()
            .filter(|l| l.starts_with("<text class="))
            .map(|l| (l, label_box(l)))
            .collect();
        let breaks = labels
            .iter()
            .filter(|(l, _)| l.contains(r#"class="shortened""#))
            .count();
        assert!(breaks >= 1, "no shortened stretch drawn:\n{svg}");
        for (i, (a, ba)) in labels.iter().enumerate() {
            for (b, bb) in &labels[i + 1..] {
                assert!(ba.apart(bb), "labels overlap:\n{a}\n{b}");
            }
        }
    }
}
