//! The shim's state block: what `libmigrate_shim.so` keeps inside a
//! cooperating process, at an address it registers with its agent
//! (`Request::ShimAttach`), and what the agents read and patch there.
//!
//! The block is one page of the process's own memory, so it moves with
//! the process. The shim writes it when it starts (its virtual ids) and
//! when its listener thread starts or finishes a phase; the destination
//! agent rewrites it while the rebuilt process is still stopped (its new
//! thread ids, host, number of moves), so the shim's id wrappers only ever
//! read it and stay async-signal-safe.
//!
//! Little-endian words at fixed offsets ([`off`]); the shim's `repr(C)`
//! struct asserts the same offsets at compile time.

/// `magic` of an initialised block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MGSHIM\0\x01");
/// Layout version this module reads and writes.
pub const VERSION: u32 = 2;
/// Threads whose real id differs from their virtual one, at most.
pub const MAX_TIDS: usize = 256;
/// Reconnected descriptors reported to the resume callbacks, at most.
pub const MAX_RECONNECTED: usize = 64;
/// Bytes of the host name field (NUL-terminated).
pub const HOST_LEN: usize = 64;
/// Bytes of the block the agents read and write.
pub const SIZE: usize = off::NOTICE + 4;
/// Name (`comm`) of the shim's listener thread.
pub const LISTENER_NAME: &str = "migrate-shim";
/// The real-time signal (SIGRTMAX - 2) the agents send the listener
/// thread, with `si_value` = `seq << 8 | phase`.
pub const SIGNAL: i32 = 62;

/// Byte offsets of the fields.
pub mod off {
    /// `u64`: [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// `u32`: [`super::VERSION`].
    pub const VERSION: usize = 8;
    /// `i32`: the pid the process had where it started.
    pub const VPID: usize = 12;
    /// `i32`: its parent's pid there, as of the first migration (valid
    /// when `FLAGS` has [`super::VPPID_SET`]).
    pub const VPPID: usize = 16;
    /// `u32`: migrations so far.
    pub const MOVES: usize = 20;
    /// `u32`: 1 while the listener thread runs.
    pub const LISTENING: usize = 24;
    /// `u32`: sequence number of the last phase the listener finished.
    pub const ACK: usize = 28;
    /// `u32`: entries in `TIDS`.
    pub const NTIDS: usize = 32;
    /// `u32`: entries in `RECONNECTED`.
    pub const NRECONNECTED: usize = 36;
    /// `u32`: [`super::VPPID_SET`].
    pub const FLAGS: usize = 40;
    /// `[u8; HOST_LEN]`: the host it runs on (as of its last move).
    pub const HOST: usize = 44;
    /// `[[i32; 2]; MAX_TIDS]`: (virtual, real) thread ids that differ.
    pub const TIDS: usize = HOST + super::HOST_LEN;
    /// `[i32; MAX_RECONNECTED]`: descriptors reconnected at the last move.
    pub const RECONNECTED: usize = TIDS + 8 * super::MAX_TIDS;
    /// `u32`: the value of the notice the agent is sending: written by the
    /// agent before it queues [`super::SIGNAL`]; the listener ignores a
    /// signal whose value is not this (one its agent did not send).
    pub const NOTICE: usize = RECONNECTED + 4 * super::MAX_RECONNECTED;
}

/// `FLAGS` bit: `VPPID` holds the virtual parent (else `getppid` is the
/// real one).
pub const VPPID_SET: u32 = 1;

/// What the listener thread is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The process is about to be frozen: run the freeze callbacks, then
    /// acknowledge.
    Freeze = 1,
    /// The process runs again after a migration (on the host in the block).
    Resumed = 2,
    /// A migration it asked for did not happen: it runs where it was.
    Stayed = 3,
}

impl Phase {
    /// The phase in a signal's value.
    pub fn of(value: u32) -> Option<Phase> {
        match value & 0xff {
            1 => Some(Phase::Freeze),
            2 => Some(Phase::Resumed),
            3 => Some(Phase::Stayed),
            _ => None,
        }
    }

    /// The signal value for this phase with sequence number `seq`.
    pub fn value(self, seq: u32) -> u32 {
        (seq << 8) | self as u32
    }
}

/// The block, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShimState {
    /// Pid where it started.
    pub vpid: i32,
    /// Parent's pid where it started (set at the first migration).
    pub vppid: Option<i32>,
    /// Migrations so far.
    pub moves: u32,
    /// The listener thread runs.
    pub listening: bool,
    /// Last finished phase.
    pub ack: u32,
    /// Host it runs on.
    pub host: String,
    /// (virtual, real) thread ids that differ.
    pub tids: Vec<(i32, i32)>,
    /// Descriptors reconnected at the last move.
    pub reconnected: Vec<i32>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl ShimState {
    /// Decodes a block read from a process; `None` if it is not one this
    /// version knows.
    pub fn decode(b: &[u8]) -> Option<ShimState> {
        if b.len() < SIZE || b[..8] != MAGIC.to_le_bytes() || u32_at(b, off::VERSION) != VERSION {
            return None;
        }
        let ntids = (u32_at(b, off::NTIDS) as usize).min(MAX_TIDS);
        let nrec = (u32_at(b, off::NRECONNECTED) as usize).min(MAX_RECONNECTED);
        let host = &b[off::HOST..off::HOST + HOST_LEN];
        let host = &host[..host.iter().position(|&c| c == 0).unwrap_or(HOST_LEN)];
        Some(ShimState {
            vpid: u32_at(b, off::VPID) as i32,
            vppid: (u32_at(b, off::FLAGS) & VPPID_SET != 0).then(|| u32_at(b, off::VPPID) as i32),
            moves: u32_at(b, off::MOVES),
            listening: u32_at(b, off::LISTENING) != 0,
            ack: u32_at(b, off::ACK),
            host: String::from_utf8_lossy(host).into_owned(),
            tids: (0..ntids)
                .map(|i| {
                    let at = off::TIDS + 8 * i;
                    (u32_at(b, at) as i32, u32_at(b, at + 4) as i32)
                })
                .collect(),
            reconnected: (0..nrec)
                .map(|i| u32_at(b, off::RECONNECTED + 4 * i) as i32)
                .collect(),
        })
    }

    /// Writes the fields the agents own (ids, moves, host, reconnected)
    /// into the block `b`, leaving the listener's own words alone.
    pub fn encode_into(&self, b: &mut [u8]) {
        put_u32(b, off::VPPID, self.vppid.unwrap_or(0) as u32);
        let flags = u32_at(b, off::FLAGS) & !VPPID_SET;
        put_u32(
            b,
            off::FLAGS,
            flags | if self.vppid.is_some() { VPPID_SET } else { 0 },
        );
        put_u32(b, off::MOVES, self.moves);
        let n = self.tids.len().min(MAX_TIDS);
        put_u32(b, off::NTIDS, n as u32);
        for (i, (v, r)) in self.tids.iter().take(n).enumerate() {
            put_u32(b, off::TIDS + 8 * i, *v as u32);
            put_u32(b, off::TIDS + 8 * i + 4, *r as u32);
        }
        let n = self.reconnected.len().min(MAX_RECONNECTED);
        put_u32(b, off::NRECONNECTED, n as u32);
        for (i, fd) in self.reconnected.iter().take(n).enumerate() {
            put_u32(b, off::RECONNECTED + 4 * i, *fd as u32);
        }
        let host = &mut b[off::HOST..off::HOST + HOST_LEN];
        host.fill(0);
        let name = self.host.as_bytes();
        let n = name.len().min(HOST_LEN - 1);
        host[..n].copy_from_slice(&name[..n]);
    }

    /// The process was rebuilt on `host`: each thread (in `threads`, its
    /// id on the source and its id here) keeps its virtual id; `ppid` is
    /// its parent on the source, which becomes its virtual parent unless it
    /// has one.
    pub fn moved(&mut self, threads: &[(i32, i32)], ppid: i32, host: &str, reconnected: &[i32]) {
        if self.vppid.is_none() {
            self.vppid = Some(ppid);
        }
        self.tids = threads
            .iter()
            .map(|&(old, new)| (self.virtual_tid(old), new))
            .filter(|(v, new)| v != new)
            .take(MAX_TIDS)
            .collect();
        self.moves += 1;
        self.host = host.to_string();
        self.reconnected = reconnected.iter().copied().take(MAX_RECONNECTED).collect();
    }

    /// The virtual id of the thread whose real id is `real` (the shim's
    /// own lookup does the same on the raw block, without allocating, as
    /// it must in a signal handler).
    pub fn virtual_tid(&self, real: i32) -> i32 {
        self.tids
            .iter()
            .find(|(_, r)| *r == real)
            .map_or(real, |(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(vpid: i32) -> Vec<u8> {
        let mut b = vec![0u8; SIZE];
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        put_u32(&mut b, off::VERSION, VERSION);
        put_u32(&mut b, off::VPID, vpid as u32);
        put_u32(&mut b, off::LISTENING, 1);
        put_u32(&mut b, off::ACK, 7);
        b
    }

    #[test]
    fn only_a_known_block_decodes() {
        assert!(ShimState::decode(&block(10)).is_some());
        let mut b = block(10);
        b[0] ^= 1;
        assert!(ShimState::decode(&b).is_none());
        let mut b = block(10);
        put_u32(&mut b, off::VERSION, VERSION + 1);
        assert!(ShimState::decode(&b).is_none());
        assert!(ShimState::decode(&block(10)[..SIZE - 1]).is_none());
    }

    #[test]
    fn virtual_ids_hold_across_moves() {
        // Home: pid 100 with threads 100 and 101; parent 50.
        let mut b = block(100);
        let mut s = ShimState::decode(&b).unwrap();
        // host2 gives 200, keeps 101 free for thread 101.
        s.moved(&[(100, 200), (101, 101)], 50, "host2", &[]);
        s.encode_into(&mut b);
        let s2 = ShimState::decode(&b).unwrap();
        assert_eq!(s2.tids, vec![(100, 200)]);
        assert_eq!(
            (s2.vppid, s2.moves, s2.host.as_str()),
            (Some(50), 1, "host2")
        );
        // Listener words untouched.
        assert!(s2.listening);
        assert_eq!(s2.ack, 7);
        // host1 again: 200 -> 300, 101 -> 301; a thread born on host2
        // (250) becomes 302 and keeps 250. The source's parent (1) does
        // not replace the virtual one.
        let mut s3 = s2.clone();
        s3.moved(&[(200, 300), (101, 301), (250, 302)], 1, "host1", &[4]);
        assert_eq!(s3.tids, vec![(100, 300), (101, 301), (250, 302)]);
        assert_eq!(s3.vppid, Some(50));
        assert_eq!(s3.virtual_tid(301), 101);
        assert_eq!(s3.virtual_tid(999), 999);
        // Back where every id is free again: nothing differs.
        s3.moved(&[(300, 100), (301, 101), (302, 250)], 1, "host2", &[]);
        assert!(s3.tids.is_empty());
        assert_eq!(s3.moves, 3);
    }

    #[test]
    fn long_host_names_are_cut_and_terminated() {
        let mut b = block(1);
        let s = ShimState {
            host: "h".repeat(100),
            ..Default::default()
        };
        s.encode_into(&mut b);
        let d = ShimState::decode(&b).unwrap();
        assert_eq!(d.host.len(), HOST_LEN - 1);
    }

    #[test]
    fn phases_round_trip_through_a_signal_value() {
        for p in [Phase::Freeze, Phase::Resumed, Phase::Stayed] {
            assert_eq!(Phase::of(p.value(12345)), Some(p));
            assert_eq!(p.value(12345) >> 8, 12345);
        }
        assert_eq!(Phase::of(0), None);
    }
}
