//! The byte copier between application sockets and HBONE streams.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_hbone::copy::{ByteCounters, Io, copy_bidirectional};
use zs_hbone::{H2Config, IncomingConnect};

/// A connected pair of loopback TCP sockets.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

#[tokio::test]
async fn proxied_request_response_with_half_close_and_counts() {
    let mesh = Mesh::new();
    // The destination application: reads the whole request, then answers and closes.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = app.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(format!("{} bytes received", req.len()).as_bytes())
            .await
            .unwrap();
    });
    // Inbound side: CONNECT stream ↔ application socket.
    let inbound = Arc::new(FnHandler(move |req: IncomingConnect| async move {
        let mut upstream = TcpStream::connect(app_addr).await.unwrap();
        let mut stream = req.accept(HeaderMap::new()).unwrap();
        let _ = copy_bidirectional(&mut stream, &mut upstream, &()).await;
    }));
    let server = TestServer::start(&mesh, H2Config::default(), inbound).await;

    // Outbound side: client application socket ↔ CONNECT stream.
    let (mut client_app, mut captured) = tcp_pair().await;
    let (pool, _) = new_pool(H2Config::default());
    let (mut stream, _) = mesh.send(&pool, server.addr, "10.0.0.1:80").await.unwrap();
    let counters = Arc::new(ByteCounters::default());
    let outbound = {
        let counters = counters.clone();
        tokio::spawn(
            async move { copy_bidirectional(&mut captured, &mut stream, &*counters).await },
        )
    };

    client_app.write_all(&[7u8; 5000]).await.unwrap();
    client_app.shutdown().await.unwrap();
    let mut answer = String::new();
    within(
        Duration::from_secs(10),
        client_app.read_to_string(&mut answer),
    )
    .await
    .unwrap();
    assert_eq!(answer, "5000 bytes received");

    let (sent, received) = within(Duration::from_secs(10), outbound)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((sent, received), (5000, 19));
    assert_eq!(counters.a_to_b.load(Ordering::Relaxed), 5000);
    assert_eq!(counters.b_to_a.load(Ordering::Relaxed), 19);
}

#[tokio::test]
async fn bulk_copy_through_every_buffer_size_is_intact() {
    // 24 MiB crosses both growth thresholds (128 KiB and 10 MiB).
    const SIZE: usize = 24 * 1024 * 1024;
    let (mut src, mut proxy_in) = tcp_pair().await;
    let (proxy_out, mut dst) = tokio::io::duplex(256 * 1024);
    let copier = tokio::spawn(async move {
        let mut out = Io(proxy_out);
        copy_bidirectional(&mut proxy_in, &mut out, &()).await
    });
    let writer = tokio::spawn(async move {
        let mut pattern = Pattern::new(42);
        let mut sum = Fnv::new();
        let mut buf = vec![0u8; 100_000];
        let mut left = SIZE;
        while left > 0 {
            let n = left.min(buf.len());
            pattern.fill(&mut buf[..n]);
            sum.update(&buf[..n]);
            src.write_all(&buf[..n]).await.unwrap();
            left -= n;
        }
        src.shutdown().await.unwrap();
        // Keep the socket open until the copy has drained our side.
        let mut rest = Vec::new();
        src.read_to_end(&mut rest).await.unwrap();
        sum.0
    });
    let mut sum = Fnv::new();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    within(Duration::from_secs(60), async {
        loop {
            let n = dst.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            total += n;
        }
    })
    .await;
    dst.shutdown().await.unwrap();
    assert_eq!(total, SIZE);
    let (forward, backward) = within(Duration::from_secs(10), copier)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((forward, backward), (SIZE as u64, 0));
    assert_eq!(sum.0, writer.await.unwrap());
}

#[tokio::test]
async fn copy_ends_with_an_error_when_a_side_resets() {
    let (client, mut proxy_in) = tcp_pair().await;
    let (mut proxy_out, server) = tcp_pair().await;
    let copier =
        tokio::spawn(async move { copy_bidirectional(&mut proxy_in, &mut proxy_out, &()).await });
    // Abortive close (RST) of the client.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let res = within(Duration::from_secs(10), copier).await.unwrap();
    drop(server);
    assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
}
