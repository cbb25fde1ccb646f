//! What the source sends besides pages: the migration id, the clock probe,
//! the core, the shipped files' content.

use super::*;

pub(super) fn migration_id(pid: i32) -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (pid as u64) << 32
}

/// A transport error in words, a stall (no progress within
/// [`STALL_TIMEOUT`]) named as such.
pub(super) fn frame_error(e: &frame::FrameError) -> String {
    match e {
        frame::FrameError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!(
                "no progress for {} s: the link or the destination is down",
                STALL_TIMEOUT.as_secs()
            )
        }
        _ => error_chain(e),
    }
}

/// Estimates the destination's clock offset (destination minus source,
/// microseconds) and its uncertainty by Cristian's method: the peer's time
/// plus half the round trip, over several probes, keeping the tightest.
pub(super) fn sync_clock(
    ctl: &mut PeerStream,
    seq: &Sequencer,
) -> Result<(i64, u64), frame::FrameError> {
    crate::session::clock::offset(CLOCK_PROBES, || {
        seq.send(ctl, &SourceMsg::ClockProbe)?;
        match seq.recv::<DestMsg>(ctl)? {
            DestMsg::Clock { unix_us } => Ok(unix_us),
            other => Err(frame::FrameError::Io(std::io::Error::other(format!(
                "unexpected answer to a clock probe: {other:?}"
            )))),
        }
    })
}

pub(super) fn ship_core(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    id: u64,
    frozen: &Frozen,
    opts: &MigrateOptions,
    rec: &mut MigrationRecord,
) -> Result<(), String> {
    let err = |e: frame::FrameError| format!("sending the core: {}", frame_error(&e));
    seq.send(
        ctl,
        &SourceMsg::Core {
            id,
            image: Box::new(frozen.image.clone()),
            opts: opts.clone(),
        },
    )
    .map_err(err)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *ctl);
    send_shipped(&mut w, seq, frozen.pid(), &frozen.image)?;
    send_own_pages(&mut w, frozen, opts, rec)?;
    seq.send(&mut w, &SourceMsg::EagerDone).map_err(err)?;
    w.flush().map_err(|e| err(e.into()))?;
    if opts.mode == Mode::StopCopy {
        debug_assert_eq!(rec.lazy_pages, 0);
    }
    Ok(())
}

/// Sends the pages of `frozen` that travel with its core: the eager ones,
/// and for a member of a tree every page not its parent's. Each page sent
/// counts in `rec`.
fn send_own_pages(
    w: &mut impl Write,
    frozen: &Frozen,
    opts: &MigrateOptions,
    rec: &mut MigrationRecord,
) -> Result<(), String> {
    let err = |e: frame::FrameError| format!("sending the pages: {}", frame_error(&e));
    let mut buf = Vec::new();
    for v in &frozen.image.mm.vmas {
        for p in v.pages.iter().filter(|p| p.fill == Fill::Eager) {
            let mut first = p.first;
            let end = p.first + p.count;
            while first < end {
                let n = (end - first).min(EAGER_FRAME_PAGES);
                let addr = v.start + first * PAGE_SIZE;
                buf.resize((n * PAGE_SIZE) as usize, 0);
                frozen
                    .mem
                    .read_direct(addr, &mut buf)
                    .map_err(|e| format!("reading pages at {addr:#x}: {}", error_chain(&e)))?;
                rec.page_wire_bytes += put_pages(w, addr, &buf, opts.compress).map_err(err)?;
                rec.eager_pages += n;
                first += n;
            }
        }
    }
    Ok(())
}

/// Ships a tree: its image in one `CoreTree`, then each living member's
/// own pages followed by `MemberDone` with its index, then `EagerDone`.
/// Only in stop-and-copy: every page a member does not take from its
/// parent is eager.
pub(super) fn ship_tree_core(
    ctl: &mut PeerStream,
    seq: &Sequencer,
    id: u64,
    (root, kin): (&Frozen, &FrozenKin),
    opts: &MigrateOptions,
    rec: &mut MigrationRecord,
) -> Result<(), String> {
    let err = |e: frame::FrameError| format!("sending the core: {}", frame_error(&e));
    let members: Vec<Option<&Frozen>> = std::iter::once(Some(root))
        .chain(kin.members.iter().map(Option::as_ref))
        .collect();
    let tree = migrate_proto::image::TreeImage {
        relations: kin.relations.clone(),
        images: members.iter().map(|m| m.map(|f| f.image.clone())).collect(),
    };
    seq.send(
        ctl,
        &SourceMsg::CoreTree {
            id,
            tree: Box::new(tree),
            opts: opts.clone(),
        },
    )
    .map_err(err)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *ctl);
    for (i, m) in members.iter().enumerate() {
        let Some(frozen) = m else { continue };
        send_own_pages(&mut w, frozen, opts, rec)?;
        seq.send(&mut w, &SourceMsg::MemberDone(i as u32))
            .map_err(err)?;
    }
    seq.send(&mut w, &SourceMsg::EagerDone).map_err(err)?;
    w.flush().map_err(|e| err(e.into()))
}

/// Streams the content of the image's shipped files, [`SHIPPED_CHUNK`] at a
/// time, read from the frozen process's descriptors: exactly the size the
/// image gives for each (a file cut shorter meanwhile fails the migration).
pub(super) fn send_shipped(
    w: &mut impl std::io::Write,
    seq: &Sequencer,
    pid: i32,
    image: &ProcessImage,
) -> Result<(), String> {
    use std::io::Read;
    let mut buf = vec![0u8; SHIPPED_CHUNK];
    for f in &image.shipped {
        let what = || format!("shipping the content of fd {} ({})", f.fd, f.path);
        // A file mapped shared and writable is read through its mapping.
        let from = match &f.mapped {
            Some(m) => crate::capture::shared_files::map_files_path(pid, m.mapping),
            None => format!("/proc/{pid}/fd/{}", f.fd),
        };
        let file = std::fs::File::open(from).map_err(|e| format!("{}: {e}", what()))?;
        let mut file = file.take(f.size);
        let mut left = f.size;
        while left > 0 {
            let n = (left as usize).min(SHIPPED_CHUNK);
            file.read_exact(&mut buf[..n])
                .map_err(|e| format!("{}: {e}", what()))?;
            seq.send(w, &SourceMsg::ShippedData(buf[..n].to_vec()))
                .map_err(|e| format!("{}: {}", what(), frame_error(&e)))?;
            left -= n as u64;
        }
    }
    Ok(())
}
