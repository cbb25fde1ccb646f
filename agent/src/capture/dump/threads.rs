//! The frozen process's threads: seized until none is left to seize, and
//! each one's registers and the per-thread state only it can read (by
//! injected syscalls).

use super::*;
use migrate_inject::calls::pr;
use migrate_proto::msg::Code;

/// Glibc's `struct pthread` offset of `tid` on x86_64 (2.26 to 2.40): the
/// tie-breaker when several offsets hold every thread's id.
pub(super) const GLIBC_TID_OFFSET: u64 = 0x2d0;

/// Finds the offset from the thread pointer at which every thread's
/// control block holds that thread's id (the thread library's cached id).
pub(super) fn find_tid_offset(mem: &RemoteMem, threads: &[ThreadState]) -> Option<u64> {
    // struct pthread sits at the very top of a thread's stack mapping:
    // scan a window small enough to stay inside it.
    const SCAN: usize = 1024;
    let mut candidates: Option<Vec<u64>> = None;
    for t in threads {
        let fs = Regs::from_words(&t.regs)?.0.fs_base;
        if fs == 0 {
            return None;
        }
        let mut buf = vec![0u8; SCAN];
        mem.read(fs, &mut buf).ok()?;
        let here: Vec<u64> = (0..SCAN / 4)
            .filter(|i| buf[i * 4..i * 4 + 4] == t.tid.to_le_bytes())
            .map(|i| (i * 4) as u64)
            .collect();
        candidates = Some(match candidates {
            None => here,
            Some(c) => c.into_iter().filter(|o| here.contains(o)).collect(),
        });
    }
    let c = candidates?;
    match c.as_slice() {
        [one] => Some(*one),
        many if many.contains(&GLIBC_TID_OFFSET) => Some(GLIBC_TID_OFFSET),
        _ => None,
    }
}

/// Seizes every thread of `pid`, again and again until no new one
/// appears (a thread may clone until it is stopped itself).
pub(super) fn freeze_threads(pid: i32) -> Result<Vec<Seized>, DumpError> {
    let mut tasks: Vec<Seized> = Vec::new();
    for _ in 0..100 {
        let tids = procfs::tids(pid).map_err(proc_err(pid, "task"))?;
        let mut new = false;
        for tid in tids {
            if tasks.iter().any(|t| t.tid() == tid) {
                continue;
            }
            match Seized::seize(tid) {
                Ok(mut t) => {
                    t.set_tgid(pid);
                    tasks.push(t);
                    new = true;
                }
                // A thread that exited between the listing and the seize.
                Err(_) if tid != pid => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !new {
            return Ok(tasks);
        }
    }
    Err(DumpError::Refused(Refusal::one(
        Code::Threads,
        format!("process {pid} keeps creating threads faster than they can be stopped"),
    )))
}

/// Registers and the per-thread kernel state of one stopped thread; the
/// parts only the thread itself can read are read by injected syscalls
/// through `scratch`.
pub(super) fn thread_state(
    pid: i32,
    t: &mut Seized,
    mem: &RemoteMem,
    scratch: u64,
) -> Result<ThreadState, DumpError> {
    let tid = t.tid();
    let regs = t.regs();
    let xstate = t.xstate()?;
    let sigmask = t.sigmask()?;
    let rseq = t.rseq()?.map(|(addr, len, sig)| Rseq { addr, len, sig });
    let robust_list = sys::get_robust_list(tid).map_err(proc_err(pid, "robust_list"))?;
    t.prctl(pr::GET_TID_ADDRESS, scratch)?;
    let mut w = [0u8; 8];
    mem.read(scratch, &mut w)?;
    let clear_child_tid = u64::from_le_bytes(w);
    t.prctl(pr::GET_PDEATHSIG, scratch)?;
    let mut d = [0u8; 4];
    mem.read(scratch, &mut d)?;
    let pdeathsig = i32::from_le_bytes(d);
    t.sigaltstack_into(scratch)?;
    let mut st = [0u8; 24];
    mem.read(scratch, &mut st)?;
    // stack_t: ss_sp, ss_flags (int, padded), ss_size.
    let flags = word(&st, 1) as u32;
    let altstack = (flags & libc::SS_DISABLE as u32 == 0).then(|| AltStack {
        sp: word(&st, 0),
        flags: flags & !(libc::SS_ONSTACK as u32),
        size: word(&st, 2),
    });
    let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map_err(proc_err(pid, "task/comm"))?
        .trim_end_matches('\n')
        .to_string();
    Ok(ThreadState {
        tid,
        name,
        regs: regs.for_resume_elsewhere().to_words(),
        xstate,
        sigmask,
        rseq,
        robust_list,
        clear_child_tid,
        altstack,
        pdeathsig,
    })
}
