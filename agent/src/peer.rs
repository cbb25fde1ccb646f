//! Connections between agents: dialling a peer, greeting, and the table
//! where incoming demand and bulk lanes wait for their migration.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use migrate_proto::frame::{self, FrameError};
use migrate_proto::msg::{Lane, PeerHello, PeerWelcome};
use migrate_proto::PROTOCOL_VERSION;
use thiserror::Error;

/// How long a peer has to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a peer has to answer a message during the freeze.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Before the commit, how long a read or write on the control lane may make
/// no progress before the peer counts as gone (a cut link, a dead host):
/// the migration is then abandoned and the original resumes.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure talking to a peer agent.
#[derive(Debug, Error)]
pub enum PeerError {
    /// No connection.
    #[error("{addr} does not answer: {source}")]
    Unreachable {
        /// Peer address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The peer refused us.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// Peer address.
        addr: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// Framing or transport error.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Dials `addr` and opens `lane`; returns the stream and the peer's name.
pub fn connect(addr: SocketAddr, me: &str, lane: Lane) -> Result<(TcpStream, String), PeerError> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| PeerError::Unreachable { addr, source })?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|source| PeerError::Unreachable { addr, source })?;
    frame::write_msg(
        &mut s,
        &PeerHello {
            version: PROTOCOL_VERSION,
            from: me.to_string(),
            lane,
        },
    )?;
    match frame::read_msg::<PeerWelcome>(&mut s)? {
        PeerWelcome::Ok { name, .. } => {
            s.set_read_timeout(None)
                .map_err(|source| PeerError::Unreachable { addr, source })?;
            Ok((s, name))
        }
        PeerWelcome::Refused(reason) => Err(PeerError::Refused { addr, reason }),
    }
}

/// Reads a peer's greeting on an accepted connection and answers it.
pub fn accept(s: &mut TcpStream, me: &str) -> Result<PeerHello, FrameError> {
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let hello: PeerHello = frame::read_msg(s)?;
    if hello.version != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {} not supported (this agent speaks {PROTOCOL_VERSION})",
            hello.version
        );
        frame::write_msg(s, &PeerWelcome::Refused(why.clone()))?;
        return Err(FrameError::Io(io::Error::other(why)));
    }
    frame::write_msg(
        s,
        &PeerWelcome::Ok {
            name: me.to_string(),
            version: PROTOCOL_VERSION,
        },
    )?;
    s.set_read_timeout(None)?;
    Ok(hello)
}

/// Incoming data lanes waiting for the control session that owns them.
#[derive(Default)]
pub struct LaneTable {
    waiting: Mutex<HashMap<Lane, (Instant, TcpStream)>>,
    arrived: Condvar,
}

impl LaneTable {
    /// Parks an accepted lane.
    pub fn put(&self, lane: Lane, s: TcpStream) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Lanes nobody claimed within a minute are dropped.
        w.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(60));
        w.insert(lane, (Instant::now(), s));
        self.arrived.notify_all();
    }

    /// Waits up to `timeout` for `lane`.
    pub fn take(&self, lane: Lane, timeout: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + timeout;
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((_, s)) = w.remove(&lane) {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            w = self
                .arrived
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
