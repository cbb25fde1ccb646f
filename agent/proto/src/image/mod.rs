//! The process image shipped at freeze time: everything but the page data.
//!
//! Addresses are the source's, at dump time. Page data travels separately
//! in `Pages` frames.

use serde::{Deserialize, Serialize};

/// Where a process started, how often it moved, and whether it runs with
/// the shim (`migrate run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The host it started on.
    pub home: String,
    /// Migrations so far.
    pub moves: u32,
    /// Started by `migrate run`, with the shim loaded.
    pub cooperating: bool,
    /// Address of the shim's state block ([`crate::shim`]) in the process,
    /// once the shim has attached.
    #[serde(default)]
    pub shim: Option<u64>,
    /// What its established TCP connections become when it moves.
    #[serde(default)]
    pub tcp: TcpPolicy,
}

/// What a cooperating process's established TCP connections become when
/// it moves (`migrate run --tcp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcpPolicy {
    /// A process with one is not migrated (the reason is given).
    #[default]
    Refuse,
    /// Reset at the freeze; on the destination the descriptor is a socket
    /// whose connection was reset.
    Close,
    /// Connected again from the destination to the same remote address on
    /// the same descriptor (reported to the resume callbacks); reset if
    /// that fails.
    Reconnect,
}

impl TcpPolicy {
    /// The name `migrate run --tcp` takes.
    pub fn name(self) -> &'static str {
        match self {
            TcpPolicy::Refuse => "refuse",
            TcpPolicy::Close => "close",
            TcpPolicy::Reconnect => "reconnect",
        }
    }
}

/// A process's place in the tree that moves with it: its parent, process
/// group and session as pids on the source, and how it ended if it is a
/// zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its session.
    pub sid: i32,
    /// A zombie's wait status (as `waitpid` gives it); `None` while it
    /// runs.
    pub exit: Option<i32>,
}

/// The whole core of one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessImage {
    /// Pid on the source host.
    pub pid: i32,
    /// Its parent's pid there.
    #[serde(default)]
    pub ppid: i32,
    /// Thread name (`/proc/<pid>/comm`).
    pub comm: String,
    /// Path of the executable (`/proc/<pid>/exe`).
    pub exe: String,
    /// Working directory.
    pub cwd: String,
    /// File mode creation mask.
    pub umask: u32,
    /// The threads, the leader first.
    pub threads: Vec<ThreadState>,
    /// Memory layout.
    pub mm: MmState,
    /// Signal dispositions of the caught or ignored signals.
    pub sigactions: Vec<SigAction>,
    /// Resource limits, indexed by resource number.
    pub rlimits: Vec<Rlimit>,
    /// Credentials.
    pub creds: Creds,
    /// Open descriptors in ascending order.
    pub fds: Vec<FdEntry>,
    /// The bytes of the source's vDSO, so the destination can check that it
    /// maps the same one.
    pub vdso_hash: u64,
    /// Where the thread library keeps each thread's own id, as an offset
    /// from the thread pointer (`fs_base`), if it could be located: a
    /// thread that gets a new id on the destination has it patched there.
    pub tid_offset: Option<u64>,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// `personality(2)` flags.
    pub personality: u32,
    /// Armed interval timers.
    pub itimers: Vec<ITimer>,
    /// POSIX timers (`timer_create`).
    pub posix_timers: Vec<PosixTimer>,
    /// Signals queued at the freeze, with their `siginfo`.
    pub queued_signals: Vec<QueuedSignal>,
    /// Pipes the process holds both ends of, with their content.
    pub pipes: Vec<PipeState>,
    /// memfd objects reached through descriptors.
    pub memfds: Vec<MemfdState>,
    /// Files the destination lacks (or that were deleted), with content.
    pub shipped: Vec<ShippedFile>,
    /// The process has a deputy on its home host, which the destination
    /// serves from now on.
    pub deputy: bool,
    /// Where the process started and how often it moved.
    #[serde(default)]
    pub lineage: Lineage,
}

/// A file shipped with the process because the destination lacks it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShippedFile {
    /// Descriptor it was shipped for.
    pub fd: i32,
    /// Path on the source (without " (deleted)").
    pub path: String,
    /// Deleted on the source: made again as an unlinked file.
    pub deleted: bool,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes of content, sent after the core in
    /// [`crate::msg::SourceMsg::ShippedData`] chunks, file after file in
    /// the order of [`ProcessImage::shipped`].
    pub size: u64,
    /// A file the process maps shared and writable, shipped for its
    /// mappings (`fd` is then a pseudo descriptor below 0).
    pub mapped: Option<MappedShared>,
}

impl ShippedFile {
    /// Received into an unlinked file the agent holds (deleted on the
    /// source, a private copy, or a file for mappings, which the rebuild
    /// makes in the process), rather than made at its path.
    pub fn held_unlinked(&self) -> bool {
        self.deleted || self.mapped.is_some()
    }
}

/// A file mapped shared and writable that travels with the process: its
/// content is read through `mapping` on the source; the destination makes
/// the file again in the process and maps it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedShared {
    /// A mapping of it on the source: (start, end).
    pub mapping: (u64, u64),
    /// Made again at its path (missing on the destination), else as a
    /// private unlinked copy.
    pub at_path: bool,
}

/// A signal waiting in a queue, delivered again on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedSignal {
    /// The thread (source tid) whose own queue holds it; 0 for the
    /// process-wide queue.
    pub tid: i32,
    /// The raw `siginfo_t` (128 bytes).
    pub info: Vec<u8>,
}

impl QueuedSignal {
    /// Signal number (`si_signo`).
    pub fn signo(&self) -> i32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.info[..4]);
        i32::from_le_bytes(b)
    }
}

/// An armed `setitimer` timer; times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ITimer {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL` or `ITIMER_PROF`.
    pub which: u32,
    /// Reload interval.
    pub interval_us: u64,
    /// Time to the next expiry.
    pub value_us: u64,
}

/// A POSIX timer; times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    /// Timer id (kept on the destination).
    pub id: i32,
    /// Clock id.
    pub clock: i32,
    /// Signal delivered on expiry.
    pub signo: i32,
    /// `sigev_value`.
    pub sigval: u64,
    /// `sigev_notify` (`SIGEV_THREAD_ID` included).
    pub notify: i32,
    /// Target thread for `SIGEV_THREAD_ID` (source tid), else 0.
    pub target_tid: i32,
    /// Reload interval.
    pub interval_ns: u64,
    /// Time to the next expiry (0: disarmed).
    pub value_ns: u64,
}

/// Registers and per-thread kernel state of one thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadState {
    /// Thread id on the source.
    pub tid: i32,
    /// Thread name (`/proc/<pid>/task/<tid>/comm`).
    pub name: String,
    /// `user_regs_struct`, as the 27 u64 words of x86_64, already adjusted
    /// for syscall restart.
    pub regs: Vec<u64>,
    /// `NT_X86_XSTATE` area.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// rseq registration, if any.
    pub rseq: Option<Rseq>,
    /// Robust futex list head and length.
    pub robust_list: (u64, u64),
    /// `clear_child_tid` (set_tid_address).
    pub clear_child_tid: u64,
    /// Alternate signal stack (`sigaltstack`); `None` when disabled.
    pub altstack: Option<AltStack>,
    /// `PR_SET_PDEATHSIG` signal (0: none).
    pub pdeathsig: i32,
}

/// A `stack_t` as `sigaltstack` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltStack {
    /// Lowest address of the stack.
    pub sp: u64,
    /// `SS_AUTODISARM` and friends (never `SS_DISABLE` here).
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
}

/// An rseq registration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rseq {
    /// Address of `struct rseq`.
    pub addr: u64,
    /// Its registered size.
    pub len: u32,
    /// Abort signature.
    pub sig: u32,
}

/// One signal disposition (`struct kernel_sigaction`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SigAction {
    /// Signal number.
    pub signo: u32,
    /// Handler address, or `SIG_IGN` (1).
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// Credentials of the process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved uid.
    pub uid: [u32; 3],
    /// Real, effective, saved gid.
    pub gid: [u32; 3],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Inheritable, permitted, effective capability sets.
    pub caps: [u64; 3],
}

/// The memory map and the `mm_struct` fields restored by `PR_SET_MM_MAP`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MmState {
    /// Mappings in address order (vDSO ones included).
    pub vmas: Vec<Vma>,
    /// `start_code, end_code, start_data, end_data, start_brk, brk,
    /// start_stack, arg_start, arg_end, env_start, env_end`.
    pub fields: MmFields,
    /// Raw `/proc/<pid>/auxv`.
    pub auxv: Vec<u8>,
}

/// Fields of `struct prctl_mm_map`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stack, anonymous mmap).
    Anon,
    /// A file mapped privately or shared read-only.
    File {
        /// Path of the file.
        path: String,
        /// Offset of the mapping in the file.
        offset: u64,
        /// Identity the destination checks before the freeze.
        ident: FileIdent,
    },
    /// Shared memory backed by shmem: `MAP_SHARED | MAP_ANONYMOUS` or a
    /// memfd, mapped only by this process. Its content goes during the
    /// freeze.
    Shmem {
        /// Inode of the shmem object (VMAs with the same one share it).
        inode: u64,
        /// memfd name, `None` for shared anonymous memory.
        memfd: Option<String>,
        /// Offset of the mapping in the object.
        offset: u64,
        /// Size of the object.
        size: u64,
    },
    /// `[vdso]`, `[vvar]`, `[vvar_vclock]`: moved, never copied.
    Vdso(String),
    /// `[vsyscall]`: fixed by the kernel, nothing to do.
    Vsyscall,
}

/// One mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vma {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `PROT_*`.
    pub prot: u32,
    /// `MAP_SHARED` (true) or `MAP_PRIVATE`.
    pub shared: bool,
    /// `MAP_GROWSDOWN` (the stack).
    pub growsdown: bool,
    /// `madvise` advice in force (`MADV_*` values), from smaps' VmFlags.
    pub advice: Vec<u32>,
    /// What backs it.
    pub kind: VmaKind,
    /// Pages whose content must be shipped (relative page indexes).
    pub pages: Vec<PageRun>,
}

impl Vma {
    /// Whether `other` is the same mapping: range, protection, sharing and
    /// backing (a child forked from its parent keeps it as it is).
    pub fn same_mapping(&self, other: &Vma) -> bool {
        self.start == other.start
            && self.end == other.end
            && self.prot == other.prot
            && self.shared == other.shared
            && self.kind == other.kind
    }

    /// Whether a child forked from a process with this mapping has it as
    /// `child`: the same mapping, and not one a fork leaves out
    /// (`MADV_DONTFORK`).
    pub fn forks_as(&self, child: &Vma) -> bool {
        const MADV_DONTFORK: u32 = 10;
        self.same_mapping(child) && !self.advice.contains(&MADV_DONTFORK)
    }

    /// Number of pages spanned.
    pub fn npages(&self) -> u64 {
        (self.end - self.start) / crate::PAGE_SIZE
    }
}

/// A run of consecutive pages inside a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// First page index relative to the VMA start.
    pub first: u64,
    /// Number of pages.
    pub count: u64,
    /// How the pages reach the destination.
    pub fill: Fill,
}

/// How a run of pages reaches the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fill {
    /// Shipped during the freeze.
    Eager,
    /// Fetched from the source after resume (demand or push).
    Lazy,
    /// Already on the destination: sent by a pre-copy round and not
    /// written since; installed there after resume without the source.
    Stored,
    /// The parent's page, shared copy-on-write since the fork and written
    /// by neither: the process of a tree gets it by being forked from its
    /// rebuilt parent, never sent.
    Parent,
}

/// Identity of a file, checked on the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdent {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Who a process is to the filesystem: the ids and groups the kernel
/// checks its path lookups, opens and creations against. Every such step
/// a destination takes for the process is taken as this user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsCreds {
    /// Filesystem uid.
    pub uid: u32,
    /// Filesystem gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// One open descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdEntry {
    /// Descriptor number.
    pub fd: i32,
    /// What it refers to.
    pub kind: FdKind,
}

/// What `TCP_REPAIR` reads of an established connection and writes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpState {
    /// Sequence number of the first byte of `sent`.
    pub send_seq: u32,
    /// Sequence number of the first byte of `received`.
    pub recv_seq: u32,
    /// Bytes sent and not yet acknowledged.
    pub sent: Vec<u8>,
    /// Bytes written by the process and not sent yet.
    pub unsent: Vec<u8>,
    /// Bytes received and not yet read by the process.
    pub received: Vec<u8>,
    /// Maximum segment size.
    pub mss: u32,
    /// Window scaling, if agreed: (send, receive) shifts.
    pub wscale: Option<(u8, u8)>,
    /// Timestamps agreed.
    pub timestamps: bool,
    /// Selective acknowledgements agreed.
    pub sack: bool,
    /// The connection's timestamp clock (`TCP_TIMESTAMP`).
    pub timestamp: u32,
    /// `TCP_REPAIR_WINDOW`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
    /// Integer options: (level, name, value).
    pub options: Vec<(i32, i32, i32)>,
}

/// Descriptor kinds that can move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FdKind {
    /// A regular file or `/dev/null`, reopened by path.
    Path {
        /// Path of the file.
        path: String,
        /// `open(2)` flags from fdinfo (`O_CLOEXEC` included).
        flags: u32,
        /// File offset.
        pos: u64,
    },
    /// The same open file as the lower descriptor `of` (a `dup`): one
    /// offset, one set of status flags.
    Dup {
        /// Descriptor it shares its open file with.
        of: i32,
        /// `FD_CLOEXEC` of this descriptor.
        cloexec: bool,
    },
    /// An eventfd with its counter.
    EventFd {
        /// `O_NONBLOCK`, `O_CLOEXEC` (as fdinfo flags).
        flags: u32,
        /// Counter value.
        count: u64,
        /// `EFD_SEMAPHORE`.
        semaphore: bool,
    },
    /// A timerfd.
    TimerFd {
        /// fdinfo flags (`O_NONBLOCK`, `O_CLOEXEC`).
        flags: u32,
        /// Clock id.
        clock: i32,
        /// Time to the next expiry, ns (0: disarmed).
        value_ns: u64,
        /// Interval, ns.
        interval_ns: u64,
        /// Expirations not read yet.
        ticks: u64,
    },
    /// A signalfd.
    SignalFd {
        /// fdinfo flags.
        flags: u32,
        /// Signals it reads.
        mask: u64,
    },
    /// A listening TCP or unconnected UDP socket, made and bound again.
    Socket {
        /// fdinfo flags (`O_NONBLOCK`, `O_CLOEXEC`).
        flags: u32,
        /// `AF_INET` or `AF_INET6`.
        domain: i32,
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        stype: i32,
        /// Protocol.
        protocol: i32,
        /// Raw `sockaddr` it is bound to (source host's view).
        addr: Vec<u8>,
        /// Listening, with this backlog.
        listen: Option<i32>,
        /// Integer socket options: (level, name, value).
        options: Vec<(i32, i32, i32)>,
        /// Raw `sockaddr` of the peer of a connected UDP socket.
        peer: Option<Vec<u8>>,
    },
    /// One end of a connected pair of unnamed Unix sockets (socketpair)
    /// whose both ends the process holds.
    UnixPair {
        /// Names the pair (the lower inode of the two).
        pair: u64,
        /// This is the end with the lower inode.
        first: bool,
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        stype: i32,
        /// fdinfo flags.
        flags: u32,
        /// Data waiting to be read on this end (one entry per datagram,
        /// or one for a stream).
        queued: Vec<Vec<u8>>,
    },
    /// An inotify instance with its watches (re-added by path).
    Inotify {
        /// fdinfo flags.
        flags: u32,
        /// Watches: (watch descriptor, path, mask).
        watches: Vec<(i32, String, u32)>,
    },
    /// A Unix socket listening on a name, made and bound again.
    UnixListener {
        /// fdinfo flags.
        flags: u32,
        /// `SOCK_STREAM` or `SOCK_SEQPACKET`.
        stype: i32,
        /// `sun_path` bytes (a leading NUL for an abstract name).
        name: Vec<u8>,
        /// Backlog.
        backlog: u32,
    },
    /// An epoll instance with its registrations.
    Epoll {
        /// fdinfo flags (`O_CLOEXEC`).
        flags: u32,
        /// Registered descriptors.
        watches: Vec<EpollWatch>,
    },
    /// A memfd: its object comes from [`ProcessImage::memfds`] or, when
    /// the process also maps it, from that mapping.
    Memfd {
        /// Inode of the object.
        inode: u64,
        /// fdinfo flags.
        flags: u32,
        /// File offset.
        pos: u64,
    },
    /// An established TCP connection of a cooperating process
    /// ([`TcpPolicy`]): connected again to `peer`, or a reset one.
    TcpConnection {
        /// fdinfo flags (`O_NONBLOCK`, `O_CLOEXEC`).
        flags: u32,
        /// `AF_INET` or `AF_INET6`.
        domain: i32,
        /// Raw `sockaddr` of the remote end.
        peer: Vec<u8>,
        /// Connect again (else reset).
        reconnect: bool,
    },
    /// A standard stream forwarded to and from the home host: on the
    /// destination a pipe whose other end the agent relays.
    Forwarded {
        /// fdinfo flags.
        flags: u32,
        /// The process writes to it (stdout, stderr); else it reads.
        output: bool,
        /// A terminal: a deputy stays on the home host in the process's
        /// place (its session leader waits for that pid).
        terminal: bool,
    },
    /// An end of a pipe whose both ends the process holds.
    Pipe {
        /// Inode of the pipe (names it in [`ProcessImage::pipes`]).
        pipe: u64,
        /// The write end (else the read end).
        write: bool,
        /// Status flags (`O_NONBLOCK`, ...) and `O_CLOEXEC`.
        flags: u32,
    },
    /// The same open file as descriptor `of_fd` of process `of_pid`, a
    /// process of the same tree made before this one (inherited across a
    /// fork): one offset, one set of status flags.
    Inherited {
        /// The process (its pid, kept by the move).
        of_pid: i32,
        /// Its descriptor.
        of_fd: i32,
        /// `FD_CLOEXEC` of this descriptor.
        cloexec: bool,
    },
    /// An established TCP connection whose local address exists on the
    /// destination (moved with `--move-address`): checkpointed with
    /// `TCP_REPAIR` and made again there, the same connection.
    TcpRepaired {
        /// fdinfo flags (`O_NONBLOCK`, `O_CLOEXEC`).
        flags: u32,
        /// `AF_INET` or `AF_INET6`.
        domain: i32,
        /// Raw `sockaddr` of the local end.
        local: Vec<u8>,
        /// Raw `sockaddr` of the remote end.
        peer: Vec<u8>,
        /// Its state (boxed: every descriptor of an image is as large as
        /// its largest kind).
        state: Box<TcpState>,
    },
}

/// One epoll registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWatch {
    /// Watched descriptor.
    pub fd: i32,
    /// Event mask (`EPOLLET` and friends included).
    pub events: u32,
    /// User data.
    pub data: u64,
}

/// A memfd object reached through descriptors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemfdState {
    /// Inode on the source.
    pub inode: u64,
    /// Its name (`memfd_create`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `F_GET_SEALS`.
    pub seals: u32,
    /// Populated ranges: (offset, bytes). Empty when a mapping of the
    /// process carries the content.
    pub data: Vec<(u64, Vec<u8>)>,
}

/// A pipe's buffer at the freeze.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipeState {
    /// Inode on the source.
    pub inode: u64,
    /// `F_GETPIPE_SZ`.
    pub capacity: u32,
    /// Bytes waiting to be read.
    pub data: Vec<u8>,
    /// A named FIFO's path (`None`: an anonymous pipe).
    pub fifo: Option<String>,
}

/// Bounds a destination puts on an image before building anything from it.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Most threads.
    pub threads: usize,
    /// Most mappings (the kernel's default `vm.max_map_count`).
    pub vmas: usize,
    /// Most descriptors.
    pub fds: usize,
    /// Most pages with content (eager, lazy and stored), e.g. this host's
    /// memory: a process that needs more cannot run here.
    pub pages: u64,
    /// Most bytes of shipped files, all together.
    pub shipped_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            threads: 1 << 15,
            vmas: 65_530,
            fds: 1 << 20,
            pages: u64::MAX,
            shipped_bytes: 64 << 20,
        }
    }
}

/// End of the x86_64 user address space (47-bit, one guard page below).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// The legacy vsyscall page.
pub const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;

mod tree;
mod validate;

pub use tree::{tree_page, tree_page_of, TreeImage, MAX_TREE, TREE_TAG_SHIFT};
