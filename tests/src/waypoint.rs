//! A waypoint stand-in: a real HBONE server (mutual TLS with its own workload
//! certificate, HTTP/2 CONNECT) that records what each CONNECT asked for and
//! then echoes, after a banner line naming itself.
//!
//! A real waypoint would apply L7 policy and forward to the original
//! destination; for routing tests what matters is that traffic arrives here,
//! over HBONE, from the right client, with the original destination as
//! `:authority`.
//!
//! [`WaypointStandIn::resetting`] is the same server answering nothing: it
//! resets every CONNECT stream, as a proxy that is going away can, so tests
//! can show a client retrying elsewhere.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use zs_hbone::{ConnectHandler, H2Config, IncomingConnect, serve_connection};
use zs_tls::{TlsOptions, WorkloadCertificate};

/// One CONNECT the waypoint received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub authority: String,
    /// The client's SPIFFE identity, as a string.
    pub identity: String,
}

/// A running waypoint stand-in; stops when dropped.
pub struct WaypointStandIn {
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
    /// `None`: reset each stream instead of answering.
    banner: Option<String>,
}

impl ConnectHandler for Recorder {
    async fn handle(self: Arc<Self>, req: IncomingConnect) {
        self.received.lock().unwrap().push(Received {
            authority: req.authority().unwrap_or_default().to_string(),
            identity: req
                .peer_identity()
                .map(ToString::to_string)
                .unwrap_or_default(),
        });
        let Some(banner) = &self.banner else {
            // Dropped unanswered: the stream is reset.
            drop(req);
            return;
        };
        let Ok(stream) = req.accept(HeaderMap::new()) else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(stream);
        if w.write_all(banner.as_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    }
}

impl WaypointStandIn {
    /// Serves HBONE on `listener` as `cert`'s identity; answers with `<banner>\n`.
    pub fn start(listener: TcpListener, cert: WorkloadCertificate, banner: &str) -> Self {
        Self::serve(listener, cert, Some(format!("{banner}\n")))
    }

    /// Serves HBONE on `listener` as `cert`'s identity, resetting every CONNECT.
    pub fn resetting(listener: TcpListener, cert: WorkloadCertificate) -> Self {
        Self::serve(listener, cert, None)
    }

    fn serve(listener: TcpListener, cert: WorkloadCertificate, banner: Option<String>) -> Self {
        let tls = zs_tls::server_config(&cert, &TlsOptions::default()).expect("server config");
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Recorder {
            received: received.clone(),
            banner,
        });
        let task = tokio::spawn(async move {
            let h2 = H2Config::default();
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, handler, h2) = (tls.clone(), handler.clone(), h2.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(tcp, tls, &h2, handler, std::future::pending()).await;
                });
            }
        });
        WaypointStandIn { received, task }
    }

    /// Every CONNECT so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for WaypointStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
