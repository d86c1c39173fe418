//! The core data path: SOCKS5 in, HBONE across, app out.

use zs_e2e::*;

#[tokio::test]
async fn socks5_ip_target_reaches_the_app_over_hbone() {
    let pair = Pair::start().await;
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"hello mesh").await, b"hello mesh");
    assert_eq!(pair.app.accepted(), 1);
}

#[tokio::test]
async fn socks5_mesh_hostname_resolves_to_the_service() {
    let pair = Pair::start().await;
    let mut s = socks5_connect(
        pair.client.socks5(),
        SocksTarget::Domain(HOST.into(), SERVICE_PORT),
    )
    .await
    .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"by name").await, b"by name");
}

#[tokio::test]
async fn socks5_service_vip_is_load_balanced_to_the_endpoint() {
    let pair = Pair::start().await;
    let mut s = socks5_connect(pair.client.socks5(), to(pair.block.ip(100), SERVICE_PORT))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"via vip").await, b"via vip");
}

#[tokio::test]
async fn large_transfer_is_byte_exact_both_ways() {
    let pair = Pair::start().await;
    let s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    let len = 64 * 1024 * 1024;
    let (sent, received, n) = checksummed_echo(s, len).await;
    assert_eq!(n, len);
    assert_eq!(sent, received);
}

#[tokio::test]
async fn half_close_is_propagated_end_to_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that reads until EOF, then answers with the byte count.
    let counter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = counter.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = counter.accept().await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        s.write_all(format!("got {}", buf.len()).as_bytes())
            .await
            .unwrap();
    });
    let pair = Pair::start().await;
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), port))
        .await
        .expect_connected();
    s.write_all(&[7u8; 1000]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 1000");
}

#[tokio::test]
async fn many_concurrent_connections_share_the_pool() {
    let pair = Pair::start().await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let proxy = pair.client.socks5();
        let target = to(pair.server_ip(), pair.app.port());
        tasks.push(tokio::spawn(async move {
            let mut s = socks5_connect(proxy, target).await.expect_connected();
            let msg = format!("connection {i}").repeat(50);
            assert_eq!(echo_roundtrip(&mut s, msg.as_bytes()).await, msg.as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(pair.app.accepted(), 200);
}

#[tokio::test]
async fn unknown_destinations_are_passed_through_as_plain_tcp() {
    let pair = Pair::start().await;
    // Not in the mesh: an echo server at an address no workload has.
    let outside = EchoServer::start(pair.block.addr(50, 0), None).await;
    let mut s = socks5_connect(pair.client.socks5(), to(outside.addr.ip(), outside.port()))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"plain").await, b"plain");
    // And by a name the system resolver knows.
    let mut s = socks5_connect(
        pair.client.socks5(),
        SocksTarget::Domain("localhost".into(), pair.app.port()),
    )
    .await
    .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"via dns").await, b"via dns");
}

#[tokio::test]
async fn registry_only_refuses_destinations_outside_the_mesh() {
    let block = AddrBlock::new();
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), None).await;
    let mesh = Pair::mesh(&block, app.port());
    let pair = Pair::start_with(
        block,
        app,
        mesh,
        &[("OUTBOUND_TRAFFIC_POLICY", "REGISTRY_ONLY")],
        &[],
    )
    .await;
    let outside = EchoServer::start(pair.block.addr(50, 0), None).await;
    match socks5_connect(pair.client.socks5(), to(outside.addr.ip(), outside.port())).await {
        SocksResult::Refused(code) => assert_eq!(code, 2, "not allowed by ruleset"),
        other => panic!("{other:?}"),
    }
    assert_eq!(outside.accepted(), 0);
    // Mesh destinations still work.
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"mesh").await, b"mesh");
}

#[tokio::test]
async fn unknown_hostnames_are_host_unreachable() {
    let pair = Pair::start().await;
    match socks5_connect(
        pair.client.socks5(),
        SocksTarget::Domain("no-such-service.invalid".into(), 80),
    )
    .await
    {
        SocksResult::Refused(code) => assert_eq!(code, 4),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sigterm_lets_an_open_transfer_finish_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pair = Pair::start().await;
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    s.write_all(b"before ").await.unwrap();
    pair.client.signal(libc::SIGTERM);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Draining: not ready, not accepting, but the open connection keeps working.
    let ready = http_get(pair.client.readiness(), "/healthz/ready").await;
    assert!(
        !matches!(ready, Ok((200, _))),
        "readiness must fail while draining: {ready:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(pair.client.socks5())
            .await
            .is_err()
            || {
                // A connection may still be accepted by the kernel backlog; it must not be served.
                let r = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
                    .await;
                !matches!(r, SocksResult::Connected(_))
            }
    );
    s.write_all(b"after").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"before after");
    drop(s);
    assert_eq!(
        pair.client
            .wait_exit(std::time::Duration::from_secs(10))
            .await,
        Some(0)
    );
}

/// An IPv6 destination: the SOCKS5 request carries an IPv6 address (ATYP 4),
/// the destination workload's address is `::1`, and HBONE goes to `[::1]:15008`.
/// (Only this test binds `[::1]`; it skips where the host has no IPv6 loopback.)
#[tokio::test]
async fn socks5_ipv6_target_reaches_the_app_over_hbone() {
    let v6 = std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    if std::net::TcpListener::bind((v6, 0)).is_err() {
        eprintln!("skipping: no IPv6 loopback on this host");
        return;
    }
    let block = AddrBlock::new();
    // Dual-stack, so the app answers whichever loopback the sidecar delivers on.
    let app = EchoServer::start("[::]:0".parse().unwrap(), None).await;
    let mut mesh = Pair::mesh(&block, app.port());
    for w in &mut mesh.workloads {
        if w.name == "echo" {
            w.ips = vec![v6];
        }
    }
    let pair = Pair::start_with(block, app, mesh, &[], &[("HBONE_ADDR", "[::1]:15008")]).await;
    let target = std::net::SocketAddr::new(v6, pair.app.port());
    let mut s = socks5_connect(pair.client.socks5(), SocksTarget::Addr(target))
        .await
        .expect_connected();
    assert_eq!(echo_roundtrip(&mut s, b"hello v6").await, b"hello v6");
    assert_eq!(pair.app.accepted(), 1);
    drop(s);
    // The access log line is written when the connection closes.
    let want = format!(
        "dst.addr=[::1]:15008 dst.hbone_addr=[::1]:{}",
        pair.app.port()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pair.client.logs().contains(&want) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = pair.client.logs();
    assert!(
        log.contains(&want),
        "the client sidecar tunnelled to [::1]:15008: {log}"
    );
}
