//! How one migration is to be made: its mode and policies, as the user
//! chose them (`migrate`'s options), carried in the request and kept in
//! the record.

use serde::{Deserialize, Serialize};

/// How pages move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Core + eager set at the freeze, the rest on demand and pushed.
    PostCopy,
    /// Every page during the freeze.
    StopCopy,
    /// Rounds of copying while the process runs (dirty pages tracked with
    /// userfaultfd write-protection), then the last dirty pages during
    /// the freeze: the source is free at resume.
    PreCopy,
    /// One pre-copy round, then post-copy for what was written since.
    Hybrid,
}

impl Mode {
    /// Whether pages are copied while the process still runs.
    pub fn precopies(self) -> bool {
        matches!(self, Mode::PreCopy | Mode::Hybrid)
    }

    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Mode::PostCopy => "postcopy",
            Mode::StopCopy => "stop-copy",
            Mode::PreCopy => "precopy",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// Which pages go in the freeze besides the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EagerSet {
    /// Only what rebuilding needs (thread blocks, rseq areas).
    None,
    /// Also the top of each thread's stack (the default).
    Stack,
    /// Also every page not already on the destination, up to the budget
    /// (`Hybrid`: the pages written since the pre-copy round).
    Dirty,
}

/// The order of the background push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOrder {
    /// By address.
    Sequential,
    /// From the latest demand fault on, wrapping around (locality).
    NearFaults,
}

/// How many pages a demand fault asks for (the destination decides per
/// fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prefetch {
    /// One page for a fault on its own; a window of up to `max` pages for
    /// a fault right after the window before it (a process reading in
    /// address order), as the kernel's readahead does for files.
    Readahead { max: u32 },
    /// Always this many pages, the faulting one included.
    Fixed(u32),
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch::Readahead { max: 16 }
    }
}

/// Options of one migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateOptions {
    /// Transfer mode.
    pub mode: Mode,
    /// Cap on the background push, MiB/s (`None`: as fast as possible;
    /// `Some(0)`: no push, demand only).
    pub push_rate_mib: Option<u64>,
    /// Pages fetched per demand fault (a record kept before protocol 18,
    /// which had a fixed count, reads as the default).
    #[serde(default)]
    pub prefetch: Prefetch,
    /// Most pre-copy rounds before the final freeze (`PreCopy`).
    pub max_rounds: u32,
    /// A pre-copy round that finds at most this many written pages is
    /// the last before the freeze.
    pub converge_pages: u64,
    /// The eager set.
    pub eager: EagerSet,
    /// Most pages of the eager set chosen by `EagerSet::Dirty`.
    pub eager_budget_pages: u64,
    /// Push order.
    pub push_order: PushOrder,
    /// Compress pages with LZ4 on every lane.
    pub compress: bool,
    /// What happens to the frozen original if the destination is lost
    /// after the commit.
    #[serde(default)]
    pub on_loss: LossPolicy,
    /// Service addresses that leave the source at the freeze and are put
    /// on the destination before the process resumes there
    /// (`--move-address`): its TCP connections on them move intact.
    #[serde(default)]
    pub move_addresses: Vec<std::net::IpAddr>,
}

/// The fate of the frozen original when the destination is lost after the
/// commit (its copy may have run; the original has not since the freeze).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LossPolicy {
    /// Keep it frozen until `migrate resolve ID --kill|--resume`.
    Keep,
    /// Kill it: the process is lost unless its copy runs on.
    Kill,
    /// Run it again here once the copy is known gone (the destination
    /// said so, asked or unasked); kept frozen while that is not known.
    #[default]
    Resume,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            mode: Mode::PostCopy,
            push_rate_mib: None,
            prefetch: Prefetch::default(),
            max_rounds: 8,
            converge_pages: 1024,
            eager: EagerSet::Stack,
            eager_budget_pages: u64::MAX,
            push_order: PushOrder::Sequential,
            compress: false,
            on_loss: LossPolicy::default(),
            move_addresses: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration asked without options (the shim's `migrate_request`)
    /// gets `migrate`'s defaults: a lost destination resumes the original
    /// once its copy is known gone.
    #[test]
    fn the_defaults_are_migrates() {
        let o = MigrateOptions::default();
        assert_eq!(o.on_loss, LossPolicy::Resume);
        assert_eq!(o.mode, Mode::PostCopy);
    }
}
