//! The deputy: what stays on the home host in the place of a process that
//! had a terminal. The frozen original is turned into it (an injected
//! execve), so it keeps the pid, parent, process group, session and
//! terminal that the shell or session leader knows; it passes the signals
//! it gets (^C, hang-up, ...) to the process, and ends with the process's
//! exit code or signal.

use std::collections::HashSet;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use migrate_proto::frame;
use migrate_proto::msg::{DeputyMsg, Reply, Request};

use crate::net::secure::PeerStream;

/// Signals the deputy passes on.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

static PENDING: AtomicU64 = AtomicU64::new(0);

/// Processes on this host whose deputy is on another host, with the
/// channel to the thread serving that deputy.
static HOSTED: std::sync::Mutex<Vec<(i32, Option<std::sync::mpsc::Sender<DeputyMsg>>)>> =
    std::sync::Mutex::new(Vec::new());

/// Pids this agent turned into deputies: only they may ask it for a lane.
static MADE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Records that the frozen original `pid` is being turned into a deputy.
pub fn made(pid: i32) {
    MADE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

/// Whether the process `pid` that called the control socket is a deputy
/// this agent made (and still runs this agent's binary).
pub fn is_made(pid: i32) -> bool {
    let listed = MADE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|m| m.contains(&pid));
    let same_exe = || {
        let theirs = std::fs::read_link(format!("/proc/{pid}/exe"));
        let ours = std::fs::read_link("/proc/self/exe");
        matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
    };
    listed && same_exe()
}

/// Serves a deputy's `DeputyLane` request: `lane` is open to the agent
/// hosting the process; frames are copied both ways until either side ends.
pub fn bridge(local: UnixStream, lane: PeerStream) {
    let (Ok(mut local_r), Ok(mut lane_w)) = (local.try_clone(), lane.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut local_r, &mut lane_w);
        let _ = lane_w.shutdown(Shutdown::Both);
    });
    let (mut lane_r, mut local_w) = (lane, local);
    let _ = io::copy(&mut lane_r, &mut local_w);
    let _ = local_w.shutdown(Shutdown::Both);
    let _ = lane_r.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// Whether process `pid` here has a deputy elsewhere.
pub fn has_deputy(pid: i32) -> bool {
    HOSTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(p, _)| *p == pid)
}

/// Marks process `pid` as having (or no longer having) a deputy elsewhere.
pub fn hosted(pid: i32, yes: bool) {
    let mut h = HOSTED.lock().unwrap_or_else(|e| e.into_inner());
    h.retain(|(p, _)| *p != pid);
    if yes {
        h.push((pid, None));
    }
}

/// The process moved on: tell its deputy where (before the process here
/// is ended, so the deputy never hears of that end).
pub fn moved(pid: i32, addr: SocketAddr, id: u64) {
    let mut h = HOSTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pos) = h.iter().position(|(p, _)| *p == pid) {
        if let (_, Some(tx)) = h.remove(pos) {
            let _ = tx.send(DeputyMsg::Moved { addr, id });
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING.fetch_or(1 << sig, Ordering::Relaxed);
}

/// Body of `migrate-agent __deputy SOCKET ADDR ID HOST`.
pub fn run(args: &[String]) -> ! {
    let code = match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("migrate deputy: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve(args: &[String]) -> io::Result<()> {
    let (Some(socket), Some(addr), Some(id), Some(_host)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Err(io::Error::other("usage: __deputy SOCKET ADDR ID HOST"));
    };
    let socket = Path::new(socket);
    let addr: SocketAddr = addr.parse().map_err(|_| io::Error::other("bad address"))?;
    let id: u64 = id.parse().map_err(|_| io::Error::other("bad id"))?;
    // The original's signal state came through the execve: start clean.
    crate::host::sys::reset_signals();
    for sig in FORWARDED {
        crate::host::sys::set_handler(sig, on_signal);
    }
    let mut s = open_lane(socket, addr, id)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    loop {
        let pending = PENDING.swap(0, Ordering::Relaxed);
        for sig in FORWARDED {
            if pending & (1 << sig) != 0 {
                frame::write_msg(&mut s, &DeputyMsg::Signal(sig)).map_err(io::Error::other)?;
            }
        }
        match frame::read_msg::<DeputyMsg>(&mut s) {
            Ok(DeputyMsg::Exited { code, signal }) => {
                if let Some(sig) = signal {
                    crate::host::sys::die_by(sig);
                }
                std::process::exit(code.unwrap_or(0));
            }
            Ok(DeputyMsg::Moved { addr, id }) => {
                let n = open_lane(socket, addr, id)?;
                n.set_read_timeout(Some(Duration::from_millis(100)))?;
                s = n;
            }
            Ok(DeputyMsg::Signal(_)) => {}
            Err(frame::FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// Asks the home agent (the deputy holds no credentials of its own) to
/// open the deputy's lane to the agent at `addr` for migration `id`.
fn open_lane(socket: &Path, addr: SocketAddr, id: u64) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    match Request::hello(&mut s).map_err(io::Error::other)? {
        Reply::Welcome { .. } => {}
        other => return Err(io::Error::other(format!("the agent answered {other:?}"))),
    }
    let lane = Request::DeputyLane { addr, id };
    match lane.ask(&mut s).map_err(io::Error::other)? {
        Reply::Bridged => Ok(s),
        Reply::Refused { reasons, .. } => Err(io::Error::other(migrate_proto::refusal::texts(
            &reasons, "; ",
        ))),
        other => Err(io::Error::other(format!("the agent answered {other:?}"))),
    }
}

/// The destination's side: sends signals from the deputy to the process
/// and its exit status back.
pub fn serve_remote(
    pid: i32,
    mut lane: PeerStream,
    pidfd: std::os::fd::OwnedFd,
    tx: std::sync::mpsc::Sender<DeputyMsg>,
    status: std::sync::mpsc::Receiver<DeputyMsg>,
) {
    {
        let mut h = HOSTED.lock().unwrap_or_else(|e| e.into_inner());
        h.retain(|(p, _)| *p != pid);
        h.push((pid, Some(tx)));
    }
    std::thread::spawn(move || {
        let _ = lane.set_read_timeout(Some(Duration::from_millis(100)));
        loop {
            if let Ok(msg) = status.try_recv() {
                let _ = frame::write_msg(&mut lane, &msg);
                if matches!(msg, DeputyMsg::Exited { .. }) {
                    hosted(pid, false);
                }
                return;
            }
            match frame::read_msg::<DeputyMsg>(&mut lane) {
                // Only the signals a deputy passes on.
                Ok(DeputyMsg::Signal(sig)) if FORWARDED.contains(&sig) => {
                    let _ = crate::host::sys::pidfd_kill(&pidfd, sig);
                }
                Ok(_) => {}
                Err(frame::FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    hosted(pid, false);
                    return;
                }
            }
        }
    });
}
