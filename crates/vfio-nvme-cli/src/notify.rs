//! systemd readiness (`sd_notify`): `READY=1` to the datagram socket named by
//! `$NOTIFY_SOCKET`, a filesystem path or, with a leading `@`, a Linux abstract-namespace
//! name. No libsystemd: the protocol is one datagram.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::SocketAddr;
use std::os::unix::net::UnixDatagram;

use anyhow::Context as _;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `READY=1` and `status` to `$NOTIFY_SOCKET`; does nothing (returns false) when the
/// variable is not set.
pub fn ready(status: &str) -> anyhow::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    send(&target, &format!("READY=1\nSTATUS={status}\n"))
        .with_context(|| format!("cannot notify systemd at {NOTIFY_SOCKET}={target:?}"))?;
    Ok(true)
}

/// Sends one datagram `message` to the notify socket `target`.
fn send(target: &OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(target)?,
    };
    socket.send_to_addr(message.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_path_and_an_abstract_name_both_receive_ready() {
        let path = std::env::temp_dir().join(format!("vfio-nvme-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\n").unwrap();
        assert_eq!(receive(&listener), "READY=1\n");
        std::fs::remove_file(&path).unwrap();

        let name = format!("vfio-nvme-notify-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1\nSTATUS=x\n").unwrap();
        assert_eq!(receive(&abstract_listener), "READY=1\nSTATUS=x\n");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let err = send(OsStr::new("/nonexistent/notify"), "READY=1\n").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
