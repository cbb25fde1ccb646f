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
use tracing::warn;

use crate::net::secure::{HandshakeError, PeerStream, Security};

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
    /// The link could not be secured: the peer is not of this cluster, or
    /// one side runs `--insecure`.
    #[error("{addr}: {source}")]
    Handshake {
        /// Peer address.
        addr: SocketAddr,
        /// Why.
        source: HandshakeError,
    },
    /// Framing or transport error.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Dials `addr`, secures the link as `sec` says and opens `lane`; returns
/// the stream and the peer's name (as its key proves it, when
/// authenticated).
pub fn connect(
    addr: SocketAddr,
    me: &str,
    lane: Lane,
    sec: &Security,
) -> Result<(PeerStream, String), PeerError> {
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| PeerError::Unreachable { addr, source })?;
    let _ = tcp.set_nodelay(true);
    keep_alive(&tcp);
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|source| PeerError::Unreachable { addr, source })?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|source| PeerError::Unreachable { addr, source })?;
    let (mut s, proven) = sec
        .initiate(tcp)
        .map_err(|source| PeerError::Handshake { addr, source })?;
    s.set_write_timeout(None)
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
            Ok((s, proven.unwrap_or(name)))
        }
        PeerWelcome::Refused(reason) => Err(PeerError::Refused { addr, reason }),
    }
}

/// Secures an accepted connection as `sec` says, reads the peer's greeting
/// and answers it. When authenticated, the greeting's `from` is the name
/// the peer's key proves.
///
/// `admit` may refuse the greeting (e.g. the agent is busy): the peer then
/// hears why, and nothing else happens.
pub fn accept(
    tcp: TcpStream,
    me: &str,
    sec: &Security,
    admit: impl FnOnce(&PeerHello) -> Result<(), String>,
) -> Result<(PeerStream, PeerHello), PeerError> {
    let addr = tcp.peer_addr().map_err(FrameError::Io)?;
    let _ = tcp.set_nodelay(true);
    keep_alive(&tcp);
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(FrameError::Io)?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(FrameError::Io)?;
    let (mut s, proven) = sec
        .respond(tcp)
        .map_err(|source| PeerError::Handshake { addr, source })?;
    s.set_write_timeout(None).map_err(FrameError::Io)?;
    let mut hello: PeerHello = frame::read_msg(&mut s)?;
    if let Some(name) = proven {
        if name != hello.from {
            warn!(claimed = %hello.from, proven = %name, "a peer gave another host's name; using the proven one");
        }
        hello.from = name;
    }
    if hello.version != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {} not supported (this agent speaks {PROTOCOL_VERSION})",
            hello.version
        );
        frame::write_msg(&mut s, &PeerWelcome::Refused(why.clone()))?;
        return Err(PeerError::Refused { addr, reason: why });
    }
    if let Err(why) = admit(&hello) {
        frame::write_msg(&mut s, &PeerWelcome::Refused(why.clone()))?;
        return Err(PeerError::Refused { addr, reason: why });
    }
    frame::write_msg(
        &mut s,
        &PeerWelcome::Ok {
            name: me.to_string(),
            version: PROTOCOL_VERSION,
        },
    )?;
    s.set_read_timeout(None).map_err(FrameError::Io)?;
    Ok((s, hello))
}

/// Every lane, also the long-lived ones without heartbeats (standard
/// streams, deputies), learns of a dead peer or a cut link while idle from
/// the kernel: keepalive probes after 5 s of silence, 1 s apart, 5 of them.
fn keep_alive(tcp: &TcpStream) {
    if let Err(e) = crate::host::sys::set_tcp_keepalive(tcp, 5, 1, 5) {
        warn!(error = %e, "TCP keepalive not set: a dead peer may go unnoticed on idle lanes");
    }
}

/// Incoming data lanes waiting for the control session that owns them,
/// by lane and by the host that opened it (the name its key proves).
#[derive(Default)]
pub struct LaneTable {
    waiting: Mutex<HashMap<(Lane, String), (Instant, PeerStream)>>,
    arrived: Condvar,
}

/// The lanes a control session may take: those opened by its own peer.
pub struct PeerLanes<'a> {
    table: &'a LaneTable,
    from: String,
}

impl PeerLanes<'_> {
    /// Waits up to `timeout` for `lane` from this session's peer; a lane
    /// of the same name from another host is never handed over.
    pub fn take(&self, lane: Lane, timeout: Duration) -> Option<PeerStream> {
        self.table.take(lane, &self.from, timeout)
    }

    /// Waits up to `timeout` for `lane` opened by host `from`: the lane of
    /// a deputy comes from the process's home host, where the deputy
    /// lives, whichever host the process moves from.
    pub fn take_from(&self, lane: Lane, from: &str, timeout: Duration) -> Option<PeerStream> {
        self.table.take(lane, from, timeout)
    }
}

impl LaneTable {
    /// Parks a lane that host `from` opened.
    pub fn put(&self, lane: Lane, from: &str, s: PeerStream) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Lanes nobody claimed within a minute are dropped.
        w.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(60));
        w.insert((lane, from.to_string()), (Instant::now(), s));
        self.arrived.notify_all();
    }

    /// The lanes of a control session with host `from`.
    pub fn of_peer(&self, from: &str) -> PeerLanes<'_> {
        PeerLanes {
            table: self,
            from: from.to_string(),
        }
    }

    /// Waits up to `timeout` for `lane` opened by host `from`.
    fn take(&self, lane: Lane, from: &str, timeout: Duration) -> Option<PeerStream> {
        let deadline = Instant::now() + timeout;
        let key = (lane, from.to_string());
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((_, s)) = w.remove(&key) {
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

/// Nice value of the push's two ends, the source's pushing thread and the
/// destination's reader of the bulk lane: the migrated process and demand
/// faults get the CPU first. (Nicing the destination's reader once made
/// faults wait while it held the fault handler's lock; it now installs in
/// small pieces and steps aside for them. 2 GiB post-copy, four alternating
/// runs each: fault p99 2050 µs with it niced, 4227 µs without.)
pub const BULK_NICE: i32 = 10;
/// The bulk lane's send buffer, bytes (the kernel doubles it): both lanes
/// share the hosts' network path, so whatever the push has in flight a
/// demand reply queues behind; this keeps it to about 256 KiB, about 110 µs
/// on this lab's 2.3 GB/s link, without slowing the push on a fast link.
pub const BULK_SNDBUF: i32 = 128 << 10;

/// How often a heartbeat goes out after the commit.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(migrate_proto::HEARTBEAT_EVERY_MS);
/// A peer silent this long after the commit counts as gone.
pub const PEER_SILENCE: Duration = Duration::from_millis(migrate_proto::PEER_SILENCE_MS);

/// Sends a message on a control lane every [`HEARTBEAT_EVERY`] until
/// stopped (or dropped), so that the peer learns of this side's death, or
/// of a cut link, within [`PEER_SILENCE`].
pub struct Heartbeat {
    /// Dropped to stop the beating: the thread wakes at once.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts beating `msg` on `lane` (a clone of the control lane, whose
    /// messages `seq` numbers).
    pub fn start<T: serde::Serialize + migrate_proto::envelope::Named + Send + 'static>(
        mut lane: PeerStream,
        seq: std::sync::Arc<migrate_proto::envelope::Sequencer>,
        msg: T,
    ) -> Heartbeat {
        use std::sync::mpsc::RecvTimeoutError;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // A write stuck on a dead link gives up within the silence bound.
        let _ = lane.set_write_timeout(Some(PEER_SILENCE));
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {
                        if seq.send(&mut lane, &msg).is_err() {
                            return;
                        }
                        next += HEARTBEAT_EVERY;
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// Dropping it stops the beating; it returns once no heartbeat is being
/// written.
impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a transport error is a read that timed out.
pub fn is_timeout(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_goes_only_to_a_session_with_the_host_that_opened_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let table = LaneTable::default();
        table.put(Lane::Deputy(7), "host3", PeerStream::plain(c));
        let wait = Duration::from_millis(50);
        assert!(table.of_peer("host1").take(Lane::Deputy(7), wait).is_none());
        assert!(table.of_peer("host3").take(Lane::Deputy(8), wait).is_none());
        assert!(table.of_peer("host3").take(Lane::Deputy(7), wait).is_some());
    }
}
