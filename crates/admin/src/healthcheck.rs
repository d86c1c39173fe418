//! The client side of readiness: what `ztunnel-sidecar healthcheck` (and an
//! ECS container health check) runs.
//!
//! One `GET /healthz/ready` over a fresh HTTP/1.1 connection, bounded as a
//! whole by a timeout, so the check answers quickly whatever state the sidecar
//! is in. Every failure is one line that says what to look at.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::readiness::READY_PATH;

/// Largest readiness answer read; the real one is a line.
const MAX_BODY: usize = 16 * 1024;

/// Longest server text quoted in an error.
const MAX_QUOTED: usize = 200;

/// Why the sidecar is not healthy, as a one-line reason.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The sidecar answered that it is not ready; the text is its answer
    /// (`not ready, pending: state manager`).
    #[error("{0}")]
    NotReady(String),
    /// Nothing listens on the readiness address.
    #[error("connection refused at {addr} — is the sidecar running?")]
    Refused {
        /// The readiness address tried.
        addr: SocketAddr,
    },
    /// No full answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The readiness address tried.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The readiness address tried.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The peer did not speak HTTP/1.1 as expected.
    #[error("bad HTTP exchange with {addr}: {reason}")]
    Http {
        /// The readiness address tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An answer other than 200 or 500.
    #[error("unexpected answer from {addr}: {status} {body}")]
    UnexpectedStatus {
        /// The readiness address tried.
        addr: SocketAddr,
        /// The status received.
        status: StatusCode,
        /// The start of the body, on one line.
        body: String,
    },
}

/// Asks the readiness server at `addr` whether the sidecar is ready; `Ok` only
/// for `200`. The whole exchange, connect included, is bounded by `timeout`.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthError> {
    match tokio::time::timeout(timeout, probe(addr)).await {
        Ok(result) => result,
        Err(_) => Err(HealthError::Timeout { addr, timeout }),
    }
}

async fn probe(addr: SocketAddr) -> Result<(), HealthError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::ConnectionRefused {
            HealthError::Refused { addr }
        } else {
            HealthError::Connect { addr, source }
        }
    })?;
    let _ = stream.set_nodelay(true);
    let http_err = |e: &dyn std::fmt::Display| HealthError::Http {
        addr,
        reason: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(&e))?;
    let request = Request::get(READY_PATH)
        .header(header::HOST, addr.to_string())
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_err(&e))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_err(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http_err(&*e))?
            .to_bytes();
        Ok::<_, HealthError>((status, body))
    };
    tokio::pin!(exchange, conn);
    // The connection task must be polled for the exchange to progress; if it
    // finishes first (the server closed after answering), the answer is
    // already buffered and the exchange completes on its own.
    let (status, body) = tokio::select! {
        biased;
        result = &mut exchange => result?,
        result = &mut conn => {
            result.map_err(|e| http_err(&e))?;
            exchange.await?
        }
    };
    let text = one_line(&body);
    match status {
        StatusCode::OK => Ok(()),
        StatusCode::INTERNAL_SERVER_ERROR if !text.is_empty() => Err(HealthError::NotReady(text)),
        status => Err(HealthError::UnexpectedStatus {
            addr,
            status,
            body: text,
        }),
    }
}

/// The body as one printable line of bounded length: the server is not trusted
/// to send something fit for a terminal.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED)
        .collect();
    if text.trim().chars().count() > MAX_QUOTED {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_bodies_become_one_bounded_line() {
        assert_eq!(
            one_line(b"not ready, pending: proxy\n"),
            "not ready, pending: proxy"
        );
        assert_eq!(one_line(b"a\nb\x1b[31m"), "a b [31m");
        let long = vec![b'x'; 500];
        assert_eq!(one_line(&long).chars().count(), MAX_QUOTED + 1);
    }
}
