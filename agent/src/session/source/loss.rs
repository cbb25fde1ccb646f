//! A destination lost after the commit: asking what became of the copy,
//! the originals kept frozen until that is known, the deputy left at home.

use super::*;

/// How the destination was lost after the commit.
pub(super) struct Loss {
    pub(super) what: String,
    /// The destination said its copy is gone (killed).
    pub(super) copy_gone: bool,
    /// When this side stopped beating.
    pub(super) at: Instant,
}

/// The destination was lost after the commit. What became of the copy is
/// learned first (the destination said, or is asked): a copy that runs
/// with every page completes the migration, and the original is killed;
/// otherwise the original, frozen here since before its copy ran, is
/// killed, resumed or kept as `policy` says, resumed only once its copy is
/// known gone, and kept when that cannot be learned.
#[allow(clippy::too_many_arguments)]
pub(super) fn after_loss(
    cx: &SourceCtx<'_>,
    uid: u32,
    id: u64,
    task: FrozenOriginal,
    loss: Loss,
    policy: LossPolicy,
    mut rec: MigrationRecord,
    progress: &mut dyn FnMut(&Reply),
) -> Reply {
    let pid = rec.pid;
    let asker = Asker {
        addr: cx.addr,
        to: cx.to,
        me: cx.host,
        sec: cx.sec,
    };
    let fate = if loss.copy_gone {
        CopyFate::Gone
    } else {
        // Killing needs no answer: one question, to report truly.
        let until = match policy {
            LossPolicy::Kill => Instant::now(),
            LossPolicy::Keep | LossPolicy::Resume => loss.at + ask::SETTLED_WITHIN,
        };
        asker.learn(id, until)
    };
    info!(id, pid, ?fate, "{}", loss.what);
    let failed = |rec: &mut MigrationRecord, outcome: String, error: String, resumed: bool| {
        rec.outcome = outcome;
        Reply::Failed {
            error,
            resumed_original: resumed,
            record: Some(Box::new(rec.clone())),
        }
    };
    let resume = |task: FrozenOriginal, rec: &mut MigrationRecord| {
        task.resume();
        info!(id, pid, "the original runs here again");
        failed(
            rec,
            format!("{}; original resumed", loss.what),
            format!(
                "{}; its copy on {} is gone and the original runs here again",
                loss.what, cx.to
            ),
            true,
        )
    };
    let kill = |task: FrozenOriginal, rec: &mut MigrationRecord, how: &str| {
        task.kill();
        failed(
            rec,
            format!("{}; original killed{how}", loss.what),
            format!(
                "{}; the original (pid {pid}) was killed{how}: the process is lost unless it runs on {}",
                loss.what, cx.to
            ),
            false,
        )
    };
    match (policy, fate) {
        (_, CopyFate::Runs) => {
            // The process lives there: the migration is complete.
            task.kill();
            cx.lineages.forget(pid);
            crate::session::deputy::moved(pid, cx.addr, id);
            rec.outcome = format!(
                "complete: {}; {} then said its copy runs with every page",
                loss.what, cx.to
            );
            info!(id, pid, "{}", rec.outcome);
            Reply::Complete(rec)
        }
        (LossPolicy::Kill, _) => kill(task, &mut rec, ""),
        (LossPolicy::Resume, CopyFate::Gone) => resume(task, &mut rec),
        (LossPolicy::Keep | LossPolicy::Resume, fate) => {
            let why = match &fate {
                CopyFate::Unknown(why) => format!(
                    "; whether its copy on {} is gone cannot be learned ({why})",
                    cx.to
                ),
                _ => format!("; its copy on {} is gone", cx.to),
            };
            let decisions = cx.kept.keep(id, uid);
            warn!(id, pid, "{}{why}: the original is kept frozen", loss.what);
            progress(&failed(
                &mut rec,
                format!("{}; original kept frozen", loss.what),
                format!(
                    "{}{why}: the original (pid {pid}) is kept frozen here: `migrate resolve {id:016x} --kill` \
                     ends it, `migrate resolve {id:016x} --resume` runs it here again once {} says its copy is gone",
                    loss.what, cx.to
                ),
                false,
            ));
            // Until someone decides (or this agent dies, and the original
            // with it: PTRACE_O_EXITKILL).
            let known_gone = fate == CopyFate::Gone;
            let reply = loop {
                let (action, answer) = match decisions.recv() {
                    Ok(d) => d,
                    Err(_) => (Resolution::Kill, std::sync::mpsc::channel().0),
                };
                match action {
                    Resolution::Kill => {
                        let _ =
                            answer.send(Ok(format!("pid {pid} (migration {id:016x}) was killed")));
                        break kill(task, &mut rec, " on request");
                    }
                    Resolution::Resume => {
                        if !known_gone {
                            match asker.learn(id, Instant::now()) {
                                CopyFate::Gone => {}
                                CopyFate::Runs => {
                                    let _ = answer.send(Err(format!(
                                        "{} says the copy of migration {id:016x} runs there with every \
                                         page: resuming the original would run the process twice; \
                                         `migrate resolve {id:016x} --kill` ends the original",
                                        cx.to
                                    )));
                                    continue;
                                }
                                CopyFate::Unknown(why) => {
                                    let _ = answer.send(Err(format!(
                                        "the copy of migration {id:016x} is not known to be gone ({why}): \
                                         the original stays frozen"
                                    )));
                                    continue;
                                }
                            }
                        }
                        let _ = answer.send(Ok(format!(
                            "pid {pid} (migration {id:016x}) runs here again"
                        )));
                        break resume(task, &mut rec);
                    }
                }
            };
            cx.kept.forget(id);
            progress(&reply);
            reply
        }
    }
}

/// A decision on a kept original and where to say what was done, or why
/// not.
pub(super) type Decision = (Resolution, std::sync::mpsc::Sender<Result<String, String>>);

/// Originals kept frozen after their destination was lost, by migration id:
/// their owner's uid and the way to the session holding each.
#[derive(Default)]
pub struct KeptOriginals {
    pub(super) map:
        std::sync::Mutex<std::collections::HashMap<u64, (u32, std::sync::mpsc::Sender<Decision>)>>,
}

impl KeptOriginals {
    pub(super) fn keep(&self, id: u64, uid: u32) -> std::sync::mpsc::Receiver<Decision> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (uid, tx));
        rx
    }

    pub(super) fn forget(&self, id: u64) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Carries out `action` on migration `id`'s kept original for a caller
    /// of uid `uid`; returns what was done, or why not.
    pub fn resolve(&self, id: u64, uid: u32, action: Resolution) -> Result<String, String> {
        let tx = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            // Another user's migration reads as none at all.
            match map.get(&id) {
                Some((owner, tx)) if uid == 0 || *owner == uid => tx.clone(),
                _ => return Err(format!("migration {id:016x} keeps no frozen original here")),
            }
        };
        let (answer, done) = std::sync::mpsc::channel();
        tx.send((action, answer))
            .map_err(|_| format!("migration {id:016x} is no longer kept"))?;
        done.recv_timeout(4 * peer::PEER_SILENCE)
            .map_err(|_| format!("migration {id:016x}: no answer from its session"))?
    }
}

/// Turns the frozen original into the deputy: an injected execve of this
/// agent's binary as `__deputy`, keeping its pid, parent, session and
/// terminal; its other threads end with the exec.
pub(super) fn deputize(
    mut task: FrozenOriginal,
    mem: &RemoteMem,
    cx: &SourceCtx<'_>,
    id: u64,
) -> Result<(), String> {
    let mut threads = std::mem::take(&mut task.0);
    let mut main = threads.remove(0);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args = [
        exe.to_string_lossy().into_owned(),
        "__deputy".to_string(),
        cx.socket.to_string_lossy().into_owned(),
        cx.addr.to_string(),
        id.to_string(),
        cx.host.to_string(),
    ];
    let scratch = match main.syscall(
        libc::SYS_mmap,
        [
            0,
            8192,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    ) {
        Ok(a) => a,
        Err(e) => {
            main.kill();
            for t in threads {
                t.kill();
            }
            return Err(error_chain(&e));
        }
    };
    // Strings from 1024 on; argv (pointers, then NULL) and envp (NULL) first.
    let mut blob = vec![0u8; 1024];
    let mut ptrs = Vec::new();
    for a in &args {
        ptrs.push(scratch + blob.len() as u64);
        blob.extend_from_slice(a.as_bytes());
        blob.push(0);
    }
    for (i, p) in ptrs.iter().enumerate() {
        blob[i * 8..i * 8 + 8].copy_from_slice(&p.to_le_bytes());
    }
    let envp = scratch + (ptrs.len() as u64 + 1) * 8;
    if let Err(e) = mem.write(scratch, &blob) {
        main.kill();
        for t in threads {
            t.kill();
        }
        return Err(error_chain(&e));
    }
    let r = main.exec_and_release([ptrs[0], scratch, envp, 0, 0, 0]);
    for t in threads {
        // Ended by the exec (or killed with the process if it failed).
        t.abandon();
    }
    r.map_err(|e| error_chain(&e))
}
