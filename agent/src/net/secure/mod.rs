//! Security of the links between agents: the cluster's credentials, the
//! Noise handshake by which two agents prove they belong to the cluster, and
//! [`PeerStream`], the encrypted stream every lane runs on.
//!
//! A cluster is a directory made by `migrate-agent keygen DIR --hosts ...`:
//! `cluster.key` (a pre-shared key, secret), `hosts` (every host's name and
//! static public key) and one `NAME.key` per host (its private key, secret).
//! Each agent needs `cluster.key`, `hosts` and its own `NAME.key`.
//!
//! The handshake is `Noise_XXpsk3_25519_AESGCM_SHA256`: both sides show a
//! static key that must be listed in `hosts`, and both must know the cluster
//! key. After it, every byte travels in authenticated records of at most
//! 64 KiB (2-byte length, ciphertext with its tag), one nonce counter per
//! direction, so a stream can be read by one thread while another writes.
//!
//! Before the handshake each side sends five bytes in the clear, `MGL1`
//! and its mode (`N` for Noise, `P` for plaintext), so that an agent run
//! with `--insecure` and one with credentials tell each other why they
//! cannot talk, instead of failing on garbage.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

mod keys;
mod stream;

pub use keys::{keygen, AuthError, Credentials};
pub use stream::PeerStream;
use stream::*;

/// The Noise protocol of every agent-to-agent link.
pub const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";
/// The clear-text preamble: magic, then the mode byte.
const PREAMBLE_MAGIC: &[u8; 4] = b"MGL1";
const MODE_NOISE: u8 = b'N';
const MODE_PLAIN: u8 = b'P';

/// How this agent talks to its peers.
#[derive(Debug, Clone)]
pub enum Security {
    /// Authenticated and encrypted (the default).
    Noise(Arc<Credentials>),
    /// Plain TCP, only with `--insecure`.
    Insecure,
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid Noise parameters"))
}

/// A secured link and, when authenticated, the peer's proven host name.
pub type Secured = Result<(PeerStream, Option<String>), HandshakeError>;

/// Why a link could not be secured.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Transport failure.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The other side speaks another language or mode.
    #[error("{0}")]
    Mismatch(String),
    /// The peer failed to prove it belongs to the cluster.
    #[error("the peer is not a member of this cluster ({0})")]
    NotMember(String),
}

fn mode_name(m: u8) -> &'static str {
    match m {
        MODE_NOISE => "requires authenticated agents (--auth)",
        MODE_PLAIN => "runs --insecure (plaintext)",
        _ => "speaks an unknown mode",
    }
}

impl Security {
    fn mode(&self) -> u8 {
        match self {
            Security::Noise(_) => MODE_NOISE,
            Security::Insecure => MODE_PLAIN,
        }
    }

    /// Secures a connection this agent dialled. Returns the stream and, when
    /// authenticated, the peer's host name as its key proves it.
    pub fn initiate(&self, tcp: TcpStream) -> Secured {
        self.secure(tcp, true)
    }

    /// Secures a connection a peer dialled; see [`Security::initiate`].
    pub fn respond(&self, tcp: TcpStream) -> Secured {
        self.secure(tcp, false)
    }

    /// Preambles, then (with credentials) the three XX messages, the
    /// dialler writing first. A peer's key is checked as soon as it is
    /// known, before this side says more.
    fn secure(&self, tcp: TcpStream, dialled: bool) -> Secured {
        let theirs = if dialled {
            (&tcp).write_all(&self.preamble())?;
            read_preamble(&tcp)?
        } else {
            let theirs = read_preamble(&tcp)?;
            (&tcp).write_all(&self.preamble())?;
            theirs
        };
        if theirs != self.mode() {
            return Err(HandshakeError::Mismatch(format!(
                "the peer {}; this agent {}",
                mode_name(theirs),
                mode_name(self.mode())
            )));
        }
        let Security::Noise(creds) = self else {
            return Ok((PeerStream::plain(tcp), None));
        };
        let b = builder()
            .local_private_key(&creds.private)?
            .psk(3, &creds.psk)?;
        let mut hs = if dialled {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(noise)?;
        let mut buf = vec![0u8; MAX_RECORD];
        let mut peer = None;
        for step in 0..3 {
            if (step % 2 == 0) == dialled {
                let n = hs.write_message(&[], &mut buf).map_err(noise)?;
                write_record(&tcp, &buf[..n])?;
            } else {
                let msg = read_record(&tcp)?;
                hs.read_message(&msg, &mut buf)
                    .map_err(|e| HandshakeError::NotMember(e.to_string()))?;
                if let (None, Some(key)) = (&peer, hs.get_remote_static()) {
                    peer = Some(check_member(creds, key)?);
                }
            }
        }
        let peer = peer.ok_or_else(|| HandshakeError::NotMember("no static key".into()))?;
        let state = hs.into_stateless_transport_mode().map_err(noise)?;
        Ok((PeerStream::noise(tcp, state), Some(peer)))
    }

    fn preamble(&self) -> [u8; 5] {
        let mut p = [0u8; 5];
        p[..4].copy_from_slice(PREAMBLE_MAGIC);
        p[4] = self.mode();
        p
    }
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        noise(e)
    }
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Io(io::Error::other(format!("noise: {e}")))
}

fn check_member(creds: &Credentials, key: &[u8]) -> Result<String, HandshakeError> {
    creds
        .host_of(key)
        .map(str::to_string)
        .ok_or_else(|| HandshakeError::NotMember("its key is not in the hosts file".into()))
}

fn read_preamble(mut tcp: &TcpStream) -> Result<u8, HandshakeError> {
    let mut p = [0u8; 5];
    tcp.read_exact(&mut p)?;
    if &p[..4] != PREAMBLE_MAGIC {
        return Err(HandshakeError::Mismatch(
            "the peer is not a migrate agent of this version".into(),
        ));
    }
    Ok(p[4])
}

/// For the fuzz target of the record parser (`fuzz/fuzz_targets/records.rs`):
/// a Noise link over loopback between `a` (dialling) and `b`, returned as
/// `b`'s end, ready to read, and the raw TCP stream of `a`'s end, through
/// which anything can be sent to it as if on the wire.
#[doc(hidden)]
pub fn fuzz_link(a: &Security, b: &Security) -> io::Result<(PeerStream, TcpStream)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let dialled = TcpStream::connect(addr)?;
    let (accepted, _) = l.accept()?;
    let raw = dialled.try_clone()?;
    let (ours, theirs) = std::thread::scope(|s| {
        let t = s.spawn(|| a.initiate(dialled));
        let theirs = b.respond(accepted);
        (t.join(), theirs)
    });
    let bad = |e: HandshakeError| io::Error::other(e.to_string());
    drop(
        ours.map_err(|_| io::Error::other("handshake thread panicked"))?
            .map_err(bad)?,
    );
    let (stream, _) = theirs.map_err(bad)?;
    Ok((stream, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn cluster(hosts: &[&str]) -> (tempdir::Dir, Vec<Security>) {
        let dir = tempdir::Dir::new();
        let names: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
        keygen(dir.path(), &names).unwrap();
        let sec = hosts
            .iter()
            .map(|h| Security::Noise(Arc::new(Credentials::load(dir.path(), h).unwrap())))
            .collect();
        (dir, sec)
    }

    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "migrate-secure-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Connects `a` (dialling) to `b` (answering) over loopback.
    fn link(a: &Security, b: &Security) -> (Secured, Secured) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let b = b.clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            b.respond(s)
        });
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = a.initiate(s);
        (r, t.join().unwrap())
    }

    #[test]
    fn members_talk_both_ways_and_learn_each_others_names() {
        let (_d, sec) = cluster(&["host1", "host2"]);
        let (a, b) = link(&sec[0], &sec[1]);
        let (mut a, an) = a.unwrap();
        let (b, bn) = b.unwrap();
        assert_eq!(an.as_deref(), Some("host2"));
        assert_eq!(bn.as_deref(), Some("host1"));
        // Large and small writes, read back in odd-sized pieces by a clone
        // while the other handle writes the other way.
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let expect = data.clone();
        let mut b_r = b.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; expect.len()];
            let mut at = 0;
            while at < got.len() {
                let end = (at + 777).min(got.len());
                let n = b_r.read(&mut got[at..end]).unwrap();
                assert!(n > 0);
                at += n;
            }
            assert!(got == expect);
        });
        let mut b_w = b;
        b_w.write_all(b"hello from host2").unwrap();
        a.write_all(&data[..5]).unwrap();
        a.write_all(&data[5..]).unwrap();
        reader.join().unwrap();
        let mut back = [0u8; 16];
        a.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello from host2");
    }

    #[test]
    fn vectored_writes_arrive_whole_and_in_order() {
        let (_d, sec) = cluster(&["host1", "host2"]);
        let (a, b) = link(&sec[0], &sec[1]);
        let (a, _) = a.unwrap();
        let (mut b, _) = b.unwrap();
        // An empty part, a small one and parts past one batch of records:
        // one call takes at most a batch, the rest follows in order.
        let big: Vec<u8> = (0..WRITE_BATCH as u32 + 70_001)
            .map(|i| (i % 253) as u8)
            .collect();
        let parts: [&[u8]; 4] = [b"", b"head", &big, b"tail"];
        let expect: Vec<u8> = parts.concat();
        let len = expect.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; len];
            b.read_exact(&mut got).unwrap();
            got
        });
        let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut left = &mut slices[..];
        let mut calls = 0;
        while !left.is_empty() {
            let n = (&a).write_vectored(left).unwrap();
            assert!(n > 0 && n <= WRITE_BATCH, "{n}");
            io::IoSlice::advance_slices(&mut left, n);
            calls += 1;
        }
        assert!(reader.join().unwrap() == expect);
        assert_eq!(calls, 2);
    }

    #[test]
    fn another_cluster_is_refused() {
        let (_d1, one) = cluster(&["host1", "host2"]);
        let (_d2, other) = cluster(&["host1", "host2"]);
        let (a, b) = link(&other[0], &one[1]);
        assert!(a.is_err() && b.is_err(), "a foreign key was accepted");
    }

    #[test]
    fn plaintext_and_noise_refuse_each_other_with_the_reason() {
        let (_d, sec) = cluster(&["host1", "host2"]);
        let (a, b) = link(&Security::Insecure, &sec[1]);
        let a = a.err().unwrap().to_string();
        assert!(a.contains("requires authenticated agents"), "{a}");
        assert!(b.is_err());
        let (a, _) = link(&sec[0], &Security::Insecure);
        let a = a.err().unwrap().to_string();
        assert!(a.contains("--insecure"), "{a}");
    }

    #[test]
    fn a_tampered_record_breaks_the_link() {
        let (_d, sec) = cluster(&["host1", "host2"]);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s1 = sec[1].clone();
        // A man in the middle flips one bit of the first record.
        let mitm = TcpListener::bind("127.0.0.1:0").unwrap();
        let maddr = mitm.local_addr().unwrap();
        std::thread::spawn(move || {
            let (c, _) = mitm.accept().unwrap();
            let u = TcpStream::connect(addr).unwrap();
            let (mut c2, mut u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            std::thread::spawn(move || io::copy(&mut u2, &mut c2));
            let mut c = c;
            let mut u = u;
            let mut seen = 0usize;
            let mut buf = [0u8; 4096];
            loop {
                let n = match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Preamble (5) + three handshake records pass; flip a byte
                // well inside the first data record.
                if seen < 400 && seen + n > 300 {
                    let i = 300usize.saturating_sub(seen).min(n - 1);
                    buf[i] ^= 1;
                }
                seen += n;
                if u.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let (mut s, _) = s1.respond(s).unwrap();
            let mut got = vec![0u8; 2000];
            s.read_exact(&mut got)
        });
        let s = TcpStream::connect(maddr).unwrap();
        let (mut a, _) = sec[0].initiate(s).unwrap();
        a.write_all(&[0x55u8; 2000]).unwrap();
        let r = t.join().unwrap();
        assert!(r.is_err(), "a tampered record was accepted");
    }

    #[test]
    fn a_repeated_record_is_recognised_and_never_acted_on() {
        let (_d, sec) = cluster(&["host1", "host2"]);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // A relay that sends the first data record twice (a replay).
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let raddr = relay.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = relay.accept().unwrap();
            let mut u = TcpStream::connect(addr).unwrap();
            let (mut c2, mut u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            std::thread::spawn(move || io::copy(&mut u2, &mut c2));
            // Preamble, handshake messages 1 (e, and a tag: the psk mixes
            // the ephemeral key in) and 3 (the second comes back
            // the other way), then one record: length and body.
            for n in [5, 50, 66] {
                let mut b = vec![0u8; n];
                c.read_exact(&mut b).unwrap();
                u.write_all(&b).unwrap();
            }
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut body).unwrap();
            for _ in 0..2 {
                u.write_all(&len).unwrap();
                u.write_all(&body).unwrap();
            }
            let _ = io::copy(&mut c, &mut u);
        });
        let s1 = sec[1].clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (mut s, _) = s1.respond(s).unwrap();
            let mut first = [0u8; 6];
            s.read_exact(&mut first).unwrap();
            let mut again = [0u8; 6];
            let replayed = s.read_exact(&mut again).map(|_| again);
            // Once broken, the link stays broken: the genuine second
            // record behind the replay is not read either.
            let after = s.read_exact(&mut again).map(|_| again);
            (first, replayed, after)
        });
        let s = TcpStream::connect(raddr).unwrap();
        let (mut a, _) = sec[0].initiate(s).unwrap();
        a.write_all(b"commit").unwrap();
        a.write_all(b"second").unwrap();
        let (first, replayed, after) = t.join().unwrap();
        assert_eq!(&first, b"commit");
        // The replay broke the link: not read as a message, and not a
        // mere timeout waiting for more.
        match replayed {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
            Ok(m) => panic!("read {m:?} after a replayed record"),
        }
        match after {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
            Ok(m) => panic!("read {m:?} after the link broke"),
        }
    }

    #[test]
    fn keygen_checks_its_input_and_never_overwrites() {
        let d = tempdir::Dir::new();
        assert!(keygen(d.path(), &[]).is_err());
        assert!(keygen(d.path(), &["a b".into()]).is_err());
        assert!(keygen(d.path(), &["a".into(), "a".into()]).is_err());
        keygen(d.path(), &["a".into(), "b".into()]).unwrap();
        assert!(keygen(d.path(), &["a".into()]).is_err());
        let mode = fs::metadata(d.path().join("a.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Credentials::load(d.path(), "c").is_err());
        fs::set_permissions(d.path().join("a.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(d.path(), "a").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(d.path().join("a.key"), fs::Permissions::from_mode(0o600)).unwrap();
        Credentials::load(d.path(), "a").unwrap();
        // Nothing but the keys is left behind.
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.key", "b.key", "cluster.key", "hosts"]);
    }

    #[test]
    fn credentials_another_user_could_change_are_refused() {
        let d = tempdir::Dir::new();
        keygen(d.path(), &["a".into(), "b".into()]).unwrap();
        let hosts = d.path().join("hosts");
        for mode in [0o666, 0o664] {
            fs::set_permissions(&hosts, fs::Permissions::from_mode(mode)).unwrap();
            let e = Credentials::load(d.path(), "a").unwrap_err().to_string();
            assert!(e.contains("can be changed"), "{e}");
        }
        fs::set_permissions(&hosts, fs::Permissions::from_mode(0o644)).unwrap();
        Credentials::load(d.path(), "a").unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Credentials::load(d.path(), "a").is_err());
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        // Owned by another user (only root can give a file away).
        let me = fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        if me.unwrap() == 0 {
            std::os::unix::fs::chown(&hosts, Some(65534), None).unwrap();
            let e = Credentials::load(d.path(), "a").unwrap_err().to_string();
            assert!(e.contains("owner uid 65534"), "{e}");
        }
    }
}
