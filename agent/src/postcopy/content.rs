//! What pages read as once installed: the bytes that came for them, or
//! zeros throughout (pages the source marked as all zero: mapped as the
//! zero page, no bytes on the link and no fresh memory written here).

use std::io;
use std::os::fd::OwnedFd;

use migrate_proto::frame::Frame;
use migrate_proto::PAGE_SIZE;

use crate::host::uffd::{self, Install};

/// Pages' content, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    /// The pages' bytes, a whole number of pages.
    Bytes(&'a [u8]),
    /// This many pages of zeros.
    Zeros(u64),
}

impl<'a> Content<'a> {
    /// How many pages.
    pub fn pages(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64 / PAGE_SIZE,
            Content::Zeros(n) => *n,
        }
    }

    /// `count` pages from page `first` on.
    pub fn part(&self, first: u64, count: u64) -> Content<'a> {
        match self {
            Content::Bytes(b) => Content::Bytes(
                &b[(first * PAGE_SIZE) as usize..((first + count) * PAGE_SIZE) as usize],
            ),
            Content::Zeros(n) => Content::Zeros(count.min(n.saturating_sub(first))),
        }
    }

    /// The pages in parts of at most `pages` pages (at least one), each
    /// with its first page's index.
    pub fn parts(self, pages: u64) -> impl Iterator<Item = (u64, Content<'a>)> {
        let pages = pages.max(1);
        let total = self.pages();
        (0..total)
            .step_by(pages as usize)
            .map(move |k| (k, self.part(k, pages.min(total - k))))
    }

    /// Installs the pages at `dst` through the userfaultfd `fd`, waking
    /// the threads that wait on them.
    pub fn install(&self, fd: &OwnedFd, dst: u64) -> io::Result<Install> {
        match self {
            Content::Bytes(b) => uffd::copy(fd, dst, b),
            Content::Zeros(n) => uffd::zeropage(fd, dst, n * PAGE_SIZE),
        }
    }
}

impl<'a> From<&'a [u8]> for Content<'a> {
    fn from(b: &'a [u8]) -> Self {
        Content::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Content<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Content::Bytes(b)
    }
}

/// Pages received, owned: where they go and what they read as.
#[derive(Debug)]
pub struct Received {
    /// First page's address in the source's space.
    pub addr: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Bytes(Vec<u8>),
    Zeros(u64),
}

impl Received {
    /// The pages of a `Pages` or `Zeros` frame; any other frame is
    /// handed back.
    pub fn of(f: Frame) -> Result<Received, Frame> {
        let (addr, body) = match f {
            Frame::Pages(h, data) => (h.addr, Body::Bytes(data)),
            Frame::Zeros(h) => (h.addr, Body::Zeros(u64::from(h.npages))),
            other => return Err(other),
        };
        Ok(Received { addr, body })
    }

    /// The bytes' buffer, to be used again (none for zeros).
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self.body {
            Body::Bytes(b) => Some(b),
            Body::Zeros(_) => None,
        }
    }

    /// What the pages read as.
    pub fn content(&self) -> Content<'_> {
        match &self.body {
            Body::Bytes(b) => Content::Bytes(b),
            Body::Zeros(n) => Content::Zeros(*n),
        }
    }
}

/// Splits `data` (a whole number of pages) into runs of pages that are
/// all zero and runs that are not: (first page, pages, zero), in order.
pub fn zero_runs(data: &[u8]) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for (k, page) in data.chunks_exact(PAGE_SIZE as usize).enumerate() {
        let zero = is_zero(page);
        match runs.last_mut() {
            Some((_, n, z)) if *z == zero => *n += 1,
            _ => runs.push((k as u64, 1, zero)),
        }
    }
    runs
}

/// Whether every byte of `page` is zero: 64 bytes at a time (the compiler
/// makes each block a few vector operations); a page with data most often
/// says so in its first block.
fn is_zero(page: &[u8]) -> bool {
    page.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE_SIZE as usize;

    #[test]
    fn zero_runs_split_at_every_change() {
        let mut data = vec![0u8; 6 * P];
        data[P + 17] = 1; // page 1
        data[3 * P + P - 1] = 9; // page 3, its last byte
        data[4 * P] = 2; // page 4, its first byte
        assert_eq!(
            zero_runs(&data),
            vec![
                (0, 1, true),
                (1, 1, false),
                (2, 1, true),
                (3, 2, false),
                (5, 1, true)
            ]
        );
        assert_eq!(zero_runs(&vec![0u8; 3 * P]), vec![(0, 3, true)]);
        assert_eq!(zero_runs(&[]), vec![]);
    }

    #[test]
    fn parts_cover_every_page_once() {
        let data: Vec<u8> = (0..5 * P).map(|i| (i / P) as u8).collect();
        let parts: Vec<_> = Content::Bytes(&data).parts(2).collect();
        assert_eq!(parts.len(), 3);
        for (k, c) in &parts {
            let Content::Bytes(b) = c else { panic!() };
            assert_eq!(b[0] as u64, *k);
        }
        assert_eq!(parts[2].1.pages(), 1);
        let zeros: Vec<_> = Content::Zeros(5).parts(2).collect();
        assert_eq!(
            zeros,
            vec![
                (0, Content::Zeros(2)),
                (2, Content::Zeros(2)),
                (4, Content::Zeros(1))
            ]
        );
        assert_eq!(Content::Zeros(5).part(3, 4), Content::Zeros(2));
    }
}
