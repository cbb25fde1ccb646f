//! The control socket's connections: how many a user may hold, how long
//! a request may take to arrive, and replies to a client that may stop
//! reading.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migrate_proto::frame;
use migrate_proto::msg::Reply;
use tracing::debug;

use super::Agent;

/// Largest request a local user may send: the image and pages never
/// travel on the control socket.
pub const MAX_REQUEST_LEN: u64 = 64 << 10;
/// Longest a local client may take to send its hello and its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Longest one reply waits for a client that does not read; a client that
/// lets it pass hears nothing more (the migration goes on).
pub const REPLY_DEADLINE: Duration = Duration::from_millis(200);
/// Control connections open at once from users other than root, in all
/// and for one uid; more are refused with the reason.
const MAX_USER_CONNECTIONS: usize = 128;
const MAX_CONNECTIONS_PER_UID: usize = 16;

/// One open control connection of a user other than root, counted for as
/// long as it lives.
pub struct ControlSlot {
    agent: Arc<Agent>,
    uid: u32,
}

impl ControlSlot {
    /// Counts a connection of `uid`, or says why it is refused. Root's are
    /// not counted.
    pub fn take(agent: &Arc<Agent>, uid: u32) -> Result<Option<ControlSlot>, String> {
        if uid == 0 {
            return Ok(None);
        }
        let mut open = agent.control.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&uid).copied().unwrap_or(0);
        if mine >= MAX_CONNECTIONS_PER_UID {
            return Err(format!(
                "uid {uid} has {mine} connections to this agent open already (at most \
                 {MAX_CONNECTIONS_PER_UID})"
            ));
        }
        if total >= MAX_USER_CONNECTIONS {
            return Err(format!(
                "the agent has {total} connections of users open already (at most \
                 {MAX_USER_CONNECTIONS})"
            ));
        }
        *open.entry(uid).or_insert(0) += 1;
        Ok(Some(ControlSlot {
            agent: agent.clone(),
            uid,
        }))
    }
}

impl Drop for ControlSlot {
    fn drop(&mut self) {
        let mut open = self.agent.control.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// Reads from a control connection until a deadline: a client that sends
/// a byte at a time cannot hold its thread past it.
pub struct Deadline<'a> {
    pub s: &'a UnixStream,
    pub until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.s.set_read_timeout(Some(left))?;
        let mut s = self.s;
        s.read(buf)
    }
}

/// Writes replies to a local client while it reads them: once one has
/// waited [`REPLY_DEADLINE`] (the connection's write timeout) in vain, the
/// rest are dropped.
pub struct ClientWriter {
    s: UnixStream,
    gone: bool,
}

impl ClientWriter {
    pub fn new(s: UnixStream) -> ClientWriter {
        ClientWriter { s, gone: false }
    }

    pub fn send(&mut self, reply: &Reply) {
        if !self.gone && frame::write_msg(&mut self.s, reply).is_err() {
            debug!("a control client stopped reading: no more replies to it");
            self.gone = true;
        }
    }
}
