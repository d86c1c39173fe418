//! The accept loop every listener shares.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::drain::DrainWatch;

/// Accepts connections until a drain starts, running `handle` on a task of its
/// own for each. `handle` gets a drain watch to hold until the connection is
/// done, so that a drain waits for it.
pub(crate) async fn accept_until_drained<F, Fut>(
    listener: TcpListener,
    drain: DrainWatch,
    name: &'static str,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, DrainWatch) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    info!(?addr, listener = name, "listener ready");
    let mut stop = std::pin::pin!(drain.signaled_owned());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(listener = name, error = %e, "accept failed");
                    // EMFILE and friends: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; logs,
        // metrics and `Forwarded` want the IPv4 address.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        tokio::spawn(handle(stream, peer, drain.clone()));
    }
    debug!(?addr, listener = name, "listener stopped accepting");
}
