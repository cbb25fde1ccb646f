//! The way back, end to end: a task whose tracer dies inside an injected
//! syscall returns to its own registers, FPU state and signal mask, and
//! to the syscall it was blocked in. The tracer is a thread that ends
//! while holding the task, which is how the kernel sees an agent die.

use std::time::{Duration, Instant};

use migrate_inject::{
    code_ranges, returning_site, sigreturn_gadget, FrameSpace, InjectError, RemoteMem, ReturnPath,
    Seized, Vdso,
};

/// Loads r12-r15, xmm0-13 and the upper halves of ymm0-7 with patterns;
/// with `fd >= 0` reads 8 bytes from it into `buf` by a raw `read` (the
/// task is stopped inside it); then spins until `*flag != 0`, checking
/// the patterns on every turn. Returns (1 if a register changed, what
/// `read` returned or -1).
///
/// # Safety
/// `flag` must point to a readable u32; `buf` to 8 writable bytes if `fd >= 0`.
#[target_feature(enable = "avx,sse4.1")]
unsafe fn spin_checking(flag: *const u32, fd: i64, buf: *mut u8) -> (u32, i64) {
    let bad: u32;
    let got: i64;
    // SAFETY: the caller's promise about `flag` and `buf`; every register
    // written is declared.
    unsafe {
        std::arch::asm!(
        "mov r12, 0x1212121212121212",
        "mov r13, 0x1313131313131313",
        "mov r14, 0x1414141414141414",
        "mov r15, 0x1515151515151515",
        "mov rax, 0x2020202020202020",
        "movq xmm0, rax",
        "mov rax, 0x4040404040404040",
        "pinsrq xmm0, rax, 1",
        "mov rax, 0x2121212121212121",
        "movq xmm1, rax",
        "mov rax, 0x4141414141414141",
        "pinsrq xmm1, rax, 1",
        "mov rax, 0x2222222222222222",
        "movq xmm2, rax",
        "mov rax, 0x4242424242424242",
        "pinsrq xmm2, rax, 1",
        "mov rax, 0x2323232323232323",
        "movq xmm3, rax",
        "mov rax, 0x4343434343434343",
        "pinsrq xmm3, rax, 1",
        "mov rax, 0x2424242424242424",
        "movq xmm4, rax",
        "mov rax, 0x4444444444444444",
        "pinsrq xmm4, rax, 1",
        "mov rax, 0x2525252525252525",
        "movq xmm5, rax",
        "mov rax, 0x4545454545454545",
        "pinsrq xmm5, rax, 1",
        "mov rax, 0x2626262626262626",
        "movq xmm6, rax",
        "mov rax, 0x4646464646464646",
        "pinsrq xmm6, rax, 1",
        "mov rax, 0x2727272727272727",
        "movq xmm7, rax",
        "mov rax, 0x4747474747474747",
        "pinsrq xmm7, rax, 1",
        "mov rax, 0x2828282828282828",
        "movq xmm8, rax",
        "mov rax, 0x4848484848484848",
        "pinsrq xmm8, rax, 1",
        "mov rax, 0x2929292929292929",
        "movq xmm9, rax",
        "mov rax, 0x4949494949494949",
        "pinsrq xmm9, rax, 1",
        "mov rax, 0x2a2a2a2a2a2a2a2a",
        "movq xmm10, rax",
        "mov rax, 0x4a4a4a4a4a4a4a4a",
        "pinsrq xmm10, rax, 1",
        "mov rax, 0x2b2b2b2b2b2b2b2b",
        "movq xmm11, rax",
        "mov rax, 0x4b4b4b4b4b4b4b4b",
        "pinsrq xmm11, rax, 1",
        "mov rax, 0x2c2c2c2c2c2c2c2c",
        "movq xmm12, rax",
        "mov rax, 0x4c4c4c4c4c4c4c4c",
        "pinsrq xmm12, rax, 1",
        "mov rax, 0x2d2d2d2d2d2d2d2d",
        "movq xmm13, rax",
        "mov rax, 0x4d4d4d4d4d4d4d4d",
        "pinsrq xmm13, rax, 1",
        "mov rax, 0x6060606060606060",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm0, ymm0, xmm14, 1",
        "mov rax, 0x6161616161616161",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm1, ymm1, xmm14, 1",
        "mov rax, 0x6262626262626262",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm2, ymm2, xmm14, 1",
        "mov rax, 0x6363636363636363",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm3, ymm3, xmm14, 1",
        "mov rax, 0x6464646464646464",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm4, ymm4, xmm14, 1",
        "mov rax, 0x6565656565656565",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm5, ymm5, xmm14, 1",
        "mov rax, 0x6666666666666666",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm6, ymm6, xmm14, 1",
        "mov rax, 0x6767676767676767",
        "movq xmm14, rax",
        "punpcklqdq xmm14, xmm14",
        "vinsertf128 ymm7, ymm7, xmm14, 1",
        "xor {bad:e}, {bad:e}",
        "mov {got}, -1",
        "test {fd}, {fd}",
        "js 2f",
        "xor eax, eax",
        "mov rdi, {fd}",
        "mov rsi, {buf}",
        "mov edx, 8",
        "syscall",
        "mov {got}, rax",
        "2:",
        "mov rax, 0x1212121212121212",
        "cmp r12, rax",
        "jne 4f",
        "mov rax, 0x1313131313131313",
        "cmp r13, rax",
        "jne 4f",
        "mov rax, 0x1414141414141414",
        "cmp r14, rax",
        "jne 4f",
        "mov rax, 0x1515151515151515",
        "cmp r15, rax",
        "jne 4f",
        "movq rax, xmm0",
        "mov rcx, 0x2020202020202020",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm0, 1",
        "mov rcx, 0x4040404040404040",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm1",
        "mov rcx, 0x2121212121212121",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm1, 1",
        "mov rcx, 0x4141414141414141",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm2",
        "mov rcx, 0x2222222222222222",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm2, 1",
        "mov rcx, 0x4242424242424242",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm3",
        "mov rcx, 0x2323232323232323",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm3, 1",
        "mov rcx, 0x4343434343434343",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm4",
        "mov rcx, 0x2424242424242424",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm4, 1",
        "mov rcx, 0x4444444444444444",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm5",
        "mov rcx, 0x2525252525252525",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm5, 1",
        "mov rcx, 0x4545454545454545",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm6",
        "mov rcx, 0x2626262626262626",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm6, 1",
        "mov rcx, 0x4646464646464646",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm7",
        "mov rcx, 0x2727272727272727",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm7, 1",
        "mov rcx, 0x4747474747474747",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm8",
        "mov rcx, 0x2828282828282828",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm8, 1",
        "mov rcx, 0x4848484848484848",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm9",
        "mov rcx, 0x2929292929292929",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm9, 1",
        "mov rcx, 0x4949494949494949",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm10",
        "mov rcx, 0x2a2a2a2a2a2a2a2a",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm10, 1",
        "mov rcx, 0x4a4a4a4a4a4a4a4a",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm11",
        "mov rcx, 0x2b2b2b2b2b2b2b2b",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm11, 1",
        "mov rcx, 0x4b4b4b4b4b4b4b4b",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm12",
        "mov rcx, 0x2c2c2c2c2c2c2c2c",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm12, 1",
        "mov rcx, 0x4c4c4c4c4c4c4c4c",
        "cmp rax, rcx",
        "jne 4f",
        "movq rax, xmm13",
        "mov rcx, 0x2d2d2d2d2d2d2d2d",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm13, 1",
        "mov rcx, 0x4d4d4d4d4d4d4d4d",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm0, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6060606060606060",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm1, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6161616161616161",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm2, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6262626262626262",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm3, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6363636363636363",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm4, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6464646464646464",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm5, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6565656565656565",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm6, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6666666666666666",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "vextractf128 xmm15, ymm7, 1",
        "movq rax, xmm15",
        "mov rcx, 0x6767676767676767",
        "cmp rax, rcx",
        "jne 4f",
        "pextrq rax, xmm15, 1",
        "cmp rax, rcx",
        "jne 4f",
        "cmp dword ptr [{flag}], 0",
        "jne 3f",
        "pause",
        "jmp 2b",
        "4:",
        "mov {bad:e}, 1",
        "3:",
        flag = in(reg) flag,
        fd = in(reg) fd,
        buf = in(reg) buf,
        bad = out(reg) bad,
        got = out(reg) got,
        out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _, out("r11") _,
        out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        );
    }
    (bad, got)
}

fn sig_blocked(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("SigBlk:"))
        .unwrap()
        .to_string()
}

/// A forked task, killed if the test ends first.
struct Task(i32);

impl Drop for Task {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: our own child, by pid; `status` is a valid out-pointer.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, &mut status, libc::__WALL);
        }
    }
}

/// Exit status of `pid` within `secs`, or it is killed and the test fails.
fn wait_exit(pid: i32, secs: u64) -> i32 {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r == pid {
            return status;
        }
        if Instant::now() > until {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the task did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Forks a task running [`spin_checking`] (reading from a pipe first if
/// `blocked`), seizes it from a thread, starts an injected `getppid`, and
/// ends that thread at the syscall's entry with the task held, with or
/// without a way back. Returns the task's wait status.
fn abandon_inside_a_syscall(blocked: bool, way_back: bool) -> i32 {
    if !(std::arch::is_x86_feature_detected!("avx")
        && std::arch::is_x86_feature_detected!("sse4.1"))
    {
        panic!("this test needs AVX and SSE4.1");
    }
    // SAFETY: a fresh shared anonymous page, never unmapped.
    let flag = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(flag, libc::MAP_FAILED);
    let flag = flag.cast::<u32>();
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw system calls and runs the asm
    // routine before `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut buf = [0u8; 8];
        let mut set = 1u64 << (libc::SIGUSR1 - 1);
        // SAFETY: blocks SIGUSR1 (a kernel sigset of 8 bytes); `flag`
        // and `buf` are valid; `_exit` ends the child.
        unsafe {
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &set, 0, 8);
            let fd = if blocked { i64::from(pipe[0]) } else { -1 };
            let (bad, got) = spin_checking(flag, fd, buf.as_mut_ptr());
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, 0, &mut set, 8);
            let code = if bad != 0 {
                10
            } else if blocked && (got != 8 || &buf != b"way back") {
                11
            } else if set & (1u64 << (libc::SIGUSR1 - 1)) == 0 {
                12
            } else {
                0
            };
            libc::_exit(code);
        }
    }
    let task = Task(pid);
    std::thread::sleep(Duration::from_millis(200));
    let blk = sig_blocked(pid);
    let tracer = std::thread::spawn(move || {
        let mem = RemoteMem::open(pid).unwrap();
        let exec = code_ranges(pid);
        let mut t = Seized::seize(pid).unwrap();
        let Vdso {
            range: vdso,
            syscall: insn,
            ..
        } = Vdso::find(pid, &mem).unwrap();
        t.set_syscall_insn(insn);
        if way_back {
            let (site, leave) = returning_site(&mem, vdso).expect("a returning syscall");
            let sigreturn = sigreturn_gadget(&mem, &exec, 1 << 30).expect("a gadget");
            let sp = t.regs().0.rsp;
            let top = (sp - 128) & !15;
            t.set_way_back(
                ReturnPath {
                    site,
                    leave,
                    sigreturn,
                },
                &FrameSpace::new(top - 16384, top),
                &mem,
            )
            .unwrap();
        }
        // A real syscall first, all the way through.
        assert_eq!(
            t.syscall(libc::SYS_getpid, [0; 6]).unwrap(),
            u64::try_from(pid).unwrap()
        );
        t.set_midway(|| Err("the tracer dies here".into()));
        let e = t.syscall(libc::SYS_getppid, [0; 6]);
        assert!(matches!(e, Err(InjectError::Interrupted { .. })), "{e:?}");
        // The thread ends holding the task: the kernel detaches it.
        std::mem::forget(t);
    });
    tracer.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    if way_back {
        // Running again, with its signal mask.
        assert_eq!(sig_blocked(pid), blk);
    }
    if blocked {
        // SAFETY: writes 8 bytes from a valid buffer to our pipe.
        let n = unsafe { libc::write(pipe[1], b"way back".as_ptr().cast(), 8) };
        assert_eq!(n, 8);
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: `flag` is the shared page mapped above.
    unsafe { std::ptr::write_volatile(flag, 1) };
    let status = wait_exit(pid, 10);
    std::mem::forget(task);
    // SAFETY: closes our own pipe.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    status
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else {
        format!("signal {}", libc::WTERMSIG(status))
    }
}

#[test]
fn a_task_abandoned_inside_an_injected_syscall_returns_to_its_registers() {
    let status = abandon_inside_a_syscall(false, true);
    assert_eq!(describe(status), "exit 0");
}

#[test]
fn a_task_abandoned_inside_an_injected_syscall_returns_to_its_own_blocked_read() {
    let status = abandon_inside_a_syscall(true, true);
    assert_eq!(describe(status), "exit 0");
}

#[test]
fn without_a_way_back_the_kernel_kills_the_task() {
    let status = abandon_inside_a_syscall(false, false);
    assert_eq!(describe(status), format!("signal {}", libc::SIGKILL));
}
