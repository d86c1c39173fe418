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
//!   wait for send window, so a slow peer bounds memory instead of growing it;
//! * dropping a stream that is still open resets it (CANCEL).
//!
//! Writes are framed, encrypted and written to the socket by the task that
//! makes them (see the connection module), so a message costs no hand-off to
//! another task on its way out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::ConnState;
use crate::conn::Shared;

/// A stream of a connection; resets and forgets the stream when dropped.
pub(crate) struct StreamRef {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u32,
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        self.shared.release(self.id);
    }
}

/// Ends direct delivery into an application socket (see
/// [`H2Stream::attach_sink`]) when dropped or finished.
pub struct DirectGuard {
    shared: Arc<Shared>,
    id: u32,
    done: bool,
}

impl DirectGuard {
    /// Detaches and returns the bytes delivered since the last count.
    pub(crate) fn finish(mut self) -> u64 {
        self.done = true;
        self.shared.detach_sink(self.id)
    }
}

impl Drop for DirectGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.detach_sink(self.id);
        }
    }
}

/// A proxied byte stream over one HTTP/2 CONNECT stream.
pub struct H2Stream {
    stream: StreamRef,
    /// Received bytes not yet handed to the reader.
    unread: Bytes,
    read_eof: bool,
    write_closed: bool,
    /// A sink is attached (see [`H2Stream::attach_sink`]).
    direct: bool,
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
    pub(crate) fn new(stream: StreamRef, slot: Option<StreamSlot>) -> Self {
        H2Stream {
            stream,
            unread: Bytes::new(),
            read_eof: false,
            write_closed: false,
            direct: false,
            _slot: slot,
        }
    }

    /// The HTTP/2 stream identifier.
    pub fn stream_id(&self) -> u32 {
        self.stream.id
    }

    /// The next received chunk, zero-copy; empty at EOF. The chunk's bytes count
    /// as consumed, so their window is released.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        if !self.unread.is_empty() {
            return Poll::Ready(Ok(std::mem::take(&mut self.unread)));
        }
        if self.read_eof {
            return Poll::Ready(Ok(Bytes::new()));
        }
        match ready!(self.stream.shared.poll_recv(self.stream.id, cx))? {
            Some(chunk) => Poll::Ready(Ok(chunk)),
            None => {
                self.read_eof = true;
                Poll::Ready(Ok(Bytes::new()))
            }
        }
    }

    /// Sends a prefix of `data` (at least one byte, as much as the send window
    /// allows) without copying, advancing `data` past it.
    pub fn poll_send_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = ready!(self.stream.shared.poll_send(self.stream.id, cx, data))?;
        data.advance(n);
        Poll::Ready(Ok(()))
    }

    /// Has the connection write this stream's data straight to `fd` while
    /// the reader waits; stops when the guard goes.
    ///
    /// # Safety
    ///
    /// `fd` must stay an open socket for as long as the returned guard lives.
    pub(crate) unsafe fn attach_sink(
        &mut self,
        fd: std::os::fd::RawFd,
        counter: Option<crate::copy::DirectCounter>,
    ) -> DirectGuard {
        // SAFETY: the guard detaches before the caller may close `fd`.
        unsafe { self.stream.shared.attach_sink(self.stream.id, fd, counter) };
        self.direct = true;
        DirectGuard {
            shared: self.stream.shared.clone(),
            id: self.stream.id,
            done: false,
        }
    }

    /// Bytes the connection delivered directly since the last count.
    pub(crate) fn take_delivered(&mut self) -> u64 {
        if !self.direct {
            return 0;
        }
        self.stream.shared.take_delivered(self.stream.id)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.write_closed {
            return Ok(());
        }
        self.write_closed = true;
        self.stream.shared.send_end(self.stream.id)
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
            this.unread = ready!(this.poll_chunk(cx))?;
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
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
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // The connection frames straight from the slice into TLS: nothing is
        // queued past this call, so no copy into an owned buffer is needed.
        this.stream.shared.poll_send(this.stream.id, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are written as they are sent; what the socket did not take,
        // the connection's driver flushes.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.stream.id)
            .field("read_eof", &self.read_eof)
            .field("write_closed", &self.write_closed)
            .finish()
    }
}
