//! What a source that lost touch with its destination after the commit
//! learns of the copy: it asks the destination's agent
//! ([`Lane::Outcome`]) until the answer settles or a deadline passes. The
//! original may run again only once its copy is known gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use migrate_proto::frame;
use migrate_proto::msg::{CopyState, Lane};

use crate::error_chain;
use crate::net::peer::{self, PeerError};
use crate::net::secure::Security;

/// How long after the source fell silent its destination has surely
/// settled the copy's fate: it counts a silent source gone after
/// [`peer::PEER_SILENCE`] (post-copy) or [`peer::STALL_TIMEOUT`] (a copy
/// that awaits the commit), and kills the copy then.
pub const SETTLED_WITHIN: Duration =
    Duration::from_millis(peer::STALL_TIMEOUT.as_millis() as u64 + migrate_proto::PEER_SILENCE_MS);

/// Pause between two questions.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// What the source learned of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFate {
    /// It is gone: the original may run again.
    Gone,
    /// It runs, or ran to its end, with every page in: the process lives
    /// there, and the original must never run again.
    Runs,
    /// Not learned, and why: the original must stay frozen.
    Unknown(String),
}

/// Where and as whom to ask.
pub struct Asker<'a> {
    /// The destination's agent.
    pub addr: SocketAddr,
    /// Its name, for messages.
    pub to: &'a str,
    /// This agent's name.
    pub me: &'a str,
    /// How links are secured.
    pub sec: &'a Security,
}

impl Asker<'_> {
    /// One question about migration `id`.
    pub fn ask(&self, id: u64) -> Result<CopyState, PeerError> {
        let (mut lane, _) = peer::connect(self.addr, self.me, Lane::Outcome(id), self.sec)?;
        lane.set_read_timeout(Some(peer::CONNECT_TIMEOUT))
            .map_err(frame::FrameError::Io)?;
        Ok(frame::read_msg::<CopyState>(&mut lane)?)
    }

    /// Asks about migration `id` until the copy is gone or runs for good,
    /// or until `until` (an agent that is down is asked again: restarted,
    /// it answers from its record); an agent that does not know the id
    /// cannot tell, and is not asked again.
    pub fn learn(&self, id: u64, until: Instant) -> CopyFate {
        let to = self.to;
        loop {
            let pending = match self.ask(id) {
                Ok(CopyState::Gone { .. }) => return CopyFate::Gone,
                Ok(CopyState::Independent) => return CopyFate::Runs,
                Ok(CopyState::Unknown) => {
                    return CopyFate::Unknown(format!(
                        "{to} knows nothing of migration {id:016x} (its agent may have restarted)"
                    ))
                }
                Ok(CopyState::Building) => format!("{to} still holds the copy, not yet run"),
                Ok(CopyState::PostCopy) => {
                    format!("{to} says the copy still runs, waiting for pages")
                }
                // An agent that is down may be restarting (its unit restarts
                // it): asked again until the deadline.
                Err(PeerError::Unreachable { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    format!("no agent answers on {to}: {source}")
                }
                Err(e) => format!("{to} cannot be asked: {}", error_chain(&e)),
            };
            let now = Instant::now();
            if now >= until {
                return CopyFate::Unknown(pending);
            }
            std::thread::sleep(ASK_EVERY.min(until - now));
        }
    }
}
