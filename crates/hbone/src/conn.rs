//! The HTTP/2 connection under every HBONE client and server connection.
//!
//! HBONE uses a small part of HTTP/2: CONNECT streams carrying opaque bytes,
//! flow control, SETTINGS, PING, RST_STREAM and GOAWAY. This module implements
//! exactly that, over a rustls session, with one lock per connection and no
//! task in between a stream and the wire on the way out:
//!
//! * **sending** happens in the stream's own task. A stream that has data and
//!   send window takes the connection lock, frames the data, hands it to rustls
//!   (header and payload in one TLS record) and writes the ciphertext to the
//!   socket, without waiting: a write that would block leaves the rest for the
//!   driver and wakes it. A general-purpose HTTP/2 library (the `h2` crate, as
//!   upstream ztunnel uses) queues the data and wakes its connection task to
//!   frame and write it, one more task hand-off on every message;
//! * **receiving** is the driver task's: it reads and decrypts, parses frames,
//!   queues DATA on its stream (zero-copy slices of the read buffer) and wakes
//!   the stream's reader; it answers SETTINGS and PING, sends WINDOW_UPDATEs
//!   that readers left for it, runs the PING keepalive and flushes what stream
//!   tasks could not.
//!
//! Stream tasks only ever *try* I/O (with a waker that does nothing) and wake
//! the driver when something is left, so the socket's readiness wakers always
//! belong to the driver and no wake-up is lost.
//!
//! The rules enforced are RFC 9113's where HBONE can meet them: frame sizes,
//! stream-id order, flow-control windows both ways, header blocks with
//! CONTINUATION, HPACK (decoded with `loona-hpack`), the connection preface.
//! A connection error sends GOAWAY with its code and ends every stream; a
//! stream error resets only that stream.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hashbrown::HashMap;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::H2Config;
use crate::copy::DirectCounter;
use crate::frame::{self, Field, Frame, FrameError, Head, Reason};

/// The byte stream under TLS: a TCP socket, or a CONNECT stream for double HBONE.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Frames larger than this are split even if the peer allows more, so one
/// write under the lock stays short and other streams get their turn.
const MAX_WRITE: usize = 256 * 1024;
/// Frames processed per driver poll before it yields.
const FRAMES_PER_POLL: usize = 64;
/// A header block (HEADERS + CONTINUATION) larger than this ends the connection.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// How long a connection that has ended waits for its last frames to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The PING payload of our keepalive.
const PING_PAYLOAD: [u8; 8] = *b"hbone-ka";

/// Why an HTTP/2 connection or stream failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H2Error {
    /// The peer reset the stream.
    #[error("stream reset by peer: {0}")]
    Reset(Reason),
    /// We reset the stream (the peer broke a stream-level rule).
    #[error("stream reset locally: {0}")]
    LocalReset(Reason),
    /// The peer sent GOAWAY with an error code.
    #[error("connection closed by peer with GOAWAY: {0}")]
    GoAway(Reason),
    /// The peer broke a connection-level rule; we sent GOAWAY with this code.
    #[error("protocol error ({reason}): {what}")]
    Protocol { reason: Reason, what: &'static str },
    /// The transport failed.
    #[error("I/O error: {message}")]
    Io {
        kind: io::ErrorKind,
        message: String,
    },
    /// TLS failed after the handshake.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The keepalive PING was not answered in time.
    #[error("no PONG within {0:?}")]
    KeepaliveTimeout(Duration),
    /// The connection ended (peer closed it, or it was shut down).
    #[error("connection closed")]
    Closed,
    /// The peer refused new streams (GOAWAY received or stream ids exhausted).
    #[error("connection is not accepting new streams")]
    NotAccepting,
    /// A response or request head was malformed.
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

impl H2Error {
    /// The error code behind a reset or GOAWAY.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            H2Error::Reset(r) | H2Error::LocalReset(r) | H2Error::GoAway(r) => Some(*r),
            H2Error::Protocol { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// Whether the connection ended the way connections normally end.
    pub fn is_benign_close(&self) -> bool {
        match self {
            H2Error::Closed | H2Error::GoAway(Reason::NO_ERROR) => true,
            H2Error::Io { kind, .. } => matches!(
                kind,
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    fn io(e: &io::Error) -> H2Error {
        H2Error::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// As an I/O error of a stream on a connection that ended.
    pub(crate) fn to_io(&self) -> io::Error {
        let kind = match self {
            H2Error::Reset(Reason::STREAM_CLOSED) => io::ErrorKind::BrokenPipe,
            H2Error::Io { kind, .. } => *kind,
            H2Error::Reset(_) | H2Error::LocalReset(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::ConnectionReset,
        };
        io::Error::new(kind, self.clone())
    }
}

/// A request head, as the server received it.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: Method,
    pub authority: Option<String>,
    pub headers: HeaderMap,
}

/// Decoded header block of either kind.
#[derive(Debug)]
pub(crate) enum HeadBlock {
    Request(RequestHead),
    Response(StatusCode, HeaderMap),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RecvEnd {
    /// END_STREAM received.
    Eof,
    /// The stream was reset (by either side) or the connection ended.
    Error(H2Error),
}

struct Stream {
    recv: VecDeque<Bytes>,
    recv_end: Option<RecvEnd>,
    /// Our credit with the peer for this stream's data.
    send_window: i64,
    /// The credit the peer has left to send on this stream.
    recv_window: i64,
    /// Bytes read by the application and not yet returned to the peer.
    unreleased: u32,
    sent_end: bool,
    /// Client: the (final) response head arrived.
    responded: bool,
    /// A RST_STREAM went out or came in: no more frames for this stream.
    reset: bool,
    /// Client: the response head (once received). Server: the request head
    /// until it is handed to the handler.
    head: Option<Box<HeadBlock>>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The application socket the stream's data goes to, when the copier
    /// attached one: the driver writes DATA straight into it while the
    /// copier has nothing of this stream's in hand (`sink_ready`).
    sink: Option<RawFd>,
    sink_ready: bool,
    /// Bytes written to `sink` by the driver and not yet counted by the copier.
    delivered: u64,
    /// Counts those bytes for the copier's observer as they are written.
    counter: Option<DirectCounter>,
}

impl Stream {
    fn new(send_window: u32, recv_window: u32) -> Stream {
        Stream {
            recv: VecDeque::new(),
            recv_end: None,
            send_window: i64::from(send_window),
            recv_window: i64::from(recv_window),
            unreleased: 0,
            sent_end: false,
            responded: false,
            reset: false,
            head: None,
            reader: None,
            writer: None,
            sink: None,
            sink_ready: false,
            delivered: 0,
            counter: None,
        }
    }

    /// `n` bytes reached the application: returns the window update (if one is
    /// due) for the peer.
    fn consumed(&mut self, n: u32, stream_window: u32) -> Option<u32> {
        self.unreleased += n;
        if self.recv_end.is_none() && self.unreleased >= stream_window / 2 {
            let update = std::mem::take(&mut self.unreleased);
            self.recv_window += i64::from(update);
            return Some(update);
        }
        None
    }

    fn wake(&mut self, wakers: &mut Wakers) {
        wakers.extend(self.reader.take());
        wakers.extend(self.writer.take());
    }
}

type Wakers = SmallVec<[Waker; 4]>;

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// Settings of ours that the peer is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_frame: u32,
    pub max_header_list: u32,
    /// Streams the peer may open (server only).
    pub max_concurrent: u32,
}

impl Limits {
    pub(crate) fn client(cfg: &H2Config) -> Limits {
        Limits {
            stream_window: cfg.stream_window.min(frame::MAX_WINDOW),
            connection_window: cfg.connection_window.min(frame::MAX_WINDOW),
            max_frame: cfg
                .max_frame_size
                .clamp(frame::DEFAULT_MAX_FRAME, frame::MAX_MAX_FRAME),
            max_header_list: cfg.client_max_header_list,
            max_concurrent: 0,
        }
    }

    pub(crate) fn server(cfg: &H2Config) -> Limits {
        Limits {
            max_header_list: cfg.server_max_header_list,
            max_concurrent: cfg.server_max_concurrent_streams,
            ..Limits::client(cfg)
        }
    }
}

pub(crate) struct Inner {
    role: Role,
    tls: rustls::Connection,
    io: Box<dyn Transport>,
    limits: Limits,

    // Receiving.
    rbuf: BytesMut,
    /// Server: preface bytes still expected.
    preface_left: usize,
    got_settings: bool,
    hpack: loona_hpack::Decoder<'static>,
    pending_block: Option<PendingBlock>,
    recv_window: i64,
    recv_unreleased: u32,

    // Sending.
    /// Control frames waiting to be handed to TLS.
    ctrl: Vec<u8>,
    send_window: i64,
    peer_initial_window: u32,
    peer_max_frame: u32,
    peer_max_streams: u32,
    /// Stream tasks waiting for the TLS buffer to drain.
    tls_waiters: Wakers,
    /// The driver must flush (a stream task left ciphertext behind).
    flush_needed: bool,

    // Boxed: the table then grows by a pointer per slot, not a whole stream.
    streams: HashMap<u32, Box<Stream>>,
    /// Client: the next stream id to use.
    next_id: u32,
    /// Server: the highest stream id the peer opened.
    last_peer_id: u32,
    /// Server: new streams for the handler, in order.
    incoming: VecDeque<u32>,

    /// The connection is over: why. Set once.
    end: Option<H2Error>,
    goaway_received: Option<u32>,
    goaway_sent: bool,
    /// Client: every connection handle is gone, close once idle.
    handles_gone: bool,
    /// Server: graceful shutdown requested.
    draining: bool,
    pong_received: bool,
    closing: bool,
    driver: Option<Waker>,
}

/// A connection shared by its driver task and its stream handles.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) role: Role,
    pub(crate) peer: Option<SocketAddr>,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS, published by the driver so
    /// the pool reads it without the lock.
    peer_max_streams: std::sync::atomic::AtomicU32,
}

struct SyncIo<'a, 'b> {
    io: &'a mut dyn Transport,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the driver reports.
pub(crate) enum Event {
    /// Server: a new CONNECT stream.
    Incoming(u32, RequestHead),
    /// The connection is over.
    Closed(H2Error),
}

/// The driver's keepalive state, outside the lock.
pub(crate) struct Keepalive {
    sleep: Pin<Box<Sleep>>,
    outstanding: bool,
    interval: Duration,
    timeout: Duration,
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            sleep: Box::pin(tokio::time::sleep(interval)),
            outstanding: false,
            interval,
            timeout,
        }
    }
}

impl Shared {
    /// Wraps an established TLS session and queues our preface and SETTINGS.
    pub(crate) fn new(
        role: Role,
        tls: rustls::Connection,
        io: Box<dyn Transport>,
        limits: Limits,
        peer: Option<SocketAddr>,
    ) -> Arc<Shared> {
        let mut tls = tls;
        // Our own accounting bounds what is queued (one frame per writer).
        tls.set_buffer_limit(None);
        let mut ctrl = Vec::with_capacity(128);
        if role == Role::Client {
            ctrl.extend_from_slice(frame::PREFACE);
        }
        let mut settings = vec![
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, limits.stream_window),
            (frame::SETTINGS_MAX_FRAME_SIZE, limits.max_frame),
            (frame::SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_header_list),
        ];
        match role {
            Role::Client => settings.insert(0, (frame::SETTINGS_ENABLE_PUSH, 0)),
            Role::Server => settings.push((
                frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                limits.max_concurrent,
            )),
        }
        frame::put_settings(&mut ctrl, &settings);
        if limits.connection_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(
                &mut ctrl,
                0,
                limits.connection_window - frame::DEFAULT_WINDOW,
            );
        }
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(4096);
        Arc::new(Shared {
            role,
            peer,
            peer_max_streams: std::sync::atomic::AtomicU32::new(u32::MAX),
            inner: Mutex::new(Inner {
                role,
                tls,
                io,
                limits,
                rbuf: BytesMut::new(),
                preface_left: if role == Role::Server {
                    frame::PREFACE.len()
                } else {
                    0
                },
                got_settings: false,
                hpack,
                pending_block: None,
                recv_window: i64::from(limits.connection_window.max(frame::DEFAULT_WINDOW)),
                recv_unreleased: 0,
                ctrl,
                send_window: i64::from(frame::DEFAULT_WINDOW),
                peer_initial_window: frame::DEFAULT_WINDOW,
                peer_max_frame: frame::DEFAULT_MAX_FRAME,
                peer_max_streams: u32::MAX,
                tls_waiters: Wakers::new(),
                flush_needed: true,
                streams: HashMap::new(),
                next_id: 1,
                last_peer_id: 0,
                incoming: VecDeque::new(),
                end: None,
                goaway_received: None,
                goaway_sent: false,
                handles_gone: false,
                draining: false,
                pong_received: false,
                closing: false,
                driver: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock leaves plain data behind; carry on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` under the lock, then wakes whoever it asked to.
    fn with<R>(&self, f: impl FnOnce(&mut Inner, &mut Wakers) -> R) -> R {
        let mut wakers = Wakers::new();
        let r = {
            let mut inner = self.lock();
            let r = f(&mut inner, &mut wakers);
            if inner.flush_needed {
                wakers.extend(inner.driver.clone());
            }
            r
        };
        for w in wakers {
            w.wake();
        }
        r
    }

    /// Whether SETTINGS from the peer have arrived.
    pub(crate) fn has_settings(&self) -> bool {
        self.lock().got_settings
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unbounded until it says).
    pub(crate) fn peer_max_streams(&self) -> u32 {
        self.peer_max_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Client: whether a new stream may be opened now.
    pub(crate) fn is_accepting(&self) -> bool {
        let inner = self.lock();
        inner.end.is_none()
            && inner.goaway_received.is_none()
            && !inner.closing
            && inner.next_id < frame::MAX_WINDOW
    }

    /// Client: the last connection handle went away; close once idle.
    pub(crate) fn handles_gone(&self) {
        self.with(|inner, wakers| {
            inner.handles_gone = true;
            wakers.extend(inner.driver.clone());
        });
    }

    /// Server: stop taking new streams and close when the open ones end.
    pub(crate) fn drain(&self) {
        self.with(|inner, wakers| {
            if !inner.draining {
                inner.draining = true;
                if !inner.goaway_sent && inner.end.is_none() {
                    frame::put_goaway(&mut inner.ctrl, inner.last_peer_id, Reason::NO_ERROR);
                    inner.goaway_sent = true;
                }
                inner.flush_needed = true;
            }
            wakers.extend(inner.driver.clone());
        });
    }

    /// Client: opens a stream with a CONNECT for `authority` and `headers`.
    pub(crate) fn open(&self, authority: &str, headers: &HeaderMap) -> Result<u32, H2Error> {
        self.with(|inner, _| {
            if let Some(e) = &inner.end {
                return Err(e.clone());
            }
            if inner.goaway_received.is_some()
                || inner.closing
                || inner.next_id >= frame::MAX_WINDOW
            {
                return Err(H2Error::NotAccepting);
            }
            let id = inner.next_id;
            inner.next_id += 2;
            let st = Stream::new(inner.peer_initial_window, inner.limits.stream_window);
            inner.streams.insert(id, Box::new(st));
            let fields = [
                Field::Indexed(frame::NAME_METHOD, b"CONNECT"),
                Field::Indexed(frame::NAME_AUTHORITY, authority.as_bytes()),
            ]
            .into_iter()
            .chain(
                headers
                    .iter()
                    .map(|(n, v)| Field::Named(n.as_str().as_bytes(), v.as_bytes())),
            );
            inner.write_headers(id, fields, false);
            inner.try_flush_now();
            Ok(id)
        })
    }

    /// Client: waits for the response head of stream `id`.
    pub(crate) fn poll_response(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(StatusCode, HeaderMap), H2Error>> {
        self.with(|inner, _| {
            let end = inner.end.clone();
            let Some(st) = inner.streams.get_mut(&id) else {
                return Poll::Ready(Err(end.unwrap_or(H2Error::Closed)));
            };
            if let Some(HeadBlock::Response(status, headers)) = st.head.take().map(|h| *h) {
                return Poll::Ready(Ok((status, headers)));
            }
            match &st.recv_end {
                Some(RecvEnd::Error(e)) => return Poll::Ready(Err(e.clone())),
                Some(RecvEnd::Eof) => {
                    return Poll::Ready(Err(H2Error::Malformed("stream ended without a response")));
                }
                None => {}
            }
            if let Some(e) = end {
                return Poll::Ready(Err(e));
            }
            set_waker(&mut st.reader, cx);
            Poll::Pending
        })
    }

    /// Server: sends the response head on stream `id`.
    pub(crate) fn respond(
        &self,
        id: u32,
        status: StatusCode,
        headers: &HeaderMap,
        end_stream: bool,
    ) -> Result<(), H2Error> {
        self.with(|inner, wakers| {
            if let Some(e) = &inner.end {
                return Err(e.clone());
            }
            let Some(st) = inner.streams.get_mut(&id) else {
                return Err(H2Error::Closed);
            };
            if st.reset {
                return Err(match &st.recv_end {
                    Some(RecvEnd::Error(e)) => e.clone(),
                    _ => H2Error::Reset(Reason::CANCEL),
                });
            }
            if end_stream {
                st.sent_end = true;
                st.wake(wakers);
            }
            let code = status.as_str().as_bytes().to_owned();
            let fields = std::iter::once(Field::Indexed(frame::NAME_STATUS, &code)).chain(
                headers
                    .iter()
                    .map(|(n, v)| Field::Named(n.as_str().as_bytes(), v.as_bytes())),
            );
            inner.write_headers(id, fields, end_stream);
            inner.try_flush_now();
            Ok(())
        })
    }

    /// The next chunk received on stream `id` (`None` at EOF). Its bytes count
    /// as consumed: their window goes back to the peer.
    pub(crate) fn poll_recv(
        &self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<Bytes>>> {
        self.with(|inner, _| {
            let stream_window = inner.limits.stream_window;
            let end = inner.end.clone();
            let Some(st) = inner.streams.get_mut(&id) else {
                return Poll::Ready(Err(end.unwrap_or(H2Error::Closed).to_io()));
            };
            if let Some(chunk) = st.recv.pop_front() {
                // The copier holds data of this stream now: no direct writes
                // until it asks again, or bytes could overtake it.
                st.sink_ready = false;
                let n = chunk.len() as u32;
                if let Some(update) = st.consumed(n, stream_window) {
                    frame::put_window_update(&mut inner.ctrl, id, update);
                }
                inner.release_conn(n);
                if !inner.ctrl.is_empty() {
                    inner.try_flush_now();
                }
                return Poll::Ready(Ok(Some(chunk)));
            }
            match &st.recv_end {
                Some(RecvEnd::Eof) => Poll::Ready(Ok(None)),
                Some(RecvEnd::Error(e)) => match e {
                    H2Error::Reset(Reason::NO_ERROR | Reason::CANCEL) => Poll::Ready(Ok(None)),
                    e => Poll::Ready(Err(e.to_io())),
                },
                None => match end {
                    Some(e) => Poll::Ready(Err(e.to_io())),
                    None => {
                        set_waker(&mut st.reader, cx);
                        st.sink_ready = st.sink.is_some();
                        Poll::Pending
                    }
                },
            }
        })
    }

    /// Lets the driver write stream `id`'s data straight to `fd` while the
    /// reader waits for more.
    ///
    /// # Safety
    ///
    /// `fd` must stay an open socket until [`Shared::detach_sink`] returns.
    pub(crate) unsafe fn attach_sink(&self, id: u32, fd: RawFd, counter: Option<DirectCounter>) {
        self.with(|inner, _| {
            if let Some(st) = inner.streams.get_mut(&id) {
                st.sink = Some(fd);
                st.counter = counter;
            }
        });
    }

    /// Stops direct writes for stream `id`; returns the bytes delivered since
    /// the last count.
    pub(crate) fn detach_sink(&self, id: u32) -> u64 {
        self.with(|inner, _| match inner.streams.get_mut(&id) {
            Some(st) => {
                st.sink = None;
                st.counter = None;
                st.sink_ready = false;
                std::mem::take(&mut st.delivered)
            }
            None => 0,
        })
    }

    /// Bytes the driver delivered directly since the last count.
    pub(crate) fn take_delivered(&self, id: u32) -> u64 {
        self.with(|inner, _| {
            inner
                .streams
                .get_mut(&id)
                .map_or(0, |st| std::mem::take(&mut st.delivered))
        })
    }

    /// Sends a prefix of `data` (at least one byte) on stream `id` and says
    /// how long; waits for send window and for the TLS buffer to drain.
    pub(crate) fn poll_send(
        &self,
        id: u32,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.with(|inner, _| {
            if let Some(e) = &inner.end {
                return Poll::Ready(Err(e.to_io()));
            }
            let Some(st) = inner.streams.get(&id) else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            if st.sent_end {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if st.reset {
                return Poll::Ready(Err(reset_write_error(&st.recv_end)));
            }
            if inner.tls.wants_write() {
                inner.try_flush_now();
                if let Some(e) = &inner.end {
                    return Poll::Ready(Err(e.to_io()));
                }
                if inner.tls.wants_write() {
                    set_waker_list(&mut inner.tls_waiters, cx);
                    inner.flush_needed = true;
                    return Poll::Pending;
                }
            }
            let conn_window = inner.send_window;
            let max_frame = inner.peer_max_frame as usize;
            let Some(st) = inner.streams.get_mut(&id) else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            let window = st.send_window.min(conn_window);
            if window <= 0 {
                set_waker(&mut st.writer, cx);
                return Poll::Pending;
            }
            let n = data
                .len()
                .min(window as usize)
                .min(max_frame)
                .min(MAX_WRITE);
            st.send_window -= n as i64;
            inner.send_window -= n as i64;
            inner.write_data(id, &data[..n], false);
            inner.try_flush_now();
            match &inner.end {
                Some(e) => Poll::Ready(Err(e.to_io())),
                None => Poll::Ready(Ok(n)),
            }
        })
    }

    /// Sends END_STREAM on stream `id` (write-side shutdown). Idempotent.
    pub(crate) fn send_end(&self, id: u32) -> io::Result<()> {
        self.with(|inner, _| {
            if let Some(e) = &inner.end {
                return Err(e.to_io());
            }
            let Some(st) = inner.streams.get_mut(&id) else {
                return Err(io::ErrorKind::BrokenPipe.into());
            };
            if st.sent_end {
                return Ok(());
            }
            if st.reset {
                // Nothing more may go out; the peer already knows the stream is over.
                st.sent_end = true;
                return Ok(());
            }
            st.sent_end = true;
            inner.write_data(id, &[], true);
            inner.try_flush_now();
            Ok(())
        })
    }

    /// The stream's handle is gone: reset it if it is still open, forget it.
    pub(crate) fn release(&self, id: u32) {
        self.with(|inner, wakers| {
            let Some(st) = inner.streams.remove(&id) else {
                return;
            };
            let queued: usize = st.recv.iter().map(Bytes::len).sum();
            let finished = st.reset || (st.sent_end && st.recv_end.is_some());
            if !finished && inner.end.is_none() {
                let reason = if inner.role == Role::Server && st.sent_end {
                    Reason::NO_ERROR
                } else {
                    Reason::CANCEL
                };
                frame::put_rst(&mut inner.ctrl, id, reason);
            }
            inner.release_conn(queued as u32 + st.unreleased);
            if !inner.ctrl.is_empty() {
                inner.try_flush_now();
            }
            if inner.streams.is_empty() {
                wakers.extend(inner.driver.clone());
            }
        });
    }

    /// Drives the connection: reads and handles frames, flushes, keeps alive.
    /// Returns each new stream (server) and finally why the connection ended.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>, ka: &mut Keepalive) -> Poll<Event> {
        let mut wakers = Wakers::new();
        let res = {
            let mut inner = self.lock();
            let res = inner.drive(cx, ka, &mut wakers);
            self.peer_max_streams
                .store(inner.peer_max_streams, std::sync::atomic::Ordering::Relaxed);
            if let Poll::Ready(Event::Closed(_)) = &res {
                inner.driver = None;
            }
            res
        };
        for w in wakers {
            w.wake();
        }
        res
    }
}

/// Writes what the socket takes of `data` without waiting; 0 when it takes
/// nothing or fails (the copier then meets the condition itself).
fn send_now(fd: RawFd, data: &[u8]) -> usize {
    loop {
        // SAFETY: `fd` is open while attached (see `attach_sink`); `data` is a valid slice.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return n as usize;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 0;
        }
    }
}

/// The write error of a reset stream: a broken pipe, unless the reset said worse.
fn reset_write_error(end: &Option<RecvEnd>) -> io::Error {
    match end {
        Some(RecvEnd::Error(H2Error::Reset(r)))
            if ![Reason::NO_ERROR, Reason::CANCEL, Reason::STREAM_CLOSED].contains(r) =>
        {
            io::Error::other(H2Error::Reset(*r))
        }
        _ => io::ErrorKind::BrokenPipe.into(),
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn set_waker_list(list: &mut Wakers, cx: &Context<'_>) {
    if !list.iter().any(|w| w.will_wake(cx.waker())) {
        list.push(cx.waker().clone());
    }
}

impl Inner {
    /// Ends the connection: every stream fails with `why`.
    fn fail(&mut self, why: H2Error, wakers: &mut Wakers) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(why.clone());
        for st in self.streams.values_mut() {
            if st.recv_end.is_none() {
                st.recv_end = Some(RecvEnd::Error(why.clone()));
            }
            st.wake(wakers);
        }
        wakers.extend(self.tls_waiters.drain(..));
        self.flush_needed = true;
    }

    /// A connection error of ours: GOAWAY with its code, then the end.
    fn protocol_error(&mut self, reason: Reason, what: &'static str, wakers: &mut Wakers) {
        tracing::debug!(%reason, what, "HTTP/2 connection error");
        frame::put_goaway(&mut self.ctrl, self.last_peer_id, reason);
        self.goaway_sent = true;
        self.fail(H2Error::Protocol { reason, what }, wakers);
    }

    fn reset_stream(&mut self, id: u32, reason: Reason, wakers: &mut Wakers) {
        frame::put_rst(&mut self.ctrl, id, reason);
        if let Some(st) = self.streams.get_mut(&id) {
            st.reset = true;
            if st.recv_end.is_none() {
                st.recv_end = Some(RecvEnd::Error(H2Error::LocalReset(reason)));
            }
            st.wake(wakers);
        }
    }

    /// Returns `n` bytes of connection window to the peer, in batches.
    fn release_conn(&mut self, n: u32) {
        self.recv_unreleased = self.recv_unreleased.saturating_add(n);
        if self.recv_unreleased >= self.limits.connection_window / 2 && self.end.is_none() {
            let update = std::mem::take(&mut self.recv_unreleased);
            self.recv_window += i64::from(update);
            frame::put_window_update(&mut self.ctrl, 0, update);
        }
    }

    /// Hands queued control frames and `data` (already framed around `head`)
    /// to TLS as one write, so they share records.
    fn write_tls_plain(&mut self, head: &[u8], data: &[u8]) {
        let ctrl = std::mem::take(&mut self.ctrl);
        let mut slices = [IoSlice::new(&ctrl), IoSlice::new(head), IoSlice::new(data)];
        let mut bufs = &mut slices[..];
        // With no buffer limit rustls takes everything in one call.
        while !bufs.is_empty() {
            match self.tls.writer().write_vectored(bufs) {
                Ok(0) | Err(_) => break,
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            }
        }
        let mut ctrl = ctrl;
        ctrl.clear();
        self.ctrl = ctrl;
        self.flush_needed = true;
    }

    fn write_data(&mut self, id: u32, data: &[u8], end_stream: bool) {
        let head = Head {
            len: data.len() as u32,
            kind: frame::DATA,
            flags: if end_stream {
                frame::FLAG_END_STREAM
            } else {
                0
            },
            stream: id,
        }
        .encode();
        self.write_tls_plain(&head, data);
    }

    /// Encodes and queues a header block, split into CONTINUATION frames if
    /// it exceeds the peer's frame size.
    fn write_headers<'a>(
        &mut self,
        id: u32,
        fields: impl IntoIterator<Item = Field<'a>>,
        end_stream: bool,
    ) {
        let mut block = Vec::with_capacity(128);
        frame::encode_headers(&mut block, fields);
        let max = self.peer_max_frame as usize;
        let mut out = std::mem::take(&mut self.ctrl);
        let mut first = true;
        let mut rest = &block[..];
        loop {
            let n = rest.len().min(max);
            let (part, tail) = rest.split_at(n);
            let mut flags = if tail.is_empty() {
                frame::FLAG_END_HEADERS
            } else {
                0
            };
            let kind = if first {
                if end_stream {
                    flags |= frame::FLAG_END_STREAM;
                }
                frame::HEADERS
            } else {
                frame::CONTINUATION
            };
            frame::put_head(&mut out, n, kind, flags, id);
            out.extend_from_slice(part);
            first = false;
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        self.ctrl = out;
        self.write_tls_plain(&[], &[]);
    }

    /// Writes what TLS holds to the transport without waiting. Leaves
    /// `flush_needed` set (so the driver is woken) if anything is left.
    fn try_flush_now(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        match self.flush(&mut cx) {
            Ok(true) => self.flush_needed = false,
            Ok(false) => self.flush_needed = true,
            Err(e) => {
                let mut wakers = Wakers::new();
                self.fail(H2Error::io(&e), &mut wakers);
                // Whoever waits is woken by the driver, which the flag wakes.
                self.tls_waiters.extend(wakers);
                self.flush_needed = true;
            }
        }
    }

    /// Writes control frames and ciphertext out. `Ok(true)` when all is out.
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if !self.ctrl.is_empty() {
            self.write_tls_plain(&[], &[]);
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SyncIo {
                io: &mut *self.io,
                cx,
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        match Pin::new(&mut *self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(false),
        }
    }

    fn drive(
        &mut self,
        cx: &mut Context<'_>,
        ka: &mut Keepalive,
        wakers: &mut Wakers,
    ) -> Poll<Event> {
        set_waker(&mut self.driver, cx);
        if let Some((id, head)) = self.take_incoming() {
            return Poll::Ready(Event::Incoming(id, head));
        }
        if self.end.is_none() {
            let mut budget = FRAMES_PER_POLL;
            loop {
                match self.read_frames(cx, &mut budget, wakers) {
                    Ok(true) if budget == 0 => {
                        cx.waker().wake_by_ref();
                        break;
                    }
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        self.fail(e, wakers);
                        break;
                    }
                }
            }
        }
        if self.end.is_none() {
            self.keepalive(cx, ka, wakers);
        }
        if self.end.is_none() {
            let idle = self.streams.is_empty();
            let done = (self.role == Role::Client && self.handles_gone && idle)
                || (self.goaway_received.is_some() && idle)
                || (self.draining && idle);
            if done {
                if !self.goaway_sent {
                    frame::put_goaway(&mut self.ctrl, self.last_peer_id, Reason::NO_ERROR);
                    self.goaway_sent = true;
                }
                self.fail(H2Error::Closed, wakers);
            }
        }
        if self.end.is_some() && !self.closing {
            self.closing = true;
            // The GOAWAY (and whatever else is queued) goes before the alert.
            if !self.ctrl.is_empty() {
                self.write_tls_plain(&[], &[]);
            }
            self.tls.send_close_notify();
            ka.sleep.as_mut().reset(Instant::now() + CLOSE_GRACE);
        }
        match self.flush(cx) {
            Ok(true) => {
                self.flush_needed = false;
                wakers.extend(self.tls_waiters.drain(..));
            }
            Ok(false) => {}
            Err(e) => {
                self.fail(H2Error::io(&e), wakers);
                wakers.extend(self.tls_waiters.drain(..));
                return Poll::Ready(Event::Closed(self.end.clone().unwrap_or(H2Error::Closed)));
            }
        }
        if let Some((id, head)) = self.take_incoming() {
            return Poll::Ready(Event::Incoming(id, head));
        }
        if let Some(end) = &self.end {
            // Wait a little for the GOAWAY and close_notify to go out, no
            // longer: a peer that stops reading cannot hold the connection.
            if self.flush_needed && ka.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let end = end.clone();
            // Best effort: the peer learns of the end from the FIN.
            let _ = Pin::new(&mut *self.io).poll_shutdown(cx);
            return Poll::Ready(Event::Closed(end));
        }
        Poll::Pending
    }

    fn take_incoming(&mut self) -> Option<(u32, RequestHead)> {
        while let Some(id) = self.incoming.pop_front() {
            if let Some(st) = self.streams.get_mut(&id)
                && let Some(HeadBlock::Request(head)) = st.head.take().map(|h| *h)
            {
                return Some((id, head));
            }
        }
        None
    }

    fn keepalive(&mut self, cx: &mut Context<'_>, ka: &mut Keepalive, wakers: &mut Wakers) {
        if std::mem::take(&mut self.pong_received) && ka.outstanding {
            ka.outstanding = false;
            ka.sleep.as_mut().reset(Instant::now() + ka.interval);
        }
        while ka.sleep.as_mut().poll(cx).is_ready() {
            if ka.outstanding {
                tracing::debug!(peer_timeout = ?ka.timeout, "HBONE keepalive: no PONG");
                frame::put_goaway(&mut self.ctrl, self.last_peer_id, Reason::NO_ERROR);
                self.goaway_sent = true;
                self.fail(H2Error::KeepaliveTimeout(ka.timeout), wakers);
                return;
            }
            frame::put_ping(&mut self.ctrl, false, PING_PAYLOAD);
            ka.outstanding = true;
            ka.sleep.as_mut().reset(Instant::now() + ka.timeout);
        }
    }

    /// Reads what is available and handles complete frames. `Ok(true)` if
    /// progress was made (call again), `Ok(false)` when waiting for the peer.
    fn read_frames(
        &mut self,
        cx: &mut Context<'_>,
        budget: &mut usize,
        wakers: &mut Wakers,
    ) -> Result<bool, H2Error> {
        // Handle whole frames already buffered first.
        let mut progressed = false;
        while *budget > 0 && self.end.is_none() {
            if !self.next_frame(wakers)? {
                break;
            }
            *budget -= 1;
            progressed = true;
        }
        if progressed || self.end.is_some() {
            return Ok(progressed);
        }
        // Plaintext rustls already holds, then the transport.
        loop {
            match self.tls.reader().fill_buf() {
                Ok([]) => return Err(H2Error::Closed),
                Ok(plain) => {
                    let n = plain.len();
                    self.rbuf.extend_from_slice(plain);
                    self.tls.reader().consume(n);
                    // Reads count against the poll's budget too: a large frame
                    // takes many before it completes.
                    *budget = budget.saturating_sub(1);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(H2Error::Closed),
                Err(e) => return Err(H2Error::io(&e)),
            }
            match self.tls.read_tls(&mut SyncIo {
                io: &mut *self.io,
                cx,
            }) {
                Ok(0) => {
                    // EOF without close_notify: anything rustls still holds comes first.
                    self.tls
                        .process_new_packets()
                        .map_err(|e| H2Error::Tls(e.to_string()))?;
                    if self.tls.reader().fill_buf().is_ok_and(|b| !b.is_empty()) {
                        continue;
                    }
                    return Err(H2Error::Closed);
                }
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // rustls queued an alert; the driver's flush sends it.
                        return Err(H2Error::Tls(e.to_string()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(H2Error::io(&e)),
            }
        }
    }

    /// Parses and handles one frame from `rbuf`. `Ok(false)` if none is complete.
    fn next_frame(&mut self, wakers: &mut Wakers) -> Result<bool, H2Error> {
        if self.preface_left > 0 {
            let start = frame::PREFACE.len() - self.preface_left;
            let n = self.rbuf.len().min(self.preface_left);
            if self.rbuf[..n] != frame::PREFACE[start..start + n] {
                self.protocol_error(Reason::PROTOCOL_ERROR, "invalid connection preface", wakers);
                return Ok(false);
            }
            self.rbuf.advance(n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(false);
            }
        }
        if self.rbuf.len() < frame::HEADER_LEN {
            self.shrink_rbuf();
            return Ok(false);
        }
        let head = Head::parse(self.rbuf[..frame::HEADER_LEN].try_into().expect("9 bytes"));
        if head.len > self.limits.max_frame {
            self.protocol_error(
                Reason::FRAME_SIZE_ERROR,
                "frame larger than SETTINGS_MAX_FRAME_SIZE",
                wakers,
            );
            return Ok(false);
        }
        let total = frame::HEADER_LEN + head.len as usize;
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(false);
        }
        let mut bytes = self.rbuf.split_to(total);
        bytes.advance(frame::HEADER_LEN);
        let payload = bytes.freeze();
        if !self.got_settings && head.kind != frame::SETTINGS {
            self.protocol_error(
                Reason::PROTOCOL_ERROR,
                "first frame is not SETTINGS",
                wakers,
            );
            return Ok(false);
        }
        match frame::parse(&head, &payload) {
            Ok(f) => self.on_frame(&head, f, payload, wakers),
            Err(FrameError::Connection(reason, what)) => self.protocol_error(reason, what, wakers),
            Err(FrameError::Stream(id, reason)) => self.reset_stream(id, reason, wakers),
        }
        self.shrink_rbuf();
        Ok(true)
    }

    /// An empty read buffer is let go, so an idle connection holds none.
    fn shrink_rbuf(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    fn on_frame(&mut self, head: &Head, f: Frame, payload: Bytes, wakers: &mut Wakers) {
        if let Some(pending) = &self.pending_block
            && !matches!(f, Frame::Continuation { stream, .. } if stream == pending.stream)
        {
            return self.protocol_error(Reason::PROTOCOL_ERROR, "header block interrupted", wakers);
        }
        match f {
            Frame::Data {
                stream,
                end_stream,
                data,
            } => self.on_data(stream, end_stream, head.len, payload.slice(data), wakers),
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
            } => {
                let block = &payload[block];
                if end_headers {
                    self.on_header_block(stream, end_stream, block, wakers);
                } else {
                    self.pending_block = Some(PendingBlock {
                        stream,
                        end_stream,
                        block: block.to_vec(),
                    });
                }
            }
            Frame::Continuation {
                stream: _,
                end_headers,
                block,
            } => {
                let Some(pending) = &mut self.pending_block else {
                    return self.protocol_error(
                        Reason::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                        wakers,
                    );
                };
                pending.block.extend_from_slice(&payload[block]);
                if pending.block.len() > MAX_HEADER_BLOCK {
                    return self.protocol_error(
                        Reason::ENHANCE_YOUR_CALM,
                        "header block too large",
                        wakers,
                    );
                }
                if end_headers {
                    let p = self.pending_block.take().expect("checked");
                    self.on_header_block(p.stream, p.end_stream, &p.block, wakers);
                }
            }
            Frame::RstStream { stream, reason } => {
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.reset = true;
                    if st.recv_end.is_none() || st.recv_end == Some(RecvEnd::Eof) && !st.sent_end {
                        st.recv_end = Some(RecvEnd::Error(H2Error::Reset(reason)));
                    }
                    st.wake(wakers);
                } else if self.is_idle(stream) {
                    self.protocol_error(
                        Reason::PROTOCOL_ERROR,
                        "RST_STREAM on an idle stream",
                        wakers,
                    );
                }
            }
            Frame::Settings { ack: true } => {}
            Frame::Settings { ack: false } => {
                self.got_settings = true;
                for (id, value) in frame::settings(&payload) {
                    match id {
                        frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_streams = value,
                        frame::SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = value,
                        frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(value) - i64::from(self.peer_initial_window);
                            self.peer_initial_window = value;
                            let mut overflow = false;
                            for st in self.streams.values_mut() {
                                st.send_window += delta;
                                overflow |= st.send_window > i64::from(frame::MAX_WINDOW);
                                if delta > 0 {
                                    wakers.extend(st.writer.take());
                                }
                            }
                            if overflow {
                                return self.protocol_error(
                                    Reason::FLOW_CONTROL_ERROR,
                                    "window overflow from SETTINGS",
                                    wakers,
                                );
                            }
                        }
                        _ => {}
                    }
                }
                frame::put_settings_ack(&mut self.ctrl);
            }
            Frame::Ping {
                ack: false,
                payload,
            } => frame::put_ping(&mut self.ctrl, true, payload),
            Frame::Ping { ack: true, payload } => {
                if payload == PING_PAYLOAD {
                    self.pong_received = true;
                }
            }
            Frame::GoAway {
                last_stream,
                reason,
            } => {
                if reason != Reason::NO_ERROR {
                    tracing::debug!(%reason, "HTTP/2 GOAWAY received");
                }
                self.goaway_received = Some(last_stream);
                let refuse = |id: u32| self.role == Role::Client && id > last_stream;
                for (&id, st) in self.streams.iter_mut() {
                    if refuse(id) || reason != Reason::NO_ERROR {
                        st.reset = true;
                        if st.recv_end.is_none() {
                            st.recv_end = Some(RecvEnd::Error(if reason == Reason::NO_ERROR {
                                H2Error::Reset(Reason::REFUSED_STREAM)
                            } else {
                                H2Error::GoAway(reason)
                            }));
                        }
                        st.wake(wakers);
                    }
                }
                if reason != Reason::NO_ERROR {
                    self.fail(H2Error::GoAway(reason), wakers);
                }
            }
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(frame::MAX_WINDOW) {
                    return self.protocol_error(
                        Reason::FLOW_CONTROL_ERROR,
                        "connection window overflow",
                        wakers,
                    );
                }
                for st in self.streams.values_mut() {
                    wakers.extend(st.writer.take());
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.send_window += i64::from(increment);
                    if st.send_window > i64::from(frame::MAX_WINDOW) {
                        return self.reset_stream(stream, Reason::FLOW_CONTROL_ERROR, wakers);
                    }
                    wakers.extend(st.writer.take());
                } else if self.is_idle(stream) {
                    self.protocol_error(
                        Reason::PROTOCOL_ERROR,
                        "WINDOW_UPDATE on an idle stream",
                        wakers,
                    );
                }
            }
            Frame::PushPromise => {
                self.protocol_error(Reason::PROTOCOL_ERROR, "PUSH_PROMISE not allowed", wakers)
            }
            Frame::Priority | Frame::Unknown => {}
        }
    }

    /// Whether `id` names a stream that was never opened.
    fn is_idle(&self, id: u32) -> bool {
        match self.role {
            Role::Client => id.is_multiple_of(2) || id >= self.next_id,
            Role::Server => !id.is_multiple_of(2) && id > self.last_peer_id,
        }
    }

    fn on_data(&mut self, id: u32, end_stream: bool, len: u32, data: Bytes, wakers: &mut Wakers) {
        let len64 = i64::from(len);
        if len64 > self.recv_window {
            return self.protocol_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
                wakers,
            );
        }
        self.recv_window -= len64;
        let padding = len - data.len() as u32;
        let is_idle = self.is_idle(id);
        let Some(st) = self.streams.get_mut(&id) else {
            if is_idle {
                return self.protocol_error(
                    Reason::PROTOCOL_ERROR,
                    "DATA on an idle stream",
                    wakers,
                );
            }
            // A stream we already let go of: give the window back, drop the data.
            return self.release_conn(len);
        };
        let awaiting_head = self.role == Role::Client && !st.responded;
        let refuse = if st.reset {
            Some(None)
        } else if st.recv_end.is_some() {
            Some(Some(Reason::STREAM_CLOSED))
        } else if awaiting_head {
            Some(Some(Reason::PROTOCOL_ERROR))
        } else if len64 > st.recv_window {
            Some(Some(Reason::FLOW_CONTROL_ERROR))
        } else {
            None
        };
        if let Some(reset) = refuse {
            self.release_conn(len);
            if let Some(reason) = reset {
                self.reset_stream(id, reason, wakers);
            }
            return;
        }
        st.recv_window -= len64;
        let mut data = data;
        let mut direct = 0;
        if st.sink_ready
            && st.recv.is_empty()
            && !data.is_empty()
            && let Some(fd) = st.sink
        {
            direct = send_now(fd, &data);
            data.advance(direct);
            st.delivered += direct as u64;
            if direct > 0
                && let Some(count) = &st.counter
            {
                count(direct as u64);
            }
            if let Some(update) = st.consumed(direct as u32, self.limits.stream_window) {
                frame::put_window_update(&mut self.ctrl, id, update);
            }
        }
        if !data.is_empty() {
            st.sink_ready = false;
            st.recv.push_back(data);
        }
        let wake = !st.recv.is_empty() || end_stream;
        if end_stream {
            st.recv_end = Some(RecvEnd::Eof);
        }
        if wake {
            wakers.extend(st.reader.take());
        }
        if padding > 0 {
            st.unreleased += padding;
            self.release_conn(padding);
        }
        if direct > 0 {
            self.release_conn(direct as u32);
        }
    }

    fn on_header_block(&mut self, id: u32, end_stream: bool, block: &[u8], wakers: &mut Wakers) {
        let decoded = decode_block(
            &mut self.hpack,
            block,
            self.limits.max_header_list,
            self.role,
        );
        let decoded = match decoded {
            Ok(d) => d,
            Err(BlockError::Compression) => {
                return self.protocol_error(
                    Reason::COMPRESSION_ERROR,
                    "HPACK decoding failed",
                    wakers,
                );
            }
            Err(BlockError::Malformed(what)) => Err(what),
            Err(BlockError::TooLarge) => Err(TOO_LARGE),
        };
        match self.role {
            Role::Server => self.on_request(id, end_stream, decoded, wakers),
            Role::Client => self.on_response(id, end_stream, decoded, wakers),
        }
    }

    fn on_request(
        &mut self,
        id: u32,
        end_stream: bool,
        head: Result<HeadBlock, &'static str>,
        wakers: &mut Wakers,
    ) {
        if let Some(st) = self.streams.get_mut(&id) {
            // Trailers: allowed only to end the stream.
            if end_stream && st.recv_end.is_none() {
                st.recv_end = Some(RecvEnd::Eof);
                wakers.extend(st.reader.take());
                return;
            }
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, wakers);
        }
        if id.is_multiple_of(2) || id <= self.last_peer_id {
            return self.protocol_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a closed or server stream id",
                wakers,
            );
        }
        self.last_peer_id = id;
        if self.draining || self.goaway_sent {
            frame::put_rst(&mut self.ctrl, id, Reason::REFUSED_STREAM);
            return;
        }
        if self.streams.len() >= self.limits.max_concurrent as usize {
            frame::put_rst(&mut self.ctrl, id, Reason::REFUSED_STREAM);
            return;
        }
        let mut st = Stream::new(self.peer_initial_window, self.limits.stream_window);
        if end_stream {
            st.recv_end = Some(RecvEnd::Eof);
        }
        let status = match head {
            Ok(HeadBlock::Request(req))
                if req.method == Method::CONNECT && req.authority.is_some() =>
            {
                st.head = Some(Box::new(HeadBlock::Request(req)));
                self.streams.insert(id, Box::new(st));
                self.incoming.push_back(id);
                return;
            }
            Ok(HeadBlock::Request(req)) if req.method == Method::CONNECT => StatusCode::BAD_REQUEST,
            Ok(_) => StatusCode::BAD_REQUEST,
            Err(TOO_LARGE) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Err(_) => {
                frame::put_rst(&mut self.ctrl, id, Reason::PROTOCOL_ERROR);
                return;
            }
        };
        // Answered here, without the handler: the stream ends with the response.
        st.sent_end = true;
        let remote_open = st.recv_end.is_none();
        self.streams.insert(id, Box::new(st));
        let code = status.as_str().as_bytes().to_owned();
        self.write_headers(id, [Field::Indexed(frame::NAME_STATUS, &code)], true);
        if remote_open {
            frame::put_rst(&mut self.ctrl, id, Reason::NO_ERROR);
        }
        self.streams.remove(&id);
    }

    fn on_response(
        &mut self,
        id: u32,
        end_stream: bool,
        head: Result<HeadBlock, &'static str>,
        wakers: &mut Wakers,
    ) {
        let is_idle = self.is_idle(id);
        let Some(st) = self.streams.get_mut(&id) else {
            if is_idle {
                self.protocol_error(Reason::PROTOCOL_ERROR, "HEADERS on an idle stream", wakers);
            }
            return;
        };
        if st.reset {
            return;
        }
        if st.responded {
            // Trailers.
            if end_stream && st.recv_end.is_none() {
                st.recv_end = Some(RecvEnd::Eof);
                wakers.extend(st.reader.take());
                return;
            }
            return self.reset_stream(id, Reason::PROTOCOL_ERROR, wakers);
        }
        match head {
            Ok(HeadBlock::Response(status, _)) if status.is_informational() => {}
            Ok(HeadBlock::Response(status, headers)) => {
                st.head = Some(Box::new(HeadBlock::Response(status, headers)));
                st.unreleased = 0;
                if end_stream {
                    st.recv_end = Some(RecvEnd::Eof);
                }
                st.responded = true;
                wakers.extend(st.reader.take());
            }
            _ => self.reset_stream(id, Reason::PROTOCOL_ERROR, wakers),
        }
    }
}

const TOO_LARGE: &str = "header list too large";

enum BlockError {
    Compression,
    Malformed(&'static str),
    TooLarge,
}

/// Decodes a header block into a request (server) or response (client) head,
/// checking RFC 9113 §8.3's rules for pseudo-headers.
fn decode_block(
    hpack: &mut loona_hpack::Decoder<'static>,
    block: &[u8],
    max_list: u32,
    role: Role,
) -> Result<Result<HeadBlock, &'static str>, BlockError> {
    let mut size = 0usize;
    let mut malformed: Option<&'static str> = None;
    let mut regular_seen = false;
    let mut method: Option<Method> = None;
    let mut authority: Option<String> = None;
    let mut status: Option<StatusCode> = None;
    let mut other_pseudo = false;
    let mut headers = HeaderMap::new();
    let res = hpack.decode_with_cb(block, |name, value| {
        size += name.len() + value.len() + 32;
        if malformed.is_some() || size > max_list as usize {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular_seen {
                malformed = Some("pseudo-header after a regular header");
                return;
            }
            match (role, pseudo) {
                (Role::Server, b"method") if method.is_none() => match Method::from_bytes(&value) {
                    Ok(m) => method = Some(m),
                    Err(_) => malformed = Some("invalid :method"),
                },
                (Role::Server, b"authority") if authority.is_none() => {
                    match std::str::from_utf8(&value) {
                        Ok(a) => authority = Some(a.to_owned()),
                        Err(_) => malformed = Some("invalid :authority"),
                    }
                }
                (Role::Server, b"scheme" | b"path" | b"protocol") => other_pseudo = true,
                (Role::Client, b"status") if status.is_none() => {
                    match StatusCode::from_bytes(&value) {
                        Ok(s) => status = Some(s),
                        Err(_) => malformed = Some("invalid :status"),
                    }
                }
                _ => malformed = Some("unexpected or repeated pseudo-header"),
            }
            return;
        }
        regular_seen = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            malformed = Some("uppercase header name");
            return;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) else {
            malformed = Some("invalid header field");
            return;
        };
        if matches!(
            n.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            malformed = Some("connection-specific header");
            return;
        }
        headers.append(n, v);
    });
    if res.is_err() {
        return Err(BlockError::Compression);
    }
    if size > max_list as usize {
        return Err(BlockError::TooLarge);
    }
    if let Some(what) = malformed {
        return Err(BlockError::Malformed(what));
    }
    Ok(match role {
        Role::Server => match method {
            None => Err("missing :method"),
            Some(m) if m == Method::CONNECT && other_pseudo => Err("CONNECT with :scheme or :path"),
            Some(method) => Ok(HeadBlock::Request(RequestHead {
                method,
                authority,
                headers,
            })),
        },
        Role::Client => match status {
            None => Err("missing :status"),
            Some(s) => Ok(HeadBlock::Response(s, headers)),
        },
    })
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .finish()
    }
}

/// Entry points for the fuzz targets: the header-block decoder as each role
/// runs it, on one fresh HPACK context per call sequence.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Role, decode_block};

    /// Decodes `blocks` in order on one HPACK context, as a server (requests)
    /// or a client (responses); returns how many decoded to a valid head.
    pub fn header_blocks<'a>(blocks: impl IntoIterator<Item = &'a [u8]>, server: bool) -> usize {
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(4096);
        let role = if server { Role::Server } else { Role::Client };
        blocks
            .into_iter()
            .filter(|b| matches!(decode_block(&mut hpack, b, 64 * 1024, role), Ok(Ok(_))))
            .count()
    }
}
