//! Measurements, not checks: they print numbers and assert nothing about them.
//! Run in release for meaningful figures:
//!
//! ```sh
//! cargo test --release -p zs-hbone --test measure -- --ignored --nocapture --test-threads=1
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_hbone::copy::copy_bidirectional;
use zs_hbone::{H2Config, IncomingConnect};

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// A proxy chain like the sidecar's, both halves in one process:
/// client app ⇄ outbound copy ⇄ HBONE (pool) ⇄ inbound copy ⇄ destination app.
struct Chain {
    mesh: Mesh,
    server: TestServer,
    pool: zs_hbone::Pool<CountingConnector>,
    captured: TcpListener,
}

impl Chain {
    async fn new(app_addr: std::net::SocketAddr) -> Self {
        let mesh = Mesh::new();
        let inbound = Arc::new(FnHandler(move |req: IncomingConnect| async move {
            let Ok(mut upstream) = TcpStream::connect(app_addr).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let Ok(mut stream) = req.accept(HeaderMap::new()) else {
                return;
            };
            let _ = copy_bidirectional(&mut stream, &mut upstream, &()).await;
        }));
        let server = TestServer::start(&mesh, H2Config::default(), inbound).await;
        let (pool, _) = new_pool(H2Config::default());
        let captured = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Chain {
            mesh,
            server,
            pool,
            captured,
        }
    }

    /// Opens one proxied connection and returns the client application's socket.
    async fn open(&self) -> TcpStream {
        let (client_app, mut captured) = tcp_pair(&self.captured).await;
        let _ = captured.set_nodelay(true);
        let (mut stream, _) = self
            .mesh
            .send(&self.pool, self.server.addr, "10.0.0.1:80")
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = copy_bidirectional(&mut captured, &mut stream, &()).await;
        });
        client_app
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn memory_per_idle_proxied_connection() {
    const N: usize = 2000;
    // Destination app: echoes one greeting per connection, then idles.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = app.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf).await;
                }
                // Idle until the client goes away.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let chain = Chain::new(app_addr).await;

    // Warm up one-time costs (TLS and runtime initialisation, first pool entry).
    let mut warm = Vec::new();
    for _ in 0..10 {
        let mut c = chain.open().await;
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        warm.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = vm_rss_kib();

    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = chain.open().await;
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / N as f64;
    println!(
        "idle proxied connections: {N}; HBONE connections: {}; VmRSS {before} KiB -> {after} KiB; \
         {per_conn:.0} bytes per connection (outbound + inbound halves, plus test apps)",
        chain.pool.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn single_stream_throughput() {
    const TOTAL: usize = 1024 * 1024 * 1024;
    // Destination app: a sink that reports how much it received.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (mut s, _) = app.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let chain = Chain::new(app_addr).await;
    let mut client = chain.open().await;
    let chunk = vec![0xa5u8; 256 * 1024];
    let start = Instant::now();
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(chunk.len());
        client.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    client.shutdown().await.unwrap();
    let received = sink.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(received, TOTAL);
    println!(
        "one HBONE stream, app -> app over loopback: {} MiB in {secs:.2} s = {:.0} MB/s",
        TOTAL / (1024 * 1024),
        TOTAL as f64 / secs / 1e6
    );
}
