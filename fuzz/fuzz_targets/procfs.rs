//! The agent's parsers of `/proc` text, fed anything (a process names its
//! own command, its mappings' paths and its threads' names): none may
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_agent::host::procfs::{self, FdInfo};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = procfs::parse_maps(&text);
    let _ = procfs::parse_advice(&text);
    let _ = procfs::parse_timers(&text);
    let _ = procfs::parse_limits(&text);
    if let Some(fields) = procfs::parse_stat(&text) {
        for n in 0..60 {
            let _ = procfs::stat_field(&fields, n);
        }
    }
    let _ = procfs::auxv_pairs(data);
    let info = FdInfo {
        fd: 3,
        target: "anon_inode:[eventpoll]".into(),
        flags: 0,
        pos: 0,
        mode: 0,
        rdev: 0,
        ino: 0,
        extra: text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    };
    let _ = info.inotify_watches();
    let _ = info.epoll_entries();
});
