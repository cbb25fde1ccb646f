//! An established TCP connection whose local address moves with the
//! process: checkpointed with `TCP_REPAIR` on the source (sequence
//! numbers, queues, window, options) and made again on the destination,
//! the same connection to its peer.
//!
//! A socket in repair mode sends nothing, and closes without a reset: the
//! source puts the original's connections in it at the commit, so that
//! the original's end is silent ([`InRepair`]); until then they are out of
//! it (its address is gone meanwhile: nothing reaches them). The
//! destination's copies stay in repair mode until the address is there
//! and the process resumes ([`Repaired`]); if the copy dies owed pages,
//! they are put back in it first, so that its end is silent too.

use std::os::fd::OwnedFd;

use migrate_proto::image::{FdKind, TcpState};

use super::{proc_err, sys_err, Collect, FdError, Remote, RemoteCalls};
use crate::host::held::{self, Held, Note};
use crate::host::procfs::FdInfo;
use crate::host::sys;

// linux/tcp.h
const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const TCP_REPAIR_OFF_NO_WP: i32 = -1;
const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCP_ESTABLISHED: u8 = 1;
// linux/sockios.h
const SIOCINQ: libc::c_ulong = libc::FIONREAD;
const SIOCOUTQ: libc::c_ulong = libc::TIOCOUTQ;
const SIOCOUTQNSD: libc::c_ulong = 0x894b;

/// Integer options a repaired connection keeps: (level, name).
const OPTIONS: [(i32, i32); 6] = [
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
];

/// The source's copies of the original's checkpointed connections. They
/// are out of repair mode while it is frozen, so that an agent dying then
/// leaves them working (a socket in repair mode refuses the process's
/// reads); at the commit [`InRepair::silence`] puts them in it, written
/// down first, so that the original's end is silent (no FIN, no reset);
/// dropped, silenced ones leave it again (the original runs on here);
/// [`InRepair::let_go`] keeps them in it (the original is to die).
#[derive(Default)]
pub struct InRepair {
    held: Vec<(i32, i32, OwnedFd)>,
    silenced: Vec<(OwnedFd, Note)>,
}

impl InRepair {
    /// Keeps connection `s`, descriptor `fd` of process `pid`.
    pub fn keep(&mut self, pid: i32, fd: i32, s: OwnedFd) {
        self.held.push((pid, fd, s));
    }

    /// Adds the connections of another.
    pub fn extend(&mut self, mut other: InRepair) {
        self.held.append(&mut other.held);
        self.silenced.append(&mut other.silenced);
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.silenced.is_empty()
    }

    /// Puts every connection in repair mode, each written down first.
    pub fn silence(&mut self) -> std::io::Result<()> {
        for (pid, fd, s) in std::mem::take(&mut self.held) {
            let ino = held::inode(&s)?;
            let note = held::note(pid, &Held::Repair { fd, ino })?;
            sys::setsockopt_int(&s, libc::IPPROTO_TCP, TCP_REPAIR, 1)?;
            self.silenced.push((s, note));
        }
        Ok(())
    }

    /// Lets go of the copies, silenced connections left in repair mode.
    pub fn let_go(mut self) {
        self.silenced.clear();
    }
}

impl Drop for InRepair {
    fn drop(&mut self) {
        // Out of repair with a window probe: the peer answers with where it
        // is, and the connection picks up.
        for (s, _note) in &self.silenced {
            if let Err(e) = sys::setsockopt_int(s, libc::IPPROTO_TCP, TCP_REPAIR, 0) {
                tracing::warn!(error = %e, "taking a connection of the original out of repair");
            }
        }
    }
}

/// The connection, checkpointed; our copy of it kept (in
/// `c.out.in_repair`) to be silenced at the commit.
pub fn dump(c: &mut Collect, info: &FdInfo) -> Result<FdKind, FdError> {
    let s = c.take(info.fd)?;
    let domain = sys::getsockopt_int(&s, libc::SOL_SOCKET, libc::SO_DOMAIN)
        .map_err(proc_err(c.pid, "socket"))?;
    let local = sys::getsockname(&s).map_err(proc_err(c.pid, "socket"))?;
    let peer = sys::getpeername(&s).map_err(proc_err(c.pid, "socket"))?;
    // In repair mode only to be read: out again at once, sending nothing.
    sys::setsockopt_int(&s, libc::IPPROTO_TCP, TCP_REPAIR, 1)
        .map_err(proc_err(c.pid, "TCP_REPAIR"))?;
    let state = checkpoint(&s);
    sys::setsockopt_int(&s, libc::IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
        .map_err(proc_err(c.pid, "TCP_REPAIR"))?;
    let state = state.map_err(|e| match e {
        Checkpoint::State(st) => FdError::Refused(migrate_proto::msg::Reason::new(
            migrate_proto::msg::Code::TcpConnection,
            format!(
                "fd {}: {}: a TCP connection in state {st:#x} cannot be repaired yet \
                 (only established ones)",
                info.fd, info.target
            ),
        )),
        Checkpoint::Io(source) => FdError::Proc {
            pid: c.pid,
            what: "TCP_REPAIR",
            source,
        },
    })?;
    c.out.in_repair.keep(c.pid, info.fd, s);
    Ok(FdKind::TcpRepaired {
        flags: info.flags,
        domain,
        local,
        peer,
        state: Box::new(state),
    })
}

enum Checkpoint {
    State(u8),
    Io(std::io::Error),
}

impl From<std::io::Error> for Checkpoint {
    fn from(e: std::io::Error) -> Checkpoint {
        Checkpoint::Io(e)
    }
}

/// Reads the state of connection `s`, in repair mode.
fn checkpoint(s: &OwnedFd) -> Result<TcpState, Checkpoint> {
    let tcp = libc::IPPROTO_TCP;
    let mut info = [0u8; 104];
    sys::getsockopt_bytes(s, tcp, libc::TCP_INFO, &mut info)?;
    if info[0] != TCP_ESTABLISHED {
        return Err(Checkpoint::State(info[0]));
    }
    let (opts, scales) = (info[5], info[6]);
    let outq = sys::ioctl_int(s, SIOCOUTQ)?.max(0) as usize;
    let unsent = (sys::ioctl_int(s, SIOCOUTQNSD)?.max(0) as usize).min(outq);
    let inq = sys::ioctl_int(s, SIOCINQ)?.max(0) as usize;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    let write_seq = sys::getsockopt_int(s, tcp, TCP_QUEUE_SEQ)? as u32;
    let mut queued = sys::peek(s, outq)?;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    let rcv_nxt = sys::getsockopt_int(s, tcp, TCP_QUEUE_SEQ)? as u32;
    let received = sys::peek(s, inq)?;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)?;
    if queued.len() != outq || received.len() != inq {
        return Err(Checkpoint::Io(std::io::Error::other(format!(
            "queues read short: {} of {outq} bytes to send, {} of {inq} received",
            queued.len(),
            received.len()
        ))));
    }
    let unsent = queued.split_off(outq - unsent);
    let mut window = [0u8; 20];
    sys::getsockopt_bytes(s, tcp, TCP_REPAIR_WINDOW, &mut window)?;
    let word = |i: usize| u32::from_ne_bytes(window[i * 4..i * 4 + 4].try_into().expect("4"));
    let mut options = Vec::with_capacity(OPTIONS.len());
    for (level, name) in OPTIONS {
        options.push((level, name, sys::getsockopt_int(s, level, name)?));
    }
    Ok(TcpState {
        send_seq: write_seq.wrapping_sub(outq as u32),
        recv_seq: rcv_nxt.wrapping_sub(inq as u32),
        sent: queued,
        unsent,
        received,
        mss: sys::getsockopt_int(s, tcp, libc::TCP_MAXSEG)? as u32,
        wscale: (opts & TCPI_OPT_WSCALE != 0).then_some((scales & 0xf, scales >> 4)),
        timestamps: opts & TCPI_OPT_TIMESTAMPS != 0,
        sack: opts & TCPI_OPT_SACK != 0,
        timestamp: sys::getsockopt_int(s, tcp, TCP_TIMESTAMP)? as u32,
        window: [word(0), word(1), word(2), word(3), word(4)],
        options,
    })
}

/// A connection made again on the destination, in repair mode until the
/// process resumes.
pub struct Repaired {
    sock: OwnedFd,
    domain: i32,
    unsent: Vec<u8>,
}

impl Repaired {
    /// Our copy of it.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sock.as_fd()
    }

    /// Takes it out of repair mode (its address is here by now): it
    /// acknowledges, retransmits and sends again; the bytes the process
    /// had written and the source had not sent yet go out. Returns our
    /// copy, for [`silence`] should the copy die owed pages.
    pub fn go_live(self) -> std::io::Result<OwnedFd> {
        set_transparent(&self.sock, self.domain, false)?;
        sys::setsockopt_int(&self.sock, libc::IPPROTO_TCP, TCP_REPAIR, 0)?;
        let mut at = 0;
        while at < self.unsent.len() {
            at += sys::send_nowait(&self.sock, &self.unsent[at..])?;
        }
        Ok(self.sock)
    }
}

/// Puts the connections of a copy that dies owed pages in repair mode,
/// so that its end reaches no peer (the original may go on with them).
pub fn silence(conns: &[impl std::os::fd::AsRawFd]) {
    for s in conns {
        if let Err(e) = sys::setsockopt_int(s, libc::IPPROTO_TCP, TCP_REPAIR, 1) {
            tracing::warn!(error = %e, "silencing a connection of a failed copy");
        }
    }
}

/// The connection at `want`: a socket made in the process, repaired from
/// the agent through a copy of it.
pub fn restore(
    r: &mut impl Remote,
    want: i32,
    flags: u32,
    domain: i32,
    local: &[u8],
    peer: &[u8],
    state: &TcpState,
) -> Result<(), FdError> {
    let mut ty = libc::SOCK_STREAM;
    if flags & libc::O_NONBLOCK as u32 != 0 {
        ty |= libc::SOCK_NONBLOCK;
    }
    if flags & libc::O_CLOEXEC as u32 != 0 {
        ty |= libc::SOCK_CLOEXEC;
    }
    let got = r.socket(domain, ty, 0)?;
    let s = r.take(got, "taking a connection to repair")?;
    rebuild(&s, domain, local, peer, state).map_err(sys_err("repairing a TCP connection"))?;
    r.repaired(Repaired {
        sock: s,
        domain,
        unsent: state.unsent.clone(),
    });
    r.move_fd(got, want, flags)
}

/// Makes `s` the checkpointed connection, left in repair mode.
fn rebuild(
    s: &OwnedFd,
    domain: i32,
    local: &[u8],
    peer: &[u8],
    st: &TcpState,
) -> std::io::Result<()> {
    let tcp = libc::IPPROTO_TCP;
    sys::setsockopt_int(s, tcp, TCP_REPAIR, 1)?;
    // Its address comes at the resume: until then bound and routed from an
    // address not (yet) this host's.
    set_transparent(s, domain, true)?;
    sys::bind_raw(s, local)?;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    sys::setsockopt_int(s, tcp, TCP_QUEUE_SEQ, st.send_seq as i32)?;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    sys::setsockopt_int(s, tcp, TCP_QUEUE_SEQ, st.recv_seq as i32)?;
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)?;
    // In repair mode: established at once, nothing sent.
    sys::connect_raw(s, peer)?;
    sys::setsockopt_bytes(s, tcp, TCP_REPAIR_OPTIONS, &repair_options(st))?;
    if st.timestamps {
        sys::setsockopt_int(s, tcp, TCP_TIMESTAMP, st.timestamp as i32)?;
    }
    for (queue, data) in [(TCP_SEND_QUEUE, &st.sent), (TCP_RECV_QUEUE, &st.received)] {
        sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, queue)?;
        let mut at = 0;
        while at < data.len() {
            at += sys::send(s, &data[at..])?;
        }
    }
    sys::setsockopt_int(s, tcp, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)?;
    let window: Vec<u8> = st.window.iter().flat_map(|w| w.to_ne_bytes()).collect();
    sys::setsockopt_bytes(s, tcp, TCP_REPAIR_WINDOW, &window)?;
    for &(level, name, value) in &st.options {
        sys::setsockopt_int(s, level, name, value)?;
    }
    Ok(())
}

/// `IP_TRANSPARENT` (`IPV6_TRANSPARENT`) on `s`: bound to and routed
/// from an address this host does not have.
pub(super) fn set_transparent(s: &OwnedFd, domain: i32, on: bool) -> std::io::Result<()> {
    let (level, name) = if domain == libc::AF_INET6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT)
    } else {
        (libc::IPPROTO_IP, libc::IP_TRANSPARENT)
    };
    sys::setsockopt_int(s, level, name, i32::from(on))
}

/// The `TCP_REPAIR_OPTIONS` records for `st`: (code, value) pairs.
fn repair_options(st: &TcpState) -> Vec<u8> {
    let mut opts = vec![(TCPOPT_MAXSEG, st.mss)];
    if let Some((snd, rcv)) = st.wscale {
        opts.push((TCPOPT_WINDOW, u32::from(snd) | (u32::from(rcv) << 16)));
    }
    if st.sack {
        opts.push((TCPOPT_SACK_PERM, 0));
    }
    if st.timestamps {
        opts.push((TCPOPT_TIMESTAMP, 0));
    }
    opts.iter()
        .flat_map(|(code, val)| code.to_ne_bytes().into_iter().chain(val.to_ne_bytes()))
        .collect()
}
