//! Shared fixtures: real certificates, a real HBONE server on loopback, and
//! connectors that count or interfere with what goes over the wire.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use zs_hbone::{
    ConnectHandler, ConnectRequest, Connector, H2Config, HboneError, IncomingConnect, Pool,
    PoolConfig, PoolKey,
};
use zs_tls::testing::TestCa;
use zs_tls::{Identity, TlsOptions, WorkloadCertificate};

pub const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
pub const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

pub fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

/// Certificates for a client and a server workload from one CA.
pub struct Mesh {
    pub ca: TestCa,
    pub client: Arc<WorkloadCertificate>,
    pub server: Arc<WorkloadCertificate>,
}

impl Mesh {
    pub fn new() -> Self {
        let ca = TestCa::new();
        let client = Arc::new(ca.issue(&id(CLIENT)));
        let server = Arc::new(ca.issue(&id(SERVER)));
        Mesh { ca, client, server }
    }

    pub fn client_tls(&self, expected: &[&str]) -> Arc<rustls::ClientConfig> {
        zs_tls::client_config(
            &self.client,
            expected.iter().map(|s| id(s)).collect(),
            &TlsOptions::default(),
        )
        .unwrap()
    }

    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        zs_tls::server_config(&self.server, &TlsOptions::default()).unwrap()
    }

    pub fn key(&self, dst: SocketAddr) -> PoolKey {
        PoolKey {
            src: id(CLIENT),
            dst_identities: vec![id(SERVER)],
            dst,
        }
    }

    /// Sends a CONNECT through `pool` expecting the server identity.
    pub async fn send<C: Connector>(
        &self,
        pool: &Pool<C>,
        dst: SocketAddr,
        authority: &str,
    ) -> Result<(zs_hbone::H2Stream, http::response::Parts), HboneError> {
        let client = self.client.clone();
        pool.send(
            self.key(dst),
            move || zs_tls::client_config(&client, vec![id(SERVER)], &TlsOptions::default()),
            ConnectRequest {
                authority: authority.to_string(),
                headers: http::HeaderMap::new(),
            },
        )
        .await
    }
}

/// A handler built from a closure.
pub struct FnHandler<F>(pub F);

impl<F, Fut> ConnectHandler for FnHandler<F>
where
    F: Fn(IncomingConnect) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn handle(self: Arc<Self>, req: IncomingConnect) -> impl Future<Output = ()> + Send + 'static {
        (self.0)(req)
    }
}

/// Accepts the CONNECT and echoes the stream until EOF, then half-closes.
pub fn echo_handler() -> Arc<impl ConnectHandler> {
    Arc::new(FnHandler(|req: IncomingConnect| async move {
        let Ok(stream) = req.accept(http::HeaderMap::new()) else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(stream);
        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    }))
}

/// A real HBONE server on 127.0.0.1:<random>, counting the TCP connections it
/// serves and keeping the result of each `serve_connection`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub results: Arc<Mutex<Vec<Result<(), String>>>>,
    /// Notified → every connection served so far starts a graceful shutdown.
    pub shutdown: Arc<Notify>,
    pub finished: Arc<Notify>,
}

impl TestServer {
    pub async fn start<H: ConnectHandler>(mesh: &Mesh, cfg: H2Config, handler: Arc<H>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let results = Arc::new(Mutex::new(Vec::new()));
        let shutdown = Arc::new(Notify::new());
        let finished = Arc::new(Notify::new());
        let tls = mesh.server_tls();
        {
            let (accepted, results, shutdown, finished) = (
                accepted.clone(),
                results.clone(),
                shutdown.clone(),
                finished.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (tls, cfg, handler, results, shutdown, finished) = (
                        tls.clone(),
                        cfg.clone(),
                        handler.clone(),
                        results.clone(),
                        shutdown.clone(),
                        finished.clone(),
                    );
                    tokio::spawn(async move {
                        let res = zs_hbone::serve_connection(tcp, tls, &cfg, handler, async move {
                            shutdown.notified().await
                        })
                        .await;
                        results.lock().unwrap().push(res.map_err(|e| e.to_string()));
                        finished.notify_waiters();
                    });
                }
            });
        }
        TestServer {
            addr,
            accepted,
            results,
            shutdown,
            finished,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn results(&self) -> Vec<Result<(), String>> {
        self.results.lock().unwrap().clone()
    }

    /// Waits until `n` connections have finished being served.
    pub async fn wait_finished(&self, n: usize) -> Vec<Result<(), String>> {
        within(Duration::from_secs(10), async {
            loop {
                let done = self.finished.notified();
                if self.results.lock().unwrap().len() >= n {
                    return self.results();
                }
                done.await;
            }
        })
        .await
    }
}

/// Fails the test if `fut` does not finish in `limit` (a hang guard, not a timing check).
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .expect("operation did not complete")
}

/// Polls `cond` until it holds (hang guard of 10 s).
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    within(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Dials TCP and counts dials and bytes read from the server.
#[derive(Clone, Default)]
pub struct CountingConnector {
    pub dials: Arc<AtomicUsize>,
    pub bytes_read: Arc<AtomicUsize>,
}

impl Connector for CountingConnector {
    type Io = Counted<TcpStream>;

    fn connect(
        &self,
        dst: SocketAddr,
    ) -> impl Future<Output = io::Result<Counted<TcpStream>>> + Send {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let bytes_read = self.bytes_read.clone();
        async move {
            let tcp = TcpStream::connect(dst).await?;
            tcp.set_nodelay(true)?;
            Ok(Counted {
                inner: tcp,
                bytes_read,
            })
        }
    }
}

pub struct Counted<T> {
    inner: T,
    bytes_read: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.bytes_read.fetch_add(n, Ordering::SeqCst);
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Dials TCP through an in-process relay that can be frozen: once frozen it
/// forwards nothing in either direction (a black-holed path).
#[derive(Clone, Default)]
pub struct FreezableConnector {
    pub frozen: Arc<AtomicBool>,
}

impl Connector for FreezableConnector {
    type Io = tokio::io::DuplexStream;

    fn connect(
        &self,
        dst: SocketAddr,
    ) -> impl Future<Output = io::Result<tokio::io::DuplexStream>> + Send {
        let frozen = self.frozen.clone();
        async move {
            let tcp = TcpStream::connect(dst).await?;
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(relay(theirs, tcp, frozen));
            Ok(ours)
        }
    }
}

async fn relay(a: tokio::io::DuplexStream, b: TcpStream, frozen: Arc<AtomicBool>) {
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = b.into_split();
    let f1 = frozen.clone();
    let one = async move {
        let mut buf = [0u8; 8192];
        loop {
            let n = match ar.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if f1.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if bw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let two = async move {
        let mut buf = [0u8; 8192];
        loop {
            let n = match br.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if aw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(one, two);
}

/// Deterministic pseudo-random bytes (xorshift64), so large transfers can be
/// regenerated and checked without keeping them in memory.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// FNV-1a over a stream of chunks.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

pub fn new_pool(cfg: H2Config) -> (Pool<CountingConnector>, CountingConnector) {
    let connector = CountingConnector::default();
    (
        Pool::with_connector(cfg, PoolConfig::default(), connector.clone()),
        connector,
    )
}

/// A TLS client that accepts any server and presents no certificate.
pub fn anonymous_client() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
