//! A byte-exact SOCKS5 client, so tests see the reply codes the proxy sends.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to ask the proxy for.
#[derive(Clone, Debug)]
pub enum SocksTarget {
    Addr(SocketAddr),
    Domain(String, u16),
}

/// The outcome of a SOCKS5 CONNECT.
#[derive(Debug)]
pub enum SocksResult {
    Connected(TcpStream),
    /// The proxy answered with this reply code (RFC 1928 REP).
    Refused(u8),
    /// The proxy closed the connection without a reply.
    Closed,
}

impl SocksResult {
    pub fn expect_connected(self) -> TcpStream {
        match self {
            SocksResult::Connected(s) => s,
            other => panic!("expected a SOCKS5 success, got {other:?}"),
        }
    }
}

/// Connects through the SOCKS5 proxy at `proxy`.
pub async fn socks5_connect(proxy: SocketAddr, target: SocksTarget) -> SocksResult {
    let s = TcpStream::connect(proxy)
        .await
        .expect("connect to the SOCKS5 proxy");
    socks5_handshake(s, target).await
}

/// The SOCKS5 exchange over a connection to the proxy the caller opened
/// (e.g. from inside a network namespace).
pub async fn socks5_handshake(mut s: TcpStream, target: SocksTarget) -> SocksResult {
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    if s.read_exact(&mut method).await.is_err() {
        return SocksResult::Closed;
    }
    assert_eq!(method, [5, 0], "proxy must accept no-auth");
    let mut req = vec![5, 1, 0];
    match &target {
        SocksTarget::Addr(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        SocksTarget::Addr(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        SocksTarget::Domain(name, port) => {
            req.push(3);
            req.push(name.len() as u8);
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
    }
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    if s.read_exact(&mut head).await.is_err() {
        return SocksResult::Closed;
    }
    assert_eq!(head[0], 5, "SOCKS version in reply");
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l).await.unwrap();
            l[0] as usize + 2
        }
        other => panic!("bad ATYP {other} in reply"),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await.unwrap();
    if head[1] == 0 {
        SocksResult::Connected(s)
    } else {
        SocksResult::Refused(head[1])
    }
}

/// Shorthand for an IP target.
pub fn to(ip: IpAddr, port: u16) -> SocksTarget {
    SocksTarget::Addr(SocketAddr::new(ip, port))
}
