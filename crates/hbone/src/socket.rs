//! TCP socket options for connections the proxy opens, as ztunnel sets them:
//! `TCP_NODELAY` always (HBONE frames are latency-sensitive and already batched),
//! keepalive so dead peers are noticed on idle tunnels, optional
//! `TCP_USER_TIMEOUT` and `SO_MARK`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// Options applied to outgoing TCP sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// TCP keepalive (`KEEPALIVE_ENABLED`); `None` leaves the kernel default (off).
    pub keepalive: Option<Keepalive>,
    /// Set `TCP_USER_TIMEOUT` to `time + retries × interval` (`USER_TIMEOUT_ENABLED`).
    pub user_timeout: bool,
    /// `SO_MARK` (`PACKET_MARK`), for policy routing around a capture rule.
    pub mark: Option<u32>,
}

/// Keepalive timers (`KEEPALIVE_TIME`, `KEEPALIVE_INTERVAL`, `KEEPALIVE_RETRIES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub time: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            time: Duration::from_secs(180),
            interval: Duration::from_secs(180),
            retries: 9,
        }
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            keepalive: Some(Keepalive::default()),
            user_timeout: false,
            mark: None,
        }
    }
}

impl SocketOptions {
    /// Opens a TCP connection to `dst` with these options (the mark is set before
    /// connecting so the SYN already carries it).
    pub async fn connect(&self, dst: SocketAddr) -> io::Result<TcpStream> {
        let socket = if dst.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(mark) = self.mark {
            SockRef::from(&socket).set_mark(mark)?;
        }
        let stream = socket.connect(dst).await?;
        self.apply(&stream)?;
        Ok(stream)
    }

    /// Applies nodelay, keepalive and user timeout to an established stream.
    pub fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let sock = SockRef::from(stream);
        if let Some(ka) = self.keepalive {
            sock.set_tcp_keepalive(
                &TcpKeepalive::new()
                    .with_time(ka.time)
                    .with_interval(ka.interval)
                    .with_retries(ka.retries),
            )?;
            if self.user_timeout {
                sock.set_tcp_user_timeout(Some(ka.time + ka.interval * ka.retries))?;
            }
        }
        Ok(())
    }
}
