//! The `migrate` agent: freezing, dumping, rebuilding and post-copy.

pub mod capture;
pub mod config;
pub mod daemon;
pub mod failpoints;
pub mod fd;
pub mod host;
pub mod metrics;
pub mod net;
pub mod postcopy;
pub mod rebuild;
pub mod session;

/// An error and its causes on one line: `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Microseconds since the Unix epoch on this host's clock (the record's
/// cross-host timeline).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
