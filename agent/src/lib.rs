//! The `migrate` agent: freezing, dumping, rebuilding and post-copy.

pub mod access;
pub mod ask;
pub mod children;
pub mod commit;
pub mod config;
pub mod coop;
pub mod daemon;
pub mod deputy;
pub mod dest;
pub mod dirty;
pub mod drain;
pub mod dump;
pub mod failpoints;
pub mod fault;
pub mod fsuser;
pub mod handshakes;
pub mod history;
pub mod keeper;
pub mod lazy;
pub mod lent;
pub mod lineage;
pub mod notify;
pub mod pageset;
pub mod peer;
pub mod preflight;
pub mod procfs;
pub mod received;
pub mod relay;
pub mod reservoir;
pub mod restore;
pub mod secure;
pub mod shipped;
pub mod source;
pub mod store;
pub mod sys;
pub mod uffd;

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
