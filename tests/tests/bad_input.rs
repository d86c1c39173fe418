//! Bad input never panics and never affects other connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs_e2e::*;

/// After each bad input, a good connection must still work.
async fn still_serves(pair: &Pair) {
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"still here").await, b"still here");
}

async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn socks4_greeting_is_closed_without_a_reply() {
    let pair = Pair::start().await;
    let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
    s.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    still_serves(&pair).await;
}

#[tokio::test]
async fn greeting_without_no_auth_gets_no_acceptable_methods() {
    let pair = Pair::start().await;
    let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap(); // username/password only
    assert_eq!(read_all(&mut s).await, [5, 0xff]);
    still_serves(&pair).await;
}

#[tokio::test]
async fn truncated_request_gets_a_failure_reply() {
    let pair = Pair::start().await;
    let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
    s.write_all(&[5, 1, 0, 5, 1, 0, 1, 10, 0]).await.unwrap(); // IPv4 address cut short
    s.shutdown().await.unwrap();
    let got = read_all(&mut s).await;
    assert_eq!(&got[..2], &[5, 0], "method selection");
    assert_eq!(got[2], 5, "a SOCKS5 reply");
    assert_ne!(got[3], 0, "a failure reply, never success");
    still_serves(&pair).await;
}

#[tokio::test]
async fn bind_and_udp_associate_are_not_supported() {
    let pair = Pair::start().await;
    for cmd in [2u8, 3u8] {
        let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut m = [0u8; 2];
        s.read_exact(&mut m).await.unwrap();
        s.write_all(&[5, cmd, 0, 1, 127, 0, 0, 1, 0, 80])
            .await
            .unwrap();
        let reply = read_all(&mut s).await;
        assert_eq!(reply[..2], [5, 7], "command {cmd} → command not supported");
    }
    still_serves(&pair).await;
}

#[tokio::test]
async fn oversized_unknown_domain_is_host_unreachable() {
    let pair = Pair::start().await;
    let name = format!("{}.invalid", "a".repeat(240));
    match socks5_connect(pair.client.socks5(), SocksTarget::Domain(name, 80)).await {
        SocksResult::Refused(code) => assert_eq!(code, 4, "host unreachable"),
        other => panic!("{other:?}"),
    }
    still_serves(&pair).await;
}

#[tokio::test]
async fn connect_to_a_closed_port_behind_the_mesh_is_connection_refused() {
    let pair = Pair::start().await;
    // Nothing listens on this loopback port behind the server sidecar.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match socks5_connect(pair.client.socks5(), to(pair.server_ip(), closed)).await {
        SocksResult::Refused(code) => assert_eq!(code, 5, "connection refused"),
        other => panic!("{other:?}"),
    }
    still_serves(&pair).await;
}

#[tokio::test]
async fn connect_to_a_proxy_port_of_the_destination_is_refused_by_the_destination() {
    let pair = Pair::start().await;
    match socks5_connect(pair.client.socks5(), to(pair.server_ip(), 15008)).await {
        SocksResult::Refused(code) => assert_eq!(code, 5, "the destination refuses its own port"),
        other => panic!("{other:?}"),
    }
    still_serves(&pair).await;
}

#[tokio::test]
async fn garbage_on_the_hbone_port_is_closed() {
    let pair = Pair::start().await;
    let mut s = TcpStream::connect(pair.server.hbone()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_all(&mut s).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "no plaintext HTTP answer"
    );
    still_serves(&pair).await;
}

#[tokio::test]
async fn tls_without_a_client_certificate_is_rejected() {
    let pair = Pair::start().await;
    let config = zs_e2e::tls::client_without_cert(&pair);
    let err = zs_e2e::tls::hbone_connect(pair.server.hbone(), config)
        .await
        .unwrap_err();
    // The server must refuse at the TLS layer: never answer an HTTP status.
    assert!(!err.contains("HTTP"), "{err}");
    still_serves(&pair).await;
}

#[tokio::test]
async fn client_certificate_from_another_trust_domain_is_rejected() {
    let pair = Pair::start().await;
    let config =
        zs_e2e::tls::client_with_identity(&pair, "spiffe://other.domain/ns/ecs-demo-1/sa/shell");
    let err = zs_e2e::tls::hbone_connect(pair.server.hbone(), config)
        .await
        .unwrap_err();
    assert!(!err.contains("HTTP"), "refused at the TLS layer: {err}");
    still_serves(&pair).await;
}

#[tokio::test]
async fn valid_peer_with_an_unparsable_authority_gets_400() {
    let pair = Pair::start().await;
    let config =
        zs_e2e::tls::client_with_identity(&pair, "spiffe://cluster.local/ns/ecs-demo-1/sa/shell");
    let status = zs_e2e::tls::hbone_connect_status(pair.server.hbone(), config, "not-an-authority")
        .await
        .unwrap();
    assert_eq!(status, 400);
    still_serves(&pair).await;
}

#[tokio::test]
async fn authority_for_another_ip_gets_400() {
    let pair = Pair::start().await;
    let config =
        zs_e2e::tls::client_with_identity(&pair, "spiffe://cluster.local/ns/ecs-demo-1/sa/shell");
    let other = format!("{}:{}", pair.client_ip(), pair.app.port());
    let status = zs_e2e::tls::hbone_connect_status(pair.server.hbone(), config, &other)
        .await
        .unwrap();
    assert_eq!(status, 400);
}
