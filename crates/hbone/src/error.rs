//! Errors of the HBONE transport, each carrying the peer or the CONNECT
//! authority it concerns so a log line says what failed where.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use zs_tls::TlsError;

/// Why an HBONE connection or CONNECT stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HboneError {
    /// The TCP connect did not complete in time. Upstream ztunnel words it the same
    /// way: the usual cause is a NetworkPolicy dropping traffic to port 15008.
    #[error(
        "connection to {dst} timed out after {timeout:?}, maybe a NetworkPolicy is blocking HBONE port 15008"
    )]
    ConnectTimeout { dst: SocketAddr, timeout: Duration },
    /// The TCP connect failed.
    #[error("connection to {dst} failed: {source}")]
    Connect {
        dst: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (certificate refused, identity mismatch, garbage…).
    /// [`HboneError::tls_verdict`] tells identity verdicts apart.
    #[error("TLS handshake with {} failed: {source}", peer_str(.peer))]
    TlsHandshake {
        peer: Option<SocketAddr>,
        #[source]
        source: io::Error,
    },
    /// TLS + HTTP/2 setup took longer than the handshake timeout.
    #[error("HBONE handshake with {} timed out after {timeout:?}", peer_str(.peer))]
    HandshakeTimeout {
        peer: Option<SocketAddr>,
        timeout: Duration,
    },
    /// The HTTP/2 preface/settings exchange failed.
    #[error("HTTP/2 handshake with {} failed: {source}", peer_str(.peer))]
    H2Handshake {
        peer: Option<SocketAddr>,
        #[source]
        source: crate::H2Error,
    },
    /// The HTTP/2 connection failed after it was established.
    #[error("HTTP/2 connection with {} failed: {source}", peer_str(.peer))]
    H2 {
        peer: Option<SocketAddr>,
        #[source]
        source: crate::H2Error,
    },
    /// The CONNECT request could not be sent or its response not received.
    #[error("CONNECT {authority} failed: {source}")]
    Request {
        authority: String,
        #[source]
        source: crate::H2Error,
    },
    /// The server denied the CONNECT by authorization policy (HTTP 401).
    #[error("CONNECT {authority} denied by policy (HTTP 401)")]
    PolicyDenied { authority: String },
    /// The server could not reach or resolve the destination (HTTP 503).
    #[error("CONNECT {authority} failed: destination unavailable (HTTP 503)")]
    Unavailable { authority: String },
    /// The server found the request malformed (HTTP 400).
    #[error("CONNECT {authority} rejected as malformed (HTTP 400)")]
    BadRequest { authority: String },
    /// Any other non-200 answer.
    #[error("CONNECT {authority} failed: http status: {status}")]
    Status {
        authority: String,
        status: StatusCode,
    },
    /// The CONNECT authority is not a valid `host:port`.
    #[error("invalid CONNECT authority {0:?}")]
    InvalidAuthority(String),
    /// No TLS configuration could be built for the connection.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The socket's addresses could not be read (the peer is already gone).
    #[error("cannot read socket addresses: {0}")]
    Socket(#[source] io::Error),
}

impl HboneError {
    /// The identity verdict behind a TLS failure (wrong peer identity or trust
    /// domain), as opposed to chain or transport problems.
    pub fn tls_verdict(&self) -> Option<&TlsError> {
        match self {
            HboneError::TlsHandshake { source, .. } => TlsError::from_handshake_error(source),
            HboneError::Tls(e) => Some(e),
            _ => None,
        }
    }

    /// The non-200 status the server answered, if that is what failed.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HboneError::PolicyDenied { .. } => Some(StatusCode::UNAUTHORIZED),
            HboneError::Unavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            HboneError::BadRequest { .. } => Some(StatusCode::BAD_REQUEST),
            HboneError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn from_status(authority: &str, status: StatusCode) -> Self {
        let authority = authority.to_owned();
        match status {
            StatusCode::UNAUTHORIZED => HboneError::PolicyDenied { authority },
            StatusCode::SERVICE_UNAVAILABLE => HboneError::Unavailable { authority },
            StatusCode::BAD_REQUEST => HboneError::BadRequest { authority },
            status => HboneError::Status { authority, status },
        }
    }
}

fn peer_str(peer: &Option<SocketAddr>) -> String {
    match peer {
        Some(addr) => addr.to_string(),
        None => "peer".to_owned(),
    }
}
