//! Bidirectional byte copy between the two ends of a proxied connection.
//!
//! Most proxied connections are idle most of the time, so what an idle
//! connection holds is what the sidecar's memory is made of. The copier
//! therefore owns no buffer while it waits: a read borrows a buffer from a small
//! per-thread cache, and if the read is not ready the buffer goes straight back.
//! While data flows the same buffer is taken and returned on every chunk without
//! touching the allocator. Chunks move as `Bytes`, so data read from TCP is
//! handed to HTTP/2 without a copy, and data from HTTP/2 is written to TCP
//! straight from the frame.
//!
//! Read sizes grow with the volume transferred, as in ztunnel: 1 KiB at first
//! (interactive traffic), 16 KiB after 128 KiB, 256 KiB after 10 MiB (bulk).
//!
//! Half-close is propagated: when one side reaches EOF, the other side's write
//! half is shut down and the opposite direction keeps flowing until it ends too.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::H2Stream;
use crate::stream::DirectGuard;

const INITIAL_BUFFER: usize = 1024;
const LARGE_BUFFER: usize = 16 * 1024 - 64;
const JUMBO_BUFFER: usize = 256 * 1024 - 64;
const LARGE_AFTER: u64 = 128 * 1024;
const JUMBO_AFTER: u64 = 10 * 1024 * 1024;

/// Chunks moved per direction before the copier yields to other tasks.
const CHUNKS_PER_POLL: usize = 32;

/// One end of a proxied connection, as the copier sees it: a source of byte
/// chunks and a sink that accepts them.
pub trait ProxyIo {
    /// Reads the next chunk of at most about `size` bytes; an empty chunk is EOF.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<Bytes>>;

    /// Writes a prefix of `data` (at least one byte), advancing `data` past it.
    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>>;

    /// Flushes written data.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Shuts down the write half (sends FIN / END_STREAM).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The socket this end writes to, if it is a plain socket that the other
    /// end may write received data into directly.
    #[doc(hidden)]
    fn direct_fd(&self) -> Option<RawFd> {
        None
    }

    /// Starts writing received data straight into `fd` (another end's
    /// [`ProxyIo::direct_fd`]) while the copier waits; only the copier, which
    /// holds both ends, can call it.
    #[doc(hidden)]
    fn attach_direct(
        &mut self,
        fd: RawFd,
        counter: Option<DirectCounter>,
        token: DirectToken,
    ) -> Option<DirectGuard> {
        let _ = (fd, counter, token);
        None
    }

    /// Bytes written directly since the last call.
    #[doc(hidden)]
    fn take_direct(&mut self) -> u64 {
        0
    }
}

/// Proof that the caller is this module's copier, which keeps both ends
/// alive for as long as a [`DirectGuard`] it holds.
#[doc(hidden)]
pub struct DirectToken(());

/// Any `AsyncRead + AsyncWrite` (a TLS stream, a Unix socket…) as a [`ProxyIo`].
#[derive(Debug)]
pub struct Io<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin> ProxyIo for Io<T> {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<Bytes>> {
        poll_read_pooled(&mut self.0, cx, size)
    }

    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        poll_write_all_some(&mut self.0, cx, data)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ProxyIo for TcpStream {
    fn direct_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<Bytes>> {
        poll_read_pooled(self, cx, size)
    }

    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        poll_write_all_some(self, cx, data)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

impl ProxyIo for H2Stream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, _size: usize) -> Poll<io::Result<Bytes>> {
        // HTTP/2 already hands us owned frames: pass them on as they are.
        self.poll_chunk(cx)
    }

    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        self.poll_send_chunk(cx, data)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self), cx)
    }

    fn attach_direct(
        &mut self,
        fd: RawFd,
        counter: Option<DirectCounter>,
        _token: DirectToken,
    ) -> Option<DirectGuard> {
        // SAFETY: a `DirectToken` is made only by `copy_bidirectional`, which
        // holds the end that owns `fd` borrowed for longer than the guard lives.
        Some(unsafe { self.attach_sink(fd, counter) })
    }

    fn take_direct(&mut self) -> u64 {
        self.take_delivered()
    }
}

/// Counts bytes from another task: what an HBONE connection writes straight
/// into the application socket (see [`Observer::direct_counter`]).
pub type DirectCounter = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Receives byte counts as chunks are delivered, for metrics. Called once per
/// chunk on the data path: keep it to an atomic add.
pub trait Observer {
    /// A counter for bytes of one direction (`a → b` if `a_to_b`) that the
    /// HBONE connection writes straight into the application socket while the
    /// copier waits, called as they are written. Without one such bytes are
    /// counted when the copier next runs, which may be much later.
    fn direct_counter(&self, a_to_b: bool) -> Option<DirectCounter> {
        let _ = a_to_b;
        None
    }

    /// `n` more bytes were written from `a` to `b`.
    fn a_to_b(&self, n: u64) {
        let _ = n;
    }
    /// `n` more bytes were written from `b` to `a`.
    fn b_to_a(&self, n: u64) {
        let _ = n;
    }
}

/// Counts nothing.
impl Observer for () {}

/// Two relaxed atomic counters, readable while the copy runs.
#[derive(Debug, Default)]
pub struct ByteCounters {
    pub a_to_b: AtomicU64,
    pub b_to_a: AtomicU64,
}

impl Observer for ByteCounters {
    fn a_to_b(&self, n: u64) {
        self.a_to_b.fetch_add(n, Ordering::Relaxed);
    }
    fn b_to_a(&self, n: u64) {
        self.b_to_a.fetch_add(n, Ordering::Relaxed);
    }
}

/// Copies `a → b` and `b → a` until both directions reach EOF, propagating each
/// EOF as a write shutdown of the other side. Returns the bytes written each way
/// `(a → b, b → a)`; the first I/O error ends the copy (the caller drops both
/// ends, which resets whatever is still open).
pub async fn copy_bidirectional<A, B, O>(
    a: &mut A,
    b: &mut B,
    observer: &O,
) -> io::Result<(u64, u64)>
where
    A: ProxyIo + ?Sized,
    B: ProxyIo + ?Sized,
    O: Observer + ?Sized,
{
    // An HBONE stream with a plain socket on the other side writes what it
    // receives straight into the socket while this copier waits, saving a
    // wake-up of this task per message. The guards end that before `a` and
    // `b` can be dropped (they are borrowed for this whole function).
    // With the observer's own counters, bytes are counted as they are
    // written; otherwise the copier counts them when it next runs.
    // At most one side is an HBONE stream facing a plain socket, so one guard.
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    let mut guard = b.direct_fd().and_then(|fd| {
        let counter = observer.direct_counter(true);
        a_to_b.observer_counts_direct = counter.is_some();
        a.attach_direct(fd, counter, DirectToken(()))
    });
    let guard_is_ab = guard.is_some();
    if guard.is_none() {
        guard = a.direct_fd().and_then(|fd| {
            let counter = observer.direct_counter(false);
            b_to_a.observer_counts_direct = counter.is_some();
            b.attach_direct(fd, counter, DirectToken(()))
        });
    }
    let (sent, received) = poll_fn(|cx| {
        let forward = a_to_b.poll(cx, a, b, |n| observer.a_to_b(n))?;
        let backward = b_to_a.poll(cx, b, a, |n| observer.b_to_a(n))?;
        match (forward, backward) {
            (Poll::Ready(sent), Poll::Ready(received)) => {
                Poll::Ready(Ok::<_, io::Error>((sent, received)))
            }
            _ => Poll::Pending,
        }
    })
    .await?;
    let late = guard.map_or(0, DirectGuard::finish);
    let (late_ab, late_ba) = if guard_is_ab { (late, 0) } else { (0, late) };
    if late_ab > 0 && !a_to_b.observer_counts_direct {
        observer.a_to_b(late_ab);
    }
    if late_ba > 0 && !b_to_a.observer_counts_direct {
        observer.b_to_a(late_ba);
    }
    Ok((sent + late_ab, received + late_ba))
}

#[derive(Default)]
struct Direction {
    /// Read but not yet fully written.
    pending: Bytes,
    written: u64,
    state: State,
    need_flush: bool,
    /// Bytes the connection writes directly are counted by the observer's
    /// own counter as they are written, not here.
    observer_counts_direct: bool,
}

#[derive(Default, PartialEq, Eq)]
enum State {
    #[default]
    Copying,
    ShuttingDown,
    Done,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        count: impl Fn(u64),
    ) -> Poll<io::Result<u64>>
    where
        R: ProxyIo + ?Sized,
        W: ProxyIo + ?Sized,
    {
        let direct = reader.take_direct();
        if direct > 0 {
            if !self.observer_counts_direct {
                count(direct);
            }
            self.written += direct;
        }
        let mut budget = CHUNKS_PER_POLL;
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(self.written)),
                State::ShuttingDown => {
                    ready!(writer.poll_flush(cx))?;
                    ready!(writer.poll_shutdown(cx))?;
                    self.state = State::Done;
                }
                State::Copying if !self.pending.is_empty() => {
                    let before = self.pending.len();
                    ready!(writer.poll_write_chunk(cx, &mut self.pending))?;
                    let n = (before - self.pending.len()) as u64;
                    count(n);
                    self.written += n;
                    self.need_flush = true;
                }
                State::Copying => {
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    budget -= 1;
                    match reader.poll_read_chunk(cx, buffer_size(self.written)) {
                        Poll::Pending => {
                            if self.need_flush {
                                ready!(writer.poll_flush(cx))?;
                                self.need_flush = false;
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(chunk)) if chunk.is_empty() => {
                            self.state = State::ShuttingDown;
                        }
                        Poll::Ready(Ok(chunk)) => self.pending = chunk,
                    }
                }
            }
        }
    }
}

fn buffer_size(transferred: u64) -> usize {
    if transferred >= JUMBO_AFTER {
        JUMBO_BUFFER
    } else if transferred >= LARGE_AFTER {
        LARGE_BUFFER
    } else {
        INITIAL_BUFFER
    }
}

/// Reads into a buffer borrowed from the thread's cache; the buffer is returned
/// before this function does, so nothing is held across `Pending`.
pub fn poll_read_pooled<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    cx: &mut Context<'_>,
    size: usize,
) -> Poll<io::Result<Bytes>> {
    let tier = Tier::for_size(size);
    let mut buf = tier.take(size);
    let res = tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut (&mut buf).limit(size));
    let out = match res {
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf.split().freeze())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    };
    tier.give(buf);
    out
}

fn poll_write_all_some<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    cx: &mut Context<'_>,
    data: &mut Bytes,
) -> Poll<io::Result<()>> {
    let n = ready!(Pin::new(writer).poll_write(cx, data))?;
    if n == 0 {
        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
    }
    data.advance(n);
    Poll::Ready(Ok(()))
}

/// Buffer size classes of the per-thread cache, with how many of each are kept.
#[derive(Clone, Copy)]
enum Tier {
    Small,
    Large,
    Jumbo,
}

thread_local! {
    static CACHE: RefCell<[Vec<BytesMut>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

impl Tier {
    fn for_size(size: usize) -> Tier {
        if size <= INITIAL_BUFFER {
            Tier::Small
        } else if size <= LARGE_BUFFER {
            Tier::Large
        } else {
            Tier::Jumbo
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Bound on cached buffers per thread, so the cache stays under ~1 MiB.
    fn keep(self) -> usize {
        match self {
            Tier::Small => 32,
            Tier::Large => 8,
            Tier::Jumbo => 2,
        }
    }

    fn capacity(self) -> usize {
        match self {
            Tier::Small => INITIAL_BUFFER,
            Tier::Large => LARGE_BUFFER,
            Tier::Jumbo => JUMBO_BUFFER,
        }
    }

    /// An empty buffer with room for `size` bytes. A cached buffer whose earlier
    /// chunks have all been dropped is reclaimed in place; one still shared with
    /// queued chunks gets a fresh allocation (and the old one is freed when they go).
    fn take(self, size: usize) -> BytesMut {
        let cached = CACHE
            .try_with(|c| c.borrow_mut()[self.index()].pop())
            .ok()
            .flatten();
        let mut buf = cached.unwrap_or_default();
        if buf.capacity() < size {
            buf.reserve(self.capacity().max(size));
        }
        buf
    }

    fn give(self, buf: BytesMut) {
        let _ = CACHE.try_with(|c| {
            let mut cache = c.borrow_mut();
            let list = &mut cache[self.index()];
            if list.len() < self.keep() {
                list.push(buf);
            }
        });
    }
}
