//! CPU affinity of tasks, and holding tasks on one CPU.

use std::io;

use super::check;

/// A CPU affinity as 64-bit words, CPU `n` in bit `n % 64` of word `n / 64`.
pub type AffinityWords = [u64; 16];

fn set_to_words(set: &libc::cpu_set_t) -> AffinityWords {
    let mut w = [0u64; 16];
    for cpu in 0..(libc::CPU_SETSIZE as usize).min(16 * 64) {
        // SAFETY: `cpu` is below CPU_SETSIZE: the read is inside `set`.
        if unsafe { libc::CPU_ISSET(cpu, set) } {
            w[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    w
}

/// Sets a task's CPU affinity given as [`AffinityWords`] (`tid` 0: the
/// calling thread).
pub fn set_affinity_words(tid: i32, words: &AffinityWords) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..(libc::CPU_SETSIZE as usize).min(16 * 64) {
        if words[cpu / 64] & (1 << (cpu % 64)) != 0 {
            // SAFETY: `cpu` is below CPU_SETSIZE: the write is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    set_affinity(tid, &set)
}

/// Sets the calling thread's CPU affinity to `cpus`, if given (a thread
/// started by one held by a [`CpuPin`] takes back what its creator had);
/// best effort: the thread runs either way.
pub fn take_cpus(cpus: Option<&AffinityWords>) {
    if let Some(cpus) = cpus {
        let _ = set_affinity_words(0, cpus);
    }
}

/// A task's CPU affinity (`sched_getaffinity`).
fn affinity(tid: i32) -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable for the size passed.
    let ret =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    check(libc::c_long::from(ret))?;
    Ok(set)
}

/// Sets a task's CPU affinity (`sched_setaffinity`).
fn set_affinity(tid: i32, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is readable for the size passed.
    let ret = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    check(libc::c_long::from(ret)).map(|_| ())
}

/// The CPU the calling thread runs on (`sched_getcpu`).
fn current_cpu() -> io::Result<usize> {
    // SAFETY: no arguments; returns a CPU number or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    check(libc::c_long::from(cpu)).map(|c| c as usize)
}

/// Tasks held on one CPU with the thread that drives them through
/// ptrace, each stop and resume a wake-up on the same CPU instead of one
/// across CPUs (which costs tens of µs on a VM, milliseconds over the
/// system calls of a dump); their own affinity is put back on drop.
/// Threads the pinned thread starts inherit the pin: those that need no
/// ptrace take [`CpuPin::before_me`] back.
pub struct CpuPin {
    /// The pinning thread.
    me: i32,
    saved: Vec<(i32, libc::cpu_set_t)>,
}

impl CpuPin {
    /// Pins the calling thread and `tids` to the CPU it runs on, those
    /// it can (a task whose affinity excludes that CPU is left alone).
    pub fn near_me(tids: &[i32]) -> CpuPin {
        Self::near_me_noting(tids, |_| Ok(()))
    }

    /// As [`CpuPin::near_me`], first handing `note` each task's affinity
    /// as it is (as [`AffinityWords`]) before any is changed; if `note`
    /// fails, nothing is pinned.
    pub fn near_me_noting(
        tids: &[i32],
        note: impl FnOnce(&[(i32, AffinityWords)]) -> io::Result<()>,
    ) -> CpuPin {
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::gettid() };
        let tids: Vec<i32> = std::iter::once(me).chain(tids.iter().copied()).collect();
        let mut saved = Vec::new();
        let Ok(cpu) = current_cpu() else {
            return CpuPin { me, saved };
        };
        if cpu >= libc::CPU_SETSIZE as usize {
            return CpuPin { me, saved };
        }
        // SAFETY: all zeroes is the empty set; `cpu` is below CPU_SETSIZE,
        // so CPU_SET writes inside it.
        let one = unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            one
        };
        let mut plan = Vec::new();
        for tid in tids {
            let Ok(old) = affinity(tid) else { continue };
            // SAFETY: `cpu` is below CPU_SETSIZE: the read is inside `old`.
            if unsafe { libc::CPU_ISSET(cpu, &old) } {
                plan.push((tid, old));
            }
        }
        let words: Vec<(i32, AffinityWords)> = plan
            .iter()
            .map(|(t, set)| (*t, set_to_words(set)))
            .collect();
        if note(&words).is_err() {
            return CpuPin { me, saved };
        }
        for (tid, old) in plan {
            if set_affinity(tid, &one).is_ok() {
                saved.push((tid, old));
            }
        }
        CpuPin { me, saved }
    }

    /// The pinning thread's affinity before the pin (`None`: it was not
    /// pinned), for the threads it starts meanwhile that drive no ptrace
    /// (page writers, the fault handler's threads) to run on every CPU
    /// it could.
    pub fn before_me(&self) -> Option<AffinityWords> {
        self.saved
            .iter()
            .find(|(t, _)| *t == self.me)
            .map(|(_, old)| set_to_words(old))
    }

    /// Counts `tid`, a thread `parent` (pinned here) created and which
    /// inherited the pin, as pinned too: it gets `parent`'s affinity back.
    pub fn inherit(&mut self, tid: i32, parent: i32) {
        if let Some(&(_, old)) = self.saved.iter().find(|(t, _)| *t == parent) {
            self.saved.push((tid, old));
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        for (tid, old) in &self.saved {
            let _ = set_affinity(*tid, old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: every index is below CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
            .collect()
    }

    #[test]
    fn a_pin_holds_the_tasks_on_one_cpu_and_gives_their_affinity_back() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // SAFETY: as above.
        let me = unsafe { libc::gettid() };
        let before = (cpus(&affinity(me).unwrap()), cpus(&affinity(tid).unwrap()));
        {
            let pin = CpuPin::near_me(&[tid]);
            let mine = cpus(&affinity(me).unwrap());
            assert_eq!(mine.len(), 1, "the calling thread is on one CPU: {mine:?}");
            assert_eq!(
                cpus(&affinity(tid).unwrap()),
                mine,
                "the other task is on the same one"
            );
            // A thread started now inherits the pin; it takes back what
            // the pinning thread had.
            let words = pin.before_me().expect("the calling thread was pinned");
            let started = std::thread::spawn(move || {
                let inherited = cpus(&affinity(0).unwrap());
                set_affinity_words(0, &words).unwrap();
                (inherited, cpus(&affinity(0).unwrap()))
            })
            .join()
            .unwrap();
            assert_eq!(started, (mine, before.0.clone()));
        }
        let after = (cpus(&affinity(me).unwrap()), cpus(&affinity(tid).unwrap()));
        assert_eq!(after, before);
        stop_tx.send(()).unwrap();
        other.join().unwrap();
    }
}
