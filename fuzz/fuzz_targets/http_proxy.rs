//! The HTTP proxy listener's request handling, fed arbitrary bytes as one
//! client connection (hyper's parser, the CONNECT and absolute-form paths, the
//! error answers). A dialer that refuses every destination stands in for the
//! mesh, so every request that parses is answered without sockets or DNS.
//!
//! Properties: no input panics; the connection always ends (the client closes
//! after its bytes; the header timeout bounds a stalled head, on a paused
//! clock); whatever the proxy writes starts with an HTTP/1.x status line whose
//! status this listener can produce, and never a success (nothing can be dialed).

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs_proxy::drain;
use zs_proxy::http_proxy::{self, Dialer};
use zs_proxy::outbound::{Established, OutboundError, OutboundRequest, Target};

/// Refuses everything, with the failure varied by port so that every error
/// status the listener maps is produced.
struct Refuse;

impl Dialer for Refuse {
    async fn dial(&self, req: &OutboundRequest) -> Result<Established, OutboundError> {
        let port = match &req.target {
            Target::Addr(a) => a.port(),
            Target::Host { port, .. } => *port,
        };
        let target = req.target.to_string();
        Err(match port % 4 {
            0 => OutboundError::Refused { addr: target },
            1 => OutboundError::PolicyDenied { target },
            2 => OutboundError::Timeout { addr: target },
            _ => OutboundError::NoCertificate,
        })
    }
}

/// Statuses the listener answers with when nothing can be dialed: its own 400
/// and the mapped dial failures, and hyper's automatic 400/414/431.
const POSSIBLE: [&str; 7] = ["400", "403", "414", "431", "502", "503", "504"];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let out = runtime().block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (_trigger, watch) = drain::channel();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let serve = http_proxy::serve_connection(Arc::new(Refuse), server, peer, watch);
        let (mut r, mut w) = tokio::io::split(client);
        let write = async move {
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let exchange = async { tokio::join!(serve, write, read).2 };
        tokio::time::timeout(Duration::from_secs(120), exchange)
            .await
            .expect("the connection ended")
    });
    if out.is_empty() {
        return;
    }
    assert!(
        out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
        "not a status line: {:?}",
        String::from_utf8_lossy(&out)
    );
    let status = std::str::from_utf8(out.get(9..12).unwrap_or_default()).unwrap_or_default();
    assert!(
        POSSIBLE.contains(&status),
        "unexpected status {status:?} in {:?}",
        String::from_utf8_lossy(&out)
    );
});
