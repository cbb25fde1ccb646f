//! vCPU stops (`bench --trace`): spans in which this VM's host did not run
//! a vCPU that had something due, found in the kernel's own trace of each
//! run. Steal time ([`crate::steal`]) counts only what the host saw
//! runnable, to a 10 ms tick; an idle vCPU the host does not wake, or a
//! busy one it stops, shows here instead, to the microsecond:
//!
//! - a timer late on its vCPU, which logged nothing from before the timer
//!   was due until it fired (a running vCPU takes its tick every few ms,
//!   so a silent one was not running);
//! - a wake-up sent to an idle vCPU (from another, or from an interrupt on
//!   that one), the vCPU silent for a span before it ran the woken thread
//!   (an idle vCPU runs it within microseconds).
//!
//! Timers that expire in softirq context are left out (a busy vCPU may
//! rightly run them late). The trace records four events (`hrtimer_start`,
//! `hrtimer_expire_entry`, `sched_waking`, `sched_switch`) on the `mono`
//! clock; tracefs is mounted for the benchmark if it is not, and every
//! setting it changes is put back when it ends.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

/// Where tracefs is (mounted there if it is not).
const TRACEFS: &str = "/sys/kernel/tracing";
/// The events recorded.
const EVENTS: [&str; 4] = [
    "timer/hrtimer_start",
    "timer/hrtimer_expire_entry",
    "sched/sched_waking",
    "sched/sched_switch",
];
/// Each CPU's trace buffer (KiB): a 2 GiB post-copy logs a few MiB a
/// second on two vCPUs.
const BUFFER_KIB: u32 = 65536;
/// Shorter spans are not kept (wakes and timers are often late by tens
/// of µs on a VM, and a guest may hold interrupts off for a while).
pub const MIN_STOP_NS: u64 = 2_000_000;
/// Trace kept beside a run's JSON around its largest gap: from this long
/// before it began to this long after it ended.
const KEEP_BEFORE_NS: u64 = 200_000_000;
const KEEP_AFTER_NS: u64 = 50_000_000;

/// Why a vCPU counted as stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A timer fired late, its vCPU silent since before it was due.
    LateTimer,
    /// A woken thread ran late on an idle vCPU, silent since the wake.
    LateWake,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::LateTimer => "late timer",
            Cause::LateWake => "late wake-up",
        }
    }
}

/// A span in which vCPU `cpu` was silent with something due (trace clock,
/// ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub cpu: u32,
    pub from: u64,
    pub to: u64,
    pub cause: Cause,
}

/// What one trace line says, of the four events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What {
    /// A timer armed to fire at `expires` (its base's clock, ns).
    TimerStart {
        timer: u64,
        expires: u64,
        soft: bool,
    },
    /// A timer firing at `now` (its base's clock, ns).
    TimerExpire { timer: u64, now: u64 },
    /// Thread `pid` woken to run on `target`.
    Waking { pid: i32, target: u32 },
    /// The vCPU switched to thread `next` (0: idle).
    Switch { next: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub cpu: u32,
    /// The thread running on `cpu` when it logged the event (0: idle).
    pub task: i32,
    /// Trace clock, ns.
    pub at: u64,
    pub what: What,
}

/// The value of `key=` among `fields` (the last such, as a thread's name
/// comes first and could hold anything).
pub(crate) fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    fields
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Parses one line of `trace`: `<comm>-<pid> [cpu] flags secs.micros:
/// event: fields`; `None` for comments and other events.
pub(crate) fn parse_line(line: &str) -> Option<Event> {
    if line.starts_with('#') {
        return None;
    }
    let (i, name) = EVENTS.iter().find_map(|e| {
        let name = e.split('/').nth(1)?;
        Some((line.find(&format!(": {name}: "))?, name))
    })?;
    let head = &line[..i];
    let fields = &line[i + name.len() + 4..];
    let mut words = head.split_ascii_whitespace().rev();
    let at = words.next()?;
    let (secs, micros) = at.split_once('.')?;
    let at = secs.parse::<u64>().ok()? * 1_000_000_000 + micros.parse::<u64>().ok()? * 1_000;
    let cpu = words.find_map(|w| w.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    let task = words.next()?.rsplit_once('-')?.1.parse().ok()?;
    let hex = |v: &str| u64::from_str_radix(v, 16).ok();
    let what = match name {
        "hrtimer_start" => What::TimerStart {
            timer: hex(field(fields, "hrtimer")?)?,
            expires: field(fields, "expires")?.parse().ok()?,
            soft: field(fields, "mode")?.contains("SOFT"),
        },
        "hrtimer_expire_entry" => What::TimerExpire {
            timer: hex(field(fields, "hrtimer")?)?,
            now: field(fields, "now")?.parse().ok()?,
        },
        "sched_waking" => What::Waking {
            pid: field(fields, "pid")?.parse().ok()?,
            target: field(fields, "target_cpu")?.parse().ok()?,
        },
        "sched_switch" => What::Switch {
            next: field(fields.split(" ==> ").nth(1)?, "next_pid")?
                .parse()
                .ok()?,
        },
        _ => return None,
    };
    Some(Event {
        cpu,
        task,
        at,
        what,
    })
}

/// A wake-up sent to an idle vCPU, not yet run.
struct Woken {
    pid: i32,
    sent: u64,
    /// The longest span since in which the vCPU logged nothing.
    longest: (u64, u64),
}

impl Woken {
    /// The vCPU, last heard from at `last`, is heard from at `now`.
    fn silent_until(&mut self, last: Option<u64>, now: u64) {
        let from = last.map_or(self.sent, |l| l.max(self.sent));
        if now.saturating_sub(from) > self.longest.1 - self.longest.0 {
            self.longest = (from, now);
        }
    }
}

/// How soon after a silence ends the timers it held back fire (the
/// interrupt that ends it runs them all).
const BURST_NS: u64 = 500_000;

/// The stops of at least `min_ns` in `events` (in time order): spans in
/// which a vCPU logged nothing while something was due on it.
fn find_stops(events: &[Event], min_ns: u64) -> Vec<Stop> {
    let mut stops: Vec<Stop> = Vec::new();
    // Each timer's hard deadline, as last armed (soft ones left out).
    let mut due: HashMap<u64, u64> = HashMap::new();
    // What each vCPU runs (0: idle), when it last logged anything, the
    // latest silence of at least `min_ns` it broke (from, to), and for a
    // wake-up sent to it while idle, when and the longest silence since.
    let mut running: HashMap<u32, i32> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut silence: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut woken: HashMap<u32, Woken> = HashMap::new();
    for e in events {
        let since = last.get(&e.cpu).copied();
        if let Some(l) = since {
            if e.at.saturating_sub(l) >= min_ns {
                silence.insert(e.cpu, (l, e.at));
            }
        }
        if let Some(w) = woken.get_mut(&e.cpu) {
            w.silent_until(since, e.at);
        }
        match e.what {
            What::TimerStart {
                timer,
                expires,
                soft,
            } => {
                if soft {
                    due.remove(&timer);
                } else {
                    due.insert(timer, expires);
                }
            }
            What::TimerExpire { timer, now } => {
                // Fired by the interrupt that ended a silence, due within
                // it: the vCPU did not run from then until the silence
                // ended.
                let late = due.remove(&timer).map_or(0, |d| now.saturating_sub(d));
                if let Some(&(from, to)) = silence.get(&e.cpu) {
                    let due_at = e.at.saturating_sub(late);
                    if late >= min_ns && e.at - to <= BURST_NS && due_at >= from {
                        let stop = Stop {
                            cpu: e.cpu,
                            from: due_at,
                            to,
                            cause: Cause::LateTimer,
                        };
                        // One silence, one stop: from its earliest timer.
                        match stops.last_mut() {
                            Some(s) if s.cpu == e.cpu && s.to == to => s.from = s.from.min(due_at),
                            _ if to - due_at >= min_ns => stops.push(stop),
                            _ => {}
                        }
                    }
                }
            }
            What::Waking { pid, target } => {
                // Sent to an idle vCPU (from another, or from an interrupt
                // on it): it should switch to the thread within µs.
                if running.get(&target) == Some(&0) {
                    woken.entry(target).or_insert(Woken {
                        pid,
                        sent: e.at,
                        longest: (e.at, e.at),
                    });
                }
            }
            What::Switch { next } => {
                running.insert(e.cpu, next);
                // Ended by its vCPU switching, or by the thread running
                // elsewhere (taken from a vCPU slow to run it).
                let elsewhere = woken
                    .iter()
                    .find(|(c, w)| **c != e.cpu && w.pid == next)
                    .map(|(c, _)| *c);
                for cpu in std::iter::once(e.cpu).chain(elsewhere) {
                    let Some(mut w) = woken.remove(&cpu) else {
                        continue;
                    };
                    if cpu != e.cpu {
                        w.silent_until(last.get(&cpu).copied(), e.at);
                    }
                    let (from, to) = w.longest;
                    if to - from >= min_ns {
                        stops.push(Stop {
                            cpu,
                            from,
                            to,
                            cause: Cause::LateWake,
                        });
                    }
                }
            }
        }
        last.insert(e.cpu, e.at);
    }
    stops
}

/// The stops of one run and the clocks to place them.
pub struct StopLog {
    stops: Vec<Stop>,
    /// Unix ns minus trace-clock ns.
    offset: i128,
    /// The run's trace text.
    text: String,
    /// Events the buffer had no room for.
    lost: u64,
    /// vCPUs.
    cpus: usize,
}

impl StopLog {
    fn unix(&self, at: u64) -> u64 {
        (i128::from(at) + self.offset).max(0) as u64
    }

    /// How long each vCPU was stopped within `[from, to)` (Unix ns, ms;
    /// its stops' union), and the cause of the stop that covers most of it.
    fn stopped_in(&self, from: u64, to: u64) -> (Vec<f64>, Option<Cause>) {
        let mut per_cpu = vec![0.0; self.cpus];
        let mut most = (0, None);
        for (cpu, slot) in per_cpu.iter_mut().enumerate() {
            let mut spans: Vec<(u64, u64, Cause)> = self
                .stops
                .iter()
                .filter(|s| s.cpu as usize == cpu)
                .map(|s| {
                    (
                        from.max(self.unix(s.from)),
                        to.min(self.unix(s.to)),
                        s.cause,
                    )
                })
                .filter(|(a, b, _)| a < b)
                .collect();
            spans.sort_unstable_by_key(|s| s.0);
            let (mut total, mut reach) = (0, 0);
            for &(a, b, cause) in &spans {
                total += b.saturating_sub(a.max(reach));
                reach = reach.max(b);
                if b - a > most.0 {
                    most = (b - a, Some(cause));
                }
            }
            *slot = total as f64 / 1e6;
        }
        (per_cpu, most.1)
    }

    /// The vCPU stops within the gap `[began, ended)` (Unix ns), as the
    /// runs' JSON keeps them: ms each vCPU was stopped in it, and the
    /// cause of the longest stop.
    pub fn in_gap(&self, began: u64, ended: u64) -> Value {
        let (ms, cause) = self.stopped_in(began, ended);
        json!({
            "stopped_ms": ms,
            "cause": cause.map(Cause::name),
            "events_lost": self.lost,
        })
    }

    /// How long each vCPU was stopped within `[from, to)` (Unix ns, ms).
    pub fn stopped_ms(&self, from: u64, to: u64) -> Vec<f64> {
        self.stopped_in(from, to).0
    }

    /// Writes the trace's lines from a little before `began` to a little
    /// after `ended` (Unix ns) to `path`, with the clocks' offset first.
    pub fn keep_around(&self, began: u64, ended: u64, path: &Path) -> std::io::Result<()> {
        let (lo, hi) = (
            began.saturating_sub(KEEP_BEFORE_NS),
            ended.saturating_add(KEEP_AFTER_NS),
        );
        let mut out = format!(
            "# bench --trace: Unix ns = trace ns + {}; the largest gap {began}..{ended} \
             (Unix ns)\n",
            self.offset
        );
        for line in self.text.lines() {
            if let Some(e) = parse_line(line) {
                if (lo..=hi).contains(&self.unix(e.at)) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        fs::write(path, out)
    }
}

/// tracefs set up for the benchmark: the events on, the clock `mono`, each
/// CPU's buffer large; put back as it was when dropped.
pub struct Tracer {
    root: PathBuf,
}

/// What the tracer changed: whether it mounted tracefs, and the files it
/// wrote with what they held, in the order changed. Kept here so that the
/// benchmark's teardown on a signal can put them back too ([`put_back`]).
struct Changed {
    mounted: bool,
    files: Vec<(PathBuf, String)>,
}

static CHANGED: Mutex<Option<Changed>> = Mutex::new(None);

fn changed() -> std::sync::MutexGuard<'static, Option<Changed>> {
    CHANGED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts tracefs back as it was before [`Tracer::start`] (once; nothing if
/// it was not set up): recording off and its buffer emptied, each setting
/// as it was, unmounted if the benchmark mounted it.
pub fn put_back() {
    let Some(c) = changed().take() else {
        return;
    };
    let root = Path::new(TRACEFS);
    let _ = fs::write(root.join("tracing_on"), "0");
    let _ = fs::write(root.join("trace"), "");
    for (path, was) in c.files.iter().rev() {
        let _ = fs::write(path, was);
    }
    if c.mounted {
        let _ = std::process::Command::new("umount").arg(TRACEFS).status();
    }
}

/// The setting a tracefs file shows: the bracketed choice of a list
/// (`trace_clock`), the size a buffer not yet used will take
/// (`buffer_size_kb` may read "7 (expanded: 1408)"), else the first word.
fn setting(text: &str) -> String {
    if let Some(n) = text.split("expanded: ").nth(1) {
        return n
            .trim_end_matches(|c: char| c == ')' || c.is_whitespace())
            .to_string();
    }
    if let Some(start) = text.find('[') {
        if let Some(len) = text[start..].find(']') {
            return text[start + 1..start + len].to_string();
        }
    }
    text.split_whitespace().next().unwrap_or("").to_string()
}

fn unix_minus_mono() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    i128::from(crate::now_ns()) - mono
}

impl Tracer {
    /// Sets tracefs up; fails, saying why, where it cannot be (what it
    /// changed by then is put back).
    pub fn start() -> Result<Tracer, String> {
        let t = Tracer {
            root: PathBuf::from(TRACEFS),
        };
        *changed() = Some(Changed {
            mounted: false,
            files: Vec::new(),
        });
        if !t.root.join("trace").exists() {
            let ok = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .is_ok_and(|s| s.success());
            if !ok || !t.root.join("trace").exists() {
                return Err(format!(
                    "--trace: tracefs could not be mounted at {TRACEFS}"
                ));
            }
            if let Some(c) = changed().as_mut() {
                c.mounted = true;
            }
        }
        t.set("tracing_on", "0")?;
        t.set("trace_clock", "mono")?;
        t.set("buffer_size_kb", &BUFFER_KIB.to_string())?;
        for e in EVENTS {
            t.set(&format!("events/{e}/enable"), "1")?;
        }
        Ok(t)
    }

    fn set(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.root.join(file);
        let was = fs::read_to_string(&path).map_err(|e| format!("--trace: {file}: {e}"))?;
        fs::write(&path, value).map_err(|e| format!("--trace: {file} = {value}: {e}"))?;
        if let Some(c) = changed().as_mut() {
            c.files.push((path, setting(&was)));
        }
        Ok(())
    }

    /// Clears the buffer and starts recording, for one run.
    pub fn begin(&self) -> Recording<'_> {
        let _ = fs::write(self.root.join("trace"), "");
        let before = unix_minus_mono();
        let _ = fs::write(self.root.join("tracing_on"), "1");
        Recording {
            tracer: self,
            offset: before,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        put_back();
    }
}

/// One run being recorded.
pub struct Recording<'a> {
    tracer: &'a Tracer,
    offset: i128,
}

impl Drop for Recording<'_> {
    /// A run that failed stops recording too.
    fn drop(&mut self) {
        let _ = fs::write(self.tracer.root.join("tracing_on"), "0");
    }
}

impl Recording<'_> {
    /// Stops recording and finds the run's stops.
    pub fn finish(self) -> StopLog {
        let root = &self.tracer.root;
        let _ = fs::write(root.join("tracing_on"), "0");
        // The clocks' offset, the mean of its two readings (they differ by
        // any step of the real-time clock in between).
        let offset = (self.offset + unix_minus_mono()) / 2;
        let text = fs::read_to_string(root.join("trace")).unwrap_or_default();
        let lost = (0..)
            .map(|c| root.join(format!("per_cpu/cpu{c}/stats")))
            .take_while(|p| p.exists())
            .filter_map(|p| fs::read_to_string(p).ok())
            .filter_map(|s| field_line(&s, "overrun:"))
            .sum();
        let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
        // SAFETY: sysconf has no memory effects.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let cpus = events.iter().map(|e| e.cpu as usize + 1).max().unwrap_or(0);
        StopLog {
            stops: find_stops(&events, MIN_STOP_NS),
            offset,
            text,
            lost,
            cpus: cpus.max(usize::try_from(online).unwrap_or(1)),
        }
    }
}

/// The number after `key` on its line of a `stats` file.
fn field_line(stats: &str, key: &str) -> Option<u64> {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// Reads a trace kept beside a run's JSON again (`bench __stops FILE`):
/// its largest gap, each vCPU's stops within it, and every stop the
/// kept span holds (ms from the gap's start).
pub fn reread(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let head = text.lines().next().unwrap_or("");
    let number =
        |after: &str| -> Option<&str> { head.split(after).nth(1)?.split([';', ' ']).next() };
    let bad = || format!("{}: not a trace kept by bench --trace", path.display());
    let offset: i128 = number("trace ns + ")
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    let (began, ended) = number("largest gap ")
        .and_then(|v| v.split_once(".."))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .ok_or_else(bad)?;
    let events: Vec<Event> = text.lines().filter_map(parse_line).collect();
    let log = StopLog {
        stops: find_stops(&events, MIN_STOP_NS),
        offset,
        text: String::new(),
        lost: 0,
        cpus: events.iter().map(|e| e.cpu as usize + 1).max().unwrap_or(0),
    };
    let mut out = format!(
        "largest gap {:.1} ms: {}\n",
        (ended - began) as f64 / 1e6,
        in_gap_text(&log.in_gap(began, ended)).unwrap_or_default()
    );
    let ms = |at: u64| (log.unix(at) as f64 - began as f64) / 1e6;
    for s in &log.stops {
        out.push_str(&format!(
            "vCPU {} stopped from {:.2} to {:.2} ms ({})\n",
            s.cpu,
            ms(s.from),
            ms(s.to),
            s.cause.name()
        ));
    }
    Ok(out)
}

/// A run's vCPU stops in its largest gap as the JSON keeps them, as text:
/// "vCPUs stopped 31.5/22.4 ms of it (late timer)"; `None` without a
/// trace.
pub fn in_gap_text(v: &Value) -> Option<String> {
    let ms: Vec<f64> = v["stopped_ms"]
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let lost = match v["events_lost"].as_u64() {
        Some(n) if n > 0 => format!(", {n} trace events lost"),
        _ => String::new(),
    };
    Some(match v["cause"].as_str() {
        Some(cause) if ms.iter().any(|m| *m > 0.0) => {
            let each: Vec<String> = ms.iter().map(|m| format!("{m:.1}")).collect();
            format!("vCPUs stopped {} ms of it ({cause}){lost}", each.join("/"))
        }
        _ => format!("no vCPU stop found in it{lost}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = "\
# tracer: nop
          <idle>-0       [000] d..2. 24772.296832: hrtimer_start: hrtimer=000000000fb72dbc function=tick_nohz_handler expires=24772312000000 softexpires=24772312000000 mode=ABS|PINNED|HARD was_armed=1
          <idle>-0       [001] d.s4. 24772.297040: sched_waking: comm=bash pid=21681 prio=120 target_cpu=000
           sleep-21681   [001] d..2. 24772.297536: sched_switch: prev_comm=sleep prev_pid=21681 prev_prio=120 prev_state=D ==> next_comm=swapper/1 next_pid=0 next_prio=120
          <idle>-0       [001] d.h1. 24772.300049: hrtimer_expire_entry: hrtimer=000000001b0e848f function=tick_nohz_handler now=24772300046515
     a b-[9] x=1-77      [001] d..2. 24772.300050: sched_switch: prev_comm=a b-[9] x=1 prev_pid=77 prev_prio=120 prev_state=S ==> next_comm=w pid=3 next_pid=12 next_prio=120
          <idle>-0       [001] d..2. 24772.300060: softirq_entry: vec=1 [action=TIMER]
";

    #[test]
    fn trace_lines_read_as_their_events() {
        let ev: Vec<Event> = LINES.lines().filter_map(parse_line).collect();
        assert_eq!(ev.len(), 5);
        assert_eq!(
            ev[0],
            Event {
                cpu: 0,
                task: 0,
                at: 24_772_296_832_000,
                what: What::TimerStart {
                    timer: 0xfb72dbc,
                    expires: 24_772_312_000_000,
                    soft: false
                }
            }
        );
        assert_eq!(
            ev[1].what,
            What::Waking {
                pid: 21681,
                target: 0
            }
        );
        assert_eq!((ev[1].cpu, ev[1].task), (1, 0));
        assert_eq!(ev[2].task, 21681);
        assert_eq!(ev[2].what, What::Switch { next: 0 });
        assert_eq!(
            ev[3].what,
            What::TimerExpire {
                timer: 0x1b0e848f,
                now: 24_772_300_046_515
            }
        );
        // A thread's name with spaces, brackets and "pid=" in it.
        assert_eq!((ev[4].cpu, ev[4].what), (1, What::Switch { next: 12 }));
        assert_eq!(ev[4].task, 77);
    }

    fn ev(cpu: u32, at_ms: u64, what: What) -> Event {
        Event {
            cpu,
            task: 1,
            at: at_ms * 1_000_000,
            what,
        }
    }

    #[test]
    fn a_timer_late_on_a_silent_vcpu_is_a_stop_and_on_a_busy_one_is_not() {
        let ms = 1_000_000;
        let start = |t, due_ms: u64| What::TimerStart {
            timer: t,
            expires: due_ms * ms,
            soft: false,
        };
        let fire = |t, now_ms: u64| What::TimerExpire {
            timer: t,
            now: now_ms * ms,
        };
        let events = [
            ev(1, 5, start(1, 10)),
            // Due at 10, fired at 38: vCPU 1 logged nothing in between.
            ev(1, 38, fire(1, 38)),
            ev(1, 40, start(2, 45)),
            // Due at 45, fired at 60, but vCPU 1 ran a switch at 50.
            ev(1, 50, What::Switch { next: 7 }),
            ev(1, 60, fire(2, 60)),
            // Late by less than the least kept.
            ev(0, 61, start(3, 62)),
            ev(0, 62, fire(3, 62)),
            // A soft timer's lateness does not count.
            ev(
                0,
                63,
                What::TimerStart {
                    timer: 4,
                    expires: 64 * ms,
                    soft: true,
                },
            ),
            ev(0, 90, fire(4, 90)),
        ];
        assert_eq!(
            find_stops(&events, MIN_STOP_NS),
            vec![Stop {
                cpu: 1,
                from: 10 * ms,
                to: 38 * ms,
                cause: Cause::LateTimer
            }]
        );
    }

    #[test]
    fn a_wake_up_to_an_idle_vcpu_late_is_a_stop_and_to_a_busy_one_is_not() {
        let ms = 1_000_000;
        let wake = |pid, target| What::Waking { pid, target };
        let tick = |timer| What::TimerExpire { timer, now: 0 };
        let events = [
            ev(0, 1, What::Switch { next: 0 }),
            ev(1, 1, What::Switch { next: 5 }),
            // To idle vCPU 0 at 10; it logs nothing until it runs it at 40.
            ev(1, 10, wake(9, 0)),
            ev(0, 40, What::Switch { next: 9 }),
            // To vCPU 1, busy: its wait is the run queue's.
            ev(0, 41, wake(11, 1)),
            ev(1, 70, What::Switch { next: 11 }),
            ev(0, 80, What::Switch { next: 0 }),
            // To idle vCPU 0, which runs it at once.
            ev(1, 90, wake(12, 0)),
            ev(0, 90, What::Switch { next: 12 }),
            ev(0, 95, What::Switch { next: 0 }),
            // From an interrupt on idle vCPU 0 itself, which then logs
            // nothing for 12 ms (the next interrupt) before it runs it.
            ev(0, 101, wake(13, 0)),
            ev(0, 101, tick(1)),
            ev(0, 113, tick(2)),
            ev(0, 113, What::Switch { next: 13 }),
            ev(0, 120, What::Switch { next: 0 }),
            // To idle vCPU 0, silent until vCPU 1 runs the thread itself.
            ev(1, 121, wake(14, 0)),
            ev(1, 130, What::Switch { next: 14 }),
        ];
        let stop = |from: u64, to: u64| Stop {
            cpu: 0,
            from: from * ms,
            to: to * ms,
            cause: Cause::LateWake,
        };
        assert_eq!(
            find_stops(&events, MIN_STOP_NS),
            vec![stop(10, 40), stop(101, 113), stop(121, 130)]
        );
    }

    #[test]
    fn a_gap_loses_the_part_of_it_the_most_stopped_vcpu_was_stopped() {
        let ms = 1_000_000;
        let stop = |cpu, from: u64, to: u64, cause| Stop {
            cpu,
            from: from * ms,
            to: to * ms,
            cause,
        };
        let log = StopLog {
            stops: vec![
                stop(1, 10, 38, Cause::LateTimer),
                // Overlapping the first: counted once.
                stop(1, 30, 40, Cause::LateWake),
                stop(0, 20, 25, Cause::LateWake),
            ],
            // Unix ns are trace ns + 1000 ms.
            offset: 1000 * i128::from(ms),
            text: String::new(),
            lost: 0,
            cpus: 2,
        };
        // Ticks at 1000, 1005, 1045 (a 40 ms gap, vCPU 1 stopped 30 ms of
        // it), 1050, 1070 (a 20 ms gap with no stop).
        let t = crate::ticks_at_ms(&[1000, 1005, 1045, 1050, 1070]);
        let net = crate::largest_gap_net_ms(crate::gaps(&t, 0, u64::MAX), 5.0, |a, b| {
            log.stopped_ms(a, b)
        });
        assert_eq!(net, 15.0);
        let v = log.in_gap(1005 * ms, 1045 * ms);
        assert_eq!(v["stopped_ms"], json!([5.0, 30.0]));
        assert_eq!(
            in_gap_text(&v).as_deref(),
            Some("vCPUs stopped 5.0/30.0 ms of it (late timer)")
        );
        // Clipped to the gap.
        assert_eq!(
            log.in_gap(1015 * ms, 1020 * ms)["stopped_ms"],
            json!([0.0, 5.0])
        );
        let none = log.in_gap(1050 * ms, 1070 * ms);
        assert_eq!(
            in_gap_text(&none).as_deref(),
            Some("no vCPU stop found in it")
        );
        assert_eq!(in_gap_text(&Value::Null), None);
    }

    #[test]
    fn settings_read_as_written_back() {
        assert_eq!(setting("[local] global counter mono\n"), "local");
        assert_eq!(setting("7 (expanded: 1408)\n"), "1408");
        assert_eq!(setting("1410\n"), "1410");
        assert_eq!(
            field_line("entries: 5\noverrun: 12\n", "overrun:"),
            Some(12)
        );
    }
}
