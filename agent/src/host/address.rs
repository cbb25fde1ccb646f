//! Service addresses that move with a process (`--move-address`): found
//! on this host, taken off it at the freeze and given back if the
//! migration fails before the commit; added on the destination and
//! announced to its network before the process resumes there.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tracing::{info, warn};

use super::held::{self, Held, Note};
use super::sys::{self, IfAddr};

/// When the announcements after the first (gratuitous ARP, unsolicited
/// neighbour advertisement) go out, after an address is added (a neighbour that updated its entry less than a
/// second ago may ignore one: the later ones land past that).
const ANNOUNCE_AT_MS: [u64; 3] = [100, 600, 1200];

/// Why an address cannot move.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// A link-local IPv6 address belongs to its link, not to a service.
    #[error("{0} is link-local: it belongs to its link and does not move")]
    LinkLocal(IpAddr),
    /// Not an address of this host.
    #[error("{0} is not an address of this host")]
    NotHere(IpAddr),
    /// The address is the only one of its interface (the host's own).
    #[error("{0} is the only address of {1}: it is the host's own, not a service address")]
    HostOwn(IpAddr, String),
    /// Other addresses depend on it.
    #[error(
        "{0} is the primary address of its network on {1}: taking it off would take the others"
    )]
    Primary(IpAddr, String),
    /// No interface of this host is on the address's network.
    #[error("no interface of this host is on the network of {0}")]
    NoNetwork(IpAddr),
    /// Listing, adding or removing failed.
    #[error("{what} {addr}: {source}")]
    System {
        what: &'static str,
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
}

/// Whether `a` is an IPv6 link-local address (`fe80::/10`), which every
/// interface has of its own.
fn link_local(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn list(addr: IpAddr) -> Result<Vec<IfAddr>, AddressError> {
    sys::addresses()
        .map(|all| all.into_iter().filter(|x| !link_local(x.addr)).collect())
        .map_err(|source| AddressError::System {
            what: "listing the host's addresses for",
            addr,
            source,
        })
}

/// A secondary address of this host, where it is: the source of a move.
pub fn find(a: IpAddr) -> Result<IfAddr, AddressError> {
    if link_local(a) {
        return Err(AddressError::LinkLocal(a));
    }
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
    // IPv4 lists primaries first: the first of its network with others
    // after it is their primary, and taking it off would take them too.
    // IPv6 addresses stand alone.
    let subnet: Vec<&&IfAddr> = same_dev
        .iter()
        .filter(|x| a.is_ipv4() && same_network(x.addr, a, here.prefix.min(x.prefix)))
        .collect();
    if subnet.len() > 1 && subnet[0].addr == a {
        return Err(AddressError::Primary(a, here.dev));
    }
    Ok(here)
}

/// Where `addr` would go on this host: already here (`None` to add), or
/// the interface whose network holds it (`Some`).
pub fn place(a: IpAddr) -> Result<Option<IfAddr>, AddressError> {
    if link_local(a) {
        return Err(AddressError::LinkLocal(a));
    }
    let all = list(a)?;
    if all.iter().any(|x| x.addr == a) {
        return Ok(None);
    }
    let full = if a.is_ipv4() { 32 } else { 128 };
    all.iter()
        .find(|x| x.prefix > 0 && x.prefix < full && same_network(x.addr, a, x.prefix))
        .map(|x| {
            Some(IfAddr {
                addr: a,
                ..x.clone()
            })
        })
        .ok_or(AddressError::NoNetwork(a))
}

/// Whether `a` and `b` are of one family and share their first `prefix`
/// bits.
fn same_network(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
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
    let notices: Vec<Notice> = addrs
        .iter()
        .filter_map(|a| match sys::hardware_address(&a.dev) {
            Ok(mac) => Some(Notice::new(a, mac)),
            Err(e) => {
                warn!(addr = %a.addr, error = %e, "no hardware address to announce it from");
                None
            }
        })
        .collect();
    let send = |notices: &[Notice]| {
        for n in notices {
            if let Err(e) = n.send() {
                warn!(addr = %n.addr, error = %e, "announcing the address");
            }
        }
    };
    send(&notices);
    if notices.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            let mut last = 0;
            for at in ANNOUNCE_AT_MS {
                std::thread::sleep(Duration::from_millis(at - last));
                last = at;
                send(&notices);
            }
        });
}

/// What tells a network that an address is now at this host's interface.
struct Notice {
    addr: IpAddr,
    ifindex: u32,
    /// A gratuitous ARP frame (IPv4) or a neighbour advertisement (IPv6).
    message: Vec<u8>,
}

impl Notice {
    fn new(a: &IfAddr, mac: [u8; 6]) -> Notice {
        let message = match a.addr {
            IpAddr::V4(v4) => gratuitous_arp(mac, v4),
            IpAddr::V6(v6) => neighbour_advertisement(mac, v6),
        };
        Notice {
            addr: a.addr,
            ifindex: a.ifindex,
            message,
        }
    }

    fn send(&self) -> io::Result<()> {
        match self.addr {
            IpAddr::V4(_) => sys::send_frame(self.ifindex, &self.message),
            IpAddr::V6(v6) => sys::send_to_all_nodes(self.ifindex, v6, &self.message),
        }
    }
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

/// An unsolicited neighbour advertisement of `addr` at `mac` (ICMPv6,
/// its checksum left to the kernel), with the override flag: every
/// neighbour that knows `addr` takes `mac` for it.
pub fn neighbour_advertisement(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    // Type 136, code 0, checksum; flags: override (not router, not
    // solicited), then reserved.
    m.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    m.extend_from_slice(&addr.octets());
    // Option: target link-layer address, one 8-byte unit.
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&mac);
    m
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
    fn an_advertisement_names_the_address_and_its_hardware_address() {
        let mac = [2, 0, 0, 0, 0, 7];
        let a: Ipv6Addr = "fd77::100".parse().unwrap();
        let m = neighbour_advertisement(mac, a);
        assert_eq!(m.len(), 32);
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20, "override, neither router nor solicited");
        assert_eq!(&m[8..24], &a.octets());
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..32], &mac);
    }

    #[test]
    fn networks_are_compared_on_their_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = ip("10.77.0.1");
        assert!(same_network(a, ip("10.77.0.100"), 24));
        assert!(!same_network(a, ip("10.77.1.100"), 24));
        assert!(same_network(a, ip("10.77.1.100"), 16));
        assert!(same_network(a, ip("9.9.9.9"), 0));
        assert!(same_network(ip("fd77::1"), ip("fd77::100"), 64));
        assert!(!same_network(ip("fd77::1"), ip("fd78::100"), 64));
        assert!(!same_network(a, ip("fd77::1"), 0), "families differ");
        assert!(link_local(ip("fe80::1")) && !link_local(ip("fd77::1")));
    }

    #[test]
    fn an_address_request_carries_the_address_and_its_interface() {
        let a = IfAddr {
            dev: "eth0".into(),
            ifindex: 3,
            addr: Ipv4Addr::new(10, 77, 0, 100).into(),
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
        let v6 = IfAddr {
            addr: "fd77::100".parse().unwrap(),
            prefix: 64,
            ..a
        };
        let m = sys::address_request(&v6, true);
        assert_eq!(m.len(), 16 + 8 + 2 * 20);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[18], libc::IFA_F_NODAD as u8);
        assert_eq!(
            &m[28..44],
            &v6.addr.to_string().parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
