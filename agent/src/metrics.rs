//! What the agent counts, for Prometheus (`--metrics ADDR:PORT`, served
//! by [`crate::daemon`]): migrations started from here, how each ended
//! (refusals by their reason's code), downtime and total time, pages and
//! bytes per lane, demand faults and their latency, migrations in flight,
//! and migrations received. Counted from the replies a migration sends its
//! client, so that what is counted is what the user was told.
//!
//! Nothing here grows with what users send: the refusal codes are the
//! protocol's fixed set, the histograms have fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use migrate_proto::msg::Reply;
use migrate_proto::record::MigrationRecord;

/// Bucket bounds of the time histograms, seconds.
const TIME_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Bucket bounds of the fault latency histogram, seconds.
const FAULT_BUCKETS: [f64; 9] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1,
];

/// Counts of observations at or under each bound, their sum and count.
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe_us(&self, us: u64) {
        let s = us as f64 / 1e6;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            if s <= *b {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every count the agent keeps.
pub struct Metrics {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed_before_commit: AtomicU64,
    failed_after_commit: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicI64,
    received: AtomicU64,
    downtime: Histogram,
    total: Histogram,
    fault_latency: Histogram,
    demand_faults: AtomicU64,
    /// Pages: eager, demand, pushed, pre-copied.
    pages: [AtomicU64; 4],
    /// Bytes: precopy, eager, demand, bulk lanes.
    lane_bytes: [AtomicU64; 4],
}

const PAGE_KINDS: [&str; 4] = ["eager", "demand", "pushed", "precopy"];
const LANES: [&str; 4] = ["precopy", "eager", "demand", "bulk"];

/// The agent's counts.
pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::new);

/// One migration in flight from here, counted while it lives.
pub struct InFlight(());

impl InFlight {
    /// A migration starts.
    pub fn start() -> InFlight {
        METRICS.started.fetch_add(1, Ordering::Relaxed);
        METRICS.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            started: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed_before_commit: AtomicU64::new(0),
            failed_after_commit: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            in_flight: AtomicI64::new(0),
            received: AtomicU64::new(0),
            downtime: Histogram::new(&TIME_BUCKETS),
            total: Histogram::new(&TIME_BUCKETS),
            fault_latency: Histogram::new(&FAULT_BUCKETS),
            demand_faults: AtomicU64::new(0),
            pages: Default::default(),
            lane_bytes: Default::default(),
        }
    }

    /// A migration arrived from a peer.
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what `reply` (to a migration's client) tells.
    pub fn saw(&self, reply: &Reply) {
        match reply {
            Reply::Resumed(r) => self.downtime.observe_us(r.downtime_us),
            Reply::Complete(r) => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                if r.timeline.complete > 0 {
                    self.total.observe_us(r.timeline.complete);
                }
                self.moved(r);
            }
            Reply::Failed {
                resumed_original,
                record,
                ..
            } => {
                let which = match resumed_original {
                    true => &self.failed_before_commit,
                    false => &self.failed_after_commit,
                };
                which.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = record {
                    self.moved(r);
                }
            }
            Reply::Refused { reasons, .. } => {
                let mut m = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                let mut codes: Vec<&'static str> =
                    reasons.iter().map(|r| r.code.as_str()).collect();
                codes.sort_unstable();
                codes.dedup();
                for c in codes {
                    *m.entry(c).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }

    /// Pages, bytes and faults of a migration that ended.
    fn moved(&self, r: &MigrationRecord) {
        let pages = [
            r.eager_pages,
            r.demand_pages,
            r.pushed_pages,
            r.precopy_rounds.iter().sum(),
        ];
        for (n, p) in self.pages.iter().zip(pages) {
            n.fetch_add(p, Ordering::Relaxed);
        }
        let l = &r.lanes;
        for (n, b) in self
            .lane_bytes
            .iter()
            .zip([l.precopy, l.eager, l.demand, l.bulk])
        {
            n.fetch_add(b, Ordering::Relaxed);
        }
        self.demand_faults
            .fetch_add(r.demand_requests, Ordering::Relaxed);
        for f in &r.faults {
            self.fault_latency.observe_us(f.latency_us);
        }
    }

    /// The Prometheus text exposition of every count.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "migrate_migrations_started_total",
            "Migrations this agent started as their source.",
            self.started.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "migrate_migrations_succeeded_total",
            "Migrations from here that ended with every page on the destination.",
            self.succeeded.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP migrate_migrations_failed_total Migrations from here that failed, before the \
             commit (the original runs on) or after it.\n# TYPE migrate_migrations_failed_total \
             counter\nmigrate_migrations_failed_total{{when=\"before_commit\"}} {}\n\
             migrate_migrations_failed_total{{when=\"after_commit\"}} {}",
            self.failed_before_commit.load(Ordering::Relaxed),
            self.failed_after_commit.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP migrate_migrations_refused_total Migrations refused before the freeze, by \
             the code of each reason given.\n# TYPE migrate_migrations_refused_total counter"
        );
        for (code, n) in self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "migrate_migrations_refused_total{{reason=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP migrate_migrations_in_flight Migrations from here under way now.\n\
             # TYPE migrate_migrations_in_flight gauge\nmigrate_migrations_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "migrate_migrations_received_total",
            "Migrations a peer started to this agent.",
            self.received.load(Ordering::Relaxed),
        );
        self.downtime.render(
            &mut out,
            "migrate_downtime_seconds",
            "From the freeze to the resume on the destination.",
        );
        self.total.render(
            &mut out,
            "migrate_total_seconds",
            "From the request to the last page in.",
        );
        let _ = writeln!(
            out,
            "# HELP migrate_pages_total Pages moved, by how.\n# TYPE migrate_pages_total counter"
        );
        for (k, n) in PAGE_KINDS.iter().zip(&self.pages) {
            let _ = writeln!(
                out,
                "migrate_pages_total{{kind=\"{k}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP migrate_lane_bytes_total Bytes of pages per lane.\n\
             # TYPE migrate_lane_bytes_total counter"
        );
        for (k, n) in LANES.iter().zip(&self.lane_bytes) {
            let _ = writeln!(
                out,
                "migrate_lane_bytes_total{{lane=\"{k}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "migrate_demand_faults_total",
            "Page requests the destination made on faults.",
            self.demand_faults.load(Ordering::Relaxed),
        );
        self.fault_latency.render(
            &mut out,
            "migrate_fault_latency_seconds",
            "A demand fault, from its read to its thread woken (sampled).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_proto::msg::{Code, Reason};

    #[test]
    fn replies_are_counted_and_rendered() {
        let m = Metrics::new();
        let rec = MigrationRecord {
            downtime_us: 3_000,
            eager_pages: 10,
            demand_pages: 5,
            demand_requests: 2,
            ..Default::default()
        };
        m.saw(&Reply::Resumed(rec.clone()));
        m.saw(&Reply::Complete(rec.clone()));
        m.saw(&Reply::refused(vec![
            Reason::new(Code::Address, "a"),
            Reason::new(Code::Address, "b"),
        ]));
        let text = m.render();
        assert!(
            text.contains("migrate_migrations_succeeded_total 1"),
            "{text}"
        );
        assert!(text.contains("migrate_migrations_refused_total{reason=\"address\"} 1"));
        assert!(text.contains("migrate_downtime_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("migrate_downtime_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("migrate_downtime_seconds_count 1"));
        assert!(text.contains("migrate_pages_total{kind=\"eager\"} 10"));
        assert!(text.contains("migrate_demand_faults_total 2"));
        // Every sample line is NAME{labels} VALUE, under its HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            assert!(name.starts_with("migrate_"), "{l}");
        }
    }
}
