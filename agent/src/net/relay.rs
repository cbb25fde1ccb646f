//! Forwarding of standard streams between the home host and the host a
//! process runs on: each stream is one TCP connection between the agents,
//! copied in one direction until end of file, which then propagates.
//! Back-pressure is TCP's and the pipes': a slow reader slows the writer.

use std::fs::File;
use std::io;
use std::net::Shutdown;

use crate::net::secure::PeerStream;
use std::os::fd::OwnedFd;

use tracing::debug;

/// Copies what `from` (a pipe or terminal end) yields to `to` until end of
/// file, then ends the connection's sending side.
pub fn spawn_to_peer(fd: i32, from: OwnedFd, mut to: PeerStream) {
    std::thread::spawn(move || {
        let mut src = File::from(from);
        let r = io::copy(&mut src, &mut to);
        debug!(fd, ?r, "stream to peer ended");
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Copies what arrives on `from` into `to` (a pipe or terminal end) until
/// the peer ends it, then closes `to`, so readers see end of file.
pub fn spawn_from_peer(fd: i32, mut from: PeerStream, to: OwnedFd) {
    std::thread::spawn(move || {
        let mut dst = File::from(to);
        let r = io::copy(&mut from, &mut dst);
        debug!(fd, ?r, "stream from peer ended");
        // A reader that went away: tell the other side to stop sending.
        let _ = from.shutdown(Shutdown::Both);
    });
}
