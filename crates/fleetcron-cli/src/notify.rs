//! systemd's readiness protocol (sd_notify(3)) for a `Type=notify` service: when systemd started the
//! daemon it sets `NOTIFY_SOCKET`, and the daemon sends `READY=1` once it is really up (store reached,
//! migrated, tasks registered, admin server listening), `STATUS=…` lines `systemctl status` shows, and
//! `STOPPING=1` when it begins a graceful shutdown. Without `NOTIFY_SOCKET` every call does nothing.
//!
//! A datagram on a Unix socket, nothing more: a path (`/run/systemd/notify`) or an abstract name
//! (`@…`, Linux).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service manager, if there is one.
/// A failure is logged, never fatal: the daemon runs the same with or without a supervisor.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&socket, state) {
        let first = state.lines().next().unwrap_or_default();
        tracing::warn!(%error, "cannot notify the service manager ({first})");
    }
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let name = socket.as_bytes();
    let sent = match name.first() {
        Some(b'/') => sender.send_to(state.as_bytes(), socket)?,
        Some(b'@') => send_abstract(&sender, &name[1..], state)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract socket name (@NAME)",
            ))
        }
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was cut short",
        ))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(state.as_bytes(), &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names (@NAME) exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1\nSTATUS=up").expect("send to a path");
        let mut buffer = [0u8; 64];
        let length = receiver.recv(&mut buffer).expect("receive");
        assert_eq!(&buffer[..length], b"READY=1\nSTATUS=up");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("fleetcron-notify-test-{}", std::process::id());
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
            let receiver = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
            send(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send to an abstract name");
            let length = receiver.recv(&mut buffer).expect("receive");
            assert_eq!(&buffer[..length], b"STOPPING=1");
        }
    }

    #[test]
    fn a_malformed_or_missing_socket_is_an_error_not_a_panic() {
        for socket in ["relative/path", "", "vsock:2:1234"] {
            assert!(send(OsStr::new(socket), "READY=1").is_err(), "{socket:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(send(dir.path().join("absent.sock").as_os_str(), "READY=1").is_err());
    }
}
