//! What the agent uses of its own host: `/proc`, thin syscall wrappers,
//! userfaultfd, who may act on what, acting on files as a process's user,
//! the service manager, CPU affinity, children, its network addresses and
//! socket tables, and the journals of what a migration holds back.

pub mod access;
pub mod address;
pub mod children;
pub mod fsuser;
pub mod held;
pub mod kinds;
pub mod lent;
pub mod net_tables;
pub mod notify;
pub mod procfs;
pub mod sys;
pub mod uffd;

/// Opens the journals under `state_dir` of what a dump lends of a frozen
/// process ([`lent`]) and what a migration holds back of the network
/// ([`held`]), settling what a dead agent left in them; on an error, the
/// journal's path.
pub fn open_journals(
    state_dir: &std::path::Path,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    lent::open(state_dir).map_err(|e| (state_dir.join("lent"), e))?;
    held::open(state_dir).map_err(|e| (state_dir.join("held"), e))?;
    Ok(())
}
