//! One proxied byte stream carried by one HTTP/2 CONNECT stream.
//!
//! [`H2Stream`] is what both the client (after a 200) and the server (after
//! accepting) hand to the byte copier, and it is a plain `AsyncRead +
//! AsyncWrite`, so a TLS session can run inside it (double HBONE). The mapping
//! between byte-stream and HTTP/2 semantics is ztunnel's:
//!
//! * write-side shutdown sends an empty DATA frame with END_STREAM;
//! * END_STREAM, or RST_STREAM with NO_ERROR or CANCEL, reads as EOF;
//!   RST_STREAM with STREAM_CLOSED is a broken pipe;
//! * receive window is released only as the reader consumes bytes, and writes
//!   wait for send capacity, so a slow peer bounds memory instead of growing it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::ConnState;

/// A proxied byte stream over one HTTP/2 CONNECT stream.
pub struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// Received bytes not yet handed to the reader.
    unread: Bytes,
    read_eof: bool,
    write_closed: bool,
    /// Holds the pooled connection's stream slot; released on drop.
    _slot: Option<StreamSlot>,
}

/// Counts a stream against its connection's stream limit until dropped.
pub(crate) struct StreamSlot(pub(crate) Arc<ConnState>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl H2Stream {
    pub(crate) fn new(
        send: h2::SendStream<Bytes>,
        recv: h2::RecvStream,
        slot: Option<StreamSlot>,
    ) -> Self {
        H2Stream {
            send,
            recv,
            unread: Bytes::new(),
            read_eof: false,
            write_closed: false,
            _slot: slot,
        }
    }

    /// The next received chunk, zero-copy; empty at EOF. The chunk's bytes count
    /// as consumed, so their window is released.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        if self.unread.is_empty() {
            ready!(self.poll_fill(cx))?;
        }
        let chunk = std::mem::take(&mut self.unread);
        self.release(chunk.len());
        Poll::Ready(Ok(chunk))
    }

    /// Sends a prefix of `data` (at least one byte, as much as send capacity
    /// allows) without copying, advancing `data` past it.
    pub fn poll_send_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        if data.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(self.poll_send_capacity(cx, data.len()))?;
        let chunk = data.split_to(n);
        self.send
            .send_data(chunk, false)
            .map_err(|e| self.send_error(e))?;
        Poll::Ready(Ok(()))
    }

    /// Waits until `want` (or fewer, but at least one) bytes may be sent.
    fn poll_send_capacity(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send.reserve_capacity(want);
        let available = match self.send.capacity() {
            0 => match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(self.send_error(e))),
                None => return self.poll_reset_error(cx),
            },
            n => n,
        };
        Poll::Ready(Ok(available.min(want)))
    }

    /// Fills `unread` with the next non-empty DATA frame, or notes EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.read_eof {
            match ready!(self.recv.poll_data(cx)) {
                None => self.read_eof = true,
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => {
                    self.unread = data;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => match e.reason() {
                    Some(Reason::NO_ERROR) | Some(Reason::CANCEL) => self.read_eof = true,
                    Some(Reason::STREAM_CLOSED) => {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, e)));
                    }
                    _ => return Poll::Ready(Err(h2_to_io(e))),
                },
            }
        }
        Poll::Ready(Ok(()))
    }

    fn release(&mut self, n: usize) {
        if n > 0 {
            // Fails only if the stream is already gone, in which case there is no window to return.
            let _ = self.recv.flow_control().release_capacity(n);
        }
    }

    fn send_error(&mut self, e: h2::Error) -> io::Error {
        match e.reason() {
            Some(Reason::NO_ERROR | Reason::CANCEL | Reason::STREAM_CLOSED) => {
                io::Error::new(io::ErrorKind::BrokenPipe, e)
            }
            _ => h2_to_io(e),
        }
    }

    /// The stream can no longer send: report why, as the peer's reset says.
    fn poll_reset_error<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(Reason::NO_ERROR | Reason::CANCEL | Reason::STREAM_CLOSED))
            | Poll::Pending => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(reason)) => Poll::Ready(Err(io::Error::other(h2::Error::from(reason)))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(h2_to_io(e))),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.write_closed {
            return Ok(());
        }
        self.write_closed = true;
        match self.send.send_data(Bytes::new(), true) {
            Ok(()) => Ok(()),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => Ok(()),
            Err(e) => Err(self.send_error(e)),
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            ready!(this.poll_fill(cx))?;
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        this.release(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.poll_send_capacity(cx, buf.len()))?;
        let chunk = crate::copy::copy_to_bytes(&buf[..n]);
        this.send
            .send_data(chunk, false)
            .map_err(|e| this.send_error(e))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes frames as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("read_eof", &self.read_eof)
            .field("write_closed", &self.write_closed)
            .finish()
    }
}

pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"))
    } else {
        io::Error::other(e)
    }
}
