//! The Prometheus endpoint (`--metrics ADDR:PORT`): `GET /metrics` answers
//! [`crate::metrics::METRICS`] as text. One thread serves one connection
//! at a time, each bounded in size and time: a scraper (or anyone who can
//! reach the port) cannot make the agent hold more.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use tracing::{debug, info};

/// Longest a request may take to arrive, or its answer to leave.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request read.
const MAX_REQUEST: usize = 8 << 10;

/// Binds `addr` and serves it on a thread of its own.
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    let l = TcpListener::bind(addr)?;
    info!(%addr, "metrics at http://{addr}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                if let Err(e) = answer(s) {
                    debug!(error = %e, "a metrics request went wrong");
                }
            }
        })?;
    Ok(())
}

/// Reads one request (its head) and answers it.
fn answer(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", crate::metrics::METRICS.render()),
        (Some("GET"), _) => ("404 Not Found", "only /metrics is here\n".into()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".into()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}
