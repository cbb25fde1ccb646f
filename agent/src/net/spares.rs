//! Buffers that page frames are read into, handed back once their pages
//! are installed and used again for the next frames, so that the reader of
//! a page stream does not zero a fresh buffer for each frame
//! ([`migrate_proto::frame::read_frame_into`]).

use std::sync::Mutex;

/// A bounded stack of spare buffers, shared by a lane's reader (takes) and
/// the threads that install what it read (give back).
#[derive(Debug)]
pub struct Spares {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Spares {
    /// Keeps at most `keep` buffers; more given back are dropped.
    pub fn new(keep: usize) -> Spares {
        Spares {
            free: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    /// A spare buffer, or an empty one (nothing allocated) if none is.
    pub fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// Hands `buf` back for a later frame (dropped if enough are kept or it
    /// holds no memory).
    pub fn give(&self, buf: Vec<u8>) {
        let mut free = self.lock();
        if free.len() < self.keep && buf.capacity() > 0 {
            free.push(buf);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_bound_and_hands_back_what_it_kept() {
        let s = Spares::new(2);
        assert_eq!(s.take().capacity(), 0);
        for n in [10, 20, 30] {
            s.give(vec![1u8; n]);
        }
        s.give(Vec::new());
        let mut got = [s.take().len(), s.take().len(), s.take().len()];
        got.sort_unstable();
        assert_eq!(got, [0, 10, 20]);
    }
}
