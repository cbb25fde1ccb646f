//! The encrypted lane once the handshake is done: records of at most 64 KiB
//! sealed with AES-GCM, each direction with its own key and counter,
//! written in batches and read in large chunks.

use super::*;

/// Largest Noise message.
pub(super) const MAX_RECORD: usize = 65535;

/// Authentication tag per record.
pub(super) const TAG_LEN: usize = 16;

/// Most plaintext per record.
pub(super) const MAX_PLAIN: usize = MAX_RECORD - TAG_LEN;

/// Most plaintext sealed per `write` call (several records, one syscall):
/// a frame of 64 pages with its headers goes in one.
pub(super) const WRITE_BATCH: usize = 5 * MAX_PLAIN;

/// Bytes read from the socket at a time (at least).
pub(super) const READ_CHUNK: usize = 256 << 10;

/// The ciphertext buffer: a read's worth beside a partial record.
pub(super) const CIPHER_BUF: usize = READ_CHUNK + 2 + MAX_RECORD;

pub(super) fn write_record(mut tcp: &TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    tcp.write_all(&out)
}

pub(super) fn read_record(mut tcp: &TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut msg)?;
    Ok(msg)
}

/// The encrypted side of a link: one nonce per direction.
pub(super) struct Channel {
    state: snow::StatelessTransportState,
    tx: Mutex<Sealer>,
    rx: Mutex<Opener>,
}

pub(super) struct Sealer {
    nonce: u64,
    out: Vec<u8>,
    broken: bool,
}

pub(super) struct Opener {
    nonce: u64,
    /// Ciphertext received, `start..end` (allocated once, [`CIPHER_BUF`]
    /// long, never zeroed again).
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// Plaintext opened, from `pos`.
    plain: Vec<u8>,
    pos: usize,
    broken: bool,
}

/// A link between two agents: a TCP connection, encrypted unless the agents
/// run `--insecure`. Clones share the connection and its cipher state, so
/// one thread may read while another writes.
pub struct PeerStream {
    tcp: TcpStream,
    channel: Option<Arc<Channel>>,
}

pub(super) fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the encrypted link is broken (a record failed)",
    )
}

impl PeerStream {
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        PeerStream { tcp, channel: None }
    }

    pub(super) fn noise(tcp: TcpStream, state: snow::StatelessTransportState) -> Self {
        PeerStream {
            tcp,
            channel: Some(Arc::new(Channel {
                state,
                tx: Mutex::new(Sealer {
                    nonce: 0,
                    out: Vec::new(),
                    broken: false,
                }),
                rx: Mutex::new(Opener {
                    nonce: 0,
                    cipher: Vec::new(),
                    start: 0,
                    end: 0,
                    plain: Vec::new(),
                    pos: 0,
                    broken: false,
                }),
            })),
        }
    }

    /// Another handle on the same link.
    pub fn try_clone(&self) -> io::Result<PeerStream> {
        Ok(PeerStream {
            tcp: self.tcp.try_clone()?,
            channel: self.channel.clone(),
        })
    }

    /// As [`TcpStream::set_read_timeout`].
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(t)
    }

    /// As [`TcpStream::set_write_timeout`].
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(t)
    }

    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    /// Sets the connection's send buffer (`SO_SNDBUF`), bytes.
    pub fn set_send_buffer(&self, bytes: i32) -> io::Result<()> {
        crate::host::sys::setsockopt_int(&self.tcp, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes)
    }

    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Write for PeerStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        (&*self).write(data)
    }

    fn write_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(parts)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &PeerStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(data)])
    }

    /// Seals up to `WRITE_BATCH` bytes of `parts` (each part in records
    /// of its own) and sends them in one write.
    fn write_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let Some(ch) = &self.channel else {
            return (&self.tcp).write_vectored(parts);
        };
        let mut tx = lock(&ch.tx);
        if tx.broken {
            return Err(broken());
        }
        let Sealer {
            nonce,
            out,
            broken: bad,
        } = &mut *tx;
        // Records are sealed over what the last write left in `out`, the
        // first `used` bytes sent: it only grows (zeroed only where it
        // does); clearing and zeroing it for each write was 7% of a
        // post-copy push sender's samples.
        let mut used = 0;
        let mut taken = 0;
        for part in parts {
            let take = part.len().min(WRITE_BATCH - taken);
            for chunk in part[..take].chunks(MAX_PLAIN) {
                let at = used;
                let end = at + 2 + chunk.len() + TAG_LEN;
                if out.len() < end {
                    out.resize(end, 0);
                }
                // Records sealed before it took nonces: the link is done.
                let n = match ch.state.write_message(*nonce, chunk, &mut out[at + 2..end]) {
                    Ok(n) => n,
                    Err(e) => {
                        *bad = true;
                        return Err(io::Error::other(format!("noise: {e}")));
                    }
                };
                out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
                used = at + 2 + n;
                *nonce += 1;
            }
            taken += take;
            if taken == WRITE_BATCH {
                break;
            }
        }
        if taken == 0 {
            return Ok(0);
        }
        // A partial record on the wire cannot be taken back: the link is
        // unusable after a failed write.
        if let Err(e) = (&self.tcp).write_all(&out[..used]) {
            *bad = true;
            return Err(e);
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for &PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(ch) = &self.channel else {
            return (&self.tcp).read(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let mut rx = lock(&ch.rx);
        if rx.broken {
            return Err(broken());
        }
        loop {
            if rx.pos < rx.plain.len() {
                let n = buf.len().min(rx.plain.len() - rx.pos);
                buf[..n].copy_from_slice(&rx.plain[rx.pos..rx.pos + n]);
                rx.pos += n;
                return Ok(n);
            }
            // A whole record received?
            let avail = rx.end - rx.start;
            if avail >= 2 {
                let s = rx.start;
                let len = usize::from(u16::from_be_bytes([rx.cipher[s], rx.cipher[s + 1]]));
                if len < TAG_LEN {
                    rx.broken = true;
                    return Err(broken());
                }
                if avail >= 2 + len {
                    let Opener {
                        nonce,
                        cipher,
                        start,
                        end,
                        plain,
                        pos,
                        broken: bad,
                    } = &mut *rx;
                    let record = &cipher[s + 2..s + 2 + len];
                    let clear = len - TAG_LEN;
                    // Straight into the caller's buffer when it has room
                    // for the record with its tag (the cipher opens it in
                    // place there; with less it would copy the record into
                    // a buffer of its own first).
                    let direct = buf.len() >= len;
                    let opened = if direct {
                        ch.state.read_message(*nonce, record, buf)
                    } else {
                        plain.resize(clear, 0);
                        *pos = 0;
                        ch.state.read_message(*nonce, record, plain)
                    };
                    if opened.is_err() {
                        *bad = true;
                        return Err(broken());
                    }
                    *nonce += 1;
                    *start += 2 + len;
                    if *start == *end {
                        (*start, *end) = (0, 0);
                    }
                    if direct && clear > 0 {
                        return Ok(clear);
                    }
                    continue;
                }
            }
            // Need more ciphertext: make room (the partial record moves to
            // the front when the tail is short), then read.
            if rx.cipher.is_empty() {
                rx.cipher = vec![0; CIPHER_BUF];
            }
            if CIPHER_BUF - rx.end < READ_CHUNK {
                let (s, e) = (rx.start, rx.end);
                rx.cipher.copy_within(s..e, 0);
                (rx.start, rx.end) = (0, e - s);
            }
            let at = rx.end;
            match (&self.tcp).read(&mut rx.cipher[at..]) {
                Ok(0) if rx.start == rx.end => return Ok(0),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link ended inside a record",
                    ))
                }
                Ok(n) => rx.end += n,
                Err(e) => return Err(e),
            }
        }
    }
}
