//! Errors of the injection library.

use std::io;

/// What went wrong while controlling a remote task.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// `PTRACE_SEIZE` failed (no such task, no permission, already traced).
    #[error("cannot seize task {tid}")]
    Seize {
        /// Task id.
        tid: i32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A ptrace request failed.
    #[error("ptrace {op} on task {tid} failed")]
    Ptrace {
        /// Request name.
        op: &'static str,
        /// Task id.
        tid: i32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The task exited or was killed while being controlled.
    #[error("task {tid} exited while stopped (status {status:#x})")]
    Gone {
        /// Task id.
        tid: i32,
        /// Raw wait status.
        status: i32,
    },
    /// A stop of another kind came while waiting for a syscall stop.
    #[error("task {tid}: unexpected stop {status:#x} while running a remote syscall")]
    UnexpectedStop {
        /// Task id.
        tid: i32,
        /// Raw wait status.
        status: i32,
    },
    /// A remote syscall returned an error.
    #[error("remote syscall {nr} in task {tid} failed")]
    RemoteSyscall {
        /// Syscall number.
        nr: i64,
        /// Task id.
        tid: i32,
        /// The errno it returned.
        #[source]
        source: io::Error,
    },
    /// An injected syscall was given up midway (fault injection).
    #[error("task {tid}: injected syscall given up midway: {why}")]
    Interrupted {
        /// Task id.
        tid: i32,
        /// Why.
        why: String,
    },
    /// Reading or writing the task's memory failed.
    #[error("memory access at {addr:#x} in task {pid} failed")]
    Mem {
        /// Process id.
        pid: i32,
        /// Address.
        addr: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },
}
