//! A minimal plain-HTTP/1.1 client for the few link-local or loopback HTTP
//! endpoints this crate talks to (the ECS container credentials endpoint, and
//! in tests the STS stand-in). One request per connection, bounded in time and
//! in response size: these endpoints answer small JSON documents, and a
//! misbehaving one must not stall or bloat the sidecar.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest response body accepted; credentials documents are well under 4 KiB.
const MAX_BODY: usize = 64 * 1024;

/// A response: status and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Only `http://` URIs with a host are supported.
    #[error("unsupported URI {0} (expected http://host[:port]/path)")]
    UnsupportedUri(String),
    /// The TCP connection could not be opened.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// Host and port dialled.
        authority: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {authority} failed: {source}")]
    Http {
        /// Host and port dialled.
        authority: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The response body was larger than this client accepts.
    #[error("response from {authority} is larger than {MAX_BODY} bytes")]
    TooLarge {
        /// Host and port dialled.
        authority: String,
    },
    /// No complete response within the deadline.
    #[error("no response from {authority} within {timeout:?}")]
    Timeout {
        /// Host and port dialled.
        authority: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// Sends `request` (whose URI must be absolute `http://`) and reads the whole
/// response, all within `timeout`.
pub(crate) async fn send(
    mut request: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let uri = request.uri().clone();
    let (Some("http"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(HttpError::UnsupportedUri(uri.to_string()));
    };
    let port = uri.port_u16().unwrap_or(80);
    // IPv6 literals keep their brackets in `authority` but not in `host`.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.to_string());
    if !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(&authority)
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    // hyper's HTTP/1 client sends the request target as given; use origin form.
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse::<http::Uri>()
        .map_err(|_| HttpError::UnsupportedUri(uri.to_string()))?;
    *request.uri_mut() = path;

    let exchange = async {
        let stream =
            TcpStream::connect((host, port))
                .await
                .map_err(|source| HttpError::Connect {
                    authority: authority.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let http_err = |source| HttpError::Http {
            authority: authority.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        let driver = tokio::spawn(conn);
        let response = sender.send_request(request).await.map_err(http_err);
        let result = match response {
            Ok(response) => {
                let status = response.status();
                match Limited::new(response.into_body(), MAX_BODY).collect().await {
                    Ok(body) => Ok(Response {
                        status,
                        body: body.to_bytes(),
                    }),
                    Err(e) => match e.downcast::<hyper::Error>() {
                        Ok(source) => Err(HttpError::Http {
                            authority: authority.clone(),
                            source: *source,
                        }),
                        Err(_) => Err(HttpError::TooLarge {
                            authority: authority.clone(),
                        }),
                    },
                }
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            authority: authority.clone(),
            timeout,
        }),
    }
}
