//! Peer connections in their handshake, before a peer has proven who it
//! is: each is cut at its deadline ([`crate::net::peer::CONNECT_TIMEOUT`] after
//! it arrived, however slowly its bytes drip), and when too many are in
//! flight, in all or from one address, the oldest gives way to the new
//! one: a peer that handshakes at once gets through a flood of slow ones.

use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Most handshakes in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Most handshakes in flight from one address.
pub const MAX_PER_ADDRESS: usize = 16;
/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

struct InFlight {
    id: u64,
    from: IpAddr,
    started: Instant,
    stream: TcpStream,
}

/// The handshakes in flight.
#[derive(Default)]
pub struct Handshakes {
    open: Mutex<(u64, Vec<InFlight>)>,
}

/// One handshake, watched while it lives.
pub struct Watched<'a> {
    owner: &'a Handshakes,
    id: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.retain(|h| h.id != self.id);
    }
}

impl Handshakes {
    /// Starts the thread that cuts handshakes past `deadline`.
    pub fn start(deadline: Duration) -> std::io::Result<Arc<Handshakes>> {
        let h = Arc::new(Handshakes::default());
        let watch = h.clone();
        std::thread::Builder::new()
            .name("handshakes".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                watch.cut_older_than(deadline);
            })?;
        Ok(h)
    }

    /// Watches the handshake on `stream`, from `from`; makes room first by
    /// cutting the oldest ones past the bounds.
    pub fn watch(&self, stream: &TcpStream, from: IpAddr) -> std::io::Result<Watched<'_>> {
        let copy = stream.try_clone()?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.1.iter().filter(|h| h.from == from).count() >= MAX_PER_ADDRESS {
            cut_oldest(&mut open.1, Some(from));
        }
        if open.1.len() >= MAX_IN_FLIGHT {
            cut_oldest(&mut open.1, None);
        }
        open.0 += 1;
        let id = open.0;
        open.1.push(InFlight {
            id,
            from,
            started: Instant::now(),
            stream: copy,
        });
        Ok(Watched { owner: self, id })
    }

    /// Handshakes in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    fn cut_older_than(&self, deadline: Duration) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.retain(|h| {
            let late = h.started.elapsed() >= deadline;
            if late {
                debug!(from = %h.from, "peer handshake past its deadline: cut");
                let _ = h.stream.shutdown(Shutdown::Both);
            }
            !late
        });
    }
}

/// Cuts the oldest handshake (from `from` only, if given).
fn cut_oldest(open: &mut Vec<InFlight>, from: Option<IpAddr>) {
    let oldest = open
        .iter()
        .enumerate()
        .filter(|(_, h)| from.is_none_or(|f| h.from == f))
        .min_by_key(|(_, h)| h.started)
        .map(|(i, _)| i);
    if let Some(i) = oldest {
        let h = open.remove(i);
        warn!(from = %h.from, "too many peer handshakes in flight: the oldest is cut");
        let _ = h.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    /// A cut connection reads as closed at once.
    fn is_cut(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(s.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn a_handshake_is_cut_at_its_deadline_and_forgotten() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let h = Handshakes::default();
        let (_c, mut s) = pair(&l);
        let w = h.watch(&s, "127.0.0.1".parse().unwrap()).unwrap();
        h.cut_older_than(Duration::from_secs(60));
        assert_eq!(h.in_flight(), 1);
        std::thread::sleep(Duration::from_millis(20));
        h.cut_older_than(Duration::from_millis(10));
        assert_eq!(h.in_flight(), 0);
        assert!(is_cut(&mut s));
        drop(w);
        assert_eq!(h.in_flight(), 0);
    }

    #[test]
    fn the_oldest_gives_way_past_the_bound_per_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let h = Handshakes::default();
        let from: IpAddr = "127.0.0.1".parse().unwrap();
        let mut conns = Vec::new();
        let mut watched = Vec::new();
        for _ in 0..MAX_PER_ADDRESS + 1 {
            let (c, s) = pair(&l);
            watched.push(h.watch(&s, from).unwrap());
            conns.push((c, s));
        }
        assert_eq!(h.in_flight(), MAX_PER_ADDRESS);
        assert!(is_cut(&mut conns[0].1), "the oldest was not cut");
        assert!(!is_cut(&mut conns[MAX_PER_ADDRESS].1), "the newest was cut");
        // Another address is counted apart.
        let (_c, s) = pair(&l);
        let _w = h.watch(&s, "10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(h.in_flight(), MAX_PER_ADDRESS + 1);
    }
}
