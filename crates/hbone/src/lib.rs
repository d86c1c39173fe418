//! HBONE, the transport of Istio ambient mesh: TCP → mutual TLS → HTTP/2, with
//! one `CONNECT` stream per proxied TCP connection, wire-compatible with ztunnel.
//!
//! What is here:
//!
//! * the client — [`connect`] one connection over any byte stream, or let the
//!   [`Pool`] share connections per (source identity, destination identities,
//!   destination address) and dial on demand;
//! * the server — [`serve_connection`] runs TLS and HTTP/2 for one accepted
//!   socket and hands each CONNECT to a [`ConnectHandler`];
//! * [`H2Stream`], one CONNECT stream as `AsyncRead + AsyncWrite` with
//!   ztunnel's half-close and reset semantics, so TLS can run inside it for
//!   double HBONE;
//! * [`copy::copy_bidirectional`], the byte pump between an application socket
//!   and a stream, which holds no buffer while a connection is idle;
//! * the HTTP/2 layer itself, written for HBONE rather than taken from a
//!   general-purpose library: a stream's data is framed, encrypted and written
//!   to the socket by the task that sends it, and received data is written
//!   by the connection's reader straight into the application socket when the
//!   copier is waiting for it, so a message crosses the sidecar without waking
//!   a second task. [`frame`] is its frame codec (pure, fuzzed); HPACK decoding
//!   is `loona-hpack`'s. Interoperability with the `h2` crate (what upstream
//!   ztunnel runs) is tested both ways;
//! * [`headers`], the request headers (`forwarded`, `traceparent`, `baggage`,
//!   `x-forwarded-network`) and the `:authority` parser.
//!
//! What is not: deciding where traffic goes, whom to expect on the other end,
//! or whether to allow it. Those belong to the proxy and the mesh state; this
//! crate is given a destination, a TLS configuration from `zs-tls` that already
//! encodes the identity checks, and a handler. Used by the sidecar's proxy
//! crate and by benchmarks and load tools.
//!
//! Defaults ([`H2Config`], [`PoolConfig`]) are ztunnel's: 4 MiB stream and
//! 16 MiB connection windows, 1 MiB frames, 100 streams per pooled connection,
//! PING keepalive every 10 s with a 20 s timeout, 5 minute pool idle timeout,
//! one connection per key shared until full (the sidecar spreads concurrent
//! streams over one connection per data-plane thread first).

mod client;
mod config;
mod conn;
mod error;
mod pool;
mod readbuf;
mod server;
mod stream;

pub mod copy;
pub mod frame;
pub mod headers;
pub mod socket;

pub use client::{ConnectRequest, H2Connection, connect, connect_to};
pub use config::{H2Config, PoolConfig};
pub use conn::H2Error;
#[doc(hidden)]
pub use conn::fuzzing;
pub use error::HboneError;
pub use pool::{Connector, Pool, PoolKey, TcpConnector};
pub use readbuf::{READ_AHEAD, ReadBuffered};
pub use server::{ConnectHandler, IncomingConnect, PeerInfo, serve_connection};
pub use stream::{DirectGuard, H2Stream};
