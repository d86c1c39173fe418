//! The HBONE client: one mutual-TLS HTTP/2 connection and CONNECT requests on it.
//!
//! [`connect`] runs the TLS and HTTP/2 handshakes over any byte stream (a TCP
//! socket for a direct peer, an [`H2Stream`] for the inner leg of double HBONE)
//! and spawns the task that drives the connection and its PING keepalive.
//! [`H2Connection`] is a cheap handle to send CONNECTs on it; the pool keeps
//! these per destination.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::stream::StreamSlot;
use crate::{H2Config, H2Stream, HboneError, keepalive};

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
    send: SendRequest<Bytes>,
    state: Arc<ConnState>,
    peer: Option<SocketAddr>,
    max_streams: usize,
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
    let handshake = async {
        let tls_stream = tokio_rustls::TlsConnector::from(tls)
            .connect(zs_tls::hbone_server_name(), io)
            .await
            .map_err(|source| HboneError::TlsHandshake { peer, source })?;
        h2::client::Builder::new()
            .initial_window_size(cfg.stream_window)
            .initial_connection_window_size(cfg.connection_window)
            .max_frame_size(cfg.max_frame_size)
            .max_header_list_size(cfg.client_max_header_list)
            .initial_max_send_streams(usize::from(cfg.max_streams_per_connection))
            // One window's worth may be queued, so a full window flushes in one go.
            .max_send_buffer_size(cfg.stream_window as usize)
            .enable_push(false)
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(|source| HboneError::H2Handshake { peer, source })
    };
    let (send, mut conn) = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| HboneError::HandshakeTimeout {
            peer,
            timeout: cfg.handshake_timeout,
        })??;

    let state = Arc::new(ConnState::new(conn.max_concurrent_send_streams()));
    let ping = conn.ping_pong();
    let driver_state = state.clone();
    let (interval, timeout) = (cfg.keepalive_interval, cfg.keepalive_timeout);
    tokio::spawn(async move {
        let keepalive = pin!(keepalive::run(ping, interval, timeout));
        let conn = poll_fn(|cx| {
            let res = std::pin::Pin::new(&mut conn).poll(cx);
            // The server's stream limit arrives in its SETTINGS after the handshake.
            driver_state
                .server_max
                .store(conn.max_concurrent_send_streams(), Ordering::Relaxed);
            res
        });
        tokio::select! {
            res = conn => match res {
                Ok(()) => debug!(?peer, "HBONE connection closed"),
                Err(e) => debug!(?peer, error = %e, "HBONE connection failed"),
            },
            failure = keepalive => warn!(?peer, %failure, "HBONE keepalive failed, dropping connection"),
        }
        driver_state.mark_closed();
    });

    Ok(H2Connection {
        send,
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
        let uri = connect_uri(&authority)?;
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;

        let request_error = |source| HboneError::Request {
            authority: authority.clone(),
            source,
        };
        let mut send = self.send.clone();
        poll_fn(|cx| send.poll_ready(cx))
            .await
            .map_err(request_error)?;
        let (response, stream) = send.send_request(request, false).map_err(request_error)?;
        let response = response.await.map_err(request_error)?;
        if response.status() != StatusCode::OK {
            return Err(HboneError::from_status(&authority, response.status()));
        }
        let (parts, recv) = response.into_parts();
        Ok((H2Stream::new(stream, recv, Some(slot)), parts))
    }

    /// Whether new CONNECTs can be sent: the connection is up and has received no GOAWAY.
    pub fn is_ready(&self) -> bool {
        if self.state.closed.load(Ordering::Acquire) {
            return false;
        }
        // A GOAWAY or connection error makes `poll_ready` fail immediately; a
        // fresh clone has no pending stream, so it is never legitimately pending.
        let mut send = self.send.clone();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        matches!(send.poll_ready(&mut cx), Poll::Ready(Ok(())))
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

fn connect_uri(authority: &str) -> Result<Uri, HboneError> {
    let invalid = || HboneError::InvalidAuthority(authority.to_owned());
    let authority = http::uri::Authority::from_str(authority).map_err(|_| invalid())?;
    let mut parts = http::uri::Parts::default();
    parts.authority = Some(authority);
    Uri::from_parts(parts).map_err(|_| invalid())
}
