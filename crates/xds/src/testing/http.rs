//! A tiny HTTP/1.1 server on loopback for the AWS stand-ins: each request is
//! read whole and answered by a synchronous handler.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A request as the handler sees it.
pub(crate) type Request = http::Request<Bytes>;
/// A response from the handler.
pub(crate) type Response = http::Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// A running server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl HttpServer {
    pub(crate) async fn bind(handler: Handler) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let response = match Limited::new(body, 1 << 20).collect().await {
                                    Ok(body) => {
                                        handler(http::Request::from_parts(parts, body.to_bytes()))
                                    }
                                    Err(_) => {
                                        plain(http::StatusCode::PAYLOAD_TOO_LARGE, "body too large")
                                    }
                                };
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(HttpServer { addr, cancel })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A response with a body and content type.
pub(crate) fn respond(status: http::StatusCode, content_type: &str, body: String) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

/// A plain-text response.
pub(crate) fn plain(status: http::StatusCode, body: &str) -> Response {
    respond(status, "text/plain", body.to_string())
}
