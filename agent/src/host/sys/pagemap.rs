//! `PAGEMAP_SCAN`: which pages of a range are present or written.

use std::io;
use std::os::fd::AsRawFd;

use super::check;

use linux_raw_sys::general as k;

/// `PAGEMAP_SCAN` page categories (`include/uapi/linux/fs.h`).
pub mod page_is {
    use linux_raw_sys::general as k;

    /// Not write-protected since the last scan that protected it.
    pub const WRITTEN: u64 = k::PAGE_IS_WRITTEN as u64;
    /// Present in memory.
    pub const PRESENT: u64 = k::PAGE_IS_PRESENT as u64;
    /// Backed by a file.
    pub const FILE: u64 = k::PAGE_IS_FILE as u64;
    /// Swapped out.
    pub const SWAPPED: u64 = k::PAGE_IS_SWAPPED as u64;
    /// Mapped to the shared zero page.
    pub const PFNZERO: u64 = k::PAGE_IS_PFNZERO as u64;
}

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
pub const PM_SCAN_WP_MATCHING: u64 = k::PM_SCAN_WP_MATCHING as u64;

/// `PAGEMAP_SCAN`, `_IOWR('f', 16, struct pm_scan_arg)` (not among
/// linux-raw-sys's ioctl numbers).
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<k::pm_scan_arg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;
const _: () = assert!(PAGEMAP_SCAN == 0xc060_6610);

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
    let mut vec = vec![
        k::page_region {
            start: 0,
            end: 0,
            categories: 0,
        };
        1024
    ];
    let mut at = start;
    while at < end {
        let mut arg = k::pm_scan_arg {
            size: std::mem::size_of::<k::pm_scan_arg>() as u64,
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
        // SAFETY: `arg` is the kernel's `struct pm_scan_arg` (from its
        // headers, its size passed in `size`); `vec` points at `vec_len` writable
        // `struct page_region`s that outlive the call.
        let n = check(libc::c_long::from(unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut k::pm_scan_arg,
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
