//! The HTTP proxy listener: how applications that set `HTTP_PROXY`,
//! `HTTPS_PROXY` or `grpc_proxy` to `http://127.0.0.1:15081` enter the mesh.
//!
//! gRPC in every language, Go, Node and the Java HttpClient speak HTTP proxies
//! only, so this listener is what most clients use. It serves the two forms
//! clients send, over HTTP/1.1:
//!
//! * `CONNECT host:port`: the route is dialed with [`outbound::connect`], the
//!   client gets `200 Connection established` only once the upstream is
//!   established (or a 403/502/503/504 naming the reason), and the connection
//!   then becomes a byte tunnel. This is what clients do for `https://` URLs
//!   and what gRPC always does.
//! * absolute-form requests (`GET http://host:port/path`, any method), which
//!   clients send for `http://` URLs: each request is rewritten to origin form,
//!   stripped of hop-by-hop headers (RFC 9110 §7.6.1) and of the proxy's own
//!   credentials, and forwarded as HTTP/1.1 over the same route. Bodies stream
//!   in both directions. The upstream connection is kept for the next request
//!   to the same host and port; hyper answers one request at a time per client
//!   connection, so pipelined requests are answered in order.
//!
//! Anything else (origin-form requests, `https://` absolute URIs) is answered
//! 400 with a body saying what to do instead. Parsing is hyper's, with a limit
//! on header size and a timeout for reading them, so a slow or malformed
//! client only ever affects its own connection.
//!
//! The proxy adds no `Via` header: the sidecar stays invisible to applications
//! (some servers, nginx among them, change behaviour for requests with `Via`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tracing::debug;
use zs_hbone::copy::Io;

use crate::accept::accept_until_drained;
use crate::context::ProxyContext;
use crate::drain::DrainWatch;
use crate::metrics::{ConnectionRecorder, ResponseFlags};
use crate::outbound::{self, Established, OutboundError, OutboundRequest, Target, Upstream};

/// How long a client may take to send a request's headers. It also bounds how
/// long an idle keep-alive connection is held open between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a client may send before its headers end (request line included).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most header fields in one request.
pub const MAX_HEADERS: usize = 100;

/// Headers that describe one hop, not the message: never forwarded in either
/// direction. `Proxy-Authorization` and `Proxy-Authenticate` are the proxy's
/// own credentials and challenges; they must not reach the origin (or come back).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// The body of every response this listener sends: the origin's, streamed, or
/// a short text of its own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Opens upstream connections for the HTTP proxy. The sidecar's is the
/// [`ProxyContext`] ([`outbound::connect`]); fuzzing substitutes one that
/// refuses everything, so that parsing is exercised without sockets or DNS.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `req.target`, recording the connection in metrics.
    fn dial(
        &self,
        req: &OutboundRequest,
    ) -> impl Future<Output = Result<Established, OutboundError>> + Send;
}

impl Dialer for ProxyContext {
    fn dial(
        &self,
        req: &OutboundRequest,
    ) -> impl Future<Output = Result<Established, OutboundError>> + Send {
        outbound::connect(self, req)
    }
}

/// Why a request cannot be proxied as sent (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A request with no scheme or host: the client treats this listener as a server.
    #[error(
        "this is an HTTP proxy: send absolute-form requests (GET http://host:port/path) or CONNECT host:port"
    )]
    OriginForm,
    /// `GET https://…`: TLS to the origin is the client's job, through CONNECT.
    #[error(
        "https:// URLs go through CONNECT: use this proxy as the HTTPS proxy and the client will tunnel"
    )]
    HttpsWithoutConnect,
    /// A scheme other than `http` or `https`.
    #[error(
        "unsupported URL scheme {0:?}: only http:// is forwarded (other protocols use CONNECT)"
    )]
    UnsupportedScheme(String),
    /// A CONNECT target that is not `host:port`.
    #[error("CONNECT needs host:port (authority form), got {0:?}")]
    ConnectTarget(String),
    /// An empty or unusable host.
    #[error("the URL names no host")]
    NoHost,
    /// Port 0.
    #[error("port 0 is not a destination")]
    PortZero,
}

/// Accepts HTTP proxy clients until a drain starts. On drain, idle keep-alive
/// connections are closed and busy ones finish their current request; open
/// CONNECT tunnels keep running (each holds a drain watch).
pub async fn serve(ctx: Arc<ProxyContext>, listener: TcpListener, drain: DrainWatch) {
    accept_until_drained(listener, drain, "HTTP proxy", move |stream, peer, watch| {
        serve_connection(ctx.clone(), stream, peer, watch)
    })
    .await;
}

/// Serves one client connection (any byte stream) until it closes.
pub async fn serve_connection<D, I>(dialer: Arc<D>, io: I, peer: SocketAddr, drain: DrainWatch)
where
    D: Dialer,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ClientConnection {
        dialer,
        peer,
        drain: drain.clone(),
        upstream: parking_lot::Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(state.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stop = std::pin::pin!(drain.signaled_owned());
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = &mut stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Malformed requests were already answered 400 by hyper; this is the why.
        debug!(%peer, error = %e, "HTTP proxy connection ended with an error");
    }
}

/// An upstream kept for the client's next request to the same host and port.
struct KeptUpstream {
    /// Lowercase `host:port` as the client wrote it.
    authority: String,
    sender: SendRequest<Incoming>,
}

/// Per client connection state shared by its requests (one at a time).
struct ClientConnection<D> {
    dialer: Arc<D>,
    peer: SocketAddr,
    drain: DrainWatch,
    upstream: parking_lot::Mutex<Option<KeptUpstream>>,
}

impl<D: Dialer> ClientConnection<D> {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return self.tunnel(req).await;
        }
        match forward_target(req.uri()) {
            Ok((authority, target)) => self.forward(req, authority, target).await,
            Err(e) => {
                debug!(peer = %self.peer, uri = %req.uri(), error = %e, "HTTP proxy request refused");
                text_response(StatusCode::BAD_REQUEST, &e)
            }
        }
    }

    /// CONNECT: dial first, answer 200 only with an upstream in hand, then copy bytes.
    async fn tunnel(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let target = match connect_target(req.uri()) {
            Ok(t) => t,
            Err(e) => {
                debug!(peer = %self.peer, uri = %req.uri(), error = %e, "CONNECT refused");
                return closing(text_response(StatusCode::BAD_REQUEST, &e));
            }
        };
        let request = OutboundRequest {
            target,
            client: self.peer,
        };
        let established = match self.dialer.dial(&request).await {
            Ok(e) => e,
            Err(e) => {
                debug!(peer = %self.peer, target = %request.target, error = %e, "CONNECT failed");
                // Close after the answer: bytes the client may have sent after its
                // CONNECT were meant for the tunnel, not parsed as a request.
                return closing(text_response(e.http_status(), &e));
            }
        };
        let upgrade = hyper::upgrade::on(&mut req);
        let watch = self.drain.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    outbound::proxy(&mut Io(TokioIo::new(upgraded)), established).await;
                }
                // The recorder in `established` records the close when dropped.
                Err(e) => debug!(%peer, error = %e, "client left before the tunnel opened"),
            }
            drop(watch);
        });
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(
                b"Connection established",
            ));
        response
    }

    /// Absolute form: rewrite, forward over a (reused) upstream, relay the answer.
    async fn forward(
        &self,
        req: Request<Incoming>,
        authority: String,
        target: Target,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        if let Err(e) = to_origin_form(&mut parts) {
            return text_response(StatusCode::BAD_REQUEST, &e);
        }
        let mut req = Request::from_parts(parts, body);

        let kept = self
            .upstream
            .lock()
            .take()
            .filter(|k| k.authority == authority);
        if let Some(mut kept) = kept
            && kept.sender.ready().await.is_ok()
        {
            match kept.sender.try_send_request(req).await {
                Ok(response) => {
                    *self.upstream.lock() = Some(kept);
                    return relay(response);
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (the upstream closed meanwhile): use a fresh one.
                    Some(unsent) => req = unsent,
                    None => return upstream_failed(&authority, &e.into_error()),
                },
            }
        }

        let mut sender = match self.open(target).await {
            Ok(s) => s,
            Err(ForwardError::Connect(e)) => {
                debug!(peer = %self.peer, %authority, error = %e, "HTTP proxy upstream failed");
                return text_response(e.http_status(), &e);
            }
            Err(ForwardError::Http(e)) => return upstream_failed(&authority, &e),
        };
        match sender.send_request(req).await {
            Ok(response) => {
                *self.upstream.lock() = Some(KeptUpstream { authority, sender });
                relay(response)
            }
            Err(e) => upstream_failed(&authority, &e),
        }
    }

    /// Dials the route and starts an HTTP/1.1 client connection over it.
    async fn open(&self, target: Target) -> Result<SendRequest<Incoming>, ForwardError> {
        let request = OutboundRequest {
            target,
            client: self.peer,
        };
        let Established { upstream, recorder } = self
            .dialer
            .dial(&request)
            .await
            .map_err(ForwardError::Connect)?;
        let io = Metered::new(upstream, recorder);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(ForwardError::Http)?;
        let watch = self.drain.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTP proxy upstream connection failed");
            }
            drop(watch);
        });
        Ok(sender)
    }
}

enum ForwardError {
    Connect(OutboundError),
    Http(hyper::Error),
}

/// The destination of `CONNECT host:port`.
pub fn connect_target(uri: &Uri) -> Result<Target, RequestError> {
    let bad = || RequestError::ConnectTarget(uri.to_string());
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    let port = authority.port_u16().ok_or_else(bad)?;
    target(authority.host(), port)
}

/// The upstream key (lowercase `host:port`) and destination of an
/// absolute-form request.
pub fn forward_target(uri: &Uri) -> Result<(String, Target), RequestError> {
    let Some(scheme) = uri.scheme_str() else {
        return Err(RequestError::OriginForm);
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(RequestError::HttpsWithoutConnect);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(RequestError::UnsupportedScheme(scheme.to_string()));
    }
    let authority = uri.authority().ok_or(RequestError::NoHost)?;
    let port = authority.port_u16().unwrap_or(80);
    let target = target(authority.host(), port)?;
    let key = format!("{}:{port}", authority.host().to_ascii_lowercase());
    Ok((key, target))
}

fn target(host: &str, port: u16) -> Result<Target, RequestError> {
    if host.is_empty() {
        return Err(RequestError::NoHost);
    }
    if port == 0 {
        return Err(RequestError::PortZero);
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(match bare.parse::<IpAddr>() {
        Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
        Err(_) => Target::Host {
            name: bare.to_ascii_lowercase(),
            port,
        },
    })
}

/// Rewrites an absolute-form request for the origin: origin-form target,
/// `Host` from the URL (RFC 9112 §3.2.2: the URL wins over a received `Host`),
/// no hop-by-hop headers, HTTP/1.1.
pub fn to_origin_form(parts: &mut http::request::Parts) -> Result<(), RequestError> {
    let authority = parts.uri.authority().ok_or(RequestError::NoHost)?;
    // `Authority` keeps any `user:pass@`; the Host header must not.
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, hp)| hp);
    let host = HeaderValue::from_str(host_port).map_err(|_| RequestError::NoHost)?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|_| RequestError::NoHost)?;
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    strip_hop_by_hop(&mut parts.headers);
    if chunked {
        // The body was framed by Transfer-Encoding, which wins over a
        // Content-Length sent alongside it (RFC 9112 §6.3); hyper reframes it.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.headers.insert(header::HOST, host);
    parts.uri = path;
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// Removes the headers that apply to one hop only, including those the
/// `Connection` header names (RFC 9110 §7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
}

/// The origin's response, minus hop-by-hop headers, body streamed.
fn relay(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    Response::from_parts(parts, Either::Left(body))
}

fn upstream_failed(authority: &str, e: &hyper::Error) -> Response<ProxyBody> {
    debug!(%authority, error = %e, "HTTP proxy upstream exchange failed");
    let message = format!("the upstream connection to {authority} failed: {e}");
    text_response(StatusCode::BAD_GATEWAY, &message)
}

/// `<status>: <reason>` as a short plain-text body, so `curl` shows the cause.
fn text_response(status: StatusCode, reason: &dyn std::fmt::Display) -> Response<ProxyBody> {
    let body = format!("{status}: {reason}\n");
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An upstream that counts bytes into the connection's traffic metrics as
/// hyper reads and writes it, and records the close when hyper drops it.
struct Metered {
    io: Upstream,
    /// `istio_tcp_received_bytes` (client → server) and `istio_tcp_sent_bytes`.
    to_upstream: Counter,
    from_upstream: Counter,
    totals: (u64, u64),
    recorder: Option<ConnectionRecorder>,
}

impl Metered {
    fn new(io: Upstream, recorder: ConnectionRecorder) -> Self {
        let (to_upstream, from_upstream) = recorder.byte_counters();
        Metered {
            io,
            to_upstream,
            from_upstream,
            totals: (0, 0),
            recorder: Some(recorder),
        }
    }

    fn wrote(&mut self, n: usize) {
        self.to_upstream.inc_by(n as u64);
        self.totals.0 += n as u64;
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(self.totals, ResponseFlags::None, None);
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match &mut this.io {
            Upstream::Tcp(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
            Upstream::Hbone(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
        }
        let n = (buf.filled().len() - before) as u64;
        this.from_upstream.inc_by(n);
        this.totals.1 += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = match &mut this.io {
            Upstream::Tcp(s) => ready!(Pin::new(s).poll_write(cx, buf))?,
            Upstream::Hbone(s) => ready!(Pin::new(s).poll_write(cx, buf))?,
        };
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = match &mut this.io {
            Upstream::Tcp(s) => ready!(Pin::new(s).poll_write_vectored(cx, bufs))?,
            Upstream::Hbone(s) => ready!(Pin::new(s).poll_write_vectored(cx, bufs))?,
        };
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Upstream::Tcp(s) => s.is_write_vectored(),
            Upstream::Hbone(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Upstream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Upstream::Hbone(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Upstream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Hbone(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn connect_target_takes_names_and_addresses() {
        assert_eq!(
            connect_target(&uri("Echo.Example:443")),
            Ok(Target::Host {
                name: "echo.example".into(),
                port: 443
            })
        );
        assert_eq!(
            connect_target(&uri("10.0.0.7:8080")),
            Ok(Target::Addr("10.0.0.7:8080".parse().unwrap()))
        );
        assert_eq!(
            connect_target(&uri("[fd00::7]:8080")),
            Ok(Target::Addr("[fd00::7]:8080".parse().unwrap()))
        );
    }

    #[test]
    fn connect_target_needs_authority_form_with_a_port() {
        for bad in ["echo.example", "http://echo.example:80/", "/path"] {
            assert_eq!(
                connect_target(&uri(bad)),
                Err(RequestError::ConnectTarget(uri(bad).to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            connect_target(&uri("echo.example:0")),
            Err(RequestError::PortZero)
        );
    }

    #[test]
    fn forward_target_defaults_to_port_80_and_keys_by_lowercase_authority() {
        let (key, target) = forward_target(&uri("http://Echo.Example/x?y")).unwrap();
        assert_eq!(key, "echo.example:80");
        assert_eq!(
            target,
            Target::Host {
                name: "echo.example".into(),
                port: 80
            }
        );
    }

    #[test]
    fn forward_target_refuses_what_is_not_plain_http() {
        assert_eq!(
            forward_target(&uri("/index.html")),
            Err(RequestError::OriginForm)
        );
        assert_eq!(
            forward_target(&uri("https://echo.example/")),
            Err(RequestError::HttpsWithoutConnect)
        );
        assert_eq!(
            forward_target(&uri("ftp://echo.example/")),
            Err(RequestError::UnsupportedScheme("ftp".into()))
        );
    }

    #[test]
    fn origin_form_drops_hop_by_hop_and_proxy_credentials_and_sets_host_from_the_url() {
        let req = Request::builder()
            .method("POST")
            .uri("http://user:pw@echo.example:8080/a/b?c=d")
            .header("host", "elsewhere.example")
            .header("connection", "keep-alive, X-Hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("proxy-authorization", "Basic dTpw")
            .header("te", "trailers")
            .header("trailer", "x-sum")
            .header("upgrade", "websocket")
            .header("x-end-to-end", "kept")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        to_origin_form(&mut parts).unwrap();
        assert_eq!(parts.uri, "/a/b?c=d");
        let mut names: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["host", "x-end-to-end"]);
        assert_eq!(parts.headers["host"], "echo.example:8080");
    }

    #[test]
    fn a_chunked_request_loses_a_conflicting_content_length() {
        let req = Request::builder()
            .uri("http://echo.example/")
            .header("transfer-encoding", "chunked")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        to_origin_form(&mut parts).unwrap();
        assert!(!parts.headers.contains_key("content-length"));
        assert!(!parts.headers.contains_key("transfer-encoding"));
    }

    #[test]
    fn an_empty_path_becomes_slash() {
        let req = Request::builder()
            .uri("http://echo.example")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        to_origin_form(&mut parts).unwrap();
        assert_eq!(parts.uri, "/");
        assert_eq!(parts.headers["host"], "echo.example");
    }
}
