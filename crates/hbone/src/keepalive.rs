//! HTTP/2 PING keepalive, run by both ends of every HBONE connection.
//!
//! The first PING goes out one interval after the connection starts (no point
//! racing the first request), then one interval after each PONG. A PONG that
//! does not come within the timeout means the peer or the path is gone; the
//! caller then tears the connection down instead of letting streams hang.

use std::fmt;
use std::time::Duration;

/// Why the keepalive gave up.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No PONG within the timeout.
    Timeout(Duration),
    /// The PING could not be sent (the connection is already failing).
    Ping(h2::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(t) => write!(f, "no PONG within {t:?}"),
            Failure::Ping(e) => write!(f, "PING failed: {e}"),
        }
    }
}

/// Pings until a PING fails or times out, and returns why. Must be polled
/// alongside the connection future, which is what carries the frames.
pub(crate) async fn run(
    ping_pong: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
) -> Failure {
    let Some(mut ping_pong) = ping_pong else {
        // Never resolve: a missing handle must not tear the connection down.
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return Failure::Ping(e),
            Err(_) => return Failure::Timeout(timeout),
        }
    }
}
