//! Steal time: how long this VM's host kept each vCPU from running while
//! it had work (`/proc/stat`'s `steal` column, per CPU). Sampled during a
//! migration, it says whether a stall the workload saw was the host taking
//! the VM's CPUs away, which no code inside the VM can prevent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads `/proc/stat`. The kernel reports steal in
/// clock ticks (10 ms at `USER_HZ` 100), so reading faster gains little.
const EVERY: Duration = Duration::from_millis(5);

/// Each CPU's steal so far, in clock ticks, from `/proc/stat`'s text: the
/// eighth value of every `cpuN` line, in the order of the lines.
pub fn parse(stat: &str) -> Vec<u64> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            l.split_ascii_whitespace()
                .nth(8)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Samples of each CPU's steal, taken when it changed: (Unix ns, ticks).
type Samples = Vec<(u64, Vec<u64>)>;

/// What a [`StealSampler`] saw, in milliseconds on demand.
#[derive(Default)]
pub struct StealLog {
    samples: Samples,
    tick_ms: f64,
}

impl StealLog {
    /// Milliseconds each CPU was stolen between `from_ns` and `to_ns`, as
    /// far as the samples tell (to a clock tick either way); empty without
    /// samples.
    pub fn stolen_ms(&self, from_ns: u64, to_ns: u64) -> Vec<f64> {
        let at = |t: u64| {
            self.samples
                .iter()
                .take_while(|(when, _)| *when <= t)
                .last()
                .or(self.samples.first())
                .map(|(_, v)| v.as_slice())
        };
        match (at(from_ns), at(to_ns)) {
            (Some(a), Some(b)) => a
                .iter()
                .zip(b)
                .map(|(x, y)| y.saturating_sub(*x) as f64 * self.tick_ms)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Per-CPU steal as the runs' JSON keeps it (`[20.0, 0.0]`), as text:
/// "20/0 ms"; `None` if there is none.
pub fn in_gap_text(v: &serde_json::Value) -> Option<String> {
    let ms: Vec<String> = v
        .as_array()?
        .iter()
        .filter_map(|x| x.as_f64())
        .map(|x| format!("{x:.0}"))
        .collect();
    (!ms.is_empty()).then(|| format!("{} ms", ms.join("/")))
}

/// A thread reading `/proc/stat` every [`EVERY`] until [`StealSampler::finish`]
/// (or until dropped, when a run ends early).
pub struct StealSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Samples>>,
}

impl StealSampler {
    pub fn start() -> StealSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples: Samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let now = crate::now_ns();
                let steal = parse(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
                if samples.last().is_none_or(|(_, last)| *last != steal) {
                    samples.push((now, steal));
                }
                std::thread::sleep(EVERY);
            }
            samples
        });
        StealSampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> StealLog {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        StealLog {
            samples: self
                .thread
                .take()
                .and_then(|t| t.join().ok())
                .unwrap_or_default(),
            tick_ms: if hz > 0 { 1000.0 / hz as f64 } else { 10.0 },
        }
    }
}

impl Drop for StealSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_value_of_each_cpu_line() {
        let stat = "cpu  1903203 49189 629635 9815114 14896 0 36579 20579 0 0\n\
                    cpu0 905538 24102 296593 4976374 2947 0 17763 10422 0 0\n\
                    cpu1 997665 25086 333042 4838739 11949 0 18816 10157 0 0\n\
                    intr 1 2 3\nctxt 99\n";
        assert_eq!(parse(stat), vec![10422, 10157]);
    }

    #[test]
    fn the_steal_in_a_window_is_the_difference_of_the_samples_at_its_ends() {
        let log = StealLog {
            samples: vec![(100, vec![5, 7]), (200, vec![6, 7]), (300, vec![9, 8])],
            tick_ms: 10.0,
        };
        assert_eq!(log.stolen_ms(150, 250), vec![10.0, 0.0]);
        assert_eq!(log.stolen_ms(100, 300), vec![40.0, 10.0]);
        assert_eq!(log.stolen_ms(310, 400), vec![0.0, 0.0]);
        // Before the first sample, the first stands for it.
        assert_eq!(log.stolen_ms(0, 200), vec![10.0, 0.0]);
        assert!(StealLog::default().stolen_ms(0, 10).is_empty());
    }

    /// The largest gap ending from `from` (ns) on, net of `log`'s steal.
    fn net(log: &StealLog, t: &[(u64, u64)], from: u64) -> f64 {
        crate::largest_gap_net_ms(crate::gaps(t, from, 100_000_000), 5.0, |a, b| {
            log.stolen_ms(a, b)
        })
    }

    #[test]
    fn a_gap_net_of_steal_loses_what_the_most_stolen_vcpu_lost_in_it() {
        let ms = 1_000_000;
        let log = StealLog {
            samples: vec![(0, vec![0, 0]), (32 * ms, vec![3, 1])],
            tick_ms: 10.0,
        };
        // Ticks at 0, 5, 45 (a 40 ms gap, 30 ms of it stolen), 50, 70 (a
        // 20 ms gap with no steal).
        let t = crate::ticks_at_ms(&[0, 5, 45, 50, 70]);
        assert_eq!(net(&log, &t, 0), 15.0);
        // Without steal the 40 ms gap counts whole.
        let none = StealLog {
            samples: vec![(0, vec![0, 0])],
            tick_ms: 10.0,
        };
        assert_eq!(net(&none, &t, 0), 35.0);
        // Only gaps ending in the window count.
        assert_eq!(net(&none, &t, 46 * ms), 15.0);
    }

    #[test]
    fn per_cpu_steal_reads_as_one_figure_per_cpu() {
        let v = serde_json::json!([20.0, 0.0]);
        assert_eq!(in_gap_text(&v).as_deref(), Some("20/0 ms"));
        assert_eq!(in_gap_text(&serde_json::json!([])), None);
        assert_eq!(in_gap_text(&serde_json::Value::Null), None);
    }
}
