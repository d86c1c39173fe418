//! A TLS gRPC server standing in for istiod (or an east-west gateway in
//! front of it): serves a tonic router over rustls, records the SNI each
//! connection arrived with, and can be killed (listener closed, every open
//! connection broken) to simulate istiod going away.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, Router};

/// Per-connection facts, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The SNI the client sent, if any.
    pub server_name: Option<String>,
}

/// A running TLS gRPC server. Dropping it kills it.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    log: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    server_names: Vec<Option<String>>,
    handshake_failures: Vec<String>,
}

impl TlsServer {
    /// Serves `router` on `listener` with `tls`.
    pub fn start(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router) -> Self {
        let addr = listener.local_addr().expect("listener has a local address");
        let cancel = CancellationToken::new();
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = mpsc::channel::<TlsConn>(16);

        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let accept_cancel = cancel.clone();
        let accept_log = log.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, remote_addr) = tokio::select! {
                    _ = accept_cancel.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let (acceptor, tx, log, cancel) = (
                    acceptor.clone(),
                    tx.clone(),
                    accept_log.clone(),
                    accept_cancel.clone(),
                );
                // As istiod (Go) does; without it small gRPC frames wait for delayed ACKs.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            let server_name = stream.get_ref().1.server_name().map(str::to_string);
                            if let Ok(mut log) = log.lock() {
                                log.server_names.push(server_name.clone());
                            }
                            let conn = TlsConn {
                                inner: stream,
                                info: TlsConnectInfo {
                                    remote_addr,
                                    server_name,
                                },
                                killed: Box::pin(cancel.cancelled_owned()),
                            };
                            let _ = tx.send(conn).await;
                        }
                        Err(e) => {
                            if let Ok(mut log) = log.lock() {
                                log.handshake_failures.push(e.to_string());
                            }
                        }
                    }
                });
            }
            // Dropping the listener here closes the port.
        });

        let serve_cancel = cancel.clone();
        tokio::spawn(async move {
            let incoming = ReceiverStream::new(rx).map(Ok::<_, io::Error>);
            let _ = router
                .serve_with_incoming_shutdown(incoming, serve_cancel.cancelled_owned())
                .await;
        });

        TlsServer { addr, cancel, log }
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn bind(tls: Arc<rustls::ServerConfig>, router: Router) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self::start(listener, tls, router))
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The SNI of every completed handshake, in order.
    pub fn server_names_seen(&self) -> Vec<Option<String>> {
        self.log
            .lock()
            .map(|l| l.server_names.clone())
            .unwrap_or_default()
    }

    /// The errors of failed handshakes, in order.
    pub fn handshake_failures(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.handshake_failures.clone())
            .unwrap_or_default()
    }

    /// Stops accepting and breaks every open connection, as if the process died.
    pub fn kill(&self) {
        self.cancel.cancel();
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server-side TLS connection that fails all I/O once the server is killed.
struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl TlsConn {
    fn check_killed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "test server killed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
