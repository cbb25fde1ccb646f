//! `PAGEMAP_SCAN`: which pages of a range are present or written.

use std::io;
use std::os::fd::AsRawFd;

use super::check;

/// `PAGEMAP_SCAN` page categories (`include/uapi/linux/fs.h`).
pub mod page_is {
    /// Not write-protected since the last scan that protected it.
    pub const WRITTEN: u64 = 1 << 1;
    /// Present in memory.
    pub const PRESENT: u64 = 1 << 3;
    /// Backed by a file.
    pub const FILE: u64 = 1 << 2;
    /// Swapped out.
    pub const SWAPPED: u64 = 1 << 4;
    /// Mapped to the shared zero page.
    pub const PFNZERO: u64 = 1 << 5;
}

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
pub const PM_SCAN_WP_MATCHING: u64 = 1;

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;
const _: () = assert!(PAGEMAP_SCAN == 0xc060_6610);
const _: () = assert!(std::mem::size_of::<PageRegion>() == 24);

/// Which pages a [`pagemap_scan`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageQuery {
    /// `PM_SCAN_*` flags, e.g. [`PM_SCAN_WP_MATCHING`].
    pub flags: u64,
    /// Categories every reported page has.
    pub all: u64,
    /// Categories of which a reported page has at least one (0: none
    /// required).
    pub any: u64,
    /// Categories reported with each range.
    pub report: u64,
}

/// `ioctl(pagemap, PAGEMAP_SCAN)` over `[start, end)`: calls `out` with
/// each range of pages matching `q` and its categories. `PAGEMAP_SCAN`
/// walks only populated page tables, so untouched reservations cost
/// nothing.
pub fn pagemap_scan(
    pagemap: &impl AsRawFd,
    start: u64,
    end: u64,
    q: PageQuery,
    out: &mut dyn FnMut(u64, u64, u64),
) -> io::Result<()> {
    let mut vec = vec![PageRegion::default(); 1024];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: q.flags,
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: q.all,
            category_anyof_mask: q.any,
            return_mask: q.report | q.all | q.any,
        };
        // SAFETY: `arg` is the kernel's `struct pm_scan_arg` (size checked
        // above and passed in `size`); `vec` points at `vec_len` writable
        // `struct page_region`s that outlive the call.
        let n = check(libc::c_long::from(unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut PmScanArg,
            )
        }))?;
        for r in &vec[..n as usize] {
            out(r.start, r.end, r.categories);
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
}
