//! Dump a live process and rebuild it on the same host (no network): the
//! freeze/dump/restore mechanism on its own, stop-and-copy.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use migrate_agent::capture::dump::Frozen;
use migrate_agent::rebuild::restore::Restorer;
use migrate_proto::PAGE_SIZE;

mod common;

const SCRIPT: &str = include_str!("scripts/local_restore_victim.py");

#[test]
fn python_survives_local_stop_copy_restore() {
    if !common::root("python_survives_local_stop_copy_restore") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("migrate-local-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("out.log");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(dir.join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    assert!(
        common::wait_for(&log, "tick 3 ", 20).is_some(),
        "victim did not start"
    );

    let frozen = common::dump(pid).expect("dump");
    let image = frozen.image.clone();
    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let mut r = Restorer::start(&image, stub).expect("restore start");
    let mut buf = Vec::new();
    for v in &image.mm.vmas {
        for run in &v.pages {
            let addr = v.start + run.first * PAGE_SIZE;
            buf.resize((run.count * PAGE_SIZE) as usize, 0);
            frozen.mem.read(addr, &mut buf).unwrap();
            r.write_pages(addr, &buf).unwrap();
        }
    }
    r.finish(&image).expect("restore finish");
    let Frozen { tasks, .. } = frozen;
    for t in tasks {
        t.kill();
    }
    let _ = child.wait();
    let (new_pid, _claim) = r.resume(&[]).expect("resume");
    assert_ne!(new_pid, pid);
    let needle = "tick ";
    let before = fs::read_to_string(&log).unwrap().matches(needle).count();
    // It goes on ticking: more than five new ticks, waited for (bounded),
    // not expected within a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut after = before;
    while after <= before + 5 && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(20));
        after = fs::read_to_string(&log).unwrap().matches(needle).count();
    }
    assert!(
        after > before + 5,
        "no ticks after restore: {before} -> {after}\n{}",
        fs::read_to_string(dir.join("err.log")).unwrap_or_default()
    );
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(new_pid, libc::SIGUSR1) };
    assert!(
        common::wait_for(&log, "verify ok", 10).is_some(),
        "verify failed: {}",
        fs::read_to_string(&log).unwrap()
    );
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(new_pid, libc::SIGKILL) };
    let _ = fs::remove_dir_all(&dir);
}
