//! Tells the service manager how the agent is doing: systemd's notify
//! protocol (`sd_notify(3)`), a datagram of `KEY=VALUE` lines sent to the
//! socket named by `NOTIFY_SOCKET`. Without that variable (not started by
//! systemd with `Type=notify`) every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The sockets are bound: the agent serves.
pub const READY: &str = "READY=1";
/// The agent drains: it takes no new migrations and ends once those in
/// flight are over.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (lines of `KEY=VALUE`) to the service manager, if one
/// listens. A manager that cannot be told is logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    // A leading '@' names an abstract socket.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("migrate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), READY).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], READY.as_bytes());
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("migrate-notify-{}", std::process::id());
        let abs = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abs).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), STOPPING).unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], STOPPING.as_bytes());
    }
}
