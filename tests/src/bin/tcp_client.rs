//! A cooperating TCP client (`migrate run --tcp ...`): sends `msg N`
//! lines to an echo server and prints `echo N` for each one echoed back,
//! in order. Its resume callback prints `resumed HOST FDS` and, when its
//! connection was made again, has the line in flight sent again (what was
//! in flight at the freeze is gone with the old connection). A failed
//! connection prints `lost N ERROR` and the program idles.
//! Usage: tcp_client ADDR:PORT

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static RECONNECTED: AtomicBool = AtomicBool::new(false);

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits up to 200 ms for `fd` to be readable.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 200) > 0 }
}

fn main() {
    // SAFETY: close_range on integers; nothing of ours is open yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let addr = std::env::args()
        .nth(1)
        .expect("usage: tcp_client ADDR:PORT");
    let mut s = TcpStream::connect(&addr).expect("connect");
    migrate_api::on_resume(|host, fds| {
        say(format!("resumed {host} {fds:?}"));
        if !fds.is_empty() {
            RECONNECTED.store(true, Ordering::SeqCst);
        }
    })
    .expect("callback");
    say(format!("pid {} fd {}", std::process::id(), s.as_raw_fd()));
    let mut pending = Vec::new();
    for n in 0u64.. {
        let msg = format!("msg {n}\n");
        let sent = s.write_all(msg.as_bytes());
        let mut line = Vec::new();
        let got = sent.and_then(|()| loop {
            if readable(s.as_raw_fd()) {
                let mut b = [0u8; 256];
                let k = s.read(&mut b)?;
                if k == 0 {
                    break Err(ErrorKind::UnexpectedEof.into());
                }
                pending.extend_from_slice(&b[..k]);
                if let Some(i) = pending.iter().position(|&c| c == b'\n') {
                    line = pending.drain(..=i).collect();
                    break Ok(());
                }
            } else if RECONNECTED.swap(false, Ordering::SeqCst) {
                pending.clear();
                s.write_all(msg.as_bytes())?;
            }
        });
        match got {
            Ok(()) if line == msg.as_bytes() => say(format!("echo {n}")),
            Ok(()) => say(format!("wrong {n} {:?}", String::from_utf8_lossy(&line))),
            Err(e) => {
                say(format!("lost {n} {e}"));
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
