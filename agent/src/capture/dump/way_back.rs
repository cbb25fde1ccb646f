//! Where the dump's injected syscalls write and how they return if the
//! agent dies inside one: scratch in the dead stack, and the way back
//! ([`migrate_inject::frame`]).

use super::*;
use migrate_inject::FrameSpace;

/// Where injected syscalls write what they read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scratch {
    /// Dead stack below the main thread's: nothing to undo.
    Stack(u64),
    /// A page mapped for it, unmapped afterwards.
    Page(u64),
}

impl Scratch {
    pub(super) fn addr(self) -> u64 {
        match self {
            Scratch::Stack(a) | Scratch::Page(a) => a,
        }
    }
}

/// Bytes of scratch the injected reads need (the largest, `struct
/// sigaction` and `itimerspec`, take 32).
pub(super) const SCRATCH_LEN: u64 = 64;

/// Scratch memory in the main stack below the main thread's stack pointer
/// and its red zone: memory the program cannot count on (the kernel
/// writes signal frames there whenever it likes), so using it changes
/// nothing the program sees, and abandoning it leaves nothing behind.
/// Only when that thread's stack pointer is in the main stack (`[stack]`,
/// not a thread's or a runtime's own stack, nor a signal stack, where what
/// lies below may be live) and the bytes are there and writable. Returns
/// the scratch and the bottom of the stack (the dead space below the
/// scratch, where the way back's frames go, is down to it).
pub(super) fn stack_scratch(
    regs: &Regs,
    maps: &[procfs::MapsEntry],
    mem: &RemoteMem,
) -> Option<(u64, u64)> {
    const RED_ZONE: u64 = 128;
    let sp = regs.0.rsp;
    let stack = maps
        .iter()
        .find(|m| m.path == "[stack]" && m.start <= sp && sp < m.end)?;
    let at = sp.checked_sub(RED_ZONE + SCRATCH_LEN)? & !15;
    if at < stack.start {
        return None;
    }
    mem.write(at, &[0u8; SCRATCH_LEN as usize]).ok()?;
    Some((at, stack.start))
}

/// Gives every task's injected syscalls a way back through a frame in the
/// dead stack below the scratch at `scratch` (down to `floor`), so that an
/// agent dying inside one leaves the process as it was
/// ([`migrate_inject::frame`]). Tasks it cannot be given to keep the
/// fallback: the kernel kills the process rather than let it run from an
/// injection's registers.
pub(super) fn give_way_back(
    pid: i32,
    tasks: &mut [Seized],
    mem: &RemoteMem,
    vdso: (u64, u64),
    sigreturn: Option<u64>,
    status: &[(String, String)],
    (scratch, floor): (u64, u64),
) {
    let shadow_stack = procfs::status_get(status, "x86_Thread_features")
        .is_some_and(|f| f.split_whitespace().any(|f| f == "shstk"));
    let path = (|| {
        if shadow_stack {
            return Err("it uses a shadow stack".to_string());
        }
        let sigreturn = sigreturn
            .filter(|&g| migrate_inject::is_sigreturn_gadget(mem, g))
            .ok_or("no rt_sigreturn gadget in its code")?;
        let (site, leave) = migrate_inject::returning_site(mem, vdso)
            .ok_or("no syscall in its vDSO returns straight away")?;
        Ok(ReturnPath {
            site,
            leave,
            sigreturn,
        })
    })();
    let path = match path {
        Ok(p) => p,
        Err(why) => {
            debug!(pid, why, "no way back out of injected syscalls");
            return;
        }
    };
    let space = FrameSpace::new(floor, scratch);
    for t in tasks {
        if let Err(e) = t.set_way_back(path, &space, mem) {
            debug!(pid, tid = t.tid(), error = %e, "no way back out of injected syscalls");
        }
    }
}

/// Inside each syscall injected into the original: the failpoint there.
pub(super) fn in_syscall() -> Result<(), String> {
    crate::failpoints::hit("source.dump.in-syscall").map_err(|e| e.to_string())
}

/// Scratch for the injected reads: dead stack below the main thread's
/// (then the way back out of injected syscalls goes below it), or,
/// without room there, a page mapped for it (unmapped before the maps are
/// read).
pub(super) fn scratch(
    pid: i32,
    tasks: &mut [Seized],
    maps: &[procfs::MapsEntry],
    mem: &RemoteMem,
    vdso: (u64, u64),
    sigreturn: Option<u64>,
    status: &[(String, String)],
) -> Result<Scratch, DumpError> {
    Ok(match stack_scratch(&tasks[0].regs(), maps, mem) {
        Some(stack) => {
            give_way_back(pid, tasks, mem, vdso, sigreturn, status, stack);
            Scratch::Stack(stack.0)
        }
        None => Scratch::Page(tasks[0].map_anonymous(PAGE_SIZE)?),
    })
}
