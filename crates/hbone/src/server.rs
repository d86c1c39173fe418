//! The HBONE server: one accepted TCP connection, mutual TLS, HTTP/2, and a
//! handler call per CONNECT stream.
//!
//! [`serve_connection`] does only transport work. It answers a non-CONNECT
//! request with 400 itself; everything else (parsing the authority, finding the
//! target, authorization, dialing, answering 200/401/503) is the handler's,
//! which gets an [`IncomingConnect`] per stream, concurrently, on its own task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Response, StatusCode};
use tokio::net::TcpStream;
use tracing::debug;
use zs_identity::Identity;

use crate::readbuf::ReadBuffered;
use crate::{H2Config, H2Stream, HboneError, keepalive};

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
    head: http::request::Parts,
    recv: h2::RecvStream,
    respond: SendResponse<Bytes>,
    peer: Arc<PeerInfo>,
}

impl IncomingConnect {
    /// The `:authority` the client asked for, if any.
    pub fn authority(&self) -> Option<&str> {
        self.head.uri.authority().map(|a| a.as_str())
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
    pub fn reject(mut self, status: StatusCode) {
        let mut response = Response::new(());
        *response.status_mut() = status;
        // Fails only if the client already reset the stream; nobody is left to tell.
        let _ = self.respond.send_response(response, true);
    }

    /// Answers 200 with `extra` headers (e.g. `baggage`) and returns the stream.
    pub fn accept(mut self, extra: HeaderMap) -> Result<H2Stream, HboneError> {
        let mut response = Response::new(());
        *response.headers_mut() = extra;
        let send = self
            .respond
            .send_response(response, false)
            .map_err(|source| HboneError::H2 {
                peer: Some(self.peer.peer_addr),
                source,
            })?;
        Ok(H2Stream::new(send, self.recv, None))
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

    let handshake = async {
        let tls_stream = tokio_rustls::TlsAcceptor::from(tls)
            .accept(ReadBuffered::new(tcp))
            .await
            .map_err(|source| HboneError::TlsHandshake { peer, source })?;
        let identity = zs_tls::peer_identity(tls_stream.get_ref().1);
        let conn = h2::server::Builder::new()
            .initial_window_size(cfg.stream_window)
            .initial_connection_window_size(cfg.connection_window)
            .max_frame_size(cfg.max_frame_size)
            .max_header_list_size(cfg.server_max_header_list)
            .max_concurrent_streams(cfg.server_max_concurrent_streams)
            .max_send_buffer_size(cfg.server_max_send_buffer)
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(|source| HboneError::H2Handshake { peer, source })?;
        Ok::<_, HboneError>((conn, identity))
    };
    let (mut conn, identity) = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| HboneError::HandshakeTimeout {
            peer,
            timeout: cfg.handshake_timeout,
        })??;

    let info = Arc::new(PeerInfo {
        peer_addr,
        local_addr,
        identity,
    });
    let mut keepalive = pin!(keepalive::run(
        conn.ping_pong(),
        cfg.keepalive_interval,
        cfg.keepalive_timeout
    ));
    let mut shutdown = pin!(shutdown);
    let (mut draining, mut keepalive_failed) = (false, false);
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                None => return Ok(()),
                Some(Err(e)) if is_peer_gone(&e) => {
                    debug!(%peer_addr, error = %e, "HBONE client went away");
                    return Ok(());
                }
                Some(Err(source)) => return Err(HboneError::H2 { peer, source }),
                Some(Ok((request, respond))) => dispatch(request, respond, &info, &handler),
            },
            () = &mut shutdown, if !draining => {
                debug!(%peer_addr, "draining HBONE connection");
                conn.graceful_shutdown();
                draining = true;
            }
            failure = &mut keepalive, if !keepalive_failed => {
                debug!(%peer_addr, %failure, "HBONE keepalive failed, closing connection");
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                keepalive_failed = true;
            }
        }
    }
}

fn dispatch<H: ConnectHandler>(
    request: http::Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: &Arc<PeerInfo>,
    handler: &Arc<H>,
) {
    let (head, recv) = request.into_parts();
    if head.method != Method::CONNECT {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        // Fails only if the client already reset the stream.
        let _ = respond.send_response(response, true);
        return;
    }
    let req = IncomingConnect {
        head,
        recv,
        respond,
        peer: peer.clone(),
    };
    tokio::spawn(handler.clone().handle(req));
}

/// The client closing its end (with or without GOAWAY) is the normal end of a
/// connection, not a failure worth an error.
fn is_peer_gone(e: &h2::Error) -> bool {
    if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return true;
    }
    e.get_io().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        )
    })
}
