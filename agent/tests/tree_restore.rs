//! A process tree dumped and rebuilt on this host (stop-copy, no
//! network): every member frozen before any is read, the originals killed
//! once read, the root rebuilt in a stub and every other member forked
//! from its rebuilt parent with its pid, session and group, zombies ended
//! with their status; a pipe and a socketpair between parent and child
//! made once, shared memory one object, the open file both write to
//! passed from one to the other. The family checks itself after the move
//! (`scripts/tree_family.py`); the test checks the relations from `/proc`,
//! that private memory shared copy-on-write before the move is shared
//! again after it (the same physical pages), and that parent and child
//! wrote to one open file.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use migrate_agent::capture::dump::{freeze_and_dump_tree, FrozenTree};
use migrate_agent::host::access::Caller;
use migrate_agent::rebuild::family;
use migrate_proto::image::{Fill, ImageLimits};
use migrate_proto::msg::{MigrateOptions, Mode};
use migrate_proto::PAGE_SIZE;

mod common;

/// (ppid, pgrp, session) of `pid`.
fn stat_relations(pid: i32) -> (i32, i32, i32) {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<i32> = text[text.rfind(')').unwrap() + 2..]
        .split(' ')
        .skip(1)
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    (f[0], f[1], f[2])
}

/// How many of the `n` pages from `addr` are the same physical page in
/// processes `a` and `b` (root reads frame numbers from pagemap).
fn same_frames(a: i32, b: i32, addr: u64, n: usize) -> usize {
    let frames = |pid: i32| {
        let mut buf = vec![0u8; n * 8];
        fs::File::open(format!("/proc/{pid}/pagemap"))
            .and_then(|f| f.read_exact_at(&mut buf, addr / 4096 * 8))
            .unwrap();
        buf.chunks(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .map(|w| (w >> 63 == 1).then_some(w & ((1 << 55) - 1)))
            .collect::<Vec<_>>()
    };
    let (x, y) = (frames(a), frames(b));
    x.iter()
        .zip(&y)
        .filter(|(p, q)| p.is_some_and(|f| f != 0) && p == q)
        .count()
}

/// Kills `pid` (a process this test started, or rebuilt).
fn kill(pid: i32) {
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_family_moves_and_checks_itself() {
    if !common::root("rebuilding a tree (pids, the memory map, frame numbers)") {
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
    let words: Vec<u64> = ready
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [root, child, grandchild, zombie, killed, base] = words[..] else {
        kill(original.id() as i32);
        panic!("no ready line: {ready:?}");
    };
    let [root, child, grandchild, zombie, killed] =
        [root, child, grandchild, zombie, killed].map(|p| p as i32);
    let pids = [root, child, grandchild, zombie, killed];
    let shared_before = same_frames(root, child, base, 4096);

    let opts = MigrateOptions {
        mode: Mode::StopCopy,
        ..Default::default()
    };
    let dumped = freeze_and_dump_tree(root, &Caller::ROOT, &opts, &Default::default(), &mut || {
        Ok(())
    });
    let dumped = dumped.inspect(|t| {
        // As a destination checks it before building anything.
        let checked = t.image().validate(&ImageLimits::default());
        assert_eq!(checked, Ok(()), "the tree's image is refused");
    });
    let FrozenTree { relations, members } = match dumped {
        Ok(t) => t,
        Err(e) => {
            for p in [grandchild, child, root] {
                kill(p);
            }
            panic!("dump: {}", migrate_agent::error_chain(&e));
        }
    };
    let mut found: Vec<i32> = relations.iter().map(|r| r.pid).collect();
    found.sort_unstable();
    let mut want = pids.to_vec();
    want.sort_unstable();
    assert_eq!(found, want);
    let status = |pid: i32| relations.iter().find(|r| r.pid == pid).unwrap().exit;
    assert_eq!(status(zombie), Some(5 << 8));
    assert_eq!(status(killed), Some(libc::SIGTERM));
    // Every member's own pages read (not those it shares with its parent),
    // then the originals killed and gone, their pids free again.
    let mut images = Vec::new();
    let mut pages = Vec::new();
    let mut parents_pages = 0;
    for m in members {
        let Some(frozen) = m else {
            images.push(None);
            pages.push(Vec::new());
            continue;
        };
        let mut mine = Vec::new();
        for v in &frozen.image.mm.vmas {
            for run in &v.pages {
                if run.fill == Fill::Parent {
                    parents_pages += run.count;
                    continue;
                }
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
    // The child's and grandchild's copies of the 16 MiB, at least.
    assert!(parents_pages >= 2 * 4000, "{parents_pages} pages shared");
    let _ = original.wait();
    assert!(
        common::wait_until(10, || {
            // SAFETY: waitpid with a null status pointer.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            pids.iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
        }),
        "the originals did not go"
    );

    let stub = Path::new(env!("CARGO_BIN_EXE_migrate-agent"));
    let refs: Vec<_> = images.iter().map(Option::as_ref).collect();
    let stub = migrate_agent::rebuild::restore::Stub::spawn(stub, relations[0].pid).expect("stub");
    let restorers = family::start(stub, &relations, &refs, |i, r| {
        for (addr, buf) in &pages[i] {
            r.write_pages(*addr, buf)?;
        }
        Ok::<(), migrate_agent::rebuild::restore::RestoreError>(())
    })
    .unwrap_or_else(|e| panic!("rebuild: {}", migrate_agent::error_chain(&e)));
    let mut kin = migrate_agent::fd::Kin::default();
    let mut running = Vec::new();
    for (r, image) in restorers.into_iter().zip(&images) {
        let (Some(mut r), Some(image)) = (r, image) else {
            continue;
        };
        r.finish_in_tree(image, &kin)
            .unwrap_or_else(|e| panic!("rebuild: {}", migrate_agent::error_chain(&e)));
        kin.note(r.pid, image);
        running.push(r);
    }
    let mut claims = Vec::new();
    for r in running {
        claims.push(r.resume(&[]).expect("resume"));
    }
    // Relations as they were: the child leads its group, the grandchild
    // its session; the private pages shared as before.
    let seen = [stat_relations(child), stat_relations(grandchild)];
    let shared_after = same_frames(root, child, base, 4096);
    // SAFETY: kill with integer arguments, the process we rebuilt.
    unsafe { libc::kill(root, libc::SIGUSR1) };
    let verdict = common::wait_for(&log, "verdict", 10);
    for p in [grandchild, child, root] {
        kill(p);
    }
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
    assert_eq!(seen[0].0, root);
    assert_eq!(seen[0].1, child, "the child's group");
    assert_eq!(
        (seen[1].0, seen[1].2),
        (child, grandchild),
        "the grandchild's parent and session"
    );
    println!("private pages shared by parent and child: {shared_before} of 4096 before, {shared_after} after");
    assert!(
        shared_after + 8 >= shared_before && shared_before > 4000,
        "private pages shared by parent and child: {shared_before} of 4096 before, {shared_after} after"
    );
}
