//! How long a demand fault took and where its time went: the request
//! written, the round trip to the source and back, the fault handler's
//! lock, the install.

use std::time::{Duration, Instant};

use tracing::debug;

/// A faulting page asked of the source.
pub(super) struct Awaited {
    /// When the fault loop saw it (its userfaultfd readable), before it
    /// waited for the handler's lock to read it.
    pub(super) read_at: Instant,
    /// The faulting thread.
    pub(super) tid: u32,
    /// When the request was on the demand lane (flushed).
    pub(super) sent_at: Option<Instant>,
}

/// When pages from the demand lane arrived (their frame read) and when
/// their install took the handler's lock.
#[derive(Clone, Copy)]
pub(super) struct Arrival {
    pub(super) arrived: Instant,
    pub(super) locked: Instant,
}

/// A fault slower than this is logged with where its time went.
pub(super) const SLOW_FAULT: Duration = Duration::from_millis(5);

/// Where a demand fault's time went, µs: its request (seen on the
/// userfaultfd, the wait for the handler's lock to read it included, to
/// written on the demand lane), the round trip to the source
/// and back (to its reply read off the lane), the wait for the handler's
/// lock, the install (to its thread woken).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stages {
    pub(super) request_us: u64,
    pub(super) round_trip_us: u64,
    pub(super) lock_us: u64,
    pub(super) install_us: u64,
}

impl Stages {
    /// The stages of fault `a`, its reply having arrived as `arrival` and
    /// its install done at `done`.
    pub(super) fn of(a: &Awaited, arrival: Arrival, done: Instant) -> Stages {
        let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        let sent = a.sent_at.unwrap_or(a.read_at);
        Stages {
            request_us: us(a.read_at, sent),
            round_trip_us: us(sent, arrival.arrived),
            lock_us: us(arrival.arrived, arrival.locked),
            install_us: us(arrival.locked, done),
        }
    }

    /// Each stage's median over `all` (taken one stage at a time, so the
    /// result need not be one fault's).
    pub(super) fn medians(all: &[Stages]) -> Stages {
        let median = |f: fn(&Stages) -> u64| {
            let mut v: Vec<u64> = all.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        Stages {
            request_us: median(|s| s.request_us),
            round_trip_us: median(|s| s.round_trip_us),
            lock_us: median(|s| s.lock_us),
            install_us: median(|s| s.install_us),
        }
    }
}

/// Logs where the time of a slow fault at `addr`, `a`, installed at
/// `done`, went (`stages`, if its page came on the demand lane), with when
/// its request was sent in Unix time, to line it up with the source's log.
pub(super) fn log_slow_fault(addr: u64, a: &Awaited, stages: Option<Stages>, done: Instant) {
    let s = stages.unwrap_or_default();
    let sent = a.sent_at.unwrap_or(a.read_at);
    let since_sent = done.saturating_duration_since(sent).as_micros() as u64;
    debug!(
        addr,
        latency_us = done.saturating_duration_since(a.read_at).as_micros() as u64,
        request_us = s.request_us,
        round_trip_us = s.round_trip_us,
        lock_us = s.lock_us,
        install_us = s.install_us,
        from_demand_lane = stages.is_some(),
        sent_unix_us = crate::unix_us().saturating_sub(since_sent),
        "slow fault"
    );
}
