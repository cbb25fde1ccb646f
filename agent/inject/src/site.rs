//! Where injected syscalls run: a `syscall` instruction (`0f 05`) in the
//! task's vDSO, which every process has mapped read-only and executable.

use crate::RemoteMem;

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
