//! One small program per descriptor kind and per memory kind
//! (`agent/tests/kinds/*.py`, `mem_*` for memory): each
//! sets its kind up, and after a dump and a rebuild on this host (stop-copy,
//! no network: the original killed once its pages are read, so that what it
//! held, a port or a socket path, is free) checks it from inside and prints
//! its verdict. A new kind is one program and one line here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use migrate_agent::capture::dump::Frozen;
use migrate_agent::rebuild::restore::Restorer;
use migrate_proto::PAGE_SIZE;

mod common;

/// A process killed when dropped.
struct Pid(i32);

impl Drop for Pid {
    fn drop(&mut self) {
        // SAFETY: kill with integer arguments, our own process.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Runs `kinds/NAME.py DIR`, moves it on this host, and returns its
/// verdict line (`verdict ok` when its state survived).
fn moved(name: &str) -> String {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("migrate-kind-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/kinds/{name}.py"));
    let log = dir.join("out.log");
    let err = dir.join("err.log");
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let original = Pid(pid);
    let why = || fs::read_to_string(&err).unwrap_or_default();
    assert!(
        common::wait_for(&log, "ready", 20).is_some(),
        "{name} did not start: {}",
        why()
    );

    let frozen = common::dump(pid).unwrap_or_else(|e| panic!("{name}: dump: {e}"));
    let image = frozen.image.clone();
    let mut pages = Vec::new();
    for v in &image.mm.vmas {
        for run in &v.pages {
            let addr = v.start + run.first * PAGE_SIZE;
            let mut buf = vec![0u8; (run.count * PAGE_SIZE) as usize];
            frozen.mem.read(addr, &mut buf).unwrap();
            pages.push((addr, buf));
        }
    }
    let Frozen { tasks, .. } = frozen;
    for t in tasks {
        t.kill();
    }
    let _ = child.wait();
    drop(original);

    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let mut r = Restorer::start(&image, stub).unwrap_or_else(|e| panic!("{name}: start: {e}"));
    for (addr, buf) in &pages {
        r.write_pages(*addr, buf).unwrap();
    }
    r.finish(&image)
        .unwrap_or_else(|e| panic!("{name}: rebuild: {}", migrate_agent::error_chain(&e)));
    let (new_pid, _claim) = r.resume(&[]).expect("resume");
    let copy = Pid(new_pid);
    // SAFETY: kill with integer arguments, the process we rebuilt.
    unsafe { libc::kill(new_pid, libc::SIGUSR1) };
    let verdict = common::wait_for(&log, "verdict", 10)
        .unwrap_or_else(|| panic!("{name}: no verdict after the move: {}", why()));
    drop(copy);
    let _ = fs::remove_dir_all(&dir);
    verdict
}

macro_rules! kind {
    ($test:ident, $name:literal) => {
        #[test]
        fn $test() {
            if common::root("moving the kind programs (the rebuild sets the memory map)") {
                assert_eq!(moved($name), "verdict ok");
            }
        }
    };
}

kind!(an_eventfd_keeps_its_counter, "eventfd");
kind!(a_timerfd_keeps_firing, "timerfd");
kind!(a_signalfd_reads_its_signals, "signalfd");
kind!(inotify_watches_keep_their_numbers, "inotify");
kind!(an_epoll_set_keeps_its_registrations, "epoll");
kind!(a_memfd_keeps_its_content_offset_and_seals, "memfd");
kind!(a_pipe_keeps_its_bytes, "pipe");
kind!(
    a_pipe_of_its_own_on_a_standard_stream_stays_its_own,
    "pipe_on_stderr"
);
kind!(a_socketpair_keeps_its_queued_messages, "socketpair");
kind!(a_unix_listener_takes_connections, "unix_listener");
kind!(
    unix_sockets_whose_peer_is_gone_read_their_data_and_stay_widowed,
    "unix_widowed"
);
kind!(a_tcp_listener_keeps_its_port_and_options, "tcp_listener");
kind!(
    sockets_never_bound_stay_unbound_with_their_options,
    "unbound_sockets"
);
kind!(
    files_dups_directories_and_devices_keep_their_offsets,
    "files"
);

kind!(
    private_anonymous_memory_keeps_its_content,
    "mem_anon_private"
);
kind!(
    shared_anonymous_memory_stays_shared_with_its_content,
    "mem_anon_shared"
);
kind!(two_mappings_of_one_memfd_still_share_it, "mem_memfd_twice");
kind!(
    a_private_file_mapping_keeps_its_written_pages_and_the_file_its_own,
    "mem_file_private"
);
kind!(protections_and_holes_are_kept, "mem_protections");
