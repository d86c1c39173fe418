//! The data path of ztunnel-sidecar.
//!
//! Outbound: a proxy listener (SOCKS5, HTTP CONNECT, a fixed local upstream, or
//! transparent capture) accepts the application's connection and names a
//! destination; the route decision in `zs-state` picks the next hop; the
//! connection is carried over HBONE (pooled HTTP/2 over mTLS, `zs-hbone`),
//! double HBONE through an east-west gateway, or plain TCP for destinations
//! outside the mesh.
//!
//! Inbound: the HBONE server accepts a CONNECT from a mesh peer, resolves which
//! local port it targets, authorizes it against L4 policy (`zs-authz`), dials
//! the application over loopback and copies bytes. Authorized connections are
//! tracked so that a policy change can close the ones it now denies.
//!
//! This crate owns no configuration parsing and no global state: the binary
//! builds a [`ProxyContext`] and hands it to the listeners.

mod accept;
pub mod capture;
pub mod context;
pub mod dns;
pub mod drain;
pub mod http_proxy;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod socks5;
pub mod tracker;
pub mod upstreams;

pub use context::{InboundDelivery, OutboundPolicy, ProxyConfig, ProxyContext, SelfWorkload};
