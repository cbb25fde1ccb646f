//! The host's IPv4 addresses: listed (`getifaddrs`), added and removed
//! (rtnetlink), and announced (a raw Ethernet frame on a packet socket).

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::check;

/// One IPv4 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's name.
    pub dev: String,
    /// Its index.
    pub ifindex: u32,
    /// The address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

/// Every IPv4 address of this network namespace's interfaces.
pub fn ipv4_addresses() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    check(unsafe { libc::getifaddrs(&mut head) } as libc::c_long)?;
    let mut out = Vec::new();
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, alive
        // until freeifaddrs.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its kind.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: both are AF_INET sockaddrs (a netmask has its address's
        // family).
        let (addr, mask) = unsafe {
            (
                (*ifa.ifa_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr,
                (*ifa.ifa_netmask.cast::<libc::sockaddr_in>())
                    .sin_addr
                    .s_addr,
            )
        };
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let dev = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: if_nametoindex reads the NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        out.push(IfAddr {
            dev,
            ifindex,
            addr: Ipv4Addr::from(u32::from_be(addr)),
            prefix: u32::from_be(mask).count_ones() as u8,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Adds (`add`) or removes `a` with rtnetlink, and waits for the kernel's
/// answer.
pub fn change_address(a: &IfAddr, add: bool) -> io::Result<()> {
    // SAFETY: creating a netlink socket; the descriptor is owned below.
    let nl = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    } as libc::c_long)?;
    // SAFETY: `nl` was just created and nothing else owns it.
    let nl = unsafe { OwnedFd::from_raw_fd(nl as i32) };
    let req = address_request(a, add);
    super::send(&nl, &req)?;
    let mut buf = [0u8; 1024];
    // SAFETY: receiving into our buffer, at most its length.
    let n = check(
        unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
            as libc::c_long,
    )? as usize;
    netlink_ack(&buf[..n])
}

/// An `RTM_NEWADDR` (`add`) or `RTM_DELADDR` request for `a`, asking for
/// an acknowledgement.
pub fn address_request(a: &IfAddr, add: bool) -> Vec<u8> {
    let (kind, flags) = if add {
        (
            libc::RTM_NEWADDR,
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL,
        )
    } else {
        (libc::RTM_DELADDR, libc::NLM_F_REQUEST | libc::NLM_F_ACK)
    };
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifaddrmsg: family, prefixlen, flags, scope, index.
    m.extend_from_slice(&[libc::AF_INET as u8, a.prefix, 0, libc::RT_SCOPE_UNIVERSE]);
    m.extend_from_slice(&a.ifindex.to_ne_bytes());
    for attr in [libc::IFA_LOCAL, libc::IFA_ADDRESS] {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&attr.to_ne_bytes());
        m.extend_from_slice(&a.addr.octets());
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// The error a netlink acknowledgement carries (0: none).
pub fn netlink_ack(buf: &[u8]) -> io::Result<()> {
    if buf.len() < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other("no acknowledgement from rtnetlink"));
    }
    match i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// The hardware address of interface `dev`.
pub fn hardware_address(dev: &str) -> io::Result<[u8; 6]> {
    // SAFETY: a datagram socket only to ask about an interface; owned below.
    let s = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
            as libc::c_long,
    )?;
    // SAFETY: `s` was just created and nothing else owns it.
    let s = unsafe { OwnedFd::from_raw_fd(s as i32) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if dev.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    for (d, b) in req.ifr_name.iter_mut().zip(dev.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
    check(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } as libc::c_long)?;
    // SAFETY: the kernel filled ifru_hwaddr for this request.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

/// Sends the Ethernet `frame` (headers included) out of interface
/// `ifindex`.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: a packet socket for raw frames; owned below.
    let s = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            0, // receives nothing
        )
    } as libc::c_long)?;
    // SAFETY: `s` was just created and nothing else owns it.
    let s = unsafe { OwnedFd::from_raw_fd(s as i32) };
    // SAFETY: sockaddr_ll is plain data.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: sending our buffer to an address of the right size.
    check(unsafe {
        libc::sendto(
            s.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    } as libc::c_long)?;
    Ok(())
}
