//! x86_64 general registers and the syscall-restart rules.

/// `user_regs_struct` of x86_64.
#[derive(Clone, Copy)]
pub struct Regs(pub libc::user_regs_struct);

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Regs {{ rip: {:#x}, rsp: {:#x}, rax: {:#x}, orig_rax: {:#x} }}",
            self.0.rip, self.0.rsp, self.0.rax, self.0.orig_rax
        )
    }
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// Length of the x86_64 `syscall` instruction.
pub const SYSCALL_INSN_LEN: u64 = 2;

impl Regs {
    /// The 27 words in `user_regs_struct` order.
    pub fn to_words(&self) -> Vec<u64> {
        let r = &self.0;
        vec![
            r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx,
            r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base,
            r.gs_base, r.ds, r.es, r.fs, r.gs,
        ]
    }

    /// Builds registers from [`Regs::to_words`] output; `None` if the length is wrong.
    pub fn from_words(w: &[u64]) -> Option<Regs> {
        if w.len() != 27 {
            return None;
        }
        Some(Regs(libc::user_regs_struct {
            r15: w[0],
            r14: w[1],
            r13: w[2],
            r12: w[3],
            rbp: w[4],
            rbx: w[5],
            r11: w[6],
            r10: w[7],
            r9: w[8],
            r8: w[9],
            rax: w[10],
            rcx: w[11],
            rdx: w[12],
            rsi: w[13],
            rdi: w[14],
            orig_rax: w[15],
            rip: w[16],
            cs: w[17],
            eflags: w[18],
            rsp: w[19],
            ss: w[20],
            fs_base: w[21],
            gs_base: w[22],
            ds: w[23],
            es: w[24],
            fs: w[25],
            gs: w[26],
        }))
    }

    /// Whether the task was stopped inside a syscall the kernel would restart.
    pub fn in_restartable_syscall(&self) -> bool {
        (self.0.orig_rax as i64) >= 0
            && matches!(
                -(self.0.rax as i64),
                ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
            )
    }

    /// Registers that re-execute an interrupted syscall when the task runs
    /// from them in another process: `rax = orig_rax`, `rip -= 2`, and
    /// `orig_rax = -1` so the kernel itself restarts nothing. Never hands the
    /// task `restart_syscall`, whose restart block belongs to another task.
    pub fn for_resume_elsewhere(&self) -> Regs {
        let mut r = *self;
        if self.in_restartable_syscall() {
            r.0.rax = self.0.orig_rax;
            r.0.rip -= SYSCALL_INSN_LEN;
        }
        r.0.orig_rax = u64::MAX;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Regs {
        Regs::from_words(&[0; 27]).unwrap()
    }

    #[test]
    fn words_round_trip() {
        let mut r = zero();
        r.0.rip = 0x401000;
        r.0.fs_base = 0x7fff_0000;
        let back = Regs::from_words(&r.to_words()).unwrap();
        assert_eq!(back.0.rip, 0x401000);
        assert_eq!(back.0.fs_base, 0x7fff_0000);
        assert!(Regs::from_words(&[0; 26]).is_none());
    }

    #[test]
    fn restart_becomes_reexecution() {
        let mut r = zero();
        r.0.orig_rax = 230; // clock_nanosleep
        r.0.rax = (-ERESTART_RESTARTBLOCK) as u64;
        r.0.rip = 0x1002;
        let e = r.for_resume_elsewhere();
        assert_eq!(e.0.rax, 230);
        assert_eq!(e.0.rip, 0x1000);
        assert_eq!(e.0.orig_rax, u64::MAX);

        let mut done = zero();
        done.0.orig_rax = 1;
        done.0.rax = 5; // write returned 5: nothing to restart
        done.0.rip = 0x2002;
        let e = done.for_resume_elsewhere();
        assert_eq!(e.0.rax, 5);
        assert_eq!(e.0.rip, 0x2002);
    }
}
