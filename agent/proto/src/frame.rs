//! Length-prefixed frames: a fixed little-endian header, then a payload.
//!
//! ```text
//! 0      4      6      8             16
//! | magic | kind | flags | payload len |  payload...
//! ```
//!
//! `Control` payloads are postcard-encoded [`crate::msg`] values; `Pages`
//! payloads are a [`PagesHeader`] followed by raw page bytes, so page data
//! never goes through serde; a `Zeros` payload is a [`PagesHeader`] alone,
//! for pages whose every byte is zero. Every length is bounded before
//! anything is allocated.

use std::io::{self, IoSlice, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::budget::{decode_within, Budget};
use crate::PAGE_SIZE;

/// First four bytes of every frame.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MGRT");
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// Largest control payload accepted (a process image with many VMAs and fds).
pub const MAX_CONTROL_LEN: u64 = 64 << 20;
/// Largest number of pages in one `Pages` frame (8 MiB).
pub const MAX_PAGES_PER_FRAME: u32 = 2048;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Never valid on the wire.
    Invalid = 0,
    /// A postcard-encoded message.
    Control = 1,
    /// Raw page data behind a [`PagesHeader`].
    Pages = 2,
    /// Page data compressed as one LZ4 block behind a [`PagesHeader`];
    /// read back as `Pages`.
    PagesLz4 = 3,
    /// Pages whose every byte is zero: a [`PagesHeader`] and no bytes.
    Zeros = 4,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        match v {
            1 => Some(Kind::Control),
            2 => Some(Kind::Pages),
            3 => Some(Kind::PagesLz4),
            4 => Some(Kind::Zeros),
            _ => None,
        }
    }
}

/// Errors decoding or encoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed or closed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The header did not start with [`MAGIC`].
    #[error("bad frame magic {0:#x}: not a migrate peer")]
    BadMagic(u32),
    /// The header named an unknown kind.
    #[error("unknown frame kind {0}")]
    BadKind(u16),
    /// A length was over its limit.
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLong {
        /// Length announced.
        len: u64,
        /// Limit for this kind.
        limit: u64,
    },
    /// A control payload did not decode.
    #[error("malformed message")]
    Decode(#[from] postcard::Error),
    /// A control payload would take more memory than allowed once decoded.
    #[error("a message that would take more than {limit} bytes once decoded")]
    TooLarge {
        /// The budget it exceeded.
        limit: u64,
    },
    /// A frame of another kind came where one was expected.
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected {
        /// Kind wanted.
        expected: Kind,
        /// Kind received.
        got: Kind,
    },
    /// A `Pages` header was inconsistent with its payload.
    #[error("malformed page frame: {0}")]
    BadPages(&'static str),
    /// A control message out of sequence or of another migration.
    #[error("control message refused: {0}")]
    Sequence(String),
}

/// Header in front of the raw bytes of a `Pages` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagesHeader {
    /// Page-aligned address (in the source's address space at dump time).
    pub addr: u64,
    /// Number of pages that follow.
    pub npages: u32,
}

impl PagesHeader {
    /// Encoded size.
    pub const LEN: usize = 16;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.npages.to_le_bytes());
        b
    }

    /// Reads one from `r`.
    fn read(r: &mut impl Read) -> io::Result<PagesHeader> {
        let mut b = [0u8; Self::LEN];
        r.read_exact(&mut b)?;
        Ok(Self::decode(&b))
    }

    /// A run of 1 to [`MAX_PAGES_PER_FRAME`] pages from an aligned address.
    fn is_run(&self) -> bool {
        (1..=MAX_PAGES_PER_FRAME).contains(&self.npages) && self.addr.is_multiple_of(PAGE_SIZE)
    }

    fn decode(b: &[u8; Self::LEN]) -> PagesHeader {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&b[8..12]);
        PagesHeader {
            addr: u64::from_le_bytes(a),
            npages: u32::from_le_bytes(n),
        }
    }
}

/// A frame read from a stream.
#[derive(Debug)]
pub enum Frame {
    /// A control payload, still encoded.
    Control(Vec<u8>),
    /// Pages and their bytes (`npages * PAGE_SIZE` long).
    Pages(PagesHeader, Vec<u8>),
    /// Pages that read as zeros throughout (at least one).
    Zeros(PagesHeader),
}

fn header(kind: Kind, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&(kind as u16).to_le_bytes());
    h[8..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Frames with at most this many payload bytes go to the writer in one
/// write (one record, one segment on a lane with `TCP_NODELAY`): the
/// reader wakes once for them, not once per part. Larger ones are written
/// in parts (one vectored write where the writer takes it) rather than
/// copied.
const COALESCE: usize = 64 << 10;

/// Writes one control message.
pub fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    let mut out = header(Kind::Control, 0).to_vec();
    postcard::to_io(msg, &mut out)?;
    let len = (out.len() - HEADER_LEN) as u64;
    out[..HEADER_LEN].copy_from_slice(&header(Kind::Control, len));
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// The header for `data` (a whole number of pages, at most
/// [`MAX_PAGES_PER_FRAME`]) at `addr`.
fn pages_header(addr: u64, data: &[u8]) -> Result<PagesHeader, FrameError> {
    let npages = data.len() as u64 / PAGE_SIZE;
    if !(data.len() as u64).is_multiple_of(PAGE_SIZE) || npages > u64::from(MAX_PAGES_PER_FRAME) {
        return Err(FrameError::BadPages(
            "not a whole number of pages or too many",
        ));
    }
    Ok(PagesHeader {
        addr,
        npages: npages as u32,
    })
}

fn write_pages_frame(
    w: &mut impl Write,
    kind: Kind,
    hdr: PagesHeader,
    payload: &[u8],
) -> Result<(), FrameError> {
    let h = header(kind, (PagesHeader::LEN + payload.len()) as u64);
    if payload.len() <= COALESCE {
        let mut out = Vec::with_capacity(HEADER_LEN + PagesHeader::LEN + payload.len());
        out.extend_from_slice(&h);
        out.extend_from_slice(&hdr.encode());
        out.extend_from_slice(payload);
        w.write_all(&out)?;
    } else {
        let mut head = [0u8; HEADER_LEN + PagesHeader::LEN];
        head[..HEADER_LEN].copy_from_slice(&h);
        head[HEADER_LEN..].copy_from_slice(&hdr.encode());
        write_all_parts(w, &mut [IoSlice::new(&head), IoSlice::new(payload)])?;
    }
    Ok(())
}

/// Writes every byte of `parts` in order, through vectored writes (a
/// writer that seals or sends several parts at once takes them so).
fn write_all_parts(w: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one `Pages` frame; `data` must be a whole number of pages.
pub fn write_pages(w: &mut impl Write, addr: u64, data: &[u8]) -> Result<(), FrameError> {
    write_pages_frame(w, Kind::Pages, pages_header(addr, data)?, data)
}

/// Writes one `Zeros` frame: `npages` pages (1 to [`MAX_PAGES_PER_FRAME`])
/// at `addr` whose every byte is zero.
pub fn write_zeros(w: &mut impl Write, addr: u64, npages: u32) -> Result<(), FrameError> {
    let hdr = PagesHeader { addr, npages };
    if !hdr.is_run() {
        return Err(FrameError::BadPages("no pages, too many or unaligned"));
    }
    let mut out = header(Kind::Zeros, PagesHeader::LEN as u64).to_vec();
    out.extend_from_slice(&hdr.encode());
    w.write_all(&out)?;
    Ok(())
}

/// Writes a `PagesLz4` frame for `data` at `addr`, or a plain `Pages`
/// frame when the pages do not compress. Returns the bytes of payload
/// written.
pub fn write_pages_lz4(w: &mut impl Write, addr: u64, data: &[u8]) -> Result<u64, FrameError> {
    let hdr = pages_header(addr, data)?;
    let packed = lz4_flex::block::compress(data);
    if packed.len() >= data.len() {
        write_pages_frame(w, Kind::Pages, hdr, data)?;
        return Ok(data.len() as u64);
    }
    write_pages_frame(w, Kind::PagesLz4, hdr, &packed)?;
    Ok(packed.len() as u64)
}

/// Reads exactly `len` bytes, the buffer growing as they arrive: a peer
/// that claims a length and sends less costs what it sent, not what it
/// claimed.
fn read_body(r: &mut impl Read, len: u64) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(COALESCE as u64) as usize);
    r.take(len).read_to_end(&mut body)?;
    if (body.len() as u64) < len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}

/// Reads one frame, checking magic, kind and length before allocating.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, FrameError> {
    read_frame_within(r, MAX_CONTROL_LEN, Vec::new())
}

/// As [`read_frame`], a page frame's bytes read into `buf`, a buffer used
/// again: its old bytes are overwritten, not zeroed first (it grows, with
/// zeros, only by what it lacks). Zeroing a new buffer for each frame was
/// 18% of a post-copy push reader's samples (perf, 2 GiB). `buf` is
/// dropped if the frame holds no page bytes.
pub fn read_frame_into(r: &mut impl Read, buf: Vec<u8>) -> Result<Frame, FrameError> {
    read_frame_within(r, MAX_CONTROL_LEN, buf)
}

/// `buf` holding `len` bytes: a new zeroed one if it has no room, else
/// itself cut or grown to `len`.
fn page_buffer(mut buf: Vec<u8>, len: usize) -> Vec<u8> {
    if buf.capacity() == 0 {
        return vec![0u8; len];
    }
    buf.resize(len, 0);
    buf
}

/// Reads one frame whose control payload may be at most `control_limit`
/// bytes, page bytes into `buf`.
fn read_frame_within(
    r: &mut impl Read,
    control_limit: u64,
    buf: Vec<u8>,
) -> Result<Frame, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let kind_raw = u16::from_le_bytes([h[4], h[5]]);
    let kind = Kind::from_u16(kind_raw).ok_or(FrameError::BadKind(kind_raw))?;
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[8..]);
    let len = u64::from_le_bytes(l);
    match kind {
        Kind::Control => {
            let limit = control_limit.min(MAX_CONTROL_LEN);
            if len > limit {
                return Err(FrameError::TooLong { len, limit });
            }
            Ok(Frame::Control(read_body(r, len)?))
        }
        Kind::Pages => {
            let limit = PagesHeader::LEN as u64 + u64::from(MAX_PAGES_PER_FRAME) * PAGE_SIZE;
            if len > limit {
                return Err(FrameError::TooLong { len, limit });
            }
            if len < PagesHeader::LEN as u64 {
                return Err(FrameError::BadPages("shorter than its header"));
            }
            let hdr = PagesHeader::read(r)?;
            let data_len = len - PagesHeader::LEN as u64;
            if hdr.npages > MAX_PAGES_PER_FRAME
                || u64::from(hdr.npages) * PAGE_SIZE != data_len
                || !hdr.addr.is_multiple_of(PAGE_SIZE)
            {
                return Err(FrameError::BadPages("header disagrees with payload"));
            }
            let mut data = page_buffer(buf, data_len as usize);
            r.read_exact(&mut data)?;
            Ok(Frame::Pages(hdr, data))
        }
        Kind::PagesLz4 => {
            // A block never grows past this from incompressible input.
            let raw = u64::from(MAX_PAGES_PER_FRAME) * PAGE_SIZE;
            let limit = PagesHeader::LEN as u64 + raw + raw / 255 + 16;
            if len > limit {
                return Err(FrameError::TooLong { len, limit });
            }
            if len < PagesHeader::LEN as u64 {
                return Err(FrameError::BadPages("shorter than its header"));
            }
            let hdr = PagesHeader::read(r)?;
            if !hdr.is_run() {
                return Err(FrameError::BadPages("bad compressed page header"));
            }
            let mut packed = vec![0u8; (len - PagesHeader::LEN as u64) as usize];
            r.read_exact(&mut packed)?;
            let mut data = page_buffer(buf, (u64::from(hdr.npages) * PAGE_SIZE) as usize);
            match lz4_flex::block::decompress_into(&packed, &mut data) {
                Ok(n) if n == data.len() => Ok(Frame::Pages(hdr, data)),
                _ => Err(FrameError::BadPages(
                    "compressed pages do not expand to their count",
                )),
            }
        }
        Kind::Zeros => {
            if len != PagesHeader::LEN as u64 {
                return Err(FrameError::BadPages("zero pages with a payload"));
            }
            let hdr = PagesHeader::read(r)?;
            if !hdr.is_run() {
                return Err(FrameError::BadPages("bad zero page header"));
            }
            Ok(Frame::Zeros(hdr))
        }
        Kind::Invalid => Err(FrameError::BadKind(0)),
    }
}

/// Reads one frame that must be a control message of type `T`.
pub fn read_msg<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    read_msg_within(r, MAX_CONTROL_LEN)
}

/// Reads one frame that must be a control message of type `T` of at most
/// `limit` bytes (a local user's request to the agent: small).
pub fn read_msg_within<T: DeserializeOwned>(
    r: &mut impl Read,
    limit: u64,
) -> Result<T, FrameError> {
    match read_frame_within(r, limit, Vec::new())? {
        Frame::Control(body) => decode(&body),
        Frame::Pages(..) => Err(FrameError::Unexpected {
            expected: Kind::Control,
            got: Kind::Pages,
        }),
        Frame::Zeros(..) => Err(FrameError::Unexpected {
            expected: Kind::Control,
            got: Kind::Zeros,
        }),
    }
}

/// Most memory one control payload may take once decoded. The largest
/// images the destination's limits accept take well under it (a million
/// `dup`s: 84 MB from 6 MiB on the wire; 65,530 mappings of eight page runs:
/// 25 MB; 20,000 threads: 62 MB from 52 MiB), while 64 MiB of empty
/// entries would take 1.5 GiB.
pub const MAX_DECODED_LEN: u64 = 256 << 20;

/// Decodes an already-read control payload, within [`MAX_DECODED_LEN`].
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let budget = Budget::new(MAX_DECODED_LEN);
    let mut de = postcard::Deserializer::from_bytes(body);
    decode_within(&mut de, &budget).map_err(|e| match budget.exhausted() {
        true => FrameError::TooLarge {
            limit: MAX_DECODED_LEN,
        },
        false => FrameError::Decode(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one `Pages` frame in `wire`: (address, pages, bytes).
    fn read_pages(wire: &[u8]) -> (u64, u32, Vec<u8>) {
        match read_frame(&mut &wire[..]).unwrap() {
            Frame::Pages(h, d) => (h.addr, h.npages, d),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn pages_round_trip() {
        let data = vec![7u8; 2 * PAGE_SIZE as usize];
        let mut buf = Vec::new();
        write_pages(&mut buf, 0x7000_0000, &data).unwrap();
        assert_eq!(read_pages(&buf), (0x7000_0000, 2, data));
    }

    #[test]
    fn pages_read_into_a_used_buffer_hold_only_the_frames_bytes() {
        let p = PAGE_SIZE as usize;
        let data = vec![7u8; 2 * p];
        let mut plain = Vec::new();
        write_pages(&mut plain, 0x7000_0000, &data).unwrap();
        let mut packed = Vec::new();
        write_pages_lz4(&mut packed, 0x7000_0000, &data).unwrap();
        // Longer than the frame, shorter, with stale bytes: cut or grown
        // to the frame's pages, every byte the frame's.
        for wire in [&plain, &packed] {
            for stale in [vec![9u8; 5 * p], vec![9u8; p], Vec::with_capacity(3 * p)] {
                match read_frame_into(&mut &wire[..], stale).unwrap() {
                    Frame::Pages(h, d) => {
                        assert_eq!((h.addr, h.npages), (0x7000_0000, 2));
                        assert!(d == data, "{} bytes, not the frame's", d.len());
                    }
                    other => panic!("got {other:?}"),
                }
            }
        }
    }

    /// Takes at most 1000 bytes of the first two parts per vectored write.
    struct Trickle(Vec<u8>, usize);

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
            self.1 += 1;
            let mut left = 1000;
            for p in parts.iter().take(2) {
                let n = p.len().min(left);
                self.0.extend_from_slice(&p[..n]);
                left -= n;
            }
            Ok(1000 - left)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_large_frame_survives_short_vectored_writes() {
        let data: Vec<u8> = (0..20 * PAGE_SIZE as u32).map(|i| (i / 3) as u8).collect();
        let mut w = Trickle(Vec::new(), 0);
        write_pages(&mut w, 0x7000_0000, &data).unwrap();
        assert_eq!(read_pages(&w.0), (0x7000_0000, 20, data.clone()));
        assert_eq!(
            w.1,
            (data.len() + HEADER_LEN + PagesHeader::LEN).div_ceil(1000)
        );
    }

    #[test]
    fn compressed_pages_read_back_as_pages() {
        let mut data = vec![0u8; 3 * PAGE_SIZE as usize];
        data[100] = 7;
        data[5000..5010].copy_from_slice(b"0123456789");
        let mut wire = Vec::new();
        let n = write_pages_lz4(&mut wire, 0x7000, &data).unwrap();
        assert!(n < data.len() as u64 / 10, "zeros did not compress: {n}");
        assert_eq!(read_pages(&wire), (0x7000, 3, data));
    }

    #[test]
    fn incompressible_pages_go_plain_and_lies_are_refused() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..PAGE_SIZE as usize)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut wire = Vec::new();
        write_pages_lz4(&mut wire, 0x1000, &data).unwrap();
        assert_eq!(u16::from_le_bytes([wire[4], wire[5]]), Kind::Pages as u16);
        // A compressed frame claiming more pages than its block expands to.
        let mut wire = Vec::new();
        write_pages_lz4(&mut wire, 0x1000, &vec![0u8; PAGE_SIZE as usize]).unwrap();
        wire[HEADER_LEN + 8] = 2;
        assert!(matches!(
            read_frame(&mut &wire[..]),
            Err(FrameError::BadPages(_))
        ));
    }

    #[test]
    fn rejects_bad_magic_and_oversize() {
        let mut buf = vec![0u8; HEADER_LEN];
        assert!(matches!(
            read_frame(&mut buf.as_slice()),
            Err(FrameError::BadMagic(0))
        ));
        buf.clear();
        buf.extend_from_slice(&header(Kind::Control, MAX_CONTROL_LEN + 1));
        assert!(matches!(
            read_frame(&mut buf.as_slice()),
            Err(FrameError::TooLong { .. })
        ));
        buf.clear();
        buf.extend_from_slice(&header(Kind::Pages, 20));
        buf.extend_from_slice(&PagesHeader { addr: 0, npages: 1 }.encode());
        buf.extend_from_slice(&[0u8; 4]);
        assert!(matches!(
            read_frame(&mut buf.as_slice()),
            Err(FrameError::BadPages(_))
        ));
    }

    #[test]
    fn zero_pages_go_as_a_header_and_lies_are_refused() {
        let mut wire = Vec::new();
        write_zeros(&mut wire, 0x7000_0000, 3).unwrap();
        assert_eq!(wire.len(), HEADER_LEN + PagesHeader::LEN);
        match read_frame(&mut wire.as_slice()).unwrap() {
            Frame::Zeros(h) => assert_eq!((h.addr, h.npages), (0x7000_0000, 3)),
            other => panic!("got {other:?}"),
        }
        assert!(matches!(
            read_msg::<String>(&mut wire.as_slice()),
            Err(FrameError::Unexpected { .. })
        ));
        for (addr, n) in [
            (0x7000_0000, 0),
            (0x7000_0001, 1),
            (0, MAX_PAGES_PER_FRAME + 1),
        ] {
            assert!(write_zeros(&mut Vec::new(), addr, n).is_err());
            let mut bad = header(Kind::Zeros, PagesHeader::LEN as u64).to_vec();
            bad.extend_from_slice(&PagesHeader { addr, npages: n }.encode());
            assert!(matches!(
                read_frame(&mut bad.as_slice()),
                Err(FrameError::BadPages(_))
            ));
        }
        // A payload behind the header is refused before it is read.
        let mut long = header(Kind::Zeros, PagesHeader::LEN as u64 + 4096).to_vec();
        long.extend_from_slice(&PagesHeader { addr: 0, npages: 1 }.encode());
        assert!(matches!(
            read_frame(&mut long.as_slice()),
            Err(FrameError::BadPages(_))
        ));
    }

    #[test]
    fn rejects_truncated_stream() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &"hello").unwrap();
        buf.truncate(buf.len() - 1);
        assert!(matches!(
            read_frame(&mut buf.as_slice()),
            Err(FrameError::Io(_))
        ));
    }
}
