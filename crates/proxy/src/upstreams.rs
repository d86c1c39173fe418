//! Fixed local upstreams (`LOCAL_UPSTREAMS`): a plain TCP port per mesh
//! destination, for clients with no proxy support at all.
//!
//! `LOCAL_UPSTREAMS="127.0.0.1:9000=echo-service.ecs-demo-1.ecs.local:8080"`
//! makes every connection to `127.0.0.1:9000` a connection to that service,
//! over the same route as SOCKS5 and the HTTP proxy (the Consul-on-ECS
//! "upstreams" pattern). The application just connects; there is no handshake
//! in which to report an error, so a failed dial closes the connection (the
//! reason goes to the debug log and the access log, and the failure is counted
//! in `istio_tcp_connections_failed_total`).
//!
//! This module also holds the accept loop every plain TCP listener shares.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::accept::accept_until_drained;
use crate::context::ProxyContext;
use crate::drain::DrainWatch;
use crate::outbound::{self, OutboundRequest, Target};

/// Forwards every connection accepted on `listener` to `target` until a drain
/// starts; open connections keep running until they end.
pub async fn serve(
    ctx: Arc<ProxyContext>,
    listener: TcpListener,
    target: Target,
    drain: DrainWatch,
) {
    let target = Arc::new(target);
    accept_until_drained(
        listener,
        drain,
        "local upstream",
        move |stream, peer, watch| {
            let ctx = ctx.clone();
            let target = target.clone();
            async move {
                forward(&ctx, stream, peer, &target).await;
                drop(watch);
            }
        },
    )
    .await;
}

/// Connects one accepted client to `target` and copies bytes until both close.
pub async fn forward(ctx: &ProxyContext, mut stream: TcpStream, peer: SocketAddr, target: &Target) {
    let request = OutboundRequest {
        target: target.clone(),
        client: peer,
    };
    match outbound::connect(ctx, &request).await {
        Ok(established) => outbound::proxy(&mut stream, established).await,
        Err(e) => debug!(%peer, %target, error = %e, "local upstream connect failed; closing"),
    }
}
