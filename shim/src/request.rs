//! `migrate_request`: the process asks its agent to migrate it.
//!
//! The agent accepts, waits for the process to hang up (a connection to
//! the agent cannot move) and then migrates it like any other; the
//! listener thread learns the end (resumed elsewhere, or stayed here) from
//! the agents' signals, and the caller waits for that.

use std::io;
use std::time::Duration;

use migrate_proto::msg::{MigrateOptions, Reply, Request};

use crate::{ids, listener, query};

/// How long `migrate_request` waits for its migration to end.
const LIMIT: Duration = Duration::from_secs(120);

/// Migrates this process to `host`; returns once it runs there.
pub fn migrate_me(host: &str) -> io::Result<()> {
    listener::ensure_running()?;
    let before = listener::ended();
    match query::ask(&Request::Migrate {
        pid: ids::real_pid(),
        to: host.to_string(),
        detach: true,
        opts: MigrateOptions::default(),
    })? {
        Reply::Accepted => {}
        other => return Err(query::refused(other)),
    }
    match listener::wait_ended(before, LIMIT) {
        Some(true) => Ok(()),
        Some(false) => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
        None => Err(io::Error::from_raw_os_error(libc::ETIMEDOUT)),
    }
}
