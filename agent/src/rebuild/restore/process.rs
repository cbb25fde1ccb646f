//! Process-wide state of the rebuilt process: credentials, signal handlers,
//! resource limits, timers, and a cooperating process's shim block.

use super::*;

impl Restorer {
    /// The stub takes the process's groups and filesystem ids before it
    /// touches any path: from here the kernel checks its opens, lookups
    /// and creations as the process's own (its capabilities that override
    /// file permissions are dropped with a filesystem uid other than 0).
    pub(super) fn act_as_user(&mut self) -> Result<(), RestoreError> {
        let groups = self.who.groups.clone();
        let (uid, gid) = (self.who.uid, self.who.gid);
        self.setgroups(&groups)?;
        self.setfsgid(gid)?;
        self.setfsuid(uid)?;
        // They report the previous ids, never an error: read them back.
        let fsgid = self.setfsgid(u32::MAX)?;
        let fsuid = self.setfsuid(u32::MAX)?;
        if (fsuid, fsgid) != (uid, gid) {
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
            self.setgroups(&c.groups)?;
        }
        let gids: Vec<u64> = c.gid.iter().map(|&g| u64::from(g)).collect();
        if stub_ids("Gid")[..3] != gids[..] {
            self.setresgid(c.gid)?;
        }
        let uids: Vec<u64> = c.uid.iter().map(|&u| u64::from(u)).collect();
        let keep_caps = c.caps != [0, 0, 0] && c.uid != [0, 0, 0];
        if stub_ids("Uid")[..3] != uids[..] {
            if keep_caps {
                self.prctl_set_keepcaps(true)?;
            }
            self.setresuid(c.uid)?;
            if keep_caps {
                self.prctl_set_keepcaps(false)?;
            }
        }
        if stub_caps != c.caps && (keep_caps || c.uid == [0, 0, 0]) {
            // The image's sets are (inheritable, permitted, effective).
            self.capset(c.caps[2], c.caps[1], c.caps[0])?;
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
            self.rt_sigaction(a)?;
        }
        // The stub's own dispositions that the source did not have go back to default.
        for signo in 1..=64u32 {
            let bit = 1u64 << (signo - 1);
            if stub_handled & bit != 0 && !image.sigactions.iter().any(|a| a.signo == signo) {
                self.sigaction_default(signo)?;
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
            if self.try_prlimit64(res, l.cur, l.max)?.is_err() {
                // EPERM.
                return Err(RestoreError::Incompatible(format!(
                    "resource limit {res} ({}/{}) is above what this host allows the agent \
                     to set (hard limit {}; raising it needs CAP_SYS_RESOURCE)",
                    l.cur, l.max, cur.1
                )));
            }
        }
        Ok(())
    }

    /// Personality, interval timers and POSIX timers (with their ids).
    pub(super) fn restore_timers(&mut self, image: &ProcessImage) -> Result<(), RestoreError> {
        if image.personality != 0 {
            self.personality(image.personality)?;
        }
        for t in &image.itimers {
            self.setitimer(t)?;
        }
        if image.posix_timers.is_empty() {
            return Ok(());
        }
        // timer_create takes the id to use from *timer_id in this mode.
        self.prctl_timer_create_restore_ids(true)?;
        // /proc lists the newest first: create the oldest first.
        for t in image.posix_timers.iter().rev() {
            let target = if t.target_tid == 0 {
                0
            } else {
                self.id_seen_inside(image, t.target_tid).ok_or_else(|| {
                    RestoreError::Incompatible(format!(
                        "timer {} aims at unknown thread {}",
                        t.id, t.target_tid
                    ))
                })?
            };
            let ev = calls::SigEvent {
                value: t.sigval,
                signo: t.signo,
                notify: t.notify,
                tid: target,
            };
            let got = self.timer_create(t.clock, &ev, t.id)?;
            if got != t.id {
                return Err(RestoreError::Incompatible(format!(
                    "timer {} came back as {got}",
                    t.id
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
                self.timer_settime(t.id, t.interval_ns, value_ns)?;
            }
        }
        self.prctl_timer_create_restore_ids(false)
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
        let ids: Vec<(i32, i32)> = image
            .threads
            .iter()
            .filter_map(|t| Some((t.tid, self.id_seen_inside(image, t.tid)?)))
            .collect();
        state.moved(&ids, image.ppid, host, &self.reconnected);
        state.encode_into(&mut b);
        step("writing the shim's state", self.mem.write(addr, &b))
    }
}
