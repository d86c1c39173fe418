//! HBONE end to end over loopback: real TLS with real certificates, a real
//! HTTP/2 server, and the pool.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use zs_hbone::headers::{self, Baggage, WorkloadKind};
use zs_hbone::{ConnectRequest, H2Config, HboneError, IncomingConnect, Pool, PoolConfig};
use zs_tls::TlsError;

async fn echo_roundtrip(stream: &mut zs_hbone::H2Stream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    within(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn connect_echoes_end_to_end() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut stream, response) = mesh
        .send(&pool, server.addr, "10.0.0.1:8080")
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    echo_roundtrip(&mut stream, b"hello hbone").await;
}

#[tokio::test]
async fn server_sees_the_request_and_the_peer() {
    let mesh = Mesh::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Arc::new(FnHandler(move |req: IncomingConnect| {
        let tx = tx.clone();
        async move {
            let seen = (
                req.authority().map(str::to_owned),
                req.headers().clone(),
                req.peer_identity().cloned(),
                req.peer_trust_domain().map(str::to_owned),
                req.peer_addr(),
                req.local_addr(),
            );
            let _ = tx.send(seen);
            req.reject(StatusCode::SERVICE_UNAVAILABLE);
        }
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let (pool, _) = new_pool(H2Config::default());

    let mut request_headers = HeaderMap::new();
    request_headers.insert(
        headers::FORWARDED,
        headers::forwarded(
            "10.0.0.5:43210".parse().unwrap(),
            Some("echo.default.svc.cluster.local"),
        ),
    );
    request_headers.insert(headers::TRACEPARENT, headers::traceparent());
    let baggage = Baggage {
        cluster_id: "Kubernetes".into(),
        namespace: "default".into(),
        workload_kind: Some(WorkloadKind::Deployment),
        workload_name: "client".into(),
        service_name: "client".into(),
        service_version: "v1".into(),
        ..Baggage::default()
    };
    request_headers.insert(headers::BAGGAGE, baggage.to_header_value());
    let client = mesh.client.clone();
    let _ = pool
        .send(
            mesh.key(server.addr),
            move || {
                zs_tls::client_config(&client, vec![id(SERVER)], &zs_tls::TlsOptions::default())
            },
            ConnectRequest {
                authority: "[ff06::c3]:80".into(),
                headers: request_headers,
            },
        )
        .await;

    let (authority, seen, identity, trust_domain, peer_addr, local_addr) =
        within(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert_eq!(authority.as_deref(), Some("[ff06::c3]:80"));
    assert_eq!(
        seen.get("forwarded").unwrap(),
        r#"for="10.0.0.5:43210";host=echo.default.svc.cluster.local"#
    );
    let traceparent = seen.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(traceparent.len(), 55);
    assert!(traceparent.starts_with("00-") && traceparent.ends_with("-00"));
    assert!(headers::parse_traceparent(traceparent.as_bytes()).is_some());
    assert_eq!(
        seen.get("baggage").unwrap(),
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=client,service.name=client,service.version=v1"
    );
    assert_eq!(identity, Some(id(CLIENT)));
    assert_eq!(trust_domain.as_deref(), Some("cluster.local"));
    assert_eq!(local_addr, server.addr);
    assert_eq!(peer_addr.ip(), server.addr.ip());
}

#[tokio::test]
async fn pool_reuses_one_connection_for_sequential_requests() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, connector) = new_pool(H2Config::default());
    for i in 0..10u8 {
        let (mut stream, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
        echo_roundtrip(&mut stream, &[i; 16]).await;
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(connector.dials.load(Ordering::SeqCst), 1);
    assert_eq!(pool.connections(), 1);
}

/// Opens `n` streams at once from spawned tasks, each checked with an echo of
/// `size` bytes, and keeps them all open.
async fn open_concurrently<C: zs_hbone::Connector>(
    mesh: &Arc<Mesh>,
    pool: &Pool<C>,
    addr: std::net::SocketAddr,
    n: u8,
    size: usize,
) -> Vec<zs_hbone::H2Stream> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (pool, mesh) = (pool.clone(), mesh.clone());
            tokio::spawn(async move {
                let (mut s, _) = mesh.send(&pool, addr, "10.0.0.1:80").await.unwrap();
                echo_roundtrip(&mut s, &vec![i; size]).await;
                s
            })
        })
        .collect();
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    streams
}

#[tokio::test]
async fn pool_reuses_one_connection_for_concurrent_requests() {
    let mesh = Arc::new(Mesh::new());
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    // Establish the connection, then fan out.
    let (mut first, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut first, b"warm").await;
    let _streams = open_concurrently(&mesh, &pool, server.addr, 20, 100).await;
    assert_eq!(server.accepted(), 1);
    assert_eq!(pool.connections(), 1);
}

#[tokio::test]
async fn concurrent_first_requests_dial_once() {
    let mesh = Arc::new(Mesh::new());
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, connector) = new_pool(H2Config::default());
    let _streams = open_concurrently(&mesh, &pool, server.addr, 16, 10).await;
    assert_eq!(connector.dials.load(Ordering::SeqCst), 1);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn different_keys_get_different_connections() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let (_a, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    // Same address, different expected identity list: must not share the verified connection.
    let client = mesh.client.clone();
    let mut key = mesh.key(server.addr);
    key.dst_identities = vec![id("spiffe://cluster.local/ns/default/sa/other"), id(SERVER)];
    let ids = key.dst_identities.clone();
    let (_b, _) = pool
        .send(
            key,
            move || zs_tls::client_config(&client, ids, &zs_tls::TlsOptions::default()),
            ConnectRequest {
                authority: "10.0.0.1:80".into(),
                headers: HeaderMap::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.connections(), 2);
}

#[tokio::test]
async fn stream_limit_opens_a_second_connection() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let cfg = H2Config {
        max_streams_per_connection: 2,
        ..H2Config::default()
    };
    let (pool, connector) = new_pool(cfg);
    let (mut a, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let (mut b, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    assert_eq!(connector.dials.load(Ordering::SeqCst), 1);
    let (mut c, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
    assert_eq!(server.accepted(), 2);
    for s in [&mut a, &mut b, &mut c] {
        echo_roundtrip(s, b"still works").await;
    }
    // A slot freed on the first connection is used again before dialing a third.
    drop(a);
    eventually(|| pool.connections() == 2).await;
    let (_d, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
}

fn parallel_pool<C: zs_hbone::Connector>(connector: C) -> Pool<C> {
    let cfg = PoolConfig {
        parallel_connections: 2,
        ..PoolConfig::default()
    };
    Pool::with_connector(H2Config::default(), cfg, connector)
}

#[tokio::test]
async fn parallel_connections_spread_concurrent_streams() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let connector = CountingConnector::default();
    let pool = parallel_pool(connector.clone());
    // One request at a time never finds the connection busy: one connection.
    for i in 0..3u8 {
        let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
        echo_roundtrip(&mut s, &[i; 8]).await;
    }
    assert_eq!(connector.dials.load(Ordering::SeqCst), 1);
    // A second request while the first stream is open dials a second connection.
    let (mut a, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let (mut b, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
    assert_eq!(server.accepted(), 2);
    // Past the parallel count, requests share: no third connection.
    let (mut c, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let (mut d, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
    assert_eq!(pool.connections(), 2);
    for s in [&mut a, &mut b, &mut c, &mut d] {
        echo_roundtrip(s, b"spread").await;
    }
}

#[tokio::test]
async fn parallel_connections_fan_out_of_a_burst() {
    let mesh = Arc::new(Mesh::new());
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let connector = CountingConnector::default();
    let pool = parallel_pool(connector.clone());
    let _streams = open_concurrently(&mesh, &pool, server.addr, 8, 10).await;
    // Dials are still one at a time per key, and stop at the parallel count.
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
    assert_eq!(server.accepted(), 2);
}

/// Dials through a [`CountingConnector`] until `limit` dials, then refuses.
#[derive(Clone)]
struct RefusingAfter {
    inner: CountingConnector,
    limit: usize,
}

impl zs_hbone::Connector for RefusingAfter {
    type Io = <CountingConnector as zs_hbone::Connector>::Io;

    async fn connect(&self, dst: std::net::SocketAddr) -> std::io::Result<Self::Io> {
        if self.inner.dials.load(Ordering::SeqCst) >= self.limit {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        self.inner.connect(dst).await
    }
}

#[tokio::test]
async fn a_failed_extra_connection_falls_back_to_a_busy_one() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let connector = CountingConnector::default();
    let pool = parallel_pool(RefusingAfter {
        inner: connector.clone(),
        limit: 1,
    });
    let (mut a, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    // The second connection is refused; the request shares the first instead.
    let (mut b, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut a, b"first").await;
    echo_roundtrip(&mut b, b"shared after a refused dial").await;
    assert_eq!(server.accepted(), 1);
    assert_eq!(pool.connections(), 1);
    // Without a connection to fall back on, the refusal is the answer.
    drop((a, b));
    let fresh = parallel_pool(RefusingAfter {
        inner: CountingConnector::default(),
        limit: 0,
    });
    let err = mesh
        .send(&fresh, server.addr, "10.0.0.1:80")
        .await
        .unwrap_err();
    assert!(matches!(err, HboneError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn server_stream_limit_lowers_the_pool_limit() {
    let mesh = Mesh::new();
    let server_cfg = H2Config {
        server_max_concurrent_streams: 1,
        ..H2Config::default()
    };
    let server = TestServer::start(&mesh, server_cfg, echo_handler()).await;
    let (pool, connector) = new_pool(H2Config::default());
    let (mut a, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut a, b"settings exchanged").await;
    let (mut b, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut b, b"second connection").await;
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn goaway_connection_is_not_reused() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, connector) = new_pool(H2Config::default());
    let (mut open, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut open, b"before").await;

    server.shutdown.notify_waiters();
    eventually(|| pool.ready_connections() == 0).await;
    assert_eq!(pool.connections(), 1, "the draining connection stays open");

    let (mut fresh, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut fresh, b"new connection").await;
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
    // The stream opened before the GOAWAY keeps working.
    echo_roundtrip(&mut open, b"after").await;
}

#[tokio::test]
async fn server_rejections_are_typed_errors() {
    let mesh = Mesh::new();
    let handler = Arc::new(FnHandler(|req: IncomingConnect| async move {
        let status = match req.authority() {
            Some("10.0.0.1:401") => StatusCode::UNAUTHORIZED,
            Some("10.0.0.1:503") => StatusCode::SERVICE_UNAVAILABLE,
            Some("10.0.0.1:400") => StatusCode::BAD_REQUEST,
            _ => StatusCode::IM_A_TEAPOT,
        };
        req.reject(status);
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let (pool, _) = new_pool(H2Config::default());

    let err = mesh
        .send(&pool, server.addr, "10.0.0.1:401")
        .await
        .unwrap_err();
    assert!(matches!(&err, HboneError::PolicyDenied { authority } if authority == "10.0.0.1:401"));
    let err = mesh
        .send(&pool, server.addr, "10.0.0.1:503")
        .await
        .unwrap_err();
    assert!(matches!(err, HboneError::Unavailable { .. }));
    let err = mesh
        .send(&pool, server.addr, "10.0.0.1:400")
        .await
        .unwrap_err();
    assert!(matches!(err, HboneError::BadRequest { .. }));
    let err = mesh
        .send(&pool, server.addr, "10.0.0.1:418")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::IM_A_TEAPOT));
    // Rejections are per stream: the connection stays in use.
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn half_close_from_the_client_propagates() {
    let mesh = Mesh::new();
    let handler = Arc::new(FnHandler(|req: IncomingConnect| async move {
        let mut s = req.accept(HeaderMap::new()).unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap();
        // Only after the client's EOF: answer, then close our side.
        s.write_all(&[b"got: ".as_slice(), &request].concat())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    s.write_all(b"question").await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, b"got: question");
}

#[tokio::test]
async fn half_close_from_the_server_propagates() {
    let mesh = Mesh::new();
    let handler = Arc::new(FnHandler(|req: IncomingConnect| async move {
        let mut s = req.accept(HeaderMap::new()).unwrap();
        s.write_all(b"banner").await.unwrap();
        s.shutdown().await.unwrap();
        // Our write side is closed; we still read what the client sends.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"late data");
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let mut banner = Vec::new();
    within(Duration::from_secs(10), s.read_to_end(&mut banner))
        .await
        .unwrap();
    assert_eq!(banner, b"banner");
    s.write_all(b"late data").await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn peer_dropping_the_stream_reads_as_eof() {
    let mesh = Mesh::new();
    let handler = Arc::new(FnHandler(|req: IncomingConnect| async move {
        let s = req.accept(HeaderMap::new()).unwrap();
        // Dropping both halves without END_STREAM resets the stream with CANCEL.
        drop(s);
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let mut buf = Vec::new();
    let n = within(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn large_transfer_arrives_intact() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let (stream, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(7);
        let mut sum = Fnv::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = SIZE;
        while left > 0 {
            let n = left.min(buf.len());
            pattern.fill(&mut buf[..n]);
            sum.update(&buf[..n]);
            w.write_all(&buf[..n]).await.unwrap();
            left -= n;
        }
        w.shutdown().await.unwrap();
        sum.0
    });
    let mut sum = Fnv::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    within(Duration::from_secs(120), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            total += n;
        }
    })
    .await;
    assert_eq!(total, SIZE);
    assert_eq!(sum.0, writer.await.unwrap());
}

#[tokio::test]
async fn server_with_unexpected_identity_is_refused() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let client = mesh.client.clone();
    let expected = vec![id("spiffe://cluster.local/ns/default/sa/someone-else")];
    let key = zs_hbone::PoolKey {
        src: id(CLIENT),
        dst_identities: expected.clone(),
        dst: server.addr,
    };
    let err = pool
        .send(
            key,
            move || zs_tls::client_config(&client, expected, &zs_tls::TlsOptions::default()),
            ConnectRequest {
                authority: "10.0.0.1:80".into(),
                headers: HeaderMap::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, HboneError::TlsHandshake { .. }), "{err}");
    assert!(matches!(
        err.tls_verdict(),
        Some(TlsError::IdentityMismatch { .. })
    ));
    assert_eq!(pool.connections(), 0);
}

#[tokio::test]
async fn bad_clients_fail_alone() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut good, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut good, b"before").await;

    // Plain garbage on the TLS port.
    let mut garbage = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = within(Duration::from_secs(10), garbage.read_to_end(&mut sink)).await;

    // A TLS client that trusts the server but presents no certificate.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // With TLS 1.3 the client may finish its side before the server's verdict,
    // so only the server's result is checked.
    let _ = zs_hbone::connect(tcp, anonymous_client(), &H2Config::default()).await;

    let results = server.wait_finished(2).await;
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("TLS handshake"))),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.contains("no certificate"))),
        "{results:?}"
    );
    echo_roundtrip(&mut good, b"after").await;
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn non_connect_requests_get_400_without_the_handler() {
    let mesh = Mesh::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        Arc::new(FnHandler(move |req: IncomingConnect| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { req.reject(StatusCode::OK) }
        }))
    };
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(mesh.client_tls(&[SERVER]))
        .connect(zs_tls::hbone_server_name(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("https://10.0.0.1/").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = within(Duration::from_secs(10), response).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idle_connection_is_kept_alive_by_ping() {
    let mesh = Mesh::new();
    let fast_ping = H2Config {
        keepalive_interval: Duration::from_millis(50),
        keepalive_timeout: Duration::from_secs(5),
        ..H2Config::default()
    };
    // The server pings slowly, so bytes the idle client reads are PONGs to its own PINGs.
    let server_cfg = H2Config {
        keepalive_interval: Duration::from_secs(3600),
        ..H2Config::default()
    };
    let server = TestServer::start(&mesh, server_cfg, echo_handler()).await;
    let connector = CountingConnector::default();
    let pool = Pool::with_connector(fast_ping, PoolConfig::default(), connector.clone());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"x").await;
    drop(s);
    let read_before = connector.bytes_read.load(Ordering::SeqCst);
    // Idle for several ping intervals.
    eventually(|| connector.bytes_read.load(Ordering::SeqCst) > read_before + 100).await;
    assert_eq!(pool.ready_connections(), 1);
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"still the same connection").await;
    assert_eq!(connector.dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unanswered_ping_closes_the_connection() {
    let mesh = Mesh::new();
    let cfg = H2Config {
        keepalive_interval: Duration::from_millis(50),
        keepalive_timeout: Duration::from_millis(300),
        ..H2Config::default()
    };
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let connector = FreezableConnector::default();
    let pool = Pool::with_connector(cfg, PoolConfig::default(), connector.clone());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"x").await;
    connector.frozen.store(true, Ordering::SeqCst);
    eventually(|| pool.connections() == 0).await;
    // The stream on the dead connection fails instead of hanging.
    let mut buf = [0u8; 1];
    let res = within(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(!matches!(res, Ok(1)), "{res:?}");
}

#[tokio::test]
async fn idle_connections_leave_the_pool() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let connector = CountingConnector::default();
    let pool = Pool::with_connector(
        H2Config::default(),
        PoolConfig {
            idle_timeout: Duration::from_millis(200),
            ..PoolConfig::default()
        },
        connector.clone(),
    );
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"x").await;
    drop(s);
    eventually(|| pool.connections() == 0).await;
    // The server sees the client close the evicted connection.
    assert_eq!(server.wait_finished(1).await, vec![Ok(())]);
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"y").await;
    assert_eq!(connector.dials.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn graceful_shutdown_lets_open_streams_finish() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut s, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    echo_roundtrip(&mut s, b"before").await;

    server.shutdown.notify_waiters();
    eventually(|| pool.ready_connections() == 0).await;
    echo_roundtrip(&mut s, b"during drain").await;
    assert!(server.results().is_empty(), "connection still serving");

    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(server.wait_finished(1).await, vec![Ok(())]);
}

#[tokio::test]
async fn dial_failure_is_reported_with_the_destination() {
    let mesh = Mesh::new();
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let pool = Pool::new(H2Config::default(), PoolConfig::default());
    let err = mesh.send(&pool, addr, "10.0.0.1:80").await.unwrap_err();
    assert!(
        matches!(&err, HboneError::Connect { dst, .. } if *dst == addr),
        "{err}"
    );
}

#[tokio::test]
async fn connect_timeout_mentions_the_hbone_port() {
    struct NeverConnects;
    impl zs_hbone::Connector for NeverConnects {
        type Io = tokio::net::TcpStream;
        fn connect(
            &self,
            _dst: std::net::SocketAddr,
        ) -> impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Send
        {
            std::future::pending()
        }
    }
    let mesh = Mesh::new();
    let pool = Pool::with_connector(
        H2Config::default(),
        PoolConfig {
            connect_timeout: Duration::from_millis(50),
            ..PoolConfig::default()
        },
        NeverConnects,
    );
    let dst = "127.0.0.1:15008".parse().unwrap();
    let err = mesh.send(&pool, dst, "10.0.0.1:80").await.unwrap_err();
    assert!(matches!(err, HboneError::ConnectTimeout { .. }));
    assert_eq!(
        err.to_string(),
        "connection to 127.0.0.1:15008 timed out after 50ms, maybe a NetworkPolicy is blocking HBONE port 15008"
    );
}

#[tokio::test]
async fn double_hbone_runs_tls_inside_a_connect_stream() {
    let mesh = Mesh::new();
    // The destination: a normal HBONE server.
    let inner = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    // The gateway: terminates the outer CONNECT and forwards its bytes to the destination.
    let inner_addr = inner.addr;
    let gateway_handler = Arc::new(FnHandler(move |req: IncomingConnect| async move {
        assert_eq!(
            req.authority(),
            Some("remote.default.svc.cluster.local:8080")
        );
        let mut upstream = tokio::net::TcpStream::connect(inner_addr).await.unwrap();
        let mut stream = req.accept(HeaderMap::new()).unwrap();
        let _ = zs_hbone::copy::copy_bidirectional(&mut stream, &mut upstream, &()).await;
    }));
    let gateway = TestServer::start(&mesh, H2Config::default(), gateway_handler).await;

    let (pool, _) = new_pool(H2Config::default());
    let (outer, _) = mesh
        .send(&pool, gateway.addr, "remote.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let inner_conn = zs_hbone::connect(outer, mesh.client_tls(&[SERVER]), &H2Config::default())
        .await
        .unwrap();
    let mut request_headers = HeaderMap::new();
    request_headers.insert(headers::X_FORWARDED_NETWORK, "network-a".parse().unwrap());
    let (mut s, _) = inner_conn
        .send_connect(ConnectRequest {
            authority: "remote.default.svc.cluster.local:8080".into(),
            headers: request_headers,
        })
        .await
        .unwrap();
    echo_roundtrip(&mut s, b"through two tunnels").await;
    assert_eq!(inner.accepted(), 1);
}
