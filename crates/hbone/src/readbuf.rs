//! A read buffer beneath TLS, held only while it has unread bytes.
//!
//! rustls pulls ciphertext from its transport 4 KiB at a time, so over a bare
//! socket every 16 KiB record costs four or five `recv` calls, each a trip
//! through the kernel and the reactor. [`ReadBuffered`] sits between the socket
//! and TLS: one `recv` takes up to [`READ_AHEAD`] bytes, and rustls's small
//! reads are then served from memory. On a bulk transfer that is one system
//! call per several records instead of several per record; for a small message
//! it changes nothing (one `recv` either way).
//!
//! Idle HBONE connections must stay cheap, so the buffer is borrowed from a
//! small per-thread cache for the read that fills it and goes back as soon as
//! its last byte has been handed up. A connection with nothing buffered owns no
//! buffer. Writes pass straight through.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read from the transport may take.
pub const READ_AHEAD: usize = 64 * 1024;

/// Buffers kept per thread for reuse; a thread rarely has more reads in flight.
const CACHED_PER_THREAD: usize = 4;

thread_local! {
    static CACHE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    CACHE
        .try_with(|c| c.borrow_mut().pop())
        .ok()
        .flatten()
        // Zeroed once when allocated; reads never need it zeroed again.
        .unwrap_or_else(|| vec![0; READ_AHEAD].into_boxed_slice())
}

fn give_buffer(buf: Box<[u8]>) {
    let _ = CACHE.try_with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() < CACHED_PER_THREAD {
            cache.push(buf);
        }
    });
}

/// A transport whose reads are batched through a borrowed buffer (see the
/// module documentation).
#[derive(Debug)]
pub struct ReadBuffered<T> {
    io: T,
    /// Read ahead and not yet handed up: `buf[pos..end]`. `None` when empty.
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
}

impl<T> ReadBuffered<T> {
    /// Wraps `io`; nothing is allocated until the first read.
    pub fn new(io: T) -> Self {
        ReadBuffered {
            io,
            buf: None,
            pos: 0,
            end: 0,
        }
    }

    /// Bytes read from the transport and not yet handed up.
    pub fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Hands up as much of the buffered bytes as `out` takes, returning the
    /// buffer to the cache once it is drained.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let Some(buf) = &self.buf else { return };
        let n = out.remaining().min(self.end - self.pos);
        out.put_slice(&buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.end {
            self.release();
        }
    }

    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_buffer(buf);
        }
        self.pos = 0;
        self.end = 0;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadBuffered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_some() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            // The caller's buffer is as large as ours: read straight into it.
            return Pin::new(&mut this.io).poll_read(cx, out);
        }
        let mut buf = take_buffer();
        let mut ahead = ReadBuf::new(&mut buf);
        match Pin::new(&mut this.io).poll_read(cx, &mut ahead) {
            Poll::Ready(Ok(())) => {
                let n = ahead.filled().len();
                if n == 0 {
                    // EOF: leave `out` empty.
                    give_buffer(buf);
                    return Poll::Ready(Ok(()));
                }
                this.buf = Some(buf);
                this.pos = 0;
                this.end = n;
                this.drain_into(out);
                Poll::Ready(Ok(()))
            }
            other => {
                give_buffer(buf);
                other
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadBuffered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T> Drop for ReadBuffered<T> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let (mut tx, rx) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).await.unwrap();
        drop(tx);
        let mut rx = ReadBuffered::new(rx);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut reads = 0;
        loop {
            let n = rx.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            reads += 1;
            got.extend_from_slice(&chunk[..n]);
            // After the first read, the rest of the read-ahead waits in the buffer.
            if reads == 1 {
                assert_eq!(n, 4096);
                assert_eq!(rx.buffered(), READ_AHEAD - 4096);
            }
        }
        assert_eq!(got, data);
        assert_eq!(rx.buffered(), 0);
        assert!(rx.buf.is_none(), "a drained reader holds no buffer");
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut rx = ReadBuffered::new(rx);
        tx.write_all(b"ping").await.unwrap();
        let mut chunk = [0u8; 16];
        assert_eq!(rx.read(&mut chunk).await.unwrap(), 4);
        assert!(rx.buf.is_none());
        // A read that is not ready gives the buffer back as well.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), rx.read(&mut chunk)).await;
        assert!(pending.is_err());
        assert!(rx.buf.is_none());
    }

    #[tokio::test]
    async fn large_caller_buffers_bypass_the_read_ahead() {
        let (mut tx, rx) = tokio::io::duplex(256 * 1024);
        tx.write_all(&[7u8; 1000]).await.unwrap();
        let mut rx = ReadBuffered::new(rx);
        let mut big = vec![0u8; READ_AHEAD];
        assert_eq!(rx.read(&mut big).await.unwrap(), 1000);
        assert!(rx.buf.is_none());
    }

    #[tokio::test]
    async fn writes_pass_through_and_eof_reads_empty() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = ReadBuffered::new(a);
        a.write_all(b"hello").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        drop(b);
        let mut chunk = [0u8; 8];
        assert_eq!(a.read(&mut chunk).await.unwrap(), 0);
    }
}
