//! Where injected syscalls run: a `syscall` instruction (`0f 05`) in the
//! task's vDSO, which every process has mapped read-only and executable;
//! and the way back from one ([`crate::frame`]): a `syscall` from which the
//! task returns, and an `rt_sigreturn` gadget in its own code.

use crate::RemoteMem;

/// `mov $15, %rax; syscall` (glibc's and musl's `__restore_rt`) and
/// `mov $15, %eax; syscall` (Go's `sigreturn`).
const SIGRETURN_GADGETS: [&[u8]; 2] = [
    &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
    &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
];

/// Whether the code after a `syscall` instruction reaches `ret` having
/// only cleared registers other than the stack pointer, perhaps after a
/// `leave`: `Some(leave)` if so.
fn returns_after(code: &[u8]) -> Option<bool> {
    let leave = code.first() == Some(&0xc9);
    let mut i = usize::from(leave);
    for _ in 0..16 {
        match code.get(i..)? {
            [0xc3, ..] => return Some(leave),
            // xor r32, r32 (register form), not into %esp.
            [0x31, m, ..] if *m >= 0xc0 && *m & 7 != 4 => i += 2,
            // The same with a REX prefix (REX.B: %r12d is not %esp).
            [rex @ 0x40..=0x4f, 0x31, m, ..] if *m >= 0xc0 && (*m & 7 != 4 || rex & 1 == 1) => {
                i += 3
            }
            _ => return None,
        }
    }
    None
}

/// A `syscall` instruction in the vDSO at `start..end` after which the task
/// returns (`ret`) having only cleared registers, preferably without a
/// `leave`: `(address, leave)`.
pub fn returning_site(mem: &RemoteMem, (start, end): (u64, u64)) -> Option<(u64, bool)> {
    let mut buf = vec![0u8; usize::try_from(end.checked_sub(start)?).ok()?];
    mem.read(start, &mut buf).ok()?;
    let mut with_leave = None;
    for off in (0..buf.len().saturating_sub(1)).filter(|&i| buf[i..].starts_with(&[0x0f, 0x05])) {
        match returns_after(&buf[off + 2..]) {
            Some(false) => return Some((start + off as u64, false)),
            Some(true) if with_leave.is_none() => with_leave = Some((start + off as u64, true)),
            _ => {}
        }
    }
    with_leave
}

/// The first `rt_sigreturn` gadget in `ranges` of the process's memory,
/// reading at most `budget` bytes in all.
pub fn sigreturn_gadget(mem: &RemoteMem, ranges: &[(u64, u64)], budget: u64) -> Option<u64> {
    const CHUNK: u64 = 1 << 20;
    const OVERLAP: u64 = 8;
    let mut left = budget;
    let mut buf = vec![0u8; (CHUNK + OVERLAP) as usize];
    for &(start, end) in ranges {
        let mut at = start;
        while at < end && left > 0 {
            let len = (end - at).min(CHUNK + OVERLAP).min(left);
            let b = &mut buf[..len as usize];
            if mem.read_direct(at, b).is_err() {
                break;
            }
            left -= len.min(CHUNK);
            let found =
                (0..b.len()).find(|&i| SIGRETURN_GADGETS.iter().any(|g| b[i..].starts_with(g)));
            if let Some(i) = found {
                return Some(at + i as u64);
            }
            at += CHUNK;
        }
    }
    None
}

/// Whether `at` holds an `rt_sigreturn` gadget.
pub fn is_sigreturn_gadget(mem: &RemoteMem, at: u64) -> bool {
    let mut b = [0u8; 9];
    mem.read(at, &mut b).is_ok() && SIGRETURN_GADGETS.iter().any(|g| b.starts_with(g))
}

/// A task's vDSO and the `syscall` instruction injections run from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vdso {
    /// Where it is mapped.
    pub range: (u64, u64),
    /// Its first `syscall` instruction.
    pub syscall: u64,
    /// A hash of its bytes (two processes with the same hash have the
    /// same vDSO).
    pub hash: u64,
}

impl Vdso {
    /// The vDSO of process `pid` (from `/proc/<pid>/maps`), read through
    /// `mem`; `None` if it has none or it has no `syscall`.
    pub fn find(pid: i32, mem: &RemoteMem) -> Option<Vdso> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let range = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .and_then(range_of)?;
        Vdso::at(mem, range)
    }

    /// The vDSO mapped at `range` (for a caller that has read the maps
    /// already), read through `mem`.
    pub fn at(mem: &RemoteMem, range: (u64, u64)) -> Option<Vdso> {
        let (syscall, hash) = syscall_site(mem, range)?;
        Some(Vdso {
            range,
            syscall,
            hash,
        })
    }
}

/// The address range of a `/proc/<pid>/maps` line.
fn range_of(line: &str) -> Option<(u64, u64)> {
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// The executable mappings of process `pid` (where to look for an
/// `rt_sigreturn` gadget), in address order.
pub fn code_ranges(pid: i32) -> Vec<(u64, u64)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter_map(range_of)
        .collect()
}

/// The first `syscall` instruction in the vDSO mapped at `start..end` of
/// the process `mem` reads, and a hash of the whole vDSO (two processes
/// with the same hash have the same vDSO, so the same site).
pub fn syscall_site(mem: &RemoteMem, (start, end): (u64, u64)) -> Option<(u64, u64)> {
    let mut buf = vec![0u8; usize::try_from(end.checked_sub(start)?).ok()?];
    mem.read(start, &mut buf).ok()?;
    let off = buf.windows(2).position(|w| w == [0x0f, 0x05])?;
    Some((start + off as u64, fnv1a(&buf)))
}

/// FNV-1a over a byte string.
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returning_code_is_recognised() {
        // Linux 6.18's vDSO: clock_getres's fallback, gettimeofday's.
        assert_eq!(
            returns_after(&[
                0x31, 0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, 0x45, 0x31, 0xdb, 0xc3
            ]),
            Some(false)
        );
        assert_eq!(
            returns_after(&[0xc9, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0xc3]),
            Some(true)
        );
        assert_eq!(returns_after(&[0xc3]), Some(false));
        // Anything else: memory, the stack pointer, other instructions.
        assert_eq!(returns_after(&[0x31, 0xe4, 0xc3]), None);
        assert_eq!(returns_after(&[0x48, 0x31, 0xe4, 0xc3]), None);
        assert_eq!(returns_after(&[0x49, 0x31, 0xe4, 0xc3]), Some(false));
        assert_eq!(returns_after(&[0x31, 0x10, 0xc3]), None);
        assert_eq!(returns_after(&[0x48, 0x8d, 0x65, 0xf0, 0xc3]), None);
        assert_eq!(returns_after(&[0x31, 0xd2]), None);
    }

    /// This process has a way back: its vDSO a returning syscall, its C
    /// library `__restore_rt`.
    #[test]
    fn this_process_has_a_way_back() {
        let pid = std::process::id() as i32;
        let exec = code_ranges(pid);
        let mem = RemoteMem::open(pid).unwrap();
        let vdso = Vdso::find(pid, &mem).expect("a vDSO").range;
        assert!(returning_site(&mem, vdso).is_some());
        let g = sigreturn_gadget(&mem, &exec, 1 << 30).expect("a sigreturn gadget");
        assert!(is_sigreturn_gadget(&mem, g));
        assert!(!is_sigreturn_gadget(&mem, vdso.0));
    }

    /// Found from `/proc`, the same as from the range.
    #[test]
    fn the_vdso_is_found_from_proc() {
        let pid = std::process::id() as i32;
        let mem = RemoteMem::open(pid).unwrap();
        let v = Vdso::find(pid, &mem).expect("a vDSO");
        assert_eq!(syscall_site(&mem, v.range), Some((v.syscall, v.hash)));
    }

    /// Our own vDSO has a syscall site, the same each time.
    #[test]
    fn the_vdso_has_a_syscall_site() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let vdso = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                )
            })
            .expect("a vDSO");
        let mem = RemoteMem::open(std::process::id() as i32).unwrap();
        let (at, hash) = syscall_site(&mem, vdso).expect("a syscall site");
        assert!(vdso.0 <= at && at + 2 <= vdso.1);
        assert_eq!(syscall_site(&mem, vdso), Some((at, hash)));
    }
}
