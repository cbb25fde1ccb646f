//! The control lane's envelope: every message between two agents on a
//! migration's control lane carries the migration's id and its sequence
//! number in that direction. The receiver checks both, so a late, repeated
//! or reordered message, or one of another migration, is recognised and
//! refused instead of acted on.
//!
//! (On an authenticated link the record layer refuses replays too; the
//! envelope also holds with `--insecure` and names the problem.)
//!
//! Each side keeps a Lamport clock: a send ticks it and carries it, a
//! receive sets it past both its own and the sender's. Every message sent
//! or received is logged with both clocks and the wall clock, so that a
//! record can draw the migration as a time-space diagram.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};

/// A control message with its migration id and sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The migration.
    pub id: u64,
    /// 0, 1, 2, ... per direction.
    pub seq: u64,
    /// The sender's Lamport time of the send.
    pub lamport: u64,
    /// When it was sent, on the sender's clock (µs since the epoch).
    pub sent_us: u64,
    /// The message.
    pub msg: T,
}

/// What a message is called in a record (`Core`, `Commit`, ...).
pub trait Named {
    /// The message's kind.
    fn name(&self) -> &'static str;
}

/// One message sent or received on a control lane, as one side saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Sent by this side (else received).
    pub sent: bool,
    /// Its sequence number in its direction.
    pub seq: u64,
    /// Its kind.
    pub kind: String,
    /// This side's Lamport time of the event (the send, or the receive).
    pub lamport: u64,
    /// When, on this side's clock (µs since the epoch).
    pub at_us: u64,
    /// A receive: the sender's Lamport time of the send.
    pub peer_lamport: Option<u64>,
    /// A receive: when it was sent, on the sender's clock.
    pub peer_us: Option<u64>,
}

/// Most messages one side logs per migration (heartbeats included); the
/// rest are counted.
pub const MAX_LOGGED: usize = 512;

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Numbers what one side sends and checks what it receives on one
/// migration's control lane. Shared by the threads that use the lane.
#[derive(Debug)]
pub struct Sequencer {
    /// The migration, once known (the destination learns it from the
    /// first message).
    id: Mutex<Option<u64>>,
    /// Next sequence number to send; held while writing, so that numbers
    /// reach the wire in order.
    sent: Mutex<u64>,
    /// Next sequence number expected.
    received: Mutex<u64>,
    /// This side's Lamport clock.
    clock: Mutex<u64>,
    /// Messages sent and received, in the order of this side's clock.
    log: Mutex<Vec<Stamp>>,
    /// Messages past [`MAX_LOGGED`], not logged.
    unlogged: AtomicU64,
}

impl Sequencer {
    /// The side that chose the migration's id.
    pub fn new(id: u64) -> Sequencer {
        Sequencer {
            id: Mutex::new(Some(id)),
            sent: Mutex::new(0),
            received: Mutex::new(0),
            clock: Mutex::new(0),
            log: Mutex::new(Vec::new()),
            unlogged: AtomicU64::new(0),
        }
    }

    /// The other side: the first message received names the migration.
    pub fn unbound() -> Sequencer {
        Sequencer {
            id: Mutex::new(None),
            sent: Mutex::new(0),
            received: Mutex::new(0),
            clock: Mutex::new(0),
            log: Mutex::new(Vec::new()),
            unlogged: AtomicU64::new(0),
        }
    }

    /// The migration's id, once known.
    pub fn id(&self) -> Option<u64> {
        *self.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` in an envelope on `w`.
    pub fn send<T: Serialize + Named>(
        &self,
        w: &mut impl Write,
        msg: &T,
    ) -> Result<(), FrameError> {
        let id = self.id().ok_or_else(|| {
            FrameError::Sequence("nothing may be sent before the migration is named".into())
        })?;
        let mut seq = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        // Clock and time read together: on one side, Lamport order and
        // time order agree.
        let (lamport, sent_us) = {
            let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            *clock = clock.saturating_add(1);
            (*clock, now_us())
        };
        let envelope = Envelope {
            id,
            seq: *seq,
            lamport,
            sent_us,
            msg,
        };
        frame::write_msg(w, &envelope)?;
        self.note(Stamp {
            sent: true,
            seq: *seq,
            kind: msg.name().to_string(),
            lamport,
            at_us: sent_us,
            peer_lamport: None,
            peer_us: None,
        });
        *seq += 1;
        Ok(())
    }

    /// Reads one control frame from `r` and opens it.
    pub fn recv<T: DeserializeOwned + Named>(&self, r: &mut impl Read) -> Result<T, FrameError> {
        let e: Envelope<T> = frame::read_msg(r)?;
        self.received(e)
    }

    /// Opens a control frame's payload, already read.
    pub fn open<T: DeserializeOwned + Named>(&self, body: &[u8]) -> Result<T, FrameError> {
        let e: Envelope<T> = frame::decode(body)?;
        self.received(e)
    }

    /// Checks a received envelope, moves the clock past it and logs it.
    fn received<T: Named>(&self, e: Envelope<T>) -> Result<T, FrameError> {
        self.check(e.id, e.seq)?;
        let (lamport, at_us) = {
            let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            // The peer's clock is its word: at the top it stays there
            // (never wraps back to 0 and never panics).
            *clock = (*clock).max(e.lamport).saturating_add(1);
            (*clock, now_us())
        };
        self.note(Stamp {
            sent: false,
            seq: e.seq,
            kind: e.msg.name().to_string(),
            lamport,
            at_us,
            peer_lamport: Some(e.lamport),
            peer_us: Some(e.sent_us),
        });
        Ok(e.msg)
    }

    fn note(&self, stamp: Stamp) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() < MAX_LOGGED {
            log.push(stamp);
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The messages this side sent and received so far, and how many more
    /// were not logged.
    pub fn log(&self) -> (Vec<Stamp>, u64) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (log, self.unlogged.load(Ordering::Relaxed))
    }

    fn check(&self, id: u64, seq: u64) -> Result<(), FrameError> {
        {
            let mut mine = self.id.lock().unwrap_or_else(|e| e.into_inner());
            match *mine {
                None => *mine = Some(id),
                Some(m) if m != id => {
                    return Err(FrameError::Sequence(format!(
                        "a message of migration {id:x} on the lane of {m:x}"
                    )))
                }
                Some(_) => {}
            }
        }
        let mut want = self.received.lock().unwrap_or_else(|e| e.into_inner());
        if seq != *want {
            return Err(FrameError::Sequence(format!(
                "message {seq} where {} was due: {}",
                *want,
                if seq < *want {
                    "a repeat"
                } else {
                    "one is missing"
                }
            )));
        }
        *want += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum M {
        Commit,
        Other(u32),
    }

    impl Named for M {
        fn name(&self) -> &'static str {
            match self {
                M::Commit => "Commit",
                M::Other(_) => "Other",
            }
        }
    }

    fn wire(id: u64, seq: u64, msg: &M) -> Vec<u8> {
        let mut v = Vec::new();
        let e = Envelope {
            id,
            seq,
            lamport: seq + 1,
            sent_us: 0,
            msg,
        };
        frame::write_msg(&mut v, &e).unwrap();
        v
    }

    #[test]
    fn lamport_clocks_follow_the_messages_both_ways() {
        let a = Sequencer::new(7);
        let b = Sequencer::unbound();
        let (mut ab, mut ba) = (Vec::new(), Vec::new());
        a.send(&mut ab, &M::Other(1)).unwrap(); // a: 1
        a.send(&mut ab, &M::Other(2)).unwrap(); // a: 2
        let mut r = &ab[..];
        b.recv::<M>(&mut r).unwrap(); // b: max(0, 1) + 1 = 2
        b.recv::<M>(&mut r).unwrap(); // b: max(2, 2) + 1 = 3
        b.send(&mut ba, &M::Commit).unwrap(); // b: 4
        a.recv::<M>(&mut &ba[..]).unwrap(); // a: max(2, 4) + 1 = 5
        let (la, _) = a.log();
        let (lb, _) = b.log();
        let clocks = |l: &[Stamp]| l.iter().map(|s| s.lamport).collect::<Vec<_>>();
        assert_eq!(clocks(&la), [1, 2, 5]);
        assert_eq!(clocks(&lb), [2, 3, 4]);
        assert_eq!(lb[0].peer_lamport, Some(1));
        assert_eq!(la[2].peer_lamport, Some(4));
        assert_eq!(la[2].kind, "Commit");
        assert!(la[0].sent && !lb[0].sent);
    }

    #[test]
    fn a_peer_clock_at_the_top_neither_panics_nor_wraps() {
        let b = Sequencer::unbound();
        let mut v = Vec::new();
        let e = Envelope {
            id: 7,
            seq: 0,
            lamport: u64::MAX,
            sent_us: 0,
            msg: &M::Commit,
        };
        frame::write_msg(&mut v, &e).unwrap();
        assert_eq!(b.recv::<M>(&mut &v[..]).unwrap(), M::Commit);
        b.send(&mut Vec::new(), &M::Other(1)).unwrap();
        let (lb, _) = b.log();
        assert_eq!(
            lb.iter().map(|s| s.lamport).collect::<Vec<_>>(),
            [u64::MAX, u64::MAX]
        );
    }

    #[test]
    fn the_log_is_bounded() {
        let a = Sequencer::new(7);
        let mut sink = Vec::new();
        for _ in 0..MAX_LOGGED + 5 {
            a.send(&mut sink, &M::Commit).unwrap();
            sink.clear();
        }
        let (log, unlogged) = a.log();
        assert_eq!((log.len(), unlogged), (MAX_LOGGED, 5));
    }

    #[test]
    fn in_order_messages_pass_and_bind_the_id() {
        let tx = Sequencer::new(7);
        let rx = Sequencer::unbound();
        let mut v = Vec::new();
        tx.send(&mut v, &M::Other(1)).unwrap();
        tx.send(&mut v, &M::Commit).unwrap();
        let mut r = &v[..];
        assert_eq!(rx.recv::<M>(&mut r).unwrap(), M::Other(1));
        assert_eq!(rx.id(), Some(7));
        assert_eq!(rx.recv::<M>(&mut r).unwrap(), M::Commit);
    }

    #[test]
    fn a_repeated_message_is_refused_not_acted_on() {
        let rx = Sequencer::unbound();
        let commit = wire(7, 0, &M::Commit);
        assert_eq!(rx.recv::<M>(&mut &commit[..]).unwrap(), M::Commit);
        let e = rx.recv::<M>(&mut &commit[..]).unwrap_err().to_string();
        assert!(e.contains("a repeat"), "{e}");
    }

    #[test]
    fn a_gap_or_another_migration_is_refused() {
        let rx = Sequencer::unbound();
        rx.recv::<M>(&mut &wire(7, 0, &M::Other(0))[..]).unwrap();
        let e = rx.recv::<M>(&mut &wire(7, 2, &M::Commit)[..]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let e = rx.recv::<M>(&mut &wire(8, 1, &M::Commit)[..]).unwrap_err();
        assert!(e.to_string().contains("migration 8"), "{e}");
        // The unnamed side cannot speak first.
        assert!(Sequencer::unbound()
            .send(&mut Vec::new(), &M::Commit)
            .is_err());
    }
}
