//! systemd readiness (`sd_notify`): with `Type=notify`, systemd starts units ordered after
//! enforcer only once the agent says enforcement is live. A datagram to `$NOTIFY_SOCKET`; a
//! no-op when the variable is unset (not under systemd).

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if it is listening. Failures are logged: a
/// missing notification delays the unit, it never weakens enforcement.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(error) = send(&path, state)
    {
        tracing::warn!(%error, state, "notifying systemd");
    }
}

/// Sends `state` to the notify socket `path` (`@name`: an abstract socket).
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<usize> {
    let socket = UnixDatagram::unbound()?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        }
        None => socket.send_to(state.as_bytes(), path),
    }
}

#[cfg(test)]
mod tests {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};

    #[test]
    fn a_datagram_reaches_a_path_or_abstract_notify_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        super::send(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("enforcer-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        super::send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = listener.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
