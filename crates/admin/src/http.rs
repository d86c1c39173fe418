//! The HTTP/1.1 plumbing shared by the admin, metrics and readiness servers.
//!
//! All three speak plain HTTP/1.1 only, with ztunnel's limits: a client gets
//! two seconds to send its request headers and a request may not exceed an
//! 8 KiB read buffer. Parse errors are answered by hyper (400, 431) and the
//! connection is closed; a handler never sees bad input it must reject by
//! panicking.
//!
//! The accept loop and every connection run on whichever Tokio runtime polls
//! [`serve`], so the caller decides where operator traffic runs (the sidecar
//! keeps it on a small "control" runtime, away from the data path). When the
//! shutdown future completes the listener is closed at once, idle keep-alive
//! connections are closed, requests in flight are answered, and `serve`
//! returns once every connection is gone. A client that stops reading an
//! answer can hold that up, so a caller with a deadline bounds the wait with a
//! timeout; dropping the `serve` future aborts all of its connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How long a client may take to send its request headers (ztunnel's value).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest read buffer per connection (ztunnel's value; hyper's minimum).
pub const MAX_BUF_SIZE: usize = 8 * 1024;

/// Connections served at once per server. Operator endpoints see a handful of
/// clients; the cap only keeps a misbehaving one from using every descriptor.
const MAX_CONNECTIONS: usize = 256;

/// Pause after an accept error such as EMFILE, so a full descriptor table does
/// not turn the accept loop into a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The body type every handler answers with.
pub type Body = Full<Bytes>;

/// A response with a `text/plain` body (what ztunnel's operator endpoints send).
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_content_type(status, "text/plain", body)
}

/// A response with a body and an explicit content type.
pub fn with_content_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = status;
    resp
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` completes,
/// then drains (see the module documentation).
///
/// `name` labels the server in logs. The handler is shared by all connections.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let address = match listener.local_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => "unknown".to_owned(),
    };
    info!(component = name, %address, "listener established");

    tokio::pin!(shutdown);
    loop {
        // Reap finished connections first so the set never grows past the cap
        // because of connections that are already gone.
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = connections.join_next() => continue,
            }
        }
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                warn!(component = name, error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        // Responses are small and written at once; do not let Nagle hold them.
        let _ = socket.set_nodelay(true);
        let handler = handler.clone();
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                // Answer clients that shut down their sending side after the
                // request (`nc -N`, some probe tools), as ztunnel does.
                .half_close(true)
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_BUF_SIZE);
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(conn);
            let draining = async move {
                // Resolves when draining starts (or the server is gone).
                let _ = drain.wait_for(|draining| *draining).await;
            };
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = draining => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                debug!(component = name, %peer, error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = drain_tx.send(true);
    while connections.join_next().await.is_some() {}
    info!(component = name, %address, "listener drained");
}
