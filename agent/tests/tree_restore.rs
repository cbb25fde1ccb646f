//! A process tree dumped and rebuilt on this host (stop-copy, no
//! network): every member frozen before any is read, the originals killed
//! once read, the stubs made with their pids, parents and groups, each
//! member rebuilt in turn, a pipe between parent and child made once and
//! opened by the other, shared memory one object, the open file both
//! write to passed from one to the other. The family checks itself after
//! the move: the bytes in flight and after, the child's write to the
//! shared page, the child's group and parent, both children's exit codes
//! reaped by the parent; the test, that both wrote to one open file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use migrate_agent::capture::dump::{freeze_and_dump_tree, FrozenTree};
use migrate_agent::host::access::Caller;
use migrate_agent::rebuild::family;
use migrate_proto::msg::{MigrateOptions, Mode};
use migrate_proto::PAGE_SIZE;

mod common;

/// Kills `pid` (a process this test started, or rebuilt).
fn kill(pid: i32) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_family_moves_and_checks_itself() {
    if !common::root("rebuilding a tree (the stubs' pids, the memory map)") {
        return;
    }
    // The originals' orphans come to this process to be reaped, not to
    // the host's init (which may reap nothing), so that their pids are
    // free again for the rebuild.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir: PathBuf = std::env::temp_dir().join(format!("migrate-tree-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/tree_family.py");
    let log = dir.join("out.log");
    let mut original = Command::new("/usr/bin/python3")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(dir.join("err.log")).unwrap())
        .spawn()
        .unwrap();
    let ready = common::wait_for(&log, "ready", 20);
    let pids: Vec<i32> = ready
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [root, child, zombie] = pids[..] else {
        kill(original.id() as i32);
        panic!("no ready line: {ready:?}");
    };

    let opts = MigrateOptions {
        mode: Mode::StopCopy,
        ..Default::default()
    };
    let dumped = freeze_and_dump_tree(root, &Caller::ROOT, &opts, &Default::default());
    let FrozenTree { relations, members } = match dumped {
        Ok(t) => t,
        Err(e) => {
            kill(child);
            kill(root);
            panic!("dump: {}", migrate_agent::error_chain(&e));
        }
    };
    assert_eq!(
        relations.iter().map(|r| r.pid).collect::<Vec<_>>(),
        [root, child, zombie]
    );
    assert_eq!(relations[2].exit, Some(5 << 8), "the zombie's status");
    // Every page of every member read, then the originals killed and
    // gone, their pids free again.
    let mut images = Vec::new();
    let mut pages = Vec::new();
    for m in members {
        let Some(frozen) = m else {
            images.push(None);
            pages.push(Vec::new());
            continue;
        };
        let mut mine = Vec::new();
        for v in &frozen.image.mm.vmas {
            for run in &v.pages {
                let addr = v.start + run.first * PAGE_SIZE;
                let mut buf = vec![0u8; (run.count * PAGE_SIZE) as usize];
                frozen.mem.read(addr, &mut buf).unwrap();
                mine.push((addr, buf));
            }
        }
        pages.push(mine);
        images.push(Some(frozen.image.clone()));
        for t in frozen.tasks {
            t.kill();
        }
    }
    let _ = original.wait();
    assert!(
        common::wait_until(10, || {
            // SAFETY: waitpid with a null status pointer.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            pids.iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
        }),
        "the originals did not go: {:?}",
        pids.iter()
            .map(|p| fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
            .collect::<Vec<_>>()
    );

    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let refs: Vec<_> = images.iter().map(Option::as_ref).collect();
    let restorers = family::start(stub, &relations, &refs)
        .unwrap_or_else(|e| panic!("stubs: {}", migrate_agent::error_chain(&e)));
    let mut kin = migrate_agent::fd::Kin::default();
    let mut running = Vec::new();
    for ((r, image), pages) in restorers.into_iter().zip(&images).zip(&pages) {
        let (Some(mut r), Some(image)) = (r, image) else {
            continue;
        };
        for (addr, buf) in pages {
            r.write_pages(*addr, buf).unwrap();
        }
        r.finish_in_tree(image, &kin)
            .unwrap_or_else(|e| panic!("rebuild: {}", migrate_agent::error_chain(&e)));
        kin.note(r.pid, image);
        running.push(r);
    }
    let mut claims = Vec::new();
    for r in running {
        claims.push(r.resume(&[]).expect("resume"));
    }
    // SAFETY: kill with integer arguments, the process we rebuilt.
    unsafe { libc::kill(root, libc::SIGUSR1) };
    let verdict = common::wait_for(&log, "verdict", 10);
    kill(child);
    kill(root);
    drop(claims);
    let text = fs::read_to_string(&log).unwrap_or_default()
        + &fs::read_to_string(dir.join("err.log")).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(verdict.as_deref(), Some("verdict ok"), "{text:?}");
    // The child's stdout is still the parent's open file.
    assert!(
        text.contains("\nchild after the move\nverdict ok\n"),
        "{text:?}"
    );
}
