//! Applications behind the sidecars: echo servers that can say who they are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP echo server. With a `banner`, it first writes `<banner>\n` so a client
/// can tell which backend answered. Counts accepted connections.
pub struct EchoServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(bind: SocketAddr, banner: Option<&str>) -> EchoServer {
        let listener = TcpListener::bind(bind).await.expect("bind echo server");
        EchoServer::serve(listener, banner)
    }

    /// Serves on a listener the caller bound (e.g. inside a network namespace).
    pub fn serve(listener: TcpListener, banner: Option<&str>) -> EchoServer {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let banner = banner.map(|b| format!("{b}\n"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let banner = banner.clone();
                tokio::spawn(async move {
                    if let Some(b) = banner
                        && s.write_all(b.as_bytes()).await.is_err()
                    {
                        return;
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoServer {
            addr,
            accepted,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `msg`, half-closes, reads everything back.
pub async fn echo_roundtrip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    out
}

/// Reads one `\n`-terminated line (a banner).
pub async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).await.expect("read banner");
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("utf-8 banner")
}

/// Sends `len` pseudo-random bytes through `stream` while reading the echo back
/// concurrently; returns (sha256 sent, sha256 received, bytes received).
pub async fn checksummed_echo(stream: TcpStream, len: usize) -> ([u8; 32], [u8; 32], usize) {
    use ring::digest::{Context, SHA256};
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut ctx = Context::new(&SHA256);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            for b in &mut buf[..n] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            ctx.update(&buf[..n]);
            w.write_all(&buf[..n]).await.expect("write");
            left -= n;
        }
        w.shutdown().await.expect("shutdown");
        let d = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    });
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        total += n;
    }
    let d = ctx.finish();
    let mut received = [0u8; 32];
    received.copy_from_slice(d.as_ref());
    (writer.await.unwrap(), received, total)
}
