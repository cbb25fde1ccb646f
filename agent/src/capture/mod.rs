//! Taking a process: the pre-flight verdict, the freeze and dump, pre-copy's
//! dirty tracking, a cooperating process's shim state.

pub mod coop;
pub mod dirty;
pub mod dump;
pub mod pid_ns;
pub mod preflight;
pub mod shared_files;
pub mod tree;
