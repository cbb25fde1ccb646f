//! Holds known values in SSE (and, where the CPU has it, AVX) registers
//! across syscalls, the way a frozen process holds them across the freeze,
//! and checks them after every sleep: prints `round <n> ok` or
//! `round <n> FAIL`. The freeze lands inside one of its sleeps, so a
//! migration that loses FPU/vector state shows up as FAIL.

use std::arch::asm;
use std::io::Write;

/// Sleeps `rounds` times for 10 ms with xmm8..xmm15 (and their upper
/// halves with AVX) holding patterns; returns how many checks failed.
fn hold_and_check(rounds: u64, avx: bool) -> u64 {
    let ts: [i64; 2] = [0, 10_000_000];
    let pattern: [u64; 4] = [
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        0x1111_2222_3333_4444,
        0x5555_6666_7777_8888,
    ];
    let mut bad: u64 = 0;
    if avx {
        // SAFETY: only registers named as clobbered are touched; `ts` and
        // `pattern` outlive the block; nanosleep reads `ts`.
        unsafe {
            asm!(
                "vmovdqu ymm8, [{p}]",
                "vpxor ymm9, ymm8, ymm8",
                "vpcmpeqb ymm9, ymm9, ymm9",
                "vpxor ymm10, ymm8, ymm9",
                "2:",
                "mov eax, 35",
                "mov rdi, {ts}",
                "xor esi, esi",
                "syscall",
                "vmovdqu ymm11, [{p}]",
                "vpcmpeqb ymm12, ymm8, ymm11",
                "vpmovmskb eax, ymm12",
                "cmp eax, -1",
                "je 3f",
                "inc {bad}",
                "3:",
                "vpxor ymm13, ymm8, ymm9",
                "vpcmpeqb ymm13, ymm13, ymm10",
                "vpmovmskb eax, ymm13",
                "cmp eax, -1",
                "je 4f",
                "inc {bad}",
                "4:",
                "dec {n}",
                "jnz 2b",
                "vzeroupper",
                p = in(reg) pattern.as_ptr(),
                ts = in(reg) ts.as_ptr(),
                n = inout(reg) rounds => _,
                bad = inout(reg) bad,
                out("rax") _, out("rdi") _, out("rsi") _, out("rcx") _, out("r11") _,
                out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
            );
        }
    } else {
        // SAFETY: as above, with the SSE registers only.
        unsafe {
            asm!(
                "movdqu xmm8, [{p}]",
                "movdqu xmm9, [{p} + 16]",
                "2:",
                "mov eax, 35",
                "mov rdi, {ts}",
                "xor esi, esi",
                "syscall",
                "movdqu xmm11, [{p}]",
                "pcmpeqb xmm11, xmm8",
                "pmovmskb eax, xmm11",
                "cmp eax, 0xffff",
                "je 3f",
                "inc {bad}",
                "3:",
                "movdqu xmm12, [{p} + 16]",
                "pcmpeqb xmm12, xmm9",
                "pmovmskb eax, xmm12",
                "cmp eax, 0xffff",
                "je 4f",
                "inc {bad}",
                "4:",
                "dec {n}",
                "jnz 2b",
                p = in(reg) pattern.as_ptr(),
                ts = in(reg) ts.as_ptr(),
                n = inout(reg) rounds => _,
                bad = inout(reg) bad,
                out("rax") _, out("rdi") _, out("rsi") _, out("rcx") _, out("r11") _,
                out("xmm8") _, out("xmm9") _, out("xmm11") _, out("xmm12") _,
            );
        }
    }
    bad
}

fn main() {
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let avx = std::arch::is_x86_feature_detected!("avx2");
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "pid {}\nready avx={avx}", std::process::id());
    let _ = out.flush();
    let mut n = 0u64;
    loop {
        n += 1;
        let bad = hold_and_check(20, avx);
        let _ = writeln!(out, "round {n} {}", if bad == 0 { "ok" } else { "FAIL" });
        let _ = out.flush();
    }
}
