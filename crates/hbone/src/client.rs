//! The HBONE client: one mutual-TLS HTTP/2 connection and CONNECT requests on it.
//!
//! [`connect`] runs the TLS and HTTP/2 handshakes over any byte stream (a TCP
//! socket for a direct peer, an [`H2Stream`] for the inner leg of double HBONE)
//! and spawns the task that drives the connection and its PING keepalive.
//! [`H2Connection`] is a cheap handle to send CONNECTs on it; the pool keeps
//! these per destination.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use http::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::conn::{Event, H2Error, Keepalive, Limits, Role, Shared};
use crate::stream::{StreamRef, StreamSlot};
use crate::{H2Config, H2Stream, HboneError};

/// The CONNECT request to send.
#[derive(Clone, Debug, Default)]
pub struct ConnectRequest {
    /// `:authority`: `ip:port` (IPv6 bracketed) or `hostname:port`.
    pub authority: String,
    /// Request headers (`forwarded`, `traceparent`, `baggage`, …).
    pub headers: HeaderMap,
}

/// A handle to an established HBONE client connection. Clones share the connection.
#[derive(Clone)]
pub struct H2Connection {
    handle: Arc<ConnHandle>,
    state: Arc<ConnState>,
    peer: Option<SocketAddr>,
    max_streams: usize,
}

/// Tells the connection when the last handle is gone, so it closes once idle.
struct ConnHandle(Arc<Shared>);

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.0.handles_gone();
    }
}

/// What the connection task and the stream handles share.
pub(crate) struct ConnState {
    /// Open streams (CONNECTs sent and not yet dropped).
    pub(crate) active: AtomicUsize,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, as last seen.
    server_max: AtomicUsize,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    /// When the pool last handed this connection out (nanoseconds since `epoch`).
    last_used: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    fn new(initial_server_max: usize) -> Self {
        ConnState {
            active: AtomicUsize::new(0),
            server_max: AtomicUsize::new(initial_server_max),
            closed: AtomicBool::new(false),
            closed_tx: watch::Sender::new(false),
            last_used: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_tx.send_replace(true);
    }
}

/// Runs the TLS handshake (no SNI, identity-checked per `tls`) and the HTTP/2
/// handshake over `io`, and spawns the connection task. Must be called within a
/// Tokio runtime.
pub async fn connect<IO>(
    io: IO,
    tls: Arc<rustls::ClientConfig>,
    cfg: &H2Config,
) -> Result<H2Connection, HboneError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connect_to(io, None, tls, cfg).await
}

/// [`connect`], naming the peer in errors and logs.
pub async fn connect_to<IO>(
    io: IO,
    peer: Option<SocketAddr>,
    tls: Arc<rustls::ClientConfig>,
    cfg: &H2Config,
) -> Result<H2Connection, HboneError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio_rustls::TlsConnector::from(tls).connect(zs_tls::hbone_server_name(), io);
    let tls_stream = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| HboneError::HandshakeTimeout {
            peer,
            timeout: cfg.handshake_timeout,
        })?
        .map_err(|source| HboneError::TlsHandshake { peer, source })?;
    let (io, session) = tls_stream.into_inner();
    let shared = Shared::new(
        Role::Client,
        rustls::Connection::Client(session),
        Box::new(io),
        Limits::client(cfg),
        peer,
    );

    let state = Arc::new(ConnState::new(usize::from(cfg.max_streams_per_connection)));
    let driver_state = state.clone();
    let driver = shared.clone();
    let mut keepalive = Keepalive::new(cfg.keepalive_interval, cfg.keepalive_timeout);
    tokio::spawn(async move {
        let end = poll_fn(|cx| {
            let ev = driver.poll_drive(cx, &mut keepalive);
            // The server's stream limit arrives in its SETTINGS after the handshake.
            let max = driver.peer_max_streams();
            driver_state.server_max.store(
                usize::try_from(max).unwrap_or(usize::MAX),
                Ordering::Relaxed,
            );
            match ev {
                std::task::Poll::Ready(Event::Closed(end)) => std::task::Poll::Ready(end),
                // A server never opens streams on a client connection.
                std::task::Poll::Ready(Event::Incoming(..)) | std::task::Poll::Pending => {
                    std::task::Poll::Pending
                }
            }
        })
        .await;
        match &end {
            H2Error::KeepaliveTimeout(_) => {
                warn!(?peer, failure = %end, "HBONE keepalive failed, dropping connection")
            }
            e if e.is_benign_close() => debug!(?peer, "HBONE connection closed"),
            e => debug!(?peer, error = %e, "HBONE connection failed"),
        }
        driver_state.mark_closed();
    });

    Ok(H2Connection {
        handle: Arc::new(ConnHandle(shared)),
        state,
        peer,
        max_streams: usize::from(cfg.max_streams_per_connection),
    })
}

impl H2Connection {
    /// Sends a CONNECT and waits for the response. Non-200 answers are errors
    /// (401 → [`HboneError::PolicyDenied`], 503 → [`HboneError::Unavailable`],
    /// 400 → [`HboneError::BadRequest`], others [`HboneError::Status`]).
    pub async fn send_connect(
        &self,
        req: ConnectRequest,
    ) -> Result<(H2Stream, http::response::Parts), HboneError> {
        self.state.active.fetch_add(1, Ordering::AcqRel);
        self.send_reserved(StreamSlot(self.state.clone()), req)
            .await
    }

    /// Sends on a stream slot already counted against this connection.
    pub(crate) async fn send_reserved(
        &self,
        slot: StreamSlot,
        req: ConnectRequest,
    ) -> Result<(H2Stream, http::response::Parts), HboneError> {
        let ConnectRequest { authority, headers } = req;
        if http::uri::Authority::try_from(authority.as_str()).is_err() {
            return Err(HboneError::InvalidAuthority(authority));
        }
        let request_error = |source| HboneError::Request {
            authority: authority.clone(),
            source,
        };
        let shared = &self.handle.0;
        let id = shared.open(&authority, &headers).map_err(request_error)?;
        let stream = StreamRef {
            shared: shared.clone(),
            id,
        };
        let (status, headers) = poll_fn(|cx| shared.poll_response(id, cx))
            .await
            .map_err(request_error)?;
        if status != StatusCode::OK {
            return Err(HboneError::from_status(&authority, status));
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        let (parts, ()) = response.into_parts();
        Ok((H2Stream::new(stream, Some(slot)), parts))
    }

    /// Whether new CONNECTs can be sent: the connection is up and has received no GOAWAY.
    pub fn is_ready(&self) -> bool {
        !self.state.closed.load(Ordering::Acquire) && self.handle.0.is_accepting()
    }

    /// Whether the connection has ended (closed, failed, or its keepalive timed out).
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection has ended.
    pub async fn closed(&self) {
        let mut rx = self.state.closed_tx.subscribe();
        // The sender lives in `self.state`, so it outlives this wait.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Streams currently open on this connection.
    pub fn active_streams(&self) -> usize {
        self.state.active.load(Ordering::Acquire)
    }

    /// Streams this connection may carry: the configured per-connection maximum,
    /// lowered to the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub fn max_streams(&self) -> usize {
        self.max_streams
            .min(self.state.server_max.load(Ordering::Relaxed))
    }

    /// The peer address, when known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Takes a stream slot if the connection is below its stream limit.
    pub(crate) fn try_reserve(&self) -> Option<StreamSlot> {
        let max = self.max_streams();
        self.state
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.state.clone()))
    }

    pub(crate) fn touch(&self) {
        let nanos = self.state.epoch.elapsed().as_nanos();
        self.state
            .last_used
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the connection was last handed out by the pool.
    pub(crate) fn last_used(&self) -> Instant {
        self.state.epoch
            + std::time::Duration::from_nanos(self.state.last_used.load(Ordering::Relaxed))
    }

    pub(crate) fn same_connection(&self, other: &H2Connection) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl std::fmt::Debug for H2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Connection")
            .field("peer", &self.peer)
            .field("active_streams", &self.active_streams())
            .field("max_streams", &self.max_streams())
            .field("closed", &self.is_closed())
            .finish()
    }
}
