//! The destination's answer to the file check (every path looked up as the
//! process's user) and the socket addresses that become this host's.

use super::*;

/// Answers a `FileCheck`: lines for files that are missing or differ and
/// cannot be shipped, the paths missing here that can be, and the open
/// files that are a different file here (shipped as private copies).
/// Every path is looked up as the process would look it up (`who`), never
/// with this agent's rights.
pub fn check_files(
    host: &str,
    needs: &[FileNeed],
    who: &FsCreds,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    match crate::host::fsuser::run_as(who, || check_files_as_user(host, needs, who.uid)) {
        Ok(v) => v,
        Err(e) => (
            vec![format!(
                "cannot look files up as uid {} on {host}: {e}",
                who.uid
            )],
            Vec::new(),
            Vec::new(),
        ),
    }
}

/// [`check_files`], on a thread that already acts as uid `uid`. The
/// source's paths come from `/proc` and hold no symbolic link: one here is
/// a different file (a link planted to another file would otherwise pass
/// for it).
pub(super) fn check_files_as_user(
    host: &str,
    needs: &[FileNeed],
    uid: u32,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut refused = Vec::new();
    let mut missing = Vec::new();
    let mut different = Vec::new();
    for n in needs.iter().filter(|n| !n.deleted) {
        let found =
            sys::open_path_no_symlinks(&n.path).and_then(|fd| std::fs::File::from(fd).metadata());
        let md = match found {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n.ship.is_some() => {
                missing.push(n.path.clone());
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && n.ship.is_some() => {
                different.push(n.path.clone());
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                refused.push(format!(
                    "{}: a symbolic link on the way on {host}, where the source has none; \
                     needed for {}",
                    n.path, n.why
                ));
                continue;
            }
            Err(e) => {
                refused.push(format!(
                    "{}: cannot be opened on {host} as uid {uid} ({e}); needed for {}",
                    n.path, n.why
                ));
                continue;
            }
            Ok(md) => md,
        };
        if let Some((dev, ino, ident)) = &n.same_file {
            // The same file (a filesystem both hosts see as one device), or
            // an identical copy (same type, owner, mode, size and mtime).
            // Anything else, a network filesystem with a file being
            // written included, is refused, never reopened blindly.
            let same = (md.dev() == *dev && md.ino() == *ino) || kinds::file_ident(&md) == *ident;
            if !same && n.ship.is_some() {
                different.push(n.path.clone());
                continue;
            } else if !same {
                refused.push(format!(
                    "{}: a different file has this path on {host} (size {} vs {}); needed for {}",
                    n.path,
                    md.len(),
                    ident.size,
                    n.why
                ));
                continue;
            }
        }
        if let Some(want) = &n.ident {
            let have = kinds::file_ident(&md);
            if have != *want {
                refused.push(format!(
                    "{}: differs on {host} (size {} vs {}); needed for {}",
                    n.path, have.size, want.size, n.why
                ));
                continue;
            }
        }
        if n.access != 0 {
            if let Err(e) = sys::may_access(&n.path, n.access) {
                refused.push(format!(
                    "{}: uid {uid} may not open it on {host} ({e}); needed for {}",
                    n.path, n.why
                ));
            }
        }
    }
    (refused, missing, different)
}

/// Sockets bound to a specific address of the source host are bound to
/// `local` (this host's address) instead; wildcard and loopback stay, and
/// so do addresses that move with the process (`moved`), bound before
/// they are here (`IP_FREEBIND`).
pub fn remap_socket_addresses(
    image: &mut ProcessImage,
    local: std::net::IpAddr,
    moved: &[std::net::IpAddr],
) {
    use migrate_proto::image::FdKind;
    for e in &mut image.fds {
        let FdKind::Socket {
            domain,
            addr,
            options,
            ..
        } = &mut e.kind
        else {
            continue;
        };
        let cur: std::net::IpAddr = match *domain {
            libc::AF_INET if addr.len() >= 8 => {
                std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]).into()
            }
            libc::AF_INET6 if addr.len() >= 24 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&addr[8..24]);
                std::net::Ipv6Addr::from(o).into()
            }
            _ => continue,
        };
        if moved.contains(&cur) {
            // Bound before its address comes, at the resume (the option
            // is IPv4's, and IPv6 sockets honour it too).
            options.push((libc::IPPROTO_IP, libc::IP_FREEBIND, 1));
            continue;
        }
        if cur.is_unspecified() || cur.is_loopback() {
            continue;
        }
        match local {
            std::net::IpAddr::V4(ip) if cur.is_ipv4() => addr[4..8].copy_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) if cur.is_ipv6() => addr[8..24].copy_from_slice(&ip.octets()),
            _ => {}
        }
    }
}
