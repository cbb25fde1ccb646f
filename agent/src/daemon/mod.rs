//! The agent daemon: the control socket for local users and the TCP
//! listener for peer agents.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use migrate_proto::frame;
use migrate_proto::msg::{Code, Lane, Mode, PeerHello, Reason, Reply, Request};
use migrate_proto::PROTOCOL_VERSION;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::config::{Config, PeerAuth, Settings};
use crate::host::access::{self, Caller};
use crate::net::handshakes::Handshakes;
use crate::net::peer::{self, LaneTable};
use crate::net::secure::{AuthError, Credentials, Security};
use crate::session::drain::Drain;
use crate::session::history::History;
use crate::session::source::{self, SourceCtx};
use crate::{capture::preflight, error_chain, host::sys, session::dest};

mod control;
mod metrics;
use control::{
    ClientWriter, ControlSlot, Deadline, MAX_REQUEST_LEN, REPLY_DEADLINE, REQUEST_DEADLINE,
};

/// The daemon could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// Binding the control socket failed.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Binding the peer listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The state directory could not be used.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A thread of the agent's own could not start.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    /// Locating our own executable (the restore stub) failed.
    #[error("cannot find the agent's executable: {0}")]
    Exe(io::Error),
    /// The cluster's credentials could not be loaded.
    #[error("credentials: {0}")]
    Auth(#[from] AuthError),
    /// Neither credentials nor `--insecure`.
    #[error(
        "no cluster credentials: create them with `migrate-agent keygen DIR --hosts host1,host2`, \
         give each host its files and start with --auth DIR (or put them in {}); \
         --insecure runs without authentication or encryption",
        crate::config::DEFAULT_AUTH_DIR
    )]
    NoCredentials,
}

/// Shared state of a running agent.
pub struct Agent {
    config: Config,
    /// Where `config` came from: re-read on SIGHUP.
    settings: Settings,
    /// Known peers by name: the settings' as last read.
    peers: RwLock<BTreeMap<String, std::net::SocketAddr>>,
    /// Migrations in flight, either side; refuses new ones once stopping.
    drain: Drain,
    lanes: LaneTable,
    in_flight: Mutex<HashSet<i32>>,
    stub: PathBuf,
    history: History,
    security: Security,
    kept: source::KeptOriginals,
    /// Migrations received: the replay guard, and what became of each copy.
    received: crate::session::received::Received,
    lineages: crate::session::lineage::Lineages,
    /// Peer connections not yet authenticated.
    handshakes: Arc<Handshakes>,
    /// Migrations being received.
    incoming: AtomicUsize,
    /// Control connections open for each user other than root.
    control: Mutex<HashMap<u32, usize>>,
}

/// Holds one unit of a counter for as long as it lives.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// Takes a unit if fewer than `max` are taken.
    fn take(counter: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a pid as being migrated for as long as it lives.
struct Claim<'a> {
    agent: &'a Agent,
    pid: i32,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.agent
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pid);
    }
}

impl Agent {
    /// Where `to` (a peer's name or ADDR:PORT) is.
    fn resolve(&self, to: &str) -> Option<std::net::SocketAddr> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        crate::config::resolve_peer(&peers, to)
    }

    /// Why a new migration is refused while the agent drains.
    fn stopping(&self) -> String {
        format!(
            "the agent on {} is stopping: it finishes the migrations in flight and starts no new one",
            self.config.name
        )
    }

    fn claim(&self, pid: i32) -> Option<Claim<'_>> {
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        // (Built only when fresh: a dropped Claim releases the pid.)
        if fresh {
            Some(Claim { agent: self, pid })
        } else {
            None
        }
    }
}

/// How this agent secures its links to peers, as `config` says.
pub fn security(config: &Config) -> Result<Security, StartError> {
    Ok(match &config.auth {
        PeerAuth::Cluster(dir) => Security::Noise(Arc::new(Credentials::load(dir, &config.name)?)),
        PeerAuth::Insecure => Security::Insecure,
        PeerAuth::Unset => return Err(StartError::NoCredentials),
    })
}

/// Binds both endpoints and serves until stopped: the first SIGTERM (or
/// SIGINT) drains, the second ends the agent at once; SIGHUP re-reads the
/// peers from `settings`. Call it before any thread of the agent starts.
pub fn run(config: Config, settings: Settings) -> Result<(), StartError> {
    sys::block_stop_signals().map_err(StartError::Thread)?;
    let stub = std::env::current_exe().map_err(StartError::Exe)?;
    let security = security(&config)?;
    if let Security::Insecure = security {
        let loud = format!(
            "--insecure: peers are neither authenticated nor encrypted; anyone who can reach {} \
             can make this agent run a process as any user",
            config.listen
        );
        eprintln!("migrate-agent: WARNING: {loud}");
        warn!("{loud}");
    }
    let history = History::open(&config.state_dir).map_err(|source| StartError::State {
        path: config.state_dir.clone(),
        source,
    })?;
    crate::host::open_journals(&config.state_dir)
        .map_err(|(path, source)| StartError::State { path, source })?;
    let received =
        crate::session::received::Received::open(&config.state_dir).map_err(|source| {
            StartError::State {
                path: config.state_dir.clone(),
                source,
            }
        })?;
    // Rebuilt processes become our children once their stub's parent is
    // gone: we reap them and learn how they end (for deputies).
    if let Err(e) = sys::become_subreaper() {
        warn!(error = %e, "cannot become a subreaper: deputies will not learn exit codes");
    } else {
        crate::host::children::start_reaper();
    }
    let tcp = TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    if let Some(addr) = config.metrics {
        metrics::serve(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    let sock_err = |source| StartError::Socket {
        path: config.socket.clone(),
        source,
    };
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // A socket left by an agent that died is replaced; a live one is not.
    if UnixStream::connect(&config.socket).is_ok() {
        return Err(sock_err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another agent is listening there",
        )));
    }
    let _ = std::fs::remove_file(&config.socket);
    let unix = UnixListener::bind(&config.socket).map_err(sock_err)?;
    // Anyone may connect; every request is authorized by SO_PEERCRED.
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o666))
        .map_err(sock_err)?;
    info!(name = %config.name, listen = %config.listen, socket = %config.socket.display(), "agent ready");
    let agent = Arc::new(Agent {
        peers: RwLock::new(config.peers.clone()),
        config,
        settings,
        drain: Drain::default(),
        lanes: LaneTable::default(),
        in_flight: Mutex::new(HashSet::new()),
        stub,
        history,
        security,
        kept: source::KeptOriginals::default(),
        received,
        lineages: crate::session::lineage::Lineages::default(),
        handshakes: Handshakes::start(peer::CONNECT_TIMEOUT).map_err(StartError::Thread)?,
        incoming: AtomicUsize::new(0),
        control: Mutex::new(HashMap::new()),
    });

    let a = agent.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || handle_signals(&a))
        .map_err(StartError::Thread)?;
    let a = agent.clone();
    std::thread::Builder::new()
        .name("peers".into())
        .spawn(move || {
            for conn in tcp.incoming() {
                match conn {
                    Ok(s) => {
                        let a = a.clone();
                        let spawned = std::thread::Builder::new()
                            .name("peer".into())
                            .spawn(move || serve_peer(&a, s));
                        if let Err(e) = spawned {
                            warn!(error = %e, "no thread for a peer connection: closed");
                        }
                    }
                    Err(e) => warn!(error = %e, "accepting a peer"),
                }
            }
        })
        .map_err(StartError::Thread)?;
    crate::host::notify::notify(crate::host::notify::READY);
    for conn in unix.incoming() {
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accepting a control connection");
                continue;
            }
        };
        let cred = match sys::peer_cred(&s) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "SO_PEERCRED of a control connection");
                continue;
            }
        };
        let slot = match ControlSlot::take(&agent, cred.uid) {
            Ok(slot) => slot,
            Err(why) => {
                warn!(uid = cred.uid, %why, "control connection refused");
                // Said without waiting: a refusal fits in the socket's buffer.
                let _ = s.set_nonblocking(true);
                let mut s = s;
                let _ = frame::write_msg(&mut s, &Reply::refused_one(Code::Busy, why));
                continue;
            }
        };
        let a = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = serve_control(&a, s, cred) {
                    debug!(error = %error_chain(&e), "control connection ended");
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "no thread for a control connection: closed");
        }
    }
    Ok(())
}

fn serve_peer(agent: &Agent, s: TcpStream) {
    let peer_addr = s.peer_addr().ok();
    // Cut at its deadline, or to make room for a newer one.
    let handshake = match peer_addr.map(|a| agent.handshakes.watch(&s, a.ip())) {
        Some(Ok(w)) => w,
        _ => {
            warn!(?peer_addr, "a peer connection could not be watched: closed");
            return;
        }
    };
    // A control lane is a migration received: at most max_incoming at once.
    let mut session = None;
    let mut in_flight = None;
    let admit = |hello: &PeerHello| {
        if hello.lane != Lane::Control {
            return Ok(());
        }
        in_flight = Some(agent.drain.enter().ok_or_else(|| agent.stopping())?);
        let max = agent.config.max_incoming;
        session = Slot::take(&agent.incoming, max);
        match session {
            Some(_) => Ok(()),
            None => Err(format!(
                "{} is busy: it is receiving {max} migrations already (--max-incoming)",
                agent.config.name
            )),
        }
    };
    let accepted = peer::accept(s, &agent.config.name, &agent.security, admit);
    drop(handshake);
    let (s, hello) = match accepted {
        Ok(h) => h,
        Err(e) => {
            warn!(?peer_addr, error = %error_chain(&e), "peer greeting failed");
            return;
        }
    };
    match hello.lane {
        Lane::Control => {
            info!(from = %hello.from, "migration offered");
            crate::metrics::METRICS.received();
            if let Err(e) = dest::serve(
                &agent.config,
                s,
                &agent.lanes.of_peer(&hello.from),
                &agent.stub,
                &agent.received,
                &hello.from,
                &agent.lineages,
            ) {
                warn!(from = %hello.from, error = %error_chain(&e), "incoming migration failed");
            }
        }
        Lane::Outcome(id) => {
            let state = agent.received.state(id, &hello.from);
            info!(from = %hello.from, id, ?state, "asked what became of a copy");
            let mut s = s;
            if let Err(e) = frame::write_msg(&mut s, &state) {
                debug!(error = %e, "the answer about a copy did not go");
            }
        }
        Lane::Probe => {
            let mut s = s;
            if let Err(e) = crate::session::probe::answer(&mut s) {
                debug!(from = %hello.from, error = %e, "a peer's check ended early");
            }
        }
        lane => agent.lanes.put(lane, &hello.from, s),
    }
}

/// `migrate check PID`: the pre-flight's verdict, every descriptor with
/// its kind and verdict.
fn check(agent: &Agent, caller: &Caller, pid: i32) -> Reply {
    let tcp = crate::fd::TcpRules::policy(agent.lineages.get(pid, "").tcp);
    // A caller who may not act on the process learns nothing of it
    // but that.
    let checked = access::authorize(caller, pid)
        .map_err(|d| {
            (
                preflight::Refusal::one(Code::NotPermitted, d.to_string()),
                false,
            )
        })
        .and_then(|()| {
            // A tree is checked as it moves: together (in post-copy, the
            // default, or stop-and-copy).
            let me = sys::getpid();
            match preflight::inspect_tree(pid, caller, me, &tcp, Mode::PostCopy) {
                Ok(Some(t)) => Ok((t.root, t.kin.len())),
                Ok(None) => preflight::inspect(pid, caller, me, false, &tcp).map(|i| (i, 0)),
                Err(r) => Err(r),
            }
            .map_err(|r| (r, true))
        });
    match checked {
        Ok((i, kin)) if kin > 0 => Reply::Movable {
            summary: format!(
                "pid {} ({}) can be migrated with its {kin} descendants, together (post-copy or \
                 stop-and-copy): {} files needed on the destination\n{}",
                i.pid,
                i.comm,
                i.needs.len(),
                preflight::describe_tree(pid, caller, sys::getpid(), &tcp).join("\n")
            ),
        },
        Ok((i, _)) => Reply::Movable {
            summary: format!(
                "pid {} ({}) can be migrated: {} mappings, {} KiB resident, {} files \
                 needed on the destination\n{}",
                i.pid,
                i.comm,
                i.nvmas,
                i.rss_kib,
                i.needs.len(),
                preflight::describe_fds(pid, &tcp).join("\n")
            ),
        },
        Err((r, false)) => Reply::refused(r.0),
        Err((r, true)) => {
            let mut detail = Vec::new();
            let tree = preflight::describe_tree(pid, caller, sys::getpid(), &tcp);
            let fds = preflight::describe_fds(pid, &tcp);
            if !tree.is_empty() {
                detail.extend(tree);
            } else if !fds.is_empty() {
                detail.push("descriptors:".into());
                detail.extend(fds);
            }
            Reply::Refused {
                reasons: r.0,
                detail,
            }
        }
    }
}

/// `migrate PID --to HOST`: refused (the agent is stopping, the host is
/// unknown or this one, the caller may not act on the process, it is
/// being migrated already), or migrated, each step's reply sent on `s` as
/// it comes; the last one is returned. `in_flight` keeps the agent from
/// ending before that last reply is written.
#[allow(clippy::too_many_arguments)]
fn migrate<'a>(
    agent: &'a Agent,
    caller: &Caller,
    cred: libc::ucred,
    s: &mut UnixStream,
    pid: i32,
    to: &str,
    opts: &migrate_proto::msg::MigrateOptions,
    in_flight: &mut Option<crate::session::drain::InFlight<'a>>,
) -> Result<Reply, frame::FrameError> {
    let _counted = crate::metrics::InFlight::start();
    let reply = {
        let denied = access::authorize(caller, pid).err().map(|d| d.to_string());
        let known = || {
            let peers = agent.peers.read().unwrap_or_else(|e| e.into_inner());
            let names: Vec<&str> = peers.keys().map(String::as_str).collect();
            if names.is_empty() {
                "this agent knows no peers".to_string()
            } else {
                format!("known peers: {}", names.join(", "))
            }
        };
        let entered = agent.drain.enter();
        match agent.resolve(to) {
            _ if entered.is_none() => Reply::refused_one(Code::Stopping, agent.stopping()),
            None => Reply::refused_one(
                Code::Destination,
                format!(
                    "unknown host {to:?} ({}); give a peer name or ADDR:PORT",
                    known()
                ),
            ),
            Some(addr) if to == agent.config.name || addr == agent.config.listen => {
                Reply::refused_one(Code::Destination, format!("{to} is this host"))
            }
            // Authorized before the pid is claimed or the shim told.
            Some(_) if denied.is_some() => Reply::refused(
                denied
                    .into_iter()
                    .map(|d| Reason::new(Code::NotPermitted, d))
                    .collect(),
            ),
            Some(addr) => match agent.claim(pid) {
                None => {
                    Reply::refused_one(Code::Busy, format!("pid {pid} is already being migrated"))
                }
                Some(_claim) => {
                    // Counted until the last reply is written.
                    *in_flight = entered;
                    let cx = SourceCtx {
                        host: &agent.config.name,
                        addr,
                        to,
                        ship_limit: agent.config.ship_limit_mib << 20,
                        sec: &agent.security,
                        socket: &agent.config.socket,
                        kept: &agent.kept,
                        lineages: &agent.lineages,
                        hand_over: &agent.config.hand_over,
                        listen: agent.config.listen,
                    };
                    info!(pid, %to, uid = cred.uid, "migration requested");
                    if pid == cred.pid {
                        // The process asks for itself (migrate_request):
                        // it must hang up first, a connection to this
                        // agent cannot move with it.
                        frame::write_msg(s, &Reply::Accepted)?;
                        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                        let _ = std::io::Read::read(s, &mut [0u8; 1]);
                    }
                    let mut w = ClientWriter::new(s.try_clone()?);
                    let history = &agent.history;
                    let mut under_way = None;
                    let reply = source::migrate(&cx, caller, pid, opts, &mut |r| {
                        match r {
                            Reply::Resumed(rec) => {
                                under_way = Some(rec.id);
                                history.put(cred.uid, rec);
                                crate::metrics::METRICS.saw(r);
                            }
                            Reply::Progress { moved_pages, .. } => {
                                if let Some(id) = under_way {
                                    history.progress(id, *moved_pages);
                                }
                            }
                            Reply::Failed {
                                record: Some(rec), ..
                            } => history.put(cred.uid, rec),
                            _ => {}
                        }
                        // The client may have gone (--detach) or stopped
                        // reading: keep going.
                        w.send(r);
                    });
                    match &reply {
                        Reply::Complete(rec) => history.put(cred.uid, rec),
                        Reply::Failed {
                            record: Some(rec), ..
                        } => history.put(cred.uid, rec),
                        _ => {}
                    }
                    reply
                }
            },
        }
    };
    crate::metrics::METRICS.saw(&reply);
    Ok(reply)
}

fn serve_control(
    agent: &Agent,
    mut s: UnixStream,
    cred: libc::ucred,
) -> Result<(), frame::FrameError> {
    let until = Instant::now() + REQUEST_DEADLINE;
    s.set_write_timeout(Some(REPLY_DEADLINE))?;
    let request = |s: &UnixStream| {
        frame::read_msg_within::<Request>(&mut Deadline { s, until }, MAX_REQUEST_LEN)
    };
    let caller = Caller {
        uid: cred.uid,
        gid: cred.gid,
    };
    // A migration this connection started: the agent does not end before
    // its last reply is written.
    let mut in_flight = None;
    match request(&s)? {
        Request::Hello { version } if version == PROTOCOL_VERSION => {}
        _ => {
            return frame::write_msg(
                &mut s,
                &Reply::refused_one(
                    Code::Protocol,
                    format!("the agent speaks protocol {PROTOCOL_VERSION}; update migrate"),
                ),
            )
        }
    }
    frame::write_msg(
        &mut s,
        &Reply::Welcome {
            version: PROTOCOL_VERSION,
            name: agent.config.name.clone(),
        },
    )?;
    let req = request(&s)?;
    s.set_read_timeout(None)?;
    let reply = match req {
        Request::Hello { .. } => Reply::refused_one(Code::Protocol, "unexpected second hello"),
        Request::Check { pid } => check(agent, &caller, pid),
        Request::History => Reply::Records(agent.history.visible_to(cred.uid)),
        Request::Register { pid, tcp } if pid == cred.pid => {
            // `migrate run` registers, then execs the program.
            agent.lineages.set_before_exec(
                pid,
                migrate_proto::image::Lineage {
                    home: agent.config.name.clone(),
                    moves: 0,
                    cooperating: true,
                    shim: None,
                    tcp,
                },
            );
            info!(pid, tcp = tcp.name(), "cooperating process registered");
            Reply::Registered
        }
        Request::ShimAttach { pid, state } if pid == cred.pid => {
            let lineage = migrate_proto::image::Lineage {
                cooperating: true,
                shim: Some(state),
                ..agent.lineages.get(pid, &agent.config.name)
            };
            agent.lineages.set(pid, lineage.clone());
            info!(pid, state, "shim attached");
            Reply::Whoami {
                host: agent.config.name.clone(),
                lineage,
            }
        }
        Request::ShimAttach { pid, .. } => Reply::refused_one(
            Code::NotPermitted,
            format!("only process {pid} itself may attach its shim"),
        ),
        Request::Register { pid, .. } => Reply::refused_one(
            Code::NotPermitted,
            format!("only process {pid} itself may register itself"),
        ),
        Request::List => Reply::Processes(crate::session::lineage::movable_processes(
            &agent.lineages,
            &agent.config.name,
            &caller,
        )),
        Request::Whoami { pid } if pid == cred.pid => Reply::Whoami {
            host: agent.config.name.clone(),
            lineage: agent.lineages.get(pid, &agent.config.name),
        },
        Request::Whoami { pid } => Reply::refused_one(
            Code::NotPermitted,
            format!("only process {pid} itself may ask who it is"),
        ),
        Request::Resolve { id, action } => match agent.kept.resolve(id, cred.uid, action) {
            Ok(what) => Reply::Resolved(what),
            Err(why) => Reply::refused_one(Code::Resolve, why),
        },
        Request::DeputyLane { addr, id } => {
            if !crate::session::deputy::is_made(cred.pid) {
                Reply::refused_one(
                    Code::NotPermitted,
                    "only a deputy this agent made may open a deputy lane",
                )
            } else {
                match peer::connect(addr, &agent.config.name, Lane::Deputy(id), &agent.security) {
                    Ok((lane, _)) => {
                        frame::write_msg(&mut s, &Reply::Bridged)?;
                        // The bridge waits on the deputy as long as it lives.
                        s.set_write_timeout(None)?;
                        crate::session::deputy::bridge(s, lane);
                        return Ok(());
                    }
                    Err(e) => Reply::refused_one(Code::Destination, error_chain(&e)),
                }
            }
        }
        Request::Migrate { pid, to, opts, .. } => migrate(
            agent,
            &caller,
            cred,
            &mut s,
            pid,
            &to,
            &opts,
            &mut in_flight,
        )?,
    };
    // Bounded by the connection's write timeout.
    let _ = frame::write_msg(&mut s, &reply);
    drop(in_flight);
    Ok(())
}

/// How often a draining agent says what it still waits for.
const DRAIN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// The signal thread: SIGHUP re-reads the peers; the first SIGTERM or
/// SIGINT drains (no new migration, the agent ends once those in flight
/// are over), a second one ends the agent at once.
fn handle_signals(agent: &Arc<Agent>) {
    loop {
        let sig = match sys::wait_signal() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "waiting for signals failed: SIGTERM now ends the agent at once");
                return;
            }
        };
        if sig == libc::SIGHUP {
            reload(agent);
            continue;
        }
        let (in_flight, first) = agent.drain.begin();
        if !first {
            warn!(signal = sig, "stopped again while draining: ending now");
            sys::die_of(sig);
        }
        info!(
            in_flight,
            "stopping: no new migrations; ending once those in flight are over (a second signal ends it now)"
        );
        crate::host::notify::notify(&format!(
            "{}\nSTATUS=draining: {in_flight} migrations in flight",
            crate::host::notify::STOPPING
        ));
        let a = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || loop {
                let left = a.drain.wait_idle(DRAIN_REPORT_EVERY);
                if left == 0 {
                    info!("no migration in flight: the agent ends");
                    // Ours: no other agent listens there while we live.
                    let _ = std::fs::remove_file(&a.config.socket);
                    std::process::exit(0);
                }
                info!(in_flight = left, "draining");
                crate::host::notify::notify(&format!(
                    "STATUS=draining: {left} migrations in flight"
                ));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "no thread to drain: ending now");
            sys::die_of(sig);
        }
    }
}

/// Re-reads the settings: the peers take effect now; other changes wait
/// for a restart, and are said to.
fn reload(agent: &Agent) {
    let fresh = match agent.settings.read() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "SIGHUP: the settings could not be read; the peers stay as they were");
            return;
        }
    };
    let old = &agent.config;
    let later: Vec<&str> = [
        ("name", fresh.name != old.name),
        ("listen", fresh.listen != old.listen),
        ("socket", fresh.socket != old.socket),
        ("ship_limit_mib", fresh.ship_limit_mib != old.ship_limit_mib),
        ("max_incoming", fresh.max_incoming != old.max_incoming),
        ("state_dir", fresh.state_dir != old.state_dir),
        ("auth", fresh.auth != old.auth),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if !later.is_empty() {
        warn!(changed = ?later, "SIGHUP: these settings take effect when the agent restarts");
    }
    let names: Vec<String> = fresh.peers.keys().cloned().collect();
    *agent.peers.write().unwrap_or_else(|e| e.into_inner()) = fresh.peers;
    info!(peers = ?names, "SIGHUP: peers re-read");
}
