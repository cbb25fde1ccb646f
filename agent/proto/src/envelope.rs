//! The control lane's envelope: every message between two agents on a
//! migration's control lane carries the migration's id and its sequence
//! number in that direction. The receiver checks both, so a late, repeated
//! or reordered message, or one of another migration, is recognised and
//! refused instead of acted on.
//!
//! (On an authenticated link the record layer refuses replays too; the
//! envelope also holds with `--insecure` and names the problem.)

use std::io::{Read, Write};
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
    /// The message.
    pub msg: T,
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
}

impl Sequencer {
    /// The side that chose the migration's id.
    pub fn new(id: u64) -> Sequencer {
        Sequencer {
            id: Mutex::new(Some(id)),
            sent: Mutex::new(0),
            received: Mutex::new(0),
        }
    }

    /// The other side: the first message received names the migration.
    pub fn unbound() -> Sequencer {
        Sequencer {
            id: Mutex::new(None),
            sent: Mutex::new(0),
            received: Mutex::new(0),
        }
    }

    /// The migration's id, once known.
    pub fn id(&self) -> Option<u64> {
        *self.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` in an envelope on `w`.
    pub fn send<T: Serialize>(&self, w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
        let id = self.id().ok_or_else(|| {
            FrameError::Sequence("nothing may be sent before the migration is named".into())
        })?;
        let mut seq = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        frame::write_msg(w, &Envelope { id, seq: *seq, msg })?;
        *seq += 1;
        Ok(())
    }

    /// Reads one control frame from `r` and opens it.
    pub fn recv<T: DeserializeOwned>(&self, r: &mut impl Read) -> Result<T, FrameError> {
        let e: Envelope<T> = frame::read_msg(r)?;
        self.check(e.id, e.seq)?;
        Ok(e.msg)
    }

    /// Opens a control frame's payload, already read.
    pub fn open<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, FrameError> {
        let e: Envelope<T> = frame::decode(body)?;
        self.check(e.id, e.seq)?;
        Ok(e.msg)
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

    fn wire(id: u64, seq: u64, msg: &M) -> Vec<u8> {
        let mut v = Vec::new();
        frame::write_msg(&mut v, &Envelope { id, seq, msg }).unwrap();
        v
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
