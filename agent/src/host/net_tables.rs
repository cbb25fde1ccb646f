//! The IPv4/IPv6 socket tables of `/proc/PID/net` (`tcp`, `udp` and
//! their IPv6 twins): a socket's state, queue, ends, by inode.

use std::collections::HashMap;
use std::fs;

/// An IPv4/IPv6 socket as `/proc/<pid>/net/{tcp,udp}{,6}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSocket {
    /// TCP (else UDP).
    pub tcp: bool,
    /// Kernel state (`0A` listen, `07` closed/unconnected, `01` established).
    pub state: u8,
    /// Receive queue (for a listener: connections waiting to be accepted).
    pub rx_queue: u64,
    /// Remote port (0 when unconnected).
    pub remote_port: u16,
    /// Local address (an IPv4-mapped IPv6 address as IPv4).
    pub local: Option<std::net::IpAddr>,
}

impl InetSocket {
    /// An established TCP connection (or one the peer has closed).
    pub fn established(&self) -> bool {
        self.tcp && matches!(self.state, 0x01 | 0x08)
    }

    /// A connected UDP socket.
    pub fn connected_udp(&self) -> bool {
        !self.tcp && self.state == 0x01
    }

    /// A listening TCP socket with nobody waiting in its accept queue, or
    /// an unconnected UDP socket: what moves by being made again.
    pub fn movable(&self) -> bool {
        (self.tcp && self.state == 0x0a && self.rx_queue == 0)
            || (!self.tcp && self.state == 0x07 && self.remote_port == 0)
    }
}

/// The IPv4/IPv6 sockets in `pid`'s network namespace, by inode.
pub fn inet_sockets(pid: i32) -> HashMap<u64, InetSocket> {
    let mut out = HashMap::new();
    for (file, tcp) in [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (|| {
                let inode = f.get(9)?.parse::<u64>().ok()?;
                let rx = f[4]
                    .split_once(':')
                    .and_then(|(_, r)| u64::from_str_radix(r, 16).ok())?;
                let rport = f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
                let state = u8::from_str_radix(f[3], 16).ok()?;
                let local = f[1].split_once(':').and_then(|(a, _)| parse_net_addr(a));
                Some((
                    inode,
                    InetSocket {
                        tcp,
                        state,
                        rx_queue: rx,
                        remote_port: rport,
                        local,
                    },
                ))
            })();
            if let Some((inode, sock)) = parsed {
                out.entry(inode).or_insert(sock);
            }
        }
    }
    out
}

/// An address as `/proc/net/tcp*` writes it: the bytes of each 32-bit word
/// in host order, in hex.
fn parse_net_addr(hex: &str) -> Option<std::net::IpAddr> {
    let word = |i: usize| {
        u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_le_bytes)
    };
    match hex.len() {
        8 => Some(std::net::Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let a = std::net::Ipv6Addr::from(b);
            Some(match a.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => a.into(),
            })
        }
        _ => None,
    }
}

/// Describes socket `inode` of process `pid` from its network tables, e.g.
/// `TCP 10.77.0.1:40000 -> 10.77.0.2:7070 (established)`.
pub fn describe_socket(pid: i32, inode: u64) -> Option<String> {
    for (file, proto) in [
        ("tcp", "TCP"),
        ("tcp6", "TCP6"),
        ("udp", "UDP"),
        ("udp6", "UDP6"),
    ] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[9].parse::<u64>().ok() == Some(inode) {
                let state = match f[3] {
                    "01" => "established",
                    "0A" => "listening",
                    "07" => "unconnected",
                    _ => "other state",
                };
                return Some(format!(
                    "{proto} {} -> {} ({state})",
                    hex_addr(f[1]),
                    hex_addr(f[2])
                ));
            }
        }
    }
    let text = fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 6 && f[6].parse::<u64>().ok() == Some(inode) {
            let path = f.get(7).copied().unwrap_or("unnamed");
            return Some(format!("Unix {path}"));
        }
    }
    None
}

fn hex_addr(s: &str) -> String {
    let Some((a, p)) = s.split_once(':') else {
        return s.to_string();
    };
    let port = u16::from_str_radix(p, 16).unwrap_or(0);
    if a.len() == 8 {
        let v = u32::from_str_radix(a, 16).unwrap_or(0).to_le_bytes();
        format!("{}.{}.{}.{}:{port}", v[0], v[1], v[2], v[3])
    } else {
        format!("[{a}]:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_the_network_tables_read_as_they_are() {
        assert_eq!(
            parse_net_addr("0100007F"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_net_addr("0000000000000000FFFF000064004D0A"),
            Some("10.77.0.100".parse().unwrap())
        );
        assert_eq!(
            parse_net_addr("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(parse_net_addr("zz"), None);
    }
    #[test]
    fn formats_socket_addresses() {
        assert_eq!(hex_addr("0100007F:1F90"), "127.0.0.1:8080");
    }
}
