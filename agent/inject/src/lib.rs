//! Remote execution in another process through ptrace: the `compel`
//! analogue of `migrate`. It knows nothing about migration.
//!
//! Lifecycle: [`Seized::seize`] attaches with `PTRACE_SEIZE` and stops the
//! task with `PTRACE_INTERRUPT`; [`Seized::syscall`] runs one system call
//! inside it (registers saved and put back around it); dropping the guard
//! detaches and lets the task run again. With a way back
//! ([`Seized::set_way_back`], [`frame`]) a task whose tracer dies inside
//! an injected syscall returns to its own registers by itself.
//!
//! Logging goes through `tracing`; this crate never installs a subscriber.

pub mod calls;
pub mod error;
pub mod frame;
pub mod mem;
pub mod regs;
pub mod seize;
pub mod site;
mod sys;

pub use error::InjectError;
pub use frame::{FrameSpace, ReturnPath};
pub use mem::RemoteMem;
pub use regs::Regs;
pub use seize::{Seized, WayBackError};
pub use site::{
    code_ranges, is_sigreturn_gadget, returning_site, sigreturn_gadget, syscall_site, Vdso,
};
