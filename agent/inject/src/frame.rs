//! The way back: a signal frame that returns a task to its own registers
//! if its tracer dies inside an injected syscall.
//!
//! Such a syscall runs from a `syscall` instruction of the vDSO that is
//! followed only by register clears (perhaps a `leave` first) and `ret`,
//! with the stack pointer on a signal frame written into dead stack below
//! the task's own (the space the kernel itself writes signal frames into).
//! The frame's return address is an `rt_sigreturn` gadget of the task's
//! own code (`mov $15, %eax; syscall`: glibc's and musl's `__restore_rt`,
//! Go's `sigreturn`). With the tracer alive the task never gets that far:
//! it stops at the syscall's exit and the tracer puts its registers back.
//! If the tracer dies anywhere in between, the kernel detaches the task,
//! which finishes the syscall, returns into the gadget, and `rt_sigreturn`
//! loads the frame: its registers, FPU state and signal mask as they were,
//! an interrupted syscall set to run again (as a release by the tracer
//! does). The frame's alternate-stack field is invalid on purpose, so that
//! `rt_sigreturn` leaves the task's alternate stack as it is.

use crate::regs::Regs;

/// Where an injected syscall runs from and returns through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPath {
    /// A `syscall` instruction followed by register clears and `ret`.
    pub site: u64,
    /// Whether `leave` comes first (then `rbp` must point just below the
    /// frame, so that `leave` leaves the stack pointer on it).
    pub leave: bool,
    /// An `rt_sigreturn` gadget: `mov $15, %eax` (or `%rax`), `syscall`.
    pub sigreturn: u64,
}

/// The dead stack the tasks of one process share for their frames
/// (`floor..top`), and which task's frame it holds: a task's frame is
/// written before its injected syscall only if another's took its place.
#[derive(Debug, Clone)]
pub struct FrameSpace {
    /// Lowest usable address.
    pub floor: u64,
    /// The frames go below it.
    pub top: u64,
    holder: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl FrameSpace {
    /// Space in `floor..top`, holding no frame yet.
    pub fn new(floor: u64, top: u64) -> FrameSpace {
        FrameSpace {
            floor,
            top,
            holder: Default::default(),
        }
    }

    /// Whether it holds task `tid`'s frame.
    pub(crate) fn holds(&self, tid: i32) -> bool {
        self.holder.load(std::sync::atomic::Ordering::Relaxed) == tid
    }

    /// Notes that it now holds task `tid`'s frame.
    pub(crate) fn now_holds(&self, tid: i32) {
        self.holder.store(tid, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A signal frame laid out below some address, ready to be written.
#[derive(Debug, Clone)]
pub struct SigFrame {
    /// Where `bytes` go.
    pub base: u64,
    /// The frame, its FPU state and the word `leave` pops.
    pub bytes: Vec<u8>,
    /// The stack pointer the injected syscall runs with: the frame's
    /// return address (`pretcode`), which `ret` pops. For a path with
    /// `leave`, the frame pointer is `base`, the word just below it.
    pub sp: u64,
}

/// Why no frame could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The extended state is not an XSAVE area (too short for its header).
    #[error("the FPU state is not an XSAVE area")]
    NoXsaveLayout,
    /// The thread holds dynamically enabled state (AMX tile data), which
    /// a frame of the static size cannot carry; how large a frame the
    /// thread may take cannot be known from outside.
    #[error("the thread holds dynamically enabled FPU state (AMX tile data)")]
    DynamicState,
    /// The frame does not fit between `floor` and `top`.
    #[error("no room for a signal frame of {need} bytes")]
    NoRoom {
        /// Bytes the frame needs.
        need: u64,
    },
}

/// `FP_XSTATE_MAGIC1`, `FP_XSTATE_MAGIC2` (`asm/sigcontext.h`).
const MAGIC1: u32 = 0x4650_5853;
const MAGIC2: u32 = 0x4650_5845;
/// Offset of `sw_reserved` in the FXSAVE area, where a signal frame
/// describes its XSAVE layout (`struct _fpx_sw_bytes`).
const SW_BYTES: usize = 464;
/// Offset of the XSAVE header (`XSTATE_BV` first).
const XSAVE_HEADER: usize = 512;
/// x87 and SSE, always restored.
const XFEATURE_FP_SSE: u64 = 0x3;
/// XTILEDATA, the dynamically enabled component.
const XFEATURE_XTILEDATA: u64 = 1 << 18;

/// Where the dynamically enabled component (XTILEDATA, AMX) starts in
/// the standard XSAVE layout, if the CPU has it (CPUID leaf 0xD, sub-leaf
/// 18: its size, then its offset). It is the last component: what lies
/// before it is the static state every thread's signal frame can hold,
/// whether or not it asked for AMX. Asked of the CPU once (CPUID traps
/// to the hypervisor in a VM: 7.4 µs here, and every thread of a dump
/// asks, inside the freeze).
pub fn dynamic_state_offset() -> Option<usize> {
    static OFFSET: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let c = std::arch::x86_64::__cpuid_count(0xD, 18);
        (c.eax != 0 && c.ebx != 0).then_some(c.ebx as usize)
    })
}

/// The part of `xstate` a frame carries: on a CPU with dynamic state
/// starting at `dynamic_at`, the static state before it (the size the
/// kernel gives the signal frames of a thread that never asked for AMX,
/// which rt_sigreturn accepts from any thread); the whole of it
/// otherwise. A thread whose tile data is in use is refused by [`build`].
pub fn static_part(xstate: &[u8], dynamic_at: Option<usize>) -> &[u8] {
    match dynamic_at {
        Some(at) if at < xstate.len() => &xstate[..at],
        _ => xstate,
    }
}
/// `UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`.
const UC_FLAGS: u64 = 0x1 | 0x2 | 0x4;
/// An `ss_flags` `sigaltstack` rejects: the alternate stack is kept.
const SS_INVALID: u32 = 3;

/// `struct rt_sigframe` of x86_64: `pretcode`, `struct ucontext` (304
/// bytes), `siginfo_t` (128).
const FRAME_LEN: u64 = 8 + 304 + 128;
/// Offsets in the frame.
const UC_FLAGS_AT: usize = 8;
const UC_STACK_AT: usize = 24;
const MCONTEXT_AT: usize = 48;
const SIGMASK_AT: usize = 48 + 256;

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Lays out a frame that returns a task to `regs` with the extended FPU
/// state `xstate` (as `PTRACE_GETREGSET(NT_X86_XSTATE)` gives it) and
/// blocked signals `sigmask`, in `floor..top` (dead stack), the way the
/// kernel lays out a signal frame: the FPU state on top, aligned to 64,
/// the frame below it, aligned so that the stack is 16-aligned once the
/// return address is popped.
pub fn build(
    regs: &Regs,
    xstate: &[u8],
    sigmask: u64,
    path: &ReturnPath,
    floor: u64,
    top: u64,
) -> Result<SigFrame, FrameError> {
    // The state's own header says which components are not in their
    // initial state; rt_sigreturn loads those and initialises the others,
    // which were initial anyway.
    let xstate_bv = xstate
        .get(XSAVE_HEADER..XSAVE_HEADER + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or(FrameError::NoXsaveLayout)?;
    if xstate_bv & XFEATURE_XTILEDATA != 0 {
        return Err(FrameError::DynamicState);
    }
    let xfeatures = xstate_bv | XFEATURE_FP_SSE;
    let xlen = xstate.len() as u64;
    let fp_len = xlen + 4;
    let need = fp_len + 64 + FRAME_LEN + 16 + 8 + 8;
    let fpstate = top.checked_sub(fp_len).ok_or(FrameError::NoRoom { need })? & !63;
    let sp = (fpstate
        .checked_sub(FRAME_LEN)
        .ok_or(FrameError::NoRoom { need })?
        & !15)
        .checked_sub(8)
        .ok_or(FrameError::NoRoom { need })?;
    // `leave` pops one word from below the frame into `rbp`.
    let base = sp.checked_sub(8).ok_or(FrameError::NoRoom { need })?;
    if base < floor {
        return Err(FrameError::NoRoom { need });
    }
    let mut b = vec![0u8; (top - base) as usize];
    let at = |addr: u64| (addr - base) as usize;

    let f = at(sp);
    put(&mut b, f, &path.sigreturn.to_le_bytes());
    put(&mut b, f + UC_FLAGS_AT, &UC_FLAGS.to_le_bytes());
    // uc_stack: ss_sp, ss_flags (int, padded), ss_size.
    put(&mut b, f + UC_STACK_AT + 8, &SS_INVALID.to_le_bytes());
    let r = &regs.0;
    let mut mc = [0u8; 256];
    for (i, v) in [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut mc, i * 8, &v.to_le_bytes());
    }
    // cs, gs, fs, ss (16 bits each); gs and fs are not restored.
    put(&mut mc, 144, &(r.cs as u16).to_le_bytes());
    put(&mut mc, 150, &(r.ss as u16).to_le_bytes());
    // fpstate pointer; err, trapno, oldmask, cr2 stay zero.
    put(&mut mc, 184, &fpstate.to_le_bytes());
    put(&mut b, f + MCONTEXT_AT, &mc);
    put(&mut b, f + SIGMASK_AT, &sigmask.to_le_bytes());

    let p = at(fpstate);
    put(&mut b, p, xstate);
    // The layout description rt_sigreturn checks: its size and features,
    // and the second magic word right after the state.
    put(&mut b, p + SW_BYTES, &MAGIC1.to_le_bytes());
    put(&mut b, p + SW_BYTES + 4, &(fp_len as u32).to_le_bytes());
    put(&mut b, p + SW_BYTES + 8, &xfeatures.to_le_bytes());
    put(&mut b, p + SW_BYTES + 16, &(xlen as u32).to_le_bytes());
    put(&mut b, p + xlen as usize, &MAGIC2.to_le_bytes());
    Ok(SigFrame { base, bytes: b, sp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Regs {
        let mut w = [0u64; 27];
        for (i, x) in w.iter_mut().enumerate() {
            *x = 0x1000 + i as u64;
        }
        Regs::from_words(&w).unwrap()
    }

    fn xstate(len: usize, xstate_bv: u64) -> Vec<u8> {
        let mut x = vec![0xaa; len];
        x[XSAVE_HEADER..XSAVE_HEADER + 8].copy_from_slice(&xstate_bv.to_le_bytes());
        x
    }

    const PATH: ReturnPath = ReturnPath {
        site: 0x7000,
        leave: true,
        sigreturn: 0x8000,
    };

    fn u64_at(f: &SigFrame, addr: u64) -> u64 {
        let i = (addr - f.base) as usize;
        u64::from_le_bytes(f.bytes[i..i + 8].try_into().unwrap())
    }

    #[test]
    fn the_frame_is_laid_out_as_the_kernel_reads_it() {
        let top = 0x7fff_f000_0f37;
        let x = xstate(2696, 0x2e4);
        let f = build(&regs(), &x, 0x4001, &PATH, 0, top).unwrap();
        assert_eq!(f.base + f.bytes.len() as u64, top);
        // After `ret` pops the return address the stack is 16-aligned, and
        // rt_sigreturn finds the frame one word below it.
        assert_eq!((f.sp + 8) % 16, 0);
        assert_eq!(u64_at(&f, f.sp), PATH.sigreturn);
        assert_eq!(u64_at(&f, f.sp + 8), UC_FLAGS);
        let mc = f.sp + MCONTEXT_AT as u64;
        let r = regs().0;
        assert_eq!(u64_at(&f, mc), r.r8);
        assert_eq!(u64_at(&f, mc + 13 * 8), r.rax);
        assert_eq!(u64_at(&f, mc + 15 * 8), r.rsp);
        assert_eq!(u64_at(&f, mc + 16 * 8), r.rip);
        assert_eq!(u64_at(&f, f.sp + SIGMASK_AT as u64), 0x4001);
        // The FPU state: 64-aligned, inside the range, described, ended by
        // the second magic word.
        let fp = u64_at(&f, mc + 184);
        assert_eq!(fp % 64, 0);
        assert!(fp >= f.sp + FRAME_LEN && fp + 2696 + 4 <= top);
        let i = (fp - f.base) as usize;
        assert_eq!(&f.bytes[i + 2696..i + 2700], &MAGIC2.to_le_bytes());
        assert_eq!(
            &f.bytes[i + SW_BYTES..i + SW_BYTES + 4],
            &MAGIC1.to_le_bytes()
        );
        assert_eq!(
            &f.bytes[i + SW_BYTES + 4..i + SW_BYTES + 8],
            &2700u32.to_le_bytes()
        );
        // Every component in use, and x87 and SSE, are loaded.
        assert_eq!(
            &f.bytes[i + SW_BYTES + 8..i + SW_BYTES + 16],
            &0x2e7u64.to_le_bytes()
        );
        // Kept as given around the description.
        assert_eq!(f.bytes[i], 0xaa);
        assert_eq!(f.bytes[i + 2695], 0xaa);
        // `leave` pops the word at base into rbp and leaves rsp on the frame.
        assert_eq!(f.base + 8, f.sp);
    }

    #[test]
    fn frames_that_cannot_be_right_are_not_made() {
        let top = 0x10_0000;
        let legacy = vec![0u8; 512];
        assert_eq!(
            build(&regs(), &legacy, 0, &PATH, 0, top).unwrap_err(),
            FrameError::NoXsaveLayout
        );
        let amx = xstate(11008, 0x602e7);
        assert_eq!(
            build(&regs(), &amx, 0, &PATH, 0, top).unwrap_err(),
            FrameError::DynamicState
        );
        // On a CPU with AMX a thread not using its tile data gets a frame
        // of the static state alone, which the kernel takes from any
        // thread; one using it is refused.
        let idle_amx = xstate(11008, 0x202e7);
        let part = static_part(&idle_amx, Some(2816));
        assert_eq!(part.len(), 2816);
        let f = build(&regs(), part, 0, &PATH, 0, top).unwrap();
        let p = u64_at(&f, f.sp + MCONTEXT_AT as u64 + 184);
        let sw = (p - f.base) as usize + SW_BYTES;
        assert_eq!(&f.bytes[sw + 16..sw + 20], &2816u32.to_le_bytes());
        assert_eq!(
            &f.bytes[(p - f.base) as usize + 2816..][..4],
            &MAGIC2.to_le_bytes()
        );
        assert_eq!(
            build(&regs(), static_part(&amx, Some(2816)), 0, &PATH, 0, top).unwrap_err(),
            FrameError::DynamicState
        );
        assert_eq!(static_part(&idle_amx, None).len(), 11008);
        let x = xstate(2696, 0x2e7);
        assert!(matches!(
            build(&regs(), &x, 0, &PATH, top - 3000, top),
            Err(FrameError::NoRoom { .. })
        ));
        assert!(build(&regs(), &x, 0, &PATH, top - 4000, top).is_ok());
    }
}
