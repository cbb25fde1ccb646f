//! Process-wide state of the rebuilt process: credentials, signal handlers,
//! resource limits, timers, and a cooperating process's shim block.

use super::*;

impl Restorer {
    /// The stub takes the process's groups and filesystem ids before it
    /// touches any path: from here the kernel checks its opens, lookups
    /// and creations as the process's own (its capabilities that override
    /// file permissions are dropped with a filesystem uid other than 0).
    pub(super) fn act_as_user(&mut self) -> Result<(), RestoreError> {
        let mut b = Vec::new();
        for g in &self.who.groups {
            b.extend_from_slice(&g.to_le_bytes());
        }
        let p = self.put_bytes(&b)?;
        let (uid, gid, n) = (self.who.uid, self.who.gid, self.who.groups.len());
        self.sys("setgroups", libc::SYS_setgroups, [n as u64, p, 0, 0, 0, 0])?;
        self.sys(
            "setfsgid",
            libc::SYS_setfsgid,
            [u64::from(gid), 0, 0, 0, 0, 0],
        )?;
        self.sys(
            "setfsuid",
            libc::SYS_setfsuid,
            [u64::from(uid), 0, 0, 0, 0, 0],
        )?;
        // They report the previous ids, never an error: read them back.
        let fsgid = self.sys(
            "setfsgid",
            libc::SYS_setfsgid,
            [u64::from(u32::MAX), 0, 0, 0, 0, 0],
        )?;
        let fsuid = self.sys(
            "setfsuid",
            libc::SYS_setfsuid,
            [u64::from(u32::MAX), 0, 0, 0, 0, 0],
        )?;
        if (fsuid as u32, fsgid as u32) != (uid, gid) {
            return Err(RestoreError::Incompatible(format!(
                "the stub could not take filesystem ids {uid}/{gid} (it has {fsuid}/{fsgid})"
            )));
        }
        Ok(())
    }

    pub(super) fn restore_creds(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let c = &image.creds;
        let status = procfs::status(self.pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's status",
            source,
        })?;
        let stub_groups: Vec<u32> = procfs::status_nums(&status, "Groups")
            .into_iter()
            .map(|g| g as u32)
            .collect();
        let stub_ids = |k| procfs::status_nums(&status, k);
        let stub_caps = [
            procfs::status_hex(&status, "CapInh"),
            procfs::status_hex(&status, "CapPrm"),
            procfs::status_hex(&status, "CapEff"),
        ];
        if stub_groups != c.groups {
            let mut b = Vec::new();
            for g in &c.groups {
                b.extend_from_slice(&g.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                "setgroups",
                libc::SYS_setgroups,
                [c.groups.len() as u64, p, 0, 0, 0, 0],
            )?;
        }
        let gids: Vec<u64> = c.gid.iter().map(|&g| u64::from(g)).collect();
        if stub_ids("Gid")[..3] != gids[..] {
            self.sys(
                "setresgid",
                libc::SYS_setresgid,
                [gids[0], gids[1], gids[2], 0, 0, 0],
            )?;
        }
        let uids: Vec<u64> = c.uid.iter().map(|&u| u64::from(u)).collect();
        let keep_caps = c.caps != [0, 0, 0] && c.uid != [0, 0, 0];
        if stub_ids("Uid")[..3] != uids[..] {
            if keep_caps {
                self.sys(
                    "PR_SET_KEEPCAPS",
                    libc::SYS_prctl,
                    [PR_SET_KEEPCAPS, 1, 0, 0, 0, 0],
                )?;
            }
            self.sys(
                "setresuid",
                libc::SYS_setresuid,
                [uids[0], uids[1], uids[2], 0, 0, 0],
            )?;
            if keep_caps {
                self.sys(
                    "PR_SET_KEEPCAPS",
                    libc::SYS_prctl,
                    [PR_SET_KEEPCAPS, 0, 0, 0, 0, 0],
                )?;
            }
        }
        if stub_caps != c.caps && (keep_caps || c.uid == [0, 0, 0]) {
            let mut b = Vec::new();
            b.extend_from_slice(&LINUX_CAPABILITY_VERSION_3.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            // Two data words: low and high 32 bits of each set.
            for half in [0, 32] {
                for set in [c.caps[2], c.caps[1], c.caps[0]] {
                    b.extend_from_slice(&((set >> half) as u32).to_le_bytes());
                }
            }
            let p = self.put_bytes(&b)?;
            self.sys("capset", libc::SYS_capset, [p, p + 8, 0, 0, 0, 0])?;
        }
        Ok(())
    }

    pub(super) fn restore_sigactions(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        let status = procfs::status(self.pid).map_err(|source| RestoreError::Sys {
            step: "reading the stub's status",
            source,
        })?;
        let stub_handled =
            procfs::status_hex(&status, "SigCgt") | procfs::status_hex(&status, "SigIgn");
        for a in &image.sigactions {
            let mut b = Vec::with_capacity(32);
            for w in [a.handler, a.flags, a.restorer, a.mask] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("rt_sigaction({})", a.signo),
                libc::SYS_rt_sigaction,
                [u64::from(a.signo), p, 0, 8, 0, 0],
            )?;
        }
        // The stub's own dispositions that the source did not have go back to default.
        let p = self.put_bytes(&[0u8; 32])?;
        for signo in 1..=64u32 {
            let bit = 1u64 << (signo - 1);
            if stub_handled & bit != 0 && !image.sigactions.iter().any(|a| a.signo == signo) {
                self.sys(
                    format!("resetting signal {signo}"),
                    libc::SYS_rt_sigaction,
                    [u64::from(signo), p, 0, 8, 0, 0],
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn restore_rlimits(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        for (res, l) in image.rlimits.iter().enumerate() {
            let res = res as u32;
            let cur = sys::get_rlimit(self.pid, res).map_err(|source| RestoreError::Sys {
                step: "reading the stub's limits",
                source,
            })?;
            if cur == (l.cur, l.max) {
                continue;
            }
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&l.cur.to_le_bytes());
            b.extend_from_slice(&l.max.to_le_bytes());
            let p = self.put_bytes(&b)?;
            match self
                .task
                .syscall(libc::SYS_prlimit64, [0, u64::from(res), p, 0, 0, 0])
            {
                Ok(_) => {}
                Err(InjectError::RemoteSyscall { source, .. })
                    if source.raw_os_error() == Some(libc::EPERM) =>
                {
                    return Err(RestoreError::Incompatible(format!(
                        "resource limit {res} ({}/{}) is above what this host allows the agent \
                         to set (hard limit {}; raising it needs CAP_SYS_RESOURCE)",
                        l.cur, l.max, cur.1
                    )));
                }
                Err(e) => return step(format!("setting resource limit {res}"), Err(e)),
            }
        }
        Ok(())
    }

    /// Personality, interval timers and POSIX timers (with their ids).
    pub(super) fn restore_timers(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        if image.personality != 0 {
            self.sys(
                "personality",
                libc::SYS_personality,
                [u64::from(image.personality), 0, 0, 0, 0, 0],
            )?;
        }
        for t in &image.itimers {
            let mut b = Vec::with_capacity(32);
            for w in [
                t.interval_us / 1_000_000,
                t.interval_us % 1_000_000,
                t.value_us / 1_000_000,
                t.value_us % 1_000_000,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("setitimer({})", t.which),
                libc::SYS_setitimer,
                [u64::from(t.which), p, 0, 0, 0, 0],
            )?;
        }
        if image.posix_timers.is_empty() {
            return Ok(());
        }
        // timer_create takes the id to use from *timer_id in this mode.
        self.sys(
            "PR_TIMER_CREATE_RESTORE_IDS",
            libc::SYS_prctl,
            [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
        )?;
        // /proc lists the newest first: create the oldest first.
        for t in image.posix_timers.iter().rev() {
            let target = if t.target_tid == 0 {
                0
            } else if t.target_tid == image.threads[0].tid {
                self.pid
            } else {
                image.threads[1..]
                    .iter()
                    .zip(&self.threads)
                    .find(|(s, _)| s.tid == t.target_tid)
                    .map(|(_, th)| th.tid())
                    .ok_or_else(|| {
                        RestoreError::Incompatible(format!(
                            "timer {} aims at unknown thread {}",
                            t.id, t.target_tid
                        ))
                    })?
            };
            // struct sigevent (64 bytes), then the id slot.
            let mut b = vec![0u8; 64];
            b[0..8].copy_from_slice(&t.sigval.to_le_bytes());
            b[8..12].copy_from_slice(&t.signo.to_le_bytes());
            b[12..16].copy_from_slice(&t.notify.to_le_bytes());
            b[16..20].copy_from_slice(&target.to_le_bytes());
            b.extend_from_slice(&(t.id as u64).to_le_bytes());
            let p = self.put_bytes(&b)?;
            self.sys(
                format!("timer_create (id {})", t.id),
                libc::SYS_timer_create,
                [t.clock as u64, p, p + 64, 0, 0, 0],
            )?;
            let mut got = [0u8; 4];
            step("reading a timer id", self.mem.read(p + 64, &mut got))?;
            if i32::from_le_bytes(got) != t.id {
                return Err(RestoreError::Incompatible(format!(
                    "timer {} came back as {}",
                    t.id,
                    i32::from_le_bytes(got)
                )));
            }
            // A periodic timer whose signal is still pending is re-armed by
            // the kernel only at delivery: the next expiry is an interval away.
            let value_ns = if t.value_ns == 0 {
                t.interval_ns
            } else {
                t.value_ns
            };
            if value_ns != 0 {
                let mut v = Vec::with_capacity(32);
                for w in [
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    value_ns / 1_000_000_000,
                    value_ns % 1_000_000_000,
                ] {
                    v.extend_from_slice(&w.to_le_bytes());
                }
                let q = self.put_bytes(&v)?;
                self.sys(
                    format!("timer_settime (id {})", t.id),
                    libc::SYS_timer_settime,
                    [t.id as u64, 0, q, 0, 0, 0],
                )?;
            }
        }
        self.sys(
            "PR_TIMER_CREATE_RESTORE_IDS off",
            libc::SYS_prctl,
            [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// Rewrites the state block of the process's shim (at `addr`) for its
    /// life here: each thread's id here against its virtual one, the
    /// host, one more move, the descriptors reconnected. The block went
    /// with the eager pages; one that does not decode is an error and is
    /// left alone.
    pub fn patch_shim(
        &mut self,
        image: &ProcessImage,
        addr: u64,
        host: &str,
    ) -> Result<(), RestoreError> {
        use migrate_proto::shim::{ShimState, SIZE};
        let mut b = vec![0u8; SIZE];
        step("reading the shim's state", self.mem.read(addr, &mut b))?;
        let Some(mut state) = ShimState::decode(&b) else {
            return Err(RestoreError::Incompatible(format!(
                "no shim state block of version {} at {addr:#x}",
                migrate_proto::shim::VERSION
            )));
        };
        let mut ids = vec![(image.threads[0].tid, self.pid)];
        ids.extend(
            image.threads[1..]
                .iter()
                .zip(&self.threads)
                .map(|(t, th)| (t.tid, th.tid())),
        );
        state.moved(&ids, image.ppid, host, &self.reconnected);
        state.encode_into(&mut b);
        step("writing the shim's state", self.mem.write(addr, &b))
    }
}
