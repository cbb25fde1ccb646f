//! Why a request was refused: each reason a stable code, for scripts and
//! `--json`, beside its text, for people. Codes are only ever added (their
//! order is their wire encoding); a reason's text may change, its code not.

use serde::{Deserialize, Serialize};

/// One reason a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// What kind of obstacle.
    pub code: Code,
    /// The obstacle, said for a person (names the pid, descriptor,
    /// mapping or file).
    pub text: String,
}

impl Reason {
    /// A reason.
    pub fn new(code: Code, text: impl Into<String>) -> Reason {
        Reason {
            code,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The texts of `reasons`, joined by `sep`.
pub fn texts(reasons: &[Reason], sep: &str) -> String {
    reasons
        .iter()
        .map(|r| r.text.as_str())
        .collect::<Vec<_>>()
        .join(sep)
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal,)*) => {
        /// The kinds of obstacle (`as_str` gives the stable name, also
        /// their JSON form).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Code {
            $($(#[doc = $doc])* #[serde(rename = $text)] $name,)*
        }

        impl Code {
            /// Every code, in wire order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The stable name, e.g. `file-lock`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }
        }
    };
}

codes! {
    /// Not a valid pid.
    InvalidPid = "invalid-pid",
    /// The host's init.
    HostInit = "host-init",
    /// The agent itself.
    AgentItself = "agent-itself",
    /// No such process (or it ended).
    NoSuchProcess = "no-such-process",
    /// The caller may not act on the process, or make the request.
    NotPermitted = "not-permitted",
    /// A kernel thread.
    KernelThread = "kernel-thread",
    /// A zombie.
    Zombie = "zombie",
    /// Stopped by a signal.
    Stopped = "stopped",
    /// Already traced by another process.
    Traced = "traced",
    /// A seccomp filter is installed.
    Seccomp = "seccomp",
    /// It has children.
    Children = "children",
    /// Its working directory is gone or cannot be read.
    WorkingDirectory = "working-directory",
    /// Shared memory (anonymous, memfd, System V) the move would break.
    SharedMemory = "shared-memory",
    /// A mapping of a kind that does not move.
    Mapping = "mapping",
    /// A mapped file changed or is not a regular file.
    MappedFile = "mapped-file",
    /// A terminal that is not forwarded.
    Terminal = "terminal",
    /// A pipe or FIFO leading to, or shared with, another process.
    Pipe = "pipe",
    /// An epoll set watching a descriptor closed or replaced since.
    Epoll = "epoll",
    /// A file lock.
    FileLock = "file-lock",
    /// inotify state that cannot be carried.
    Inotify = "inotify",
    /// An established TCP connection (without `--tcp`).
    TcpConnection = "tcp-connection",
    /// A socket of a kind or state that does not move.
    Socket = "socket",
    /// A descriptor of a kind that does not move.
    Descriptor = "descriptor",
    /// Threads created faster than they can be stopped.
    Threads = "threads",
    /// A file missing or different on the destination, not shippable.
    File = "file",
    /// Files to ship over the shipping limit.
    ShippingLimit = "shipping-limit",
    /// The destination is unknown, this host, or cannot be reached.
    Destination = "destination",
    /// The process is already being migrated.
    Busy = "busy",
    /// The agent is stopping.
    Stopping = "stopping",
    /// The request does not fit the protocol or the agent's version.
    Protocol = "protocol",
    /// A migration id this agent keeps nothing for, or cannot resolve.
    Resolve = "resolve",
    /// Pre-copy cannot track this process's writes.
    PreCopy = "pre-copy",
    /// A service address that cannot move (`--move-address`).
    Address = "address",
    /// Anything else.
    Other = "other",
    /// In a pid namespace with other processes, or its init.
    PidNamespace = "pid-namespace",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_distinct_stable_names_and_round_trip() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        for &c in Code::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            let back: Code = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            let wire = postcard::to_allocvec(&c).unwrap();
            assert_eq!(postcard::from_bytes::<Code>(&wire).unwrap(), c);
        }
        // The wire encoding is the position: the first codes keep theirs.
        assert_eq!(postcard::to_allocvec(&Code::InvalidPid).unwrap(), [0]);
        assert_eq!(postcard::to_allocvec(&Code::FileLock).unwrap(), [18]);
    }
}
