//! The HBONE server: one accepted TCP connection, mutual TLS, HTTP/2, and a
//! handler call per CONNECT stream.
//!
//! [`serve_connection`] does only transport work. It answers a non-CONNECT
//! request with 400 itself; everything else (parsing the authority, finding the
//! target, authorization, dialing, answering 200/401/503) is the handler's,
//! which gets an [`IncomingConnect`] per stream, concurrently, on its own task.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use http::{HeaderMap, StatusCode};
use tokio::net::TcpStream;
use tracing::debug;
use zs_identity::Identity;

use crate::conn::{Event, H2Error, Keepalive, Limits, RequestHead, Role, Shared};
use crate::readbuf::ReadBuffered;
use crate::stream::StreamRef;
use crate::{H2Config, H2Stream, HboneError};

/// Handles inbound CONNECT streams. Each call runs on its own task.
pub trait ConnectHandler: Send + Sync + 'static {
    /// Handles one CONNECT: answer it with [`IncomingConnect::accept`] or
    /// [`IncomingConnect::reject`], then serve the stream. Dropping the request
    /// unanswered resets the stream.
    ///
    /// The returned future is the stream's task, spawned as it is: what it
    /// holds while the stream is idle is what every idle inbound connection
    /// costs. An `async fn` keeps its arguments for its whole life, so a
    /// handler that cares moves `req` into a boxed set-up future that is freed
    /// before the copy starts.
    fn handle(self: Arc<Self>, req: IncomingConnect) -> impl Future<Output = ()> + Send + 'static;
}

/// Who is on the other end of an HBONE connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The TCP peer (the HBONE client's address; what authorization sees as source IP).
    pub peer_addr: SocketAddr,
    /// The local address the client connected to (our workload IP and port 15008).
    pub local_addr: SocketAddr,
    /// The first SPIFFE identity of the client certificate.
    pub identity: Option<Identity>,
}

/// One inbound CONNECT: the request head, the peer, and the means to answer.
pub struct IncomingConnect {
    head: RequestHead,
    stream: StreamRef,
    peer: Arc<PeerInfo>,
}

impl IncomingConnect {
    /// The `:authority` the client asked for, if any.
    pub fn authority(&self) -> Option<&str> {
        self.head.authority.as_deref()
    }

    /// Request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The HBONE client's TCP address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer.peer_addr
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> SocketAddr {
        self.peer.local_addr
    }

    /// The client's identity, from its certificate.
    pub fn peer_identity(&self) -> Option<&Identity> {
        self.peer.identity.as_ref()
    }

    /// The trust domain of the client's identity.
    pub fn peer_trust_domain(&self) -> Option<&str> {
        self.peer.identity.as_ref().map(Identity::trust_domain)
    }

    /// Everything known about the peer, shared by all streams of the connection.
    pub fn peer(&self) -> &Arc<PeerInfo> {
        &self.peer
    }

    /// Answers `status` with END_STREAM: the stream ends here.
    pub fn reject(self, status: StatusCode) {
        // Fails only if the client already reset the stream; nobody is left to tell.
        let _ = self
            .stream
            .shared
            .respond(self.stream.id, status, &HeaderMap::new(), true);
    }

    /// Answers 200 with `extra` headers (e.g. `baggage`) and returns the stream.
    pub fn accept(self, extra: HeaderMap) -> Result<H2Stream, HboneError> {
        self.stream
            .shared
            .respond(self.stream.id, StatusCode::OK, &extra, false)
            .map_err(|source| HboneError::H2 {
                peer: Some(self.peer.peer_addr),
                source,
            })?;
        Ok(H2Stream::new(self.stream, None))
    }
}

impl std::fmt::Debug for IncomingConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingConnect")
            .field("authority", &self.authority())
            .field("peer", &self.peer)
            .finish()
    }
}

/// Serves one accepted TCP connection: TLS accept with `tls` (passed per
/// connection so certificate rotation applies to new connections), the HTTP/2
/// handshake, then `handler` for every CONNECT stream. When `shutdown`
/// completes, a graceful GOAWAY goes out and open streams are served until they
/// end; the caller enforces any deadline by dropping this future.
///
/// Returns `Ok` when the client closes the connection, a typed error when the
/// handshake or the connection fails (the caller logs it).
pub async fn serve_connection<H: ConnectHandler>(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    cfg: &H2Config,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HboneError> {
    let peer_addr = tcp.peer_addr().map_err(HboneError::Socket)?;
    let local_addr = tcp.local_addr().map_err(HboneError::Socket)?;
    let peer = Some(peer_addr);
    // Best effort: a socket that cannot take the option still works.
    let _ = tcp.set_nodelay(true);

    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(ReadBuffered::new(tcp));
    let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    let timed_out = || HboneError::HandshakeTimeout {
        peer,
        timeout: cfg.handshake_timeout,
    };
    let tls_stream = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| HboneError::TlsHandshake { peer, source })?;
    let identity = zs_tls::peer_identity(tls_stream.get_ref().1);
    let (io, session) = tls_stream.into_inner();
    let conn = Shared::new(
        Role::Server,
        rustls::Connection::Server(session),
        Box::new(io),
        Limits::server(cfg),
        peer,
    );
    let info = Arc::new(PeerInfo {
        peer_addr,
        local_addr,
        identity,
    });
    let mut keepalive = Keepalive::new(cfg.keepalive_interval, cfg.keepalive_timeout);

    // The client's preface and SETTINGS, within the handshake deadline.
    let first = tokio::time::timeout_at(
        deadline,
        poll_fn(|cx| match conn.poll_drive(cx, &mut keepalive) {
            Poll::Ready(ev) => Poll::Ready(Some(ev)),
            Poll::Pending if conn.has_settings() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }),
    )
    .await
    .map_err(|_| timed_out())?;
    let mut pending = match first {
        Some(Event::Closed(e)) if !conn.has_settings() => {
            return Err(HboneError::H2Handshake { peer, source: e });
        }
        other => other,
    };

    let mut shutdown = pin!(shutdown);
    let mut draining = false;
    loop {
        let event = match pending.take() {
            Some(ev) => ev,
            None => {
                tokio::select! {
                    ev = poll_fn(|cx| conn.poll_drive(cx, &mut keepalive)) => ev,
                    () = &mut shutdown, if !draining => {
                        debug!(%peer_addr, "draining HBONE connection");
                        conn.drain();
                        draining = true;
                        continue;
                    }
                }
            }
        };
        match event {
            Event::Incoming(id, head) => {
                let req = IncomingConnect {
                    head,
                    stream: StreamRef {
                        shared: conn.clone(),
                        id,
                    },
                    peer: info.clone(),
                };
                tokio::spawn(handler.clone().handle(req));
            }
            Event::Closed(e) if e.is_benign_close() => {
                debug!(%peer_addr, "HBONE client went away");
                return Ok(());
            }
            Event::Closed(H2Error::KeepaliveTimeout(t)) => {
                debug!(%peer_addr, timeout = ?t, "HBONE keepalive failed, closed connection");
                return Ok(());
            }
            Event::Closed(source) => return Err(HboneError::H2 { peer, source }),
        }
    }
}
