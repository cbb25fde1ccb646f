//! What the agent uses of its own host: `/proc`, thin syscall wrappers,
//! userfaultfd, who may act on what, acting on files as a process's user,
//! the service manager, CPU affinity, children.

pub mod access;
pub mod address;
pub mod children;
pub mod fsuser;
pub mod kinds;
pub mod lent;
pub mod notify;
pub mod procfs;
pub mod sys;
pub mod uffd;
