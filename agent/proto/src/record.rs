//! The record of one migration: its timeline and its traffic.

use serde::{Deserialize, Serialize};

/// Everything measured about one migration. `--json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// Migration id.
    pub id: u64,
    /// Mode used.
    pub mode: String,
    /// Every option of the migration: mode, eager set and budget, push
    /// order and rate, prefetch, compression, pre-copy limits.
    pub options: crate::options::MigrateOptions,
    /// Pid on the source host.
    pub pid: i32,
    /// Destination host.
    pub to: String,
    /// Pid on the destination host.
    pub new_pid: i32,
    /// The processes that moved with it, the same pids on both hosts: a
    /// tree's other members (its descendants, zombies too); empty when it
    /// moved alone.
    #[serde(default)]
    pub kin: Vec<i32>,
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
    /// Faults served over the network: a uniform sample of at most 4096
    /// drawn over the whole of post-copy (reservoir sampling), in time
    /// order; `demand_requests` counts them all.
    pub faults: Vec<FaultSample>,
    /// How it ended: "complete", "resumed" (detached) or an error.
    pub outcome: String,
    /// When the request arrived, microseconds since the Unix epoch (source
    /// clock).
    pub started_unix_us: u64,
    /// Destination clock minus source clock, microseconds, estimated at
    /// the handshake (Cristian: the peer's time plus half the round trip,
    /// the tightest of several probes).
    pub clock_offset_us: i64,
    /// Half the tightest probe's round trip: the offset is right within
    /// this many microseconds.
    pub clock_uncertainty_us: u64,
    /// Both agents' milestones on the source's timeline.
    pub events: Vec<Event>,
    /// Bytes of pages per lane.
    pub lanes: LaneBytes,
    /// Bytes the pages took on the wire, all lanes (less than the page
    /// bytes when compressed).
    pub page_wire_bytes: u64,
    /// Background push progress: (microseconds since the request, pages
    /// pushed so far), sampled.
    pub push_progress: Vec<(u64, u64)>,
    /// Of the pages post-copy moves, how many are in on the destination so
    /// far (as its progress reports say; all of them once complete).
    #[serde(default)]
    pub moved_pages: u64,
}

/// One milestone of either agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the request, on the source's clock (the
    /// destination's events shifted by the clock offset).
    pub at_us: i64,
    /// Host name.
    pub host: String,
    /// What happened.
    pub what: String,
}

/// Page bytes carried by each lane.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaneBytes {
    /// Pre-copy rounds (control lane, before the freeze).
    pub precopy: u64,
    /// Eager pages in the freeze (control lane).
    pub eager: u64,
    /// Demand faults (demand lane).
    pub demand: u64,
    /// Background push (bulk lane).
    pub bulk: u64,
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
    /// From the fault's read off the userfaultfd to its thread woken (the
    /// `UFFDIO_COPY` that installs the page and wakes it has returned),
    /// microseconds.
    pub latency_us: u64,
    /// Faulting thread (its id on the destination).
    pub tid: u32,
}
