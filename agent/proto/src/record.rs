//! The record of one migration: its timeline and its traffic.

use serde::{Deserialize, Serialize};

/// Everything measured about one migration. `--json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// Migration id.
    pub id: u64,
    /// Mode used.
    pub mode: String,
    /// Pid on the source host.
    pub pid: i32,
    /// Destination host.
    pub to: String,
    /// Pid on the destination host.
    pub new_pid: i32,
    /// Milestones, microseconds since the request arrived.
    pub timeline: Timeline,
    /// Freeze to resume, microseconds.
    pub downtime_us: u64,
    /// Pages and bytes sent during the freeze.
    pub eager_pages: u64,
    /// Pages to follow after resume.
    pub lazy_pages: u64,
    /// Pages sent in each pre-copy round while the process ran.
    pub precopy_rounds: Vec<u64>,
    /// Pages the destination took from what pre-copy sent (not written
    /// since).
    pub stored_pages: u64,
    /// Pages sent on the demand lane.
    pub demand_pages: u64,
    /// Demand requests served.
    pub demand_requests: u64,
    /// Pages pushed on the bulk lane.
    pub pushed_pages: u64,
    /// Lazy pages the process discarded before they arrived.
    pub discarded_pages: u64,
    /// Commit to complete, microseconds: how long the process needed both hosts.
    pub residual_us: u64,
    /// Faults served over the network (sampled, at most a few thousand).
    pub faults: Vec<FaultSample>,
    /// How it ended: "complete", "resumed" (detached) or an error.
    pub outcome: String,
}

/// Milestones of a migration, microseconds since the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// Pre-copy started (0 without pre-copy).
    pub precopy: u64,
    /// Process frozen.
    pub freeze: u64,
    /// Core and eager pages collected.
    pub dump: u64,
    /// Destination reports the process rebuilt.
    pub restored: u64,
    /// Process running on the destination.
    pub resume: u64,
    /// Last lazy page in, original gone.
    pub complete: u64,
}

/// One network-served fault as measured by the destination.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FaultSample {
    /// Microseconds since resume.
    pub at_us: u64,
    /// Faulting address (destination address space).
    pub addr: u64,
    /// Fault read to page installed, microseconds.
    pub latency_us: u64,
}
