//! The state block ([`migrate_proto::shim`]): one page of this process's
//! memory that moves with it. The shim writes it at start, at a fork and
//! from its listener thread; the destination agent rewrites it while the
//! rebuilt process is stopped. Every access is a volatile word access
//! through [`get`] and [`set`], which is async-signal-safe.

use std::cell::UnsafeCell;
use std::mem::offset_of;

use migrate_proto::shim::{off, HOST_LEN, MAGIC, MAX_RECONNECTED, MAX_TIDS, SIZE, VERSION};

/// The block's layout, as [`migrate_proto::shim::off`] gives it.
#[repr(C, align(4096))]
pub struct Block {
    magic: u64,
    version: u32,
    vpid: i32,
    vppid: i32,
    moves: u32,
    listening: u32,
    ack: u32,
    ntids: u32,
    nreconnected: u32,
    flags: u32,
    host: [u8; HOST_LEN],
    tids: [[i32; 2]; MAX_TIDS],
    reconnected: [i32; MAX_RECONNECTED],
    notice: u32,
}

const _: () = {
    assert!(offset_of!(Block, magic) == off::MAGIC);
    assert!(offset_of!(Block, version) == off::VERSION);
    assert!(offset_of!(Block, vpid) == off::VPID);
    assert!(offset_of!(Block, vppid) == off::VPPID);
    assert!(offset_of!(Block, moves) == off::MOVES);
    assert!(offset_of!(Block, listening) == off::LISTENING);
    assert!(offset_of!(Block, ack) == off::ACK);
    assert!(offset_of!(Block, ntids) == off::NTIDS);
    assert!(offset_of!(Block, nreconnected) == off::NRECONNECTED);
    assert!(offset_of!(Block, flags) == off::FLAGS);
    assert!(offset_of!(Block, host) == off::HOST);
    assert!(offset_of!(Block, tids) == off::TIDS);
    assert!(offset_of!(Block, reconnected) == off::RECONNECTED);
    assert!(offset_of!(Block, notice) == off::NOTICE);
    assert!(std::mem::size_of::<Block>() >= SIZE);
    assert!(std::mem::size_of::<Block>() == 4096);
};

struct Shared(UnsafeCell<Block>);

// SAFETY: every access is a volatile read or write of one aligned 32-bit
// word (see `get`/`set`); concurrent writers never write the same word
// (the shim's words and the agent's are disjoint, and the agent writes
// only while every thread is stopped, but for `notice`, which it writes
// before the signal that makes the listener read it).
unsafe impl Sync for Shared {}

static STATE: Shared = Shared(UnsafeCell::new(Block {
    magic: 0,
    version: 0,
    vpid: 0,
    vppid: 0,
    moves: 0,
    listening: 0,
    ack: 0,
    ntids: 0,
    nreconnected: 0,
    flags: 0,
    host: [0; HOST_LEN],
    tids: [[0; 2]; MAX_TIDS],
    reconnected: [0; MAX_RECONNECTED],
    notice: 0,
}));

/// Address of the block in this process (what the agent is told).
pub fn address() -> u64 {
    STATE.0.get() as u64
}

/// The 32-bit word at byte offset `at` of the block.
pub fn get(at: usize) -> u32 {
    assert!(at.is_multiple_of(4) && at + 4 <= SIZE);
    // SAFETY: `at` is an aligned offset inside the block (checked above),
    // which lives for the whole program; a volatile read of one word.
    unsafe { std::ptr::read_volatile(STATE.0.get().cast::<u8>().add(at).cast::<u32>()) }
}

/// Writes the 32-bit word at byte offset `at` of the block.
pub fn set(at: usize, v: u32) {
    assert!(at.is_multiple_of(4) && at + 4 <= SIZE);
    // SAFETY: as in `get`; a volatile write of one word.
    unsafe { std::ptr::write_volatile(STATE.0.get().cast::<u8>().add(at).cast::<u32>(), v) }
}

/// The block was initialised by this library in this process.
pub fn ready() -> bool {
    get(off::MAGIC) == MAGIC as u32 && get(off::MAGIC + 4) == (MAGIC >> 32) as u32
}

/// Initialises the block for a process that starts here as `pid`.
pub fn init(pid: i32) {
    set(off::VERSION, VERSION);
    set(off::VPID, pid as u32);
    set(off::VPPID, 0);
    set(off::MOVES, 0);
    set(off::LISTENING, 0);
    set(off::NTIDS, 0);
    set(off::NRECONNECTED, 0);
    set(off::FLAGS, 0);
    set(off::MAGIC + 4, (MAGIC >> 32) as u32);
    set(off::MAGIC, MAGIC as u32);
}

/// The virtual id of the thread whose real id is `real`.
pub fn virtual_tid(real: i32) -> i32 {
    let n = (get(off::NTIDS) as usize).min(MAX_TIDS);
    (0..n)
        .find(|i| get(off::TIDS + 8 * i + 4) as i32 == real)
        .map_or(real, |i| get(off::TIDS + 8 * i) as i32)
}

/// The real id of the thread whose virtual id is `virt` (itself if none
/// differs).
pub fn real_tid(virt: i32) -> i32 {
    let n = (get(off::NTIDS) as usize).min(MAX_TIDS);
    (0..n)
        .find(|i| get(off::TIDS + 8 * i) as i32 == virt)
        .map_or(virt, |i| get(off::TIDS + 8 * i + 4) as i32)
}

/// The host name in the block.
pub fn host() -> String {
    let mut b = Vec::with_capacity(HOST_LEN);
    for i in (0..HOST_LEN).step_by(4) {
        b.extend_from_slice(&get(off::HOST + i).to_le_bytes());
    }
    let end = b.iter().position(|&c| c == 0).unwrap_or(HOST_LEN);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Writes the host name into the block (at start, from the agent's
/// answer).
pub fn set_host(name: &str) {
    let mut b = [0u8; HOST_LEN];
    let n = name.len().min(HOST_LEN - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    for i in (0..HOST_LEN).step_by(4) {
        set(
            off::HOST + i,
            u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]),
        );
    }
}

/// The descriptors reconnected at the last move.
pub fn reconnected() -> Vec<i32> {
    let n = (get(off::NRECONNECTED) as usize).min(MAX_RECONNECTED);
    (0..n)
        .map(|i| get(off::RECONNECTED + 4 * i) as i32)
        .collect()
}
