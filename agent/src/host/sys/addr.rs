//! The host's addresses: listed (`getifaddrs`), added and removed
//! (rtnetlink), and announced (IPv4: a raw Ethernet frame on a packet
//! socket; IPv6: an ICMPv6 message on a raw socket).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::check;

/// One IPv4 or IPv6 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's name.
    pub dev: String,
    /// Its index.
    pub ifindex: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// Every IPv4 and IPv6 address of this network namespace's interfaces.
pub fn addresses() -> io::Result<Vec<IfAddr>> {
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
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let (addr, prefix) = match family {
            // SAFETY: both are AF_INET sockaddrs (a netmask has its
            // address's family).
            libc::AF_INET => unsafe {
                let a = (*ifa.ifa_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr;
                let m = (*ifa.ifa_netmask.cast::<libc::sockaddr_in>())
                    .sin_addr
                    .s_addr;
                (
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a))),
                    u32::from_be(m).count_ones() as u8,
                )
            },
            // SAFETY: both are AF_INET6 sockaddrs.
            libc::AF_INET6 => unsafe {
                let a = (*ifa.ifa_addr.cast::<libc::sockaddr_in6>())
                    .sin6_addr
                    .s6_addr;
                let m = (*ifa.ifa_netmask.cast::<libc::sockaddr_in6>())
                    .sin6_addr
                    .s6_addr;
                (
                    IpAddr::V6(Ipv6Addr::from(a)),
                    u128::from_be_bytes(m).count_ones() as u8,
                )
            },
            _ => continue,
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
            addr,
            prefix,
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
/// an acknowledgement. An IPv6 address is added without duplicate address
/// detection (`IFA_F_NODAD`): it moved here, nobody else holds it, and a
/// tentative address could not be used for the second DAD takes.
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
    let (family, flags, octets) = match a.addr {
        IpAddr::V4(v4) => (libc::AF_INET, 0, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, libc::IFA_F_NODAD, v6.octets().to_vec()),
    };
    // ifaddrmsg: family, prefixlen, flags, scope, index.
    m.extend_from_slice(&[family as u8, a.prefix, flags as u8, libc::RT_SCOPE_UNIVERSE]);
    m.extend_from_slice(&a.ifindex.to_ne_bytes());
    for attr in [libc::IFA_LOCAL, libc::IFA_ADDRESS] {
        m.extend_from_slice(&(4 + octets.len() as u16).to_ne_bytes());
        m.extend_from_slice(&attr.to_ne_bytes());
        m.extend_from_slice(&octets);
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

/// Sends the ICMPv6 `message` (its checksum left to the kernel) from
/// `from` to every node of the link of interface `ifindex` (`ff02::1`),
/// with the hop limit 255 that neighbour discovery requires.
pub fn send_to_all_nodes(ifindex: u32, from: Ipv6Addr, message: &[u8]) -> io::Result<()> {
    // SAFETY: a raw ICMPv6 socket only to send; owned below.
    let s = check(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    } as libc::c_long)?;
    // SAFETY: `s` was just created and nothing else owns it.
    let s = unsafe { OwnedFd::from_raw_fd(s as i32) };
    for (opt, value) in [
        (libc::IPV6_MULTICAST_HOPS, 255),
        (libc::IPV6_MULTICAST_IF, ifindex as i32),
    ] {
        // SAFETY: an int option of the right size.
        check(unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                opt,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        } as libc::c_long)?;
    }
    let sin6 = |addr: Ipv6Addr, scope: u32| {
        // SAFETY: sockaddr_in6 is plain data.
        let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        a.sin6_family = libc::AF_INET6 as u16;
        a.sin6_addr.s6_addr = addr.octets();
        a.sin6_scope_id = scope;
        a
    };
    let size = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    let here = sin6(from, 0);
    // SAFETY: binding to an address of the right size.
    check(unsafe {
        libc::bind(
            s.as_raw_fd(),
            (&here as *const libc::sockaddr_in6).cast(),
            size,
        )
    } as libc::c_long)?;
    let all_nodes = sin6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), ifindex);
    // SAFETY: sending our buffer to an address of the right size.
    check(unsafe {
        libc::sendto(
            s.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&all_nodes as *const libc::sockaddr_in6).cast(),
            size,
        )
    } as libc::c_long)?;
    Ok(())
}
