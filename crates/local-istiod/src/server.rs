//! Wiring: the TLS listener, the gRPC services on it, the file watcher and
//! the admin endpoint, around one shared [`Core`].
//!
//! Connections are accepted and TLS-terminated here (rustls, ALPN `h2`), then
//! handed to tonic as a stream of connections; every request carries the
//! peer's address as a [`PeerInfo`] extension. Pausing is a flag the services
//! check: a paused server still completes TLS handshakes (as a live but
//! unhealthy istiod does) and answers every call with `UNAVAILABLE`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{info, warn};
use zs_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use zs_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;

use crate::ads::AdsService;
use crate::auth::{Authenticator, ServiceAccount};
use crate::ca::CaService;
use crate::pki::{CaSource, Pki, PkiError};
use crate::snapshot::Snapshot;
use crate::status::{StatusBook, StatusReport};

/// The message every call gets while the server is paused.
pub const PAUSED: &str = "local-istiod is paused (simulated control-plane outage)";

/// The message open streams end with when the server stops.
pub const STOPPING: &str = "local-istiod is stopping";

/// How long connections get to close after every stream has ended.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the server is started with (the command line, typed).
#[derive(Clone, Debug)]
pub struct Config {
    /// The mesh file (ztunnel's local-config YAML).
    pub mesh_file: PathBuf,
    /// The TLS gRPC address.
    pub listen: SocketAddr,
    /// Where the CA and serving certificate are kept.
    pub state_dir: PathBuf,
    /// Where the CA comes from.
    pub ca: CaSource,
    /// The trust domain certificates are issued in.
    pub trust_domain: String,
    /// Extra names (DNS or IP) for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Accepted bearer tokens, each bound to a service account or not.
    pub tokens: Vec<(String, Option<ServiceAccount>)>,
    /// The STS endpoint presigned requests are replayed to (enables AWS IAM auth).
    pub sts_url: Option<String>,
    /// IAM role ARN → service account.
    pub iam_roles: Vec<(String, ServiceAccount)>,
    /// The longest certificate lifetime issued.
    pub secret_ttl_max: Duration,
    /// The admin HTTP address, if any.
    pub admin: Option<SocketAddr>,
    /// How often the mesh file is checked for changes.
    pub poll_interval: Duration,
    /// Whether `SIGHUP` reloads the mesh file (the binary sets this).
    pub reload_on_sighup: bool,
    /// Test-only behaviours.
    pub test: TestKnobs,
}

impl Config {
    /// Defaults around a mesh file: `127.0.0.1:15012`, state in `./local-istiod`,
    /// a generated CA, `cluster.local`, no authentication, 24 h certificates.
    pub fn new(mesh_file: impl Into<PathBuf>) -> Self {
        Config {
            mesh_file: mesh_file.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 15012)),
            state_dir: PathBuf::from("local-istiod"),
            ca: CaSource::Generate,
            trust_domain: zs_identity::DEFAULT_TRUST_DOMAIN.to_string(),
            extra_sans: Vec::new(),
            tokens: Vec::new(),
            sts_url: None,
            iam_roles: Vec::new(),
            secret_ttl_max: Duration::from_secs(24 * 3600),
            admin: None,
            poll_interval: Duration::from_millis(300),
            reload_on_sighup: false,
            test: TestKnobs::default(),
        }
    }
}

/// Behaviours that exist only to test clients' error handling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestKnobs {
    /// Serve the Address resources (workloads, services) of these names
    /// malformed, whenever the mesh file has them.
    pub corrupt_resources: Vec<String>,
    /// Issue certificates that expired an hour ago.
    pub expired_certs: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The CA or serving certificate.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The mesh file could not be loaded at startup.
    #[error(transparent)]
    Mesh(#[from] crate::watch::LoadError),
    /// An address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Resolves once `flag` is true (or its sender is gone). Holds no borrow of
/// the value afterwards, so callers may await other things in the same branch.
pub(crate) async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// The connection facts handlers see as a request extension.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The client's address.
    pub addr: SocketAddr,
}

/// State shared by the services, the watcher and the admin endpoint.
pub(crate) struct Core {
    pub(crate) snapshots: watch::Sender<Arc<Snapshot>>,
    /// Becomes true when the server stops: long-lived streams end on it.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) paused: watch::Sender<bool>,
    pub(crate) reload: Notify,
    pub(crate) status: StatusBook,
    pub(crate) auth: Authenticator,
    pub(crate) pki: Pki,
    pub(crate) trust_domain: String,
    pub(crate) secret_ttl_max: Duration,
    pub(crate) test: TestKnobs,
    pub(crate) next_stream: AtomicU64,
    pub(crate) next_nonce: AtomicU64,
}

impl Core {
    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        if self.paused.send_replace(paused) != paused {
            if paused {
                warn!("paused: dropping every ADS stream and refusing calls with UNAVAILABLE");
            } else {
                info!("resumed: serving again");
            }
        }
    }

    pub(crate) fn report(&self) -> StatusReport {
        let snapshot = self.snapshots.borrow().clone();
        self.status
            .report(self.is_paused(), snapshot.generation(), snapshot.counts())
    }

    /// A core with a fresh CA and no authentication, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Core {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::prepare(dir.path(), &CaSource::Generate, &[]).expect("pki");
        Core {
            snapshots: watch::Sender::new(Arc::new(Snapshot::empty())),
            stopping: watch::Sender::new(false),
            paused: watch::Sender::new(false),
            reload: Notify::new(),
            status: StatusBook::default(),
            auth: Authenticator::default(),
            pki,
            trust_domain: "cluster.local".into(),
            secret_ttl_max: Duration::from_secs(86400),
            test: TestKnobs::default(),
            next_stream: AtomicU64::new(0),
            next_nonce: AtomicU64::new(0),
        }
    }
}

/// A running server. Dropping it stops it.
pub struct LocalIstiod {
    core: Arc<Core>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalIstiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIstiod")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl LocalIstiod {
    /// Prepares the PKI, loads the mesh file, binds and starts serving.
    pub async fn start(config: Config) -> Result<LocalIstiod, ServeError> {
        let mut sans = config.extra_sans.clone();
        if !config.listen.ip().is_unspecified() {
            sans.push(config.listen.ip().to_string());
        }
        let pki = Pki::prepare(&config.state_dir, &config.ca, &sans)?;
        let tls = Arc::new(pki.server_config()?);
        let mesh = crate::watch::load(&config.mesh_file)?;
        let snapshot = crate::watch::build(&mesh.config, 1, &config.test);

        let core = Arc::new(Core {
            snapshots: watch::Sender::new(Arc::new(snapshot)),
            stopping: watch::Sender::new(false),
            paused: watch::Sender::new(false),
            reload: Notify::new(),
            status: StatusBook::default(),
            auth: Authenticator::new(&config.tokens, config.sts_url.clone(), &config.iam_roles),
            pki,
            trust_domain: config.trust_domain.clone(),
            secret_ttl_max: config.secret_ttl_max,
            test: config.test.clone(),
            next_stream: AtomicU64::new(0),
            next_nonce: AtomicU64::new(0),
        });

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "gRPC",
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            what: "gRPC",
            addr: config.listen,
            source,
        })?;
        let admin = match config.admin {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|source| ServeError::Bind {
                        what: "admin",
                        addr: a,
                        source,
                    })?,
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());

        let shutdown_rx = core.stopping.subscribe();
        let mut tasks = Vec::new();
        let (conns_tx, conns_rx) = mpsc::channel::<TlsConn>(64);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            conns_tx,
            shutdown_rx.clone(),
        )));
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(AggregatedDiscoveryServiceServer::new(AdsService::new(
                core.clone(),
            )))
            .add_service(IstioCertificateServiceServer::new(CaService::new(
                core.clone(),
            )));
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = ReceiverStream::new(conns_rx).map(Ok::<_, io::Error>);
            let stopped = async move { until_set(&mut stop).await };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                warn!("gRPC server stopped: {e}");
            }
        }));
        tasks.push(tokio::spawn(crate::watch::run(
            core.clone(),
            config.mesh_file.clone(),
            mesh.stamp,
            config.poll_interval,
            config.reload_on_sighup,
            config.test.clone(),
            shutdown_rx.clone(),
        )));
        if let Some(l) = admin {
            tasks.push(tokio::spawn(crate::admin::serve(
                l,
                core.clone(),
                shutdown_rx.clone(),
            )));
        }
        info!(
            %addr,
            admin = ?admin_addr,
            root = %core.pki.root_path().display(),
            resources = ?core.snapshots.borrow().counts(),
            auth = if core.auth.is_open() { "off" } else { "on" },
            "local-istiod serving (a test and demo control plane, not istiod)"
        );
        Ok(LocalIstiod {
            core,
            addr,
            admin_addr,
            tasks,
        })
    }

    /// The TLS gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The trust anchors clients verify this server (and its certificates) with.
    pub fn root_pem(&self) -> &str {
        self.core.pki.authority().roots_pem()
    }

    /// Drops every ADS stream and refuses calls with `UNAVAILABLE` until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.core.set_paused(true);
    }

    /// Serves again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.core.set_paused(false);
    }

    /// Re-reads the mesh file now.
    pub fn reload(&self) {
        self.core.reload.notify_one();
    }

    /// What the server has seen so far.
    pub fn status(&self) -> StatusReport {
        self.core.report()
    }

    /// Waits until the snapshot generation is at least `generation` (after an edit).
    pub async fn wait_generation(&self, generation: u64) {
        let mut rx = self.core.snapshots.subscribe();
        let _ = rx.wait_for(|s| s.generation() >= generation).await;
    }

    /// Stops serving: ends every stream, then gives connections a moment to
    /// close gracefully before dropping them.
    pub async fn shutdown(mut self) {
        self.stop();
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
    }

    fn stop(&self) {
        self.core.stopping.send_replace(true);
    }
}

impl Drop for LocalIstiod {
    fn drop(&mut self) {
        self.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    conns: mpsc::Sender<TlsConn>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, addr) = tokio::select! {
            _ = until_set(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // istiod (Go) sets TCP_NODELAY; without it small gRPC frames wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = conns
                        .send(TlsConn {
                            inner: stream,
                            info: PeerInfo { addr },
                        })
                        .await;
                }
                Ok(Err(e)) => info!(peer = %addr, "TLS handshake failed: {e}"),
                Err(_) => info!(peer = %addr, "TLS handshake timed out"),
            }
        });
    }
}

/// A server-side TLS connection that tells tonic who the peer is.
struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
