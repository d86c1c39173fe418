//! The SOCKS5 listener (RFC 1928): how applications that set
//! `ALL_PROXY=socks5h://127.0.0.1:15080` enter the mesh.
//!
//! Per connection: no-auth negotiation, one CONNECT request (IPv4, IPv6 or a
//! domain name, which `socks5h://` clients leave for the proxy to resolve),
//! then [`outbound::connect`]. Unlike ztunnel, success is answered only once
//! the upstream is established, and failures map to the RFC 1928 reply codes
//! (connection refused, host unreachable, not allowed by ruleset for a policy
//! denial), so `curl` prints a meaningful error instead of a reset.
//! BIND and UDP ASSOCIATE are answered "command not supported".
//!
//! The protocol is parsed by `fast-socks5`; this module adds the timeouts,
//! the mapping to the mesh, and the accounting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fast_socks5::server::states::CommandRead;
use fast_socks5::server::{Socks5ServerProtocol, SocksServerError};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::accept::accept_until_drained;
use crate::context::ProxyContext;
use crate::drain::DrainWatch;
use crate::outbound::{self, OutboundRequest, Target};

/// How long a client may take to send its greeting and request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts SOCKS5 clients until a drain starts; open connections keep running
/// (each holds a drain watch, so the drain waits for them).
pub async fn serve(ctx: Arc<ProxyContext>, listener: TcpListener, drain: DrainWatch) {
    accept_until_drained(listener, drain, "socks5", move |stream, peer, watch| {
        handle(ctx.clone(), stream, peer, watch)
    })
    .await;
}

/// A SOCKS5 request as read from a client: the protocol state to answer it
/// with, the command and the target.
pub type Request<S> = (
    Socks5ServerProtocol<S, CommandRead>,
    Socks5Command,
    TargetAddr,
);

/// Reads the greeting (answering with "no authentication", or "no acceptable
/// methods" when the client does not offer it) and one request. Untimed: the
/// listener bounds it with its handshake timeout. Public for the fuzz target.
pub async fn read_request<S>(stream: S) -> Result<Request<S>, SocksServerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let proto = Socks5ServerProtocol::accept_no_auth(stream).await?;
    proto.read_command().await
}

/// The `ztunnel_sidecar_socks5_handshake_failures_total` reason for an error
/// from [`read_request`].
pub fn failure_reason(e: &SocksServerError) -> &'static str {
    match e {
        SocksServerError::UnsupportedSocksVersion(_) => "bad_version",
        SocksServerError::AuthMethodUnacceptable(_) => "no_acceptable_auth",
        SocksServerError::UnknownCommand(_) => "unknown_command",
        SocksServerError::AddrError(_) => "bad_address",
        SocksServerError::FromUtf8 { .. } => "bad_address",
        SocksServerError::EOF | SocksServerError::Io { .. } => "truncated",
        _ => "protocol_error",
    }
}

fn reply_for(code: u8) -> ReplyError {
    match code {
        0x02 => ReplyError::ConnectionNotAllowed,
        0x03 => ReplyError::NetworkUnreachable,
        0x04 => ReplyError::HostUnreachable,
        0x05 => ReplyError::ConnectionRefused,
        0x07 => ReplyError::CommandNotSupported,
        _ => ReplyError::GeneralFailure,
    }
}

/// Serves one SOCKS5 client, holding `hold` (a drain watch) until it is done.
/// The returned future is the connection's task.
pub fn handle(
    ctx: Arc<ProxyContext>,
    stream: TcpStream,
    peer: SocketAddr,
    hold: impl Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    // Negotiation and connect run in a boxed future that takes the socket and
    // is freed when they finish: an idle proxied connection keeps only what
    // the copy needs. (An `async fn` would keep its arguments for its whole life.)
    let setup = Box::pin(async move { negotiate(&ctx, stream, peer).await });
    async move {
        let Some((mut client, established)) = setup.await else {
            return;
        };
        outbound::proxy(&mut client, established).await;
        drop(hold);
    }
}

/// The SOCKS5 exchange and the upstream connect; `None` once the client has
/// been answered with a failure (or has gone away).
async fn negotiate(
    ctx: &ProxyContext,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, outbound::Established)> {
    let _ = stream.set_nodelay(true);
    let negotiated = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_request(stream)).await;
    let (proto, command, target) = match negotiated {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            ctx.metrics.socks5_failure(failure_reason(&e));
            debug!(%peer, error = %e, "SOCKS5 handshake failed");
            return None;
        }
        Err(_) => {
            ctx.metrics.socks5_failure("timeout");
            debug!(%peer, "SOCKS5 handshake timed out");
            return None;
        }
    };
    if command != Socks5Command::TCPConnect {
        ctx.metrics.socks5_failure("command_not_supported");
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return None;
    }
    let target = match target {
        TargetAddr::Ip(addr) => Target::Addr(addr),
        TargetAddr::Domain(name, port) => Target::Host { name, port },
    };
    let request = OutboundRequest {
        target,
        client: peer,
    };
    match outbound::connect(ctx, &request).await {
        Ok(established) => {
            // RFC 1928 wants BND.ADDR; clients ignore it and ztunnel sends 0.0.0.0:0.
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            match proto.reply_success(unspecified).await {
                Ok(client) => Some((client, established)),
                Err(e) => {
                    debug!(%peer, error = %e, "SOCKS5 client left before the reply");
                    None
                }
            }
        }
        Err(e) => {
            debug!(%peer, target = %request.target, error = %e, "SOCKS5 connect failed");
            let _ = proto.reply_error(&reply_for(e.socks5_reply())).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle proxied connection is mostly its task's future: keep it small.
    /// (Sizes depend a little on the compiler; the bound leaves room for that.)
    #[test]
    fn the_per_connection_future_stays_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let ctx = crate::context::tests::context();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let std_stream = std::net::TcpStream::connect(addr).unwrap();
        std_stream.set_nonblocking(true).unwrap();
        let stream = tokio::net::TcpStream::from_std(std_stream).unwrap();
        let fut = super::handle(ctx, stream, addr, ());
        assert!(
            size(&fut) <= 512,
            "socks5::handle future is {} bytes",
            size(&fut)
        );
    }
}
