//! Dump a live process and rebuild it on the same host (no network): the
//! freeze/dump/restore mechanism on its own, stop-and-copy.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use migrate_agent::capture::dump::{freeze_and_dump, Frozen, Scouted};
use migrate_agent::rebuild::restore::Restorer;
use migrate_proto::msg::{MigrateOptions, Mode};
use migrate_proto::PAGE_SIZE;

const SCRIPT: &str = r#"
import os, signal, sys, time, hashlib
os.closerange(3, 4096)
data = [bytes([i % 251]) * 4096 for i in range(12000)]
digest = hashlib.sha256(b"".join(data)).hexdigest()
def verify(*_):
    ok = hashlib.sha256(b"".join(data)).hexdigest() == digest
    print("verify", "ok" if ok else "FAIL", flush=True)
signal.signal(signal.SIGUSR1, verify)
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    print("tick", n, os.getpid(), flush=True)
    time.sleep(0.01)
"#;

fn wait_for(path: &Path, needle: &str, secs: u64) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn python_survives_local_stop_copy_restore() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run as root"
        );
        eprintln!("SKIP python_survives_local_stop_copy_restore: needs root");
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
    assert!(wait_for(&log, "tick 3 ", 20), "victim did not start");

    let frozen = freeze_and_dump(
        pid,
        &migrate_agent::host::access::Caller::ROOT,
        &MigrateOptions {
            mode: Mode::StopCopy,
            ..Default::default()
        },
        &[],
        None,
        Scouted::take(pid),
        &Default::default(),
    )
    .expect("dump");
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
    sleep(Duration::from_millis(300));
    let text = fs::read_to_string(&log).unwrap();
    let after = text.matches(needle).count();
    assert!(
        after > before + 5,
        "no ticks after restore: {before} -> {after}\n{}",
        fs::read_to_string(dir.join("err.log")).unwrap_or_default()
    );
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(new_pid, libc::SIGUSR1) };
    assert!(
        wait_for(&log, "verify ok", 10),
        "verify failed: {}",
        fs::read_to_string(&log).unwrap()
    );
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(new_pid, libc::SIGKILL) };
    let _ = fs::remove_dir_all(&dir);
}
