//! The SOCKS5 listener's request reader (`zs_proxy::socks5::read_request`,
//! the greeting and one request, parsed by `fast-socks5`), fed arbitrary bytes
//! as one client connection.
//!
//! Properties: no input panics; the exchange always ends (the client closes
//! after its bytes); a request is accepted exactly when a plain reading of
//! RFC 1928 accepts it, with the same command and target; the listener's
//! answers are well formed: the method choice first (`05 00`, or `05 ff` when
//! the client does not offer "no authentication"), then, if the request was
//! rejected, at most one failure reply, never a success.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use fast_socks5::Socks5Command;
use fast_socks5::util::target_addr::TargetAddr;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs_proxy::socks5;

#[derive(Debug, PartialEq)]
enum Target {
    Ip(SocketAddr),
    Domain(String, u16),
}

/// RFC 1928, read plainly: a greeting that offers method 0, then
/// `VER CMD RSV ATYP DST.ADDR DST.PORT` with a known command and address type
/// (and a UTF-8 domain, which the listener needs to look it up).
fn reference(d: &[u8]) -> Option<(u8, Target)> {
    let (&ver, rest) = d.split_first()?;
    let (&n, rest) = rest.split_first()?;
    if ver != 5 || rest.len() < n as usize || !rest[..n as usize].contains(&0) {
        return None;
    }
    let req = &rest[n as usize..];
    let [5, cmd, _rsv, atyp, addr @ ..] = req else {
        return None;
    };
    let port = |b: &[u8]| -> Option<u16> { Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?)) };
    let target = match atyp {
        1 => {
            let ip: [u8; 4] = addr.get(..4)?.try_into().ok()?;
            Target::Ip(SocketAddr::from((Ipv4Addr::from(ip), port(&addr[4..])?)))
        }
        4 => {
            let ip: [u8; 16] = addr.get(..16)?.try_into().ok()?;
            Target::Ip(SocketAddr::from((Ipv6Addr::from(ip), port(&addr[16..])?)))
        }
        3 => {
            let (&len, name) = addr.split_first()?;
            let name = name.get(..len as usize)?;
            let port = port(&addr[1 + len as usize..])?;
            Target::Domain(String::from_utf8(name.to_vec()).ok()?, port)
        }
        _ => return None,
    };
    matches!(cmd, 1..=3).then_some((*cmd, target))
}

fn command_byte(c: &Socks5Command) -> u8 {
    match c {
        Socks5Command::TCPConnect => 1,
        Socks5Command::TCPBind => 2,
        Socks5Command::UDPAssociate => 3,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (parsed, out) = runtime().block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut r, mut w) = tokio::io::split(client);
        let read_request = async move {
            // Drop the protocol state (and with it the server half) once read,
            // so the client's read below ends.
            socks5::read_request(server)
                .await
                .map(|(_, cmd, target)| (cmd, target))
        };
        let write = async move {
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let exchange = async {
            let (parsed, (), out) = tokio::join!(read_request, write, read);
            (parsed, out)
        };
        tokio::time::timeout(Duration::from_secs(120), exchange)
            .await
            .expect("the exchange ended")
    });

    let expected = reference(data);
    match parsed {
        Ok((cmd, target)) => {
            let target = match target {
                TargetAddr::Ip(a) => Target::Ip(a),
                TargetAddr::Domain(name, port) => Target::Domain(name, port),
            };
            assert_eq!(Some((command_byte(&cmd), target)), expected, "accepted {data:02x?}");
            assert_eq!(out, [5, 0], "answers to an accepted request");
        }
        Err(e) => {
            assert!(expected.is_none(), "rejected {data:02x?} ({e}) but RFC 1928 accepts it");
            assert!(!socks5::failure_reason(&e).is_empty());
            match out.as_slice() {
                [] | [5, 0xff] | [5, 0] => {}
                [5, 0, 5, rep, 0, _, ..] => assert_ne!(*rep, 0, "a rejected request answered success"),
                other => panic!("unexpected answer {other:02x?} to {data:02x?}"),
            }
        }
    }
});
