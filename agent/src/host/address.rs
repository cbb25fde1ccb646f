//! Service addresses that move with a process (`--move-address`): found
//! on this host, taken off it at the freeze and given back if the
//! migration fails before the commit; added on the destination and
//! announced to its network before the process resumes there.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tracing::{info, warn};

use super::held::{self, Held, Note};
use super::sys::{self, IfAddr};

/// When the gratuitous ARP announcements after the first go out, after an
/// address is added (a neighbour that updated its entry less than a
/// second ago may ignore one: the later ones land past that).
const ANNOUNCE_AT_MS: [u64; 3] = [100, 600, 1200];

/// Why an address cannot move.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Only IPv4 addresses move for now.
    #[error("{0}: only IPv4 addresses move for now")]
    NotIpv4(IpAddr),
    /// Not an address of this host.
    #[error("{0} is not an address of this host")]
    NotHere(Ipv4Addr),
    /// The address is the only one of its interface (the host's own).
    #[error("{0} is the only address of {1}: it is the host's own, not a service address")]
    HostOwn(Ipv4Addr, String),
    /// Other addresses depend on it.
    #[error(
        "{0} is the primary address of its network on {1}: taking it off would take the others"
    )]
    Primary(Ipv4Addr, String),
    /// No interface of this host is on the address's network.
    #[error("no interface of this host is on the network of {0}")]
    NoNetwork(Ipv4Addr),
    /// Listing, adding or removing failed.
    #[error("{what} {addr}: {source}")]
    System {
        what: &'static str,
        addr: Ipv4Addr,
        #[source]
        source: io::Error,
    },
}

fn v4(addr: IpAddr) -> Result<Ipv4Addr, AddressError> {
    match addr {
        IpAddr::V4(a) => Ok(a),
        other => Err(AddressError::NotIpv4(other)),
    }
}

fn list(addr: Ipv4Addr) -> Result<Vec<IfAddr>, AddressError> {
    sys::ipv4_addresses().map_err(|source| AddressError::System {
        what: "listing the host's addresses for",
        addr,
        source,
    })
}

/// A secondary address of this host, where it is: the source of a move.
pub fn find(addr: IpAddr) -> Result<IfAddr, AddressError> {
    let a = v4(addr)?;
    let all = list(a)?;
    let here = all
        .iter()
        .find(|x| x.addr == a)
        .cloned()
        .ok_or(AddressError::NotHere(a))?;
    let same_dev: Vec<&IfAddr> = all.iter().filter(|x| x.ifindex == here.ifindex).collect();
    if same_dev.len() < 2 {
        return Err(AddressError::HostOwn(a, here.dev));
    }
    // Listed primaries first: the first of its network with others after
    // it is their primary, and taking it off would take them too.
    let subnet: Vec<&&IfAddr> = same_dev
        .iter()
        .filter(|x| same_network(x.addr, a, here.prefix.min(x.prefix)))
        .collect();
    if subnet.len() > 1 && subnet[0].addr == a {
        return Err(AddressError::Primary(a, here.dev));
    }
    Ok(here)
}

/// Where `addr` would go on this host: already here (`None` to add), or
/// the interface whose network holds it (`Some`).
pub fn place(addr: IpAddr) -> Result<Option<IfAddr>, AddressError> {
    let a = v4(addr)?;
    let all = list(a)?;
    if all.iter().any(|x| x.addr == a) {
        return Ok(None);
    }
    all.iter()
        .find(|x| x.prefix > 0 && x.prefix < 32 && same_network(x.addr, a, x.prefix))
        .map(|x| {
            Some(IfAddr {
                addr: a,
                ..x.clone()
            })
        })
        .ok_or(AddressError::NoNetwork(a))
}

/// Whether `a` and `b` share their first `prefix` bits.
fn same_network(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// Takes `a` off this host.
pub fn remove(a: &IfAddr) -> Result<(), AddressError> {
    sys::change_address(a, false).map_err(|source| AddressError::System {
        what: "removing",
        addr: a.addr,
        source,
    })?;
    info!(addr = %a.addr, dev = a.dev, "address taken off this host");
    Ok(())
}

/// Addresses changed on this host for a migration, each written down
/// first: dropped, each change is undone; let go, they stay changed.
#[derive(Debug, Default)]
struct Changes {
    done: Vec<(IfAddr, Note)>,
    /// Put on (else taken off).
    added: bool,
}

impl Changes {
    /// Puts `addrs` on this host (`added`) or takes them off, for process
    /// `pid`; on an error, those already changed are changed back.
    fn make(pid: i32, addrs: &[IfAddr], added: bool) -> Result<Changes, AddressError> {
        let mut c = Changes {
            done: Vec::new(),
            added,
        };
        for a in addrs {
            let item = match added {
                true => Held::Added(a.clone()),
                false => Held::Address(a.clone()),
            };
            let note = held::note(pid, &item).map_err(|source| AddressError::System {
                what: "writing down",
                addr: a.addr,
                source,
            })?;
            match added {
                true => add(a)?,
                false => remove(a)?,
            }
            c.done.push((a.clone(), note));
        }
        Ok(c)
    }

    fn let_go(mut self) {
        self.done.clear();
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        for (a, _note) in &self.done {
            let undone = match self.added {
                true => remove(a),
                false => add(a),
            };
            if let Err(e) = undone {
                warn!(addr = %a.addr, error = %e, "changing an address of this host back");
            }
        }
    }
}

/// Addresses taken off this host for a migration: dropped, they come
/// back (it failed before the commit); [`Moved::let_go`] leaves them
/// gone (the destination has them).
#[derive(Debug, Default)]
pub struct Moved(Changes);

impl Moved {
    /// Takes `addrs` off this host for process `pid` (each written down
    /// first); on an error, those already taken come back.
    pub fn take_off(pid: i32, addrs: &[IfAddr]) -> Result<Moved, AddressError> {
        Changes::make(pid, addrs, false).map(Moved)
    }

    /// Leaves them gone from this host.
    pub fn let_go(self) {
        self.0.let_go();
    }
}

/// Addresses put on this host for a process that is about to resume:
/// dropped, they are taken off again (it never ran, or died owed pages);
/// [`Added::let_go`] leaves them.
#[derive(Debug, Default)]
pub struct Added(Changes);

impl Added {
    /// Puts `addrs` on this host for process `pid` (each written down
    /// first) and announces them; on an error, those already put on are
    /// taken off.
    pub fn put_on(pid: i32, addrs: &[IfAddr]) -> Result<Added, AddressError> {
        let added = Changes::make(pid, addrs, true)?;
        announce(addrs);
        Ok(Added(added))
    }

    /// Leaves them on this host.
    pub fn let_go(self) {
        self.0.let_go();
    }
}

/// Puts `a` on this host (already there counts as done).
fn add(a: &IfAddr) -> Result<(), AddressError> {
    match sys::change_address(a, true) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(source) => {
            return Err(AddressError::System {
                what: "adding",
                addr: a.addr,
                source,
            })
        }
    }
    info!(addr = %a.addr, dev = a.dev, "address put on this host");
    Ok(())
}

/// Announces `addrs` to their networks: at once (before the process
/// resumes), then a few times more on one thread.
fn announce(addrs: &[IfAddr]) {
    let frames: Vec<(u32, Ipv4Addr, Vec<u8>)> = addrs
        .iter()
        .filter_map(|a| match sys::hardware_address(&a.dev) {
            Ok(mac) => Some((a.ifindex, a.addr, gratuitous_arp(mac, a.addr))),
            Err(e) => {
                warn!(addr = %a.addr, error = %e, "no hardware address to announce it from");
                None
            }
        })
        .collect();
    let send = |frames: &[(u32, Ipv4Addr, Vec<u8>)]| {
        for (ifindex, addr, frame) in frames {
            if let Err(e) = sys::send_frame(*ifindex, frame) {
                warn!(%addr, error = %e, "announcing the address");
            }
        }
    };
    send(&frames);
    if frames.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            let mut last = 0;
            for at in ANNOUNCE_AT_MS {
                std::thread::sleep(Duration::from_millis(at - last));
                last = at;
                send(&frames);
            }
        });
}

/// A gratuitous ARP request for `addr` from `mac`, broadcast: every
/// neighbour that knows `addr` takes `mac` for it.
pub fn gratuitous_arp(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, sizes 6 and 4, a request.
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&addr.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let mac = [2, 0, 0, 0, 0, 7];
        let f = gratuitous_arp(mac, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 77, 0, 100]);
        assert_eq!(&f[38..42], &[10, 77, 0, 100]);
    }

    #[test]
    fn networks_are_compared_on_their_prefix() {
        let a = Ipv4Addr::new(10, 77, 0, 1);
        assert!(same_network(a, Ipv4Addr::new(10, 77, 0, 100), 24));
        assert!(!same_network(a, Ipv4Addr::new(10, 77, 1, 100), 24));
        assert!(same_network(a, Ipv4Addr::new(10, 77, 1, 100), 16));
        assert!(same_network(a, Ipv4Addr::new(9, 9, 9, 9), 0));
    }

    #[test]
    fn an_address_request_carries_the_address_and_its_interface() {
        let a = IfAddr {
            dev: "eth0".into(),
            ifindex: 3,
            addr: Ipv4Addr::new(10, 77, 0, 100),
            prefix: 24,
        };
        let m = sys::address_request(&a, true);
        assert_eq!(m.len(), 16 + 8 + 16);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(m[17], 24);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(&m[28..32], &[10, 77, 0, 100]);
        assert_eq!(&m[36..40], &[10, 77, 0, 100]);
        assert_eq!(
            sys::netlink_ack(&[0u8; 4]).unwrap_err().kind(),
            io::ErrorKind::Other
        );
    }
}
