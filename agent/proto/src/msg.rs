//! Control messages: CLI ↔ agent (Unix socket) and agent ↔ agent (TCP).

use serde::{Deserialize, Serialize};

use crate::image::{FileIdent, ProcessImage};
pub use crate::options::{EagerSet, LossPolicy, MigrateOptions, Mode, Prefetch, PushOrder};
use crate::record::MigrationRecord;
pub use crate::refusal::{Code, Reason};

/// What `migrate resolve` does with a kept original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// End it.
    Kill,
    /// Run it again on this host.
    Resume,
}

/// CLI → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Opening message.
    Hello {
        /// Must be [`crate::PROTOCOL_VERSION`].
        version: u32,
    },
    /// Run the pre-flight checks only.
    Check {
        /// Target pid.
        pid: i32,
    },
    /// The records of past and running migrations started here
    /// (`Reply::Records`).
    History,
    /// Migrate a process.
    Migrate {
        /// Target pid.
        pid: i32,
        /// Peer name or `ADDR:PORT`.
        to: String,
        /// Answer once the process runs on the destination.
        detach: bool,
        /// Options.
        opts: MigrateOptions,
    },
    /// From `migrate run`, before it executes the command: the caller's own
    /// pid is a cooperating process started here (`Reply::Registered`).
    Register {
        /// The caller's pid.
        pid: i32,
        /// What its established TCP connections become when it moves.
        tcp: crate::image::TcpPolicy,
    },
    /// From the shim inside a process: its state block is at `state`
    /// (`Reply::Whoami`).
    ShimAttach {
        /// The caller's pid.
        pid: i32,
        /// Address of the block ([`crate::shim`]).
        state: u64,
    },
    /// The processes the caller may migrate (`Reply::Processes`).
    List,
    /// From a process itself (the shim): this host and its lineage
    /// (`Reply::Whoami`).
    Whoami {
        /// The caller's pid.
        pid: i32,
    },
    /// Decide the fate of an original kept frozen after its destination
    /// was lost (`Reply::Resolved`).
    Resolve {
        /// The migration.
        id: u64,
        /// What to do.
        action: Resolution,
    },
    /// From a deputy (a process this agent made one): open its lane to
    /// the agent at `addr` for migration `id`; after `Reply::Bridged` the
    /// connection carries that lane's frames both ways.
    DeputyLane {
        /// The agent hosting the process.
        addr: std::net::SocketAddr,
        /// The migration that moved it there.
        id: u64,
    },
}

/// One process `migrate list` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Pid on this host.
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// Real uid.
    pub uid: u32,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Where it started, how often it moved, whether it cooperates.
    pub lineage: crate::image::Lineage,
}

impl Request {
    /// Opens a conversation on a control connection: `Hello` with this
    /// protocol version, and the agent's answer (`Welcome` with its host
    /// name, or `Refused` with the reason).
    pub fn hello(
        s: &mut (impl std::io::Read + std::io::Write),
    ) -> Result<Reply, crate::frame::FrameError> {
        Request::Hello {
            version: crate::PROTOCOL_VERSION,
        }
        .ask(s)
    }

    /// Sends this request on a control connection and reads the agent's
    /// answer.
    pub fn ask(
        &self,
        s: &mut (impl std::io::Read + std::io::Write),
    ) -> Result<Reply, crate::frame::FrameError> {
        crate::frame::write_msg(s, self)?;
        crate::frame::read_msg(s)
    }
}

/// Agent → CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `DeputyLane`: the lane is open.
    Bridged,
    /// Answer to `Resolve`: what was done.
    Resolved(String),
    /// Answer to `Register`.
    Registered,
    /// Answer to a process's `Migrate` of itself: the agent starts once the
    /// process has hung up.
    Accepted,
    /// Answer to `Whoami`.
    Whoami {
        /// This host.
        host: String,
        /// The caller's lineage.
        lineage: crate::image::Lineage,
    },
    /// Answer to `List`.
    Processes(Vec<ProcessEntry>),
    /// Answer to `Hello`.
    Welcome {
        /// Agent's protocol version.
        version: u32,
        /// Agent's host name.
        name: String,
    },
    /// Pre-flight passed (answer to `Check`).
    Movable {
        /// Summary of what would move.
        summary: String,
    },
    /// The request was refused; the process was not touched.
    Refused {
        /// One per obstacle.
        reasons: Vec<Reason>,
        /// Context for people, after the reasons (`migrate check`'s list
        /// of descriptors with their verdicts).
        detail: Vec<String>,
    },
    /// The process runs on the destination (sent before `Complete`).
    Resumed(MigrationRecord),
    /// Post-copy is under way (sent every few hundred milliseconds).
    Progress {
        /// Lazy pages sent so far (demand and push).
        moved_pages: u64,
        /// Lazy pages in all.
        total_pages: u64,
        /// Microseconds since the request.
        elapsed_us: u64,
    },
    /// The migration is complete; the original is gone.
    Complete(MigrationRecord),
    /// Answer to `History`, oldest first.
    Records(Vec<MigrationRecord>),
    /// The migration failed. `resumed_original` says whether the original
    /// runs again on this host.
    Failed {
        /// What went wrong.
        error: String,
        /// The original was resumed untouched.
        resumed_original: bool,
        /// The record so far, when the failure came after the commit.
        record: Option<Box<MigrationRecord>>,
    },
}

impl Reply {
    /// `Refused` for `reasons`, with no detail.
    pub fn refused(reasons: Vec<Reason>) -> Reply {
        Reply::Refused {
            reasons,
            detail: Vec::new(),
        }
    }

    /// `Refused` for one reason.
    pub fn refused_one(code: Code, text: impl Into<String>) -> Reply {
        Reply::refused(vec![Reason::new(code, text)])
    }
}

/// Role of a TCP connection between agents, named in its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Control of one migration.
    Control,
    /// Demand faults of migration `id` (priority).
    Demand(u64),
    /// Background push of migration `id`.
    Bulk(u64),
    /// The relay of descriptor `fd` (a standard stream) of migration `id`.
    Stdio(u64, i32),
    /// The deputy left on the home host for migration `id`.
    Deputy(u64),
    /// A question from the source of migration `id`, which lost touch
    /// after the commit: what became of the copy? Answered by one
    /// [`CopyState`], then closed.
    Outcome(u64),
    /// Another host's `migrate-agent check`: answered by [`DestMsg::Facts`],
    /// then one [`DestMsg::Clock`] for each [`SourceMsg::ClockProbe`] (at
    /// most [`PROBE_CLOCKS`]), then closed.
    Probe,
}

/// Most clock probes one [`Lane::Probe`] answers.
pub const PROBE_CLOCKS: usize = 8;

/// What became of a migration's copy on the destination, as its agent
/// knows it ([`Lane::Outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// This agent knows no migration of that id from the asker: never
    /// received, forgotten, or received before the agent restarted.
    Unknown,
    /// Being built or waiting for the commit: it has not run; it is killed
    /// if the session ends without a commit.
    Building,
    /// It runs with pages still owed: it is killed if the source stays
    /// silent (or this agent dies).
    PostCopy,
    /// It runs, or ran to its end, with every page in: it goes on whatever
    /// the source does.
    Independent,
    /// It is gone: killed by this agent, or never let run (`ran`: whether
    /// any of it ran before).
    Gone {
        /// Whether it was let run before it was killed.
        ran: bool,
    },
}

/// First frame on every agent-to-agent connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerHello {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// Sender's host name.
    pub from: String,
    /// What this connection is for.
    pub lane: Lane,
}

/// Answer to [`PeerHello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerWelcome {
    /// Accepted.
    Ok {
        /// Receiver's host name.
        name: String,
        /// Receiver's protocol version.
        version: u32,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// A file the destination must have, identical.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileNeed {
    /// Absolute path.
    pub path: String,
    /// Required identity (`None`: the file must only exist, e.g. an open
    /// log file that both hosts share).
    pub ident: Option<FileIdent>,
    /// Why it is needed (e.g. "mapped at 0x7f..", "fd 1").
    pub why: String,
    /// The descriptor that has it open, if its content can be shipped
    /// when the destination lacks it, and its size.
    pub ship: Option<(i32, u64)>,
    /// Already deleted on the source: always shipped, never checked.
    pub deleted: bool,
    /// For a file a descriptor has open: device, inode and identity on the
    /// source, to tell the same file (shared filesystem) or an identical
    /// copy from a different file at the same path.
    pub same_file: Option<(u64, u64, FileIdent)>,
    /// What the process must be allowed to do with it (`R_OK`, `W_OK`,
    /// `X_OK` bits), as itself.
    pub access: u32,
}

/// Source → destination on the control lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SourceMsg {
    /// Before the freeze: can you open these? (`pid`: the process's pid
    /// here, which the destination keeps if it is free there; it starts
    /// the process's stub meanwhile.)
    FileCheck {
        /// The process's pid on the source.
        pid: i32,
        /// Who the process is to the filesystem: the destination looks its
        /// files up as this user.
        who: crate::image::FsCreds,
        /// Files its descriptors and mappings need.
        needs: Vec<FileNeed>,
        /// The pids of the processes moving with it (its tree's other
        /// members, zombies too), which must be free on the destination.
        kin: Vec<i32>,
        /// Service addresses that move with it (`--move-address`): the
        /// destination must have a network to put each on.
        addresses: Vec<std::net::IpAddr>,
    },
    /// Before the freeze: what time is it on your clock? (Answered with
    /// `DestMsg::Clock`, several times, to align both agents' events.)
    ClockProbe,
    /// Before the freeze (`PreCopy`, `Hybrid`): the `Pages` frames of
    /// pre-copy round `round` precede this message; the destination keeps
    /// them until the core says which are still current.
    PreCopyRound {
        /// Round number, from 0.
        round: u32,
        /// Pages sent in the round.
        pages: u64,
    },
    /// The core, then the content of its shipped files in `ShippedData`
    /// chunks, then `Pages` frames of the eager set, then `EagerDone`.
    Core {
        /// Migration id (names the demand and bulk lanes).
        id: u64,
        /// The image.
        image: Box<ProcessImage>,
        /// Options.
        opts: MigrateOptions,
    },
    /// A process and its descendants, instead of `Core`: then, for each
    /// member that is not a zombie, in the tree's order, `Pages` frames
    /// of its own pages (not those it takes from its parent) and
    /// `MemberDone` with its index; then `EagerDone`.
    CoreTree {
        /// Migration id.
        id: u64,
        /// The tree's image.
        tree: Box<crate::image::TreeImage>,
        /// Options.
        opts: MigrateOptions,
    },
    /// The pages of member `index` of a `CoreTree` are all sent.
    MemberDone(u32),
    /// Next bytes of the shipped files (at most [`SHIPPED_CHUNK`]): the
    /// rest of the current file's content, or the start of the next one's.
    ShippedData(#[serde(with = "crate::bytes")] Vec<u8>),
    /// All eager pages sent.
    EagerDone,
    /// The original will never run again: resume yours, and deliver
    /// these signals that were pending on the original.
    Commit {
        /// The migration committed (as in `Core`): a commit for another
        /// is refused.
        id: u64,
        /// Signal numbers.
        signals: Vec<i32>,
        /// For a tree, those of each member after the root, in the
        /// tree's order (none for a zombie); empty for one process.
        kin_signals: Vec<Vec<i32>>,
    },
    /// Give up; kill what you built.
    Abort(String),
    /// The original is gone; post-copy is over.
    Done,
    /// The source is alive (after the commit, every
    /// [`crate::HEARTBEAT_EVERY_MS`]).
    Heartbeat,
}

/// Most bytes of shipped file content in one [`SourceMsg::ShippedData`].
pub const SHIPPED_CHUNK: usize = 1 << 20;

/// Destination → source on the control lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DestMsg {
    /// Answer to `FileCheck`.
    FileVerdict {
        /// One per file that is missing or differs and cannot be shipped.
        refused: Vec<Reason>,
        /// Files missing here whose content the source should ship.
        missing: Vec<String>,
        /// Files a descriptor has open that are a different file here:
        /// the source ships a private copy (never replacing this one).
        different: Vec<String>,
    },
    /// Answer to `ClockProbe`: this host's clock, microseconds since the
    /// Unix epoch.
    Clock {
        /// Microseconds since the epoch.
        unix_us: u64,
    },
    /// Rebuilt, all threads stopped, waiting for `Commit`.
    Ready {
        /// Pid on the destination.
        pid: i32,
    },
    /// Running on the destination.
    Resumed,
    /// The destination is alive (after the commit, every
    /// [`crate::HEARTBEAT_EVERY_MS`]).
    Heartbeat,
    /// Every lazy page is installed or discarded.
    Complete {
        /// Pages the process discarded before they arrived.
        discarded_pages: u64,
        /// Network-served faults (sampled).
        faults: Vec<crate::record::FaultSample>,
        /// This side's milestones: (what, microseconds since the epoch
        /// on this host's clock).
        events: Vec<(String, u64)>,
        /// This side's log of the control lane so far, and how many
        /// messages it did not log.
        messages: (Vec<crate::envelope::Stamp>, u64),
    },
    /// Restore or post-copy failed; what was built is killed.
    Failed {
        /// Why.
        error: String,
        /// Whether the copy ran before it was killed. A copy that never
        /// ran leaves the original to resume, committed or not.
        ran: bool,
    },
    /// What a host is, for another's `migrate-agent check`
    /// ([`Lane::Probe`]), before the clock probes.
    Facts {
        /// Its vDSO's hash: a process moves only between hosts whose
        /// vDSOs are the same.
        vdso_hash: u64,
        /// Its kernel (`uname -r`).
        kernel: String,
    },
}

/// Destination → source on the demand lane.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PageRequest {
    /// First page (source address).
    pub addr: u64,
    /// Number of pages.
    pub npages: u32,
}

/// Source → destination, last on the bulk lane: the push is over. A bulk
/// lane that closes without it was lost, pages still to come or not.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PushDone {
    /// Pages the push sent.
    pub pages: u64,
}

/// Between a deputy (the stand-in left on the home host, keeping the
/// process's pid, parent and terminal there) and the destination agent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum DeputyMsg {
    /// Deputy → destination: deliver this signal to the process.
    Signal(i32),
    /// Destination → deputy: the process moved on; its agent there is at
    /// `addr` and the migration is `id`.
    Moved {
        /// New host's agent.
        addr: std::net::SocketAddr,
        /// Migration id (names the deputy's lane there).
        id: u64,
    },
    /// Destination → deputy: the process ended, with this exit code or by
    /// this signal.
    Exited {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal, when one killed it.
        signal: Option<i32>,
    },
}

impl crate::envelope::Named for SourceMsg {
    fn name(&self) -> &'static str {
        match self {
            SourceMsg::FileCheck { .. } => "FileCheck",
            SourceMsg::ClockProbe => "ClockProbe",
            SourceMsg::PreCopyRound { .. } => "PreCopyRound",
            SourceMsg::Core { .. } => "Core",
            SourceMsg::CoreTree { .. } => "CoreTree",
            SourceMsg::MemberDone(..) => "MemberDone",
            SourceMsg::ShippedData(..) => "ShippedData",
            SourceMsg::EagerDone => "EagerDone",
            SourceMsg::Commit { .. } => "Commit",
            SourceMsg::Abort(..) => "Abort",
            SourceMsg::Done => "Done",
            SourceMsg::Heartbeat => "Heartbeat",
        }
    }
}

impl crate::envelope::Named for DestMsg {
    fn name(&self) -> &'static str {
        match self {
            DestMsg::FileVerdict { .. } => "FileVerdict",
            DestMsg::Clock { .. } => "Clock",
            DestMsg::Ready { .. } => "Ready",
            DestMsg::Resumed => "Resumed",
            DestMsg::Heartbeat => "Heartbeat",
            DestMsg::Complete { .. } => "Complete",
            DestMsg::Failed { .. } => "Failed",
            DestMsg::Facts { .. } => "Facts",
        }
    }
}
