//! The outbound data path, shared by every listener.
//!
//! A listener turns the application's request into an [`OutboundRequest`]
//! (an address or a hostname, and the client's address) and calls
//! [`connect`]. That resolves the destination (mesh service name first, then
//! system DNS), asks the mesh state for a route, and dials it: HBONE from the
//! pool, double HBONE through an east-west gateway, or plain TCP. If the chosen
//! endpoint cannot be reached, another endpoint of the same service is tried
//! before the client sees an error. The listener answers its client only once
//! [`connect`] returns, then runs [`proxy`] to copy bytes until both sides close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::net::TcpStream;
use tracing::debug;
use zs_hbone::copy::ProxyIo;
use zs_hbone::headers::{self, Baggage, WorkloadKind};
use zs_hbone::{ConnectRequest, H2Connection, H2Stream, HboneError, PoolKey};
use zs_state::{
    Destination, HboneHop, Route, RouteError, RouteKind, RouteRequest, Str, UpstreamAddr, Workload,
};
use zs_tls::{Identity, TlsError, WorkloadCertificate};

use crate::context::{OutboundPolicy, ProxyContext};
use crate::metrics::{ConnectionInfo, ConnectionRecorder, Reporter, ResponseFlags};

/// Endpoints tried for one connection before giving up.
const MAX_ATTEMPTS: usize = 3;

/// What the application asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    /// A name to resolve (mesh service hostname, else DNS).
    Host {
        name: String,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// One outbound connection request from a listener.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    pub target: Target,
    /// The application's address (for `Forwarded: for=` and logs).
    pub client: SocketAddr,
}

/// An established upstream.
#[derive(Debug)]
pub enum Upstream {
    Tcp(TcpStream),
    Hbone(H2Stream),
}

/// A connected upstream, with what metrics and logs need.
#[derive(Debug)]
pub struct Established {
    pub upstream: Upstream,
    pub recorder: ConnectionRecorder,
}

/// Why an outbound connection failed. Each maps to a SOCKS5 reply code and an
/// HTTP status, so clients print a meaningful error.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot resolve {name}: {reason}")]
    UnknownHost { name: String, reason: String },
    #[error("{0}")]
    NoRoute(#[from] RouteError),
    #[error("connection to {addr} refused")]
    Refused { addr: String },
    #[error("connection to {addr} timed out")]
    Timeout { addr: String },
    #[error("{addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("connection to {target} denied by the destination's authorization policy")]
    PolicyDenied { target: String },
    #[error("{target} is outside the mesh and OUTBOUND_TRAFFIC_POLICY is REGISTRY_ONLY")]
    NotInMesh { target: String },
    #[error("{target} is one of this proxy's own ports")]
    Loop { target: String },
    #[error("the destination could not deliver to {target} (nothing listening, or unknown there)")]
    DestinationUnavailable { target: String },
    #[error("no workload certificate yet (waiting for the CA)")]
    NoCertificate,
    #[error("mTLS with {peer} failed: {reason}")]
    Tls { peer: String, reason: String },
    #[error("{0}")]
    Hbone(HboneError),
}

impl OutboundError {
    /// The RFC 1928 reply code for a SOCKS5 client.
    pub fn socks5_reply(&self) -> u8 {
        match self {
            OutboundError::PolicyDenied { .. }
            | OutboundError::NotInMesh { .. }
            | OutboundError::Loop { .. } => 0x02, // connection not allowed by ruleset
            OutboundError::Refused { .. } | OutboundError::DestinationUnavailable { .. } => 0x05,
            OutboundError::UnknownHost { .. }
            | OutboundError::NoRoute(_)
            | OutboundError::Timeout { .. } => 0x04, // host unreachable
            OutboundError::Unreachable { .. } => 0x03, // network unreachable
            OutboundError::NoCertificate | OutboundError::Tls { .. } | OutboundError::Hbone(_) => {
                0x01
            } // general failure
        }
    }

    /// The HTTP status for an HTTP proxy client.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            OutboundError::PolicyDenied { .. }
            | OutboundError::NotInMesh { .. }
            | OutboundError::Loop { .. } => S::FORBIDDEN,
            OutboundError::Timeout { .. } => S::GATEWAY_TIMEOUT,
            OutboundError::NoCertificate | OutboundError::NoRoute(_) => S::SERVICE_UNAVAILABLE,
            _ => S::BAD_GATEWAY,
        }
    }

    /// The metrics response flag.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            OutboundError::PolicyDenied { .. } => ResponseFlags::Deny,
            OutboundError::Tls { .. } => ResponseFlags::TlsFailure,
            OutboundError::Timeout { .. } => ResponseFlags::NetworkPolicy,
            OutboundError::Hbone(HboneError::H2Handshake { .. }) => {
                ResponseFlags::H2HandshakeFailure
            }
            _ => ResponseFlags::Connect,
        }
    }

    /// Worth trying another endpoint: the failure happened before any byte of
    /// the client's was sent, at a specific endpoint. That includes a CONNECT
    /// that got no answer because its pooled connection was reset or the stream
    /// refused: an endpoint stopping (scale-down) does that to requests racing
    /// with its last moments.
    fn retryable(&self) -> bool {
        matches!(
            self,
            OutboundError::Refused { .. }
                | OutboundError::Timeout { .. }
                | OutboundError::Unreachable { .. }
                | OutboundError::DestinationUnavailable { .. }
                | OutboundError::Tls { .. }
        ) || matches!(
            self,
            OutboundError::Hbone(
                HboneError::H2Handshake { .. }
                    | HboneError::HandshakeTimeout { .. }
                    | HboneError::Request { .. }
                    | HboneError::H2 { .. }
            )
        )
    }
}

fn io_error(addr: impl ToString, e: std::io::Error) -> OutboundError {
    let addr = addr.to_string();
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => OutboundError::Refused { addr },
        std::io::ErrorKind::TimedOut => OutboundError::Timeout { addr },
        _ => OutboundError::Unreachable {
            addr,
            reason: e.to_string(),
        },
    }
}

fn hbone_error(e: HboneError, target: &str) -> OutboundError {
    match e {
        HboneError::PolicyDenied { .. } => OutboundError::PolicyDenied {
            target: target.to_string(),
        },
        HboneError::Unavailable { .. } => OutboundError::DestinationUnavailable {
            target: target.to_string(),
        },
        HboneError::Connect { dst, source } => io_error(dst, source),
        HboneError::ConnectTimeout { dst, .. } => OutboundError::Timeout {
            addr: dst.to_string(),
        },
        HboneError::TlsHandshake { peer, source } => OutboundError::Tls {
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            reason: source.to_string(),
        },
        other => OutboundError::Hbone(other),
    }
}

/// Connects to `req.target` for the sidecar's own workload, retrying another
/// endpoint when one cannot be reached. Records the connection in metrics: on
/// success the returned recorder tracks it; on failure it is counted as failed.
pub async fn connect(
    ctx: &ProxyContext,
    req: &OutboundRequest,
) -> Result<Established, OutboundError> {
    let src = ctx.me.get();
    let cert = ctx.certs.current();
    let src_identity = cert.as_ref().and_then(|c| c.identity().cloned());
    let mut info = ConnectionInfo {
        reporter: Reporter::source,
        src_addr: req.client,
        src_workload: Some(src.clone()),
        src_identity: None,
        dst_addr: Some(req.target.to_string()),
        dst_hbone_addr: None,
        dst_service: None,
        dst_workload: None,
        dst_identity: None,
        mtls: false,
    };
    let result = attempt(ctx, req, &src, cert.as_deref(), &mut info).await;
    // Over mTLS the source principal is this sidecar's identity, also when the
    // connection then fails (a denial is still an mTLS connection), as ztunnel
    // reports it.
    if info.mtls {
        info.src_identity = src_identity;
    }
    match result {
        Ok(upstream) => Ok(Established {
            upstream,
            recorder: ctx.metrics.open(info),
        }),
        Err(e) => {
            ctx.metrics.failed(info, e.flags(), &e.to_string());
            Err(e)
        }
    }
}

async fn attempt(
    ctx: &ProxyContext,
    req: &OutboundRequest,
    src: &Arc<Workload>,
    cert: Option<&WorkloadCertificate>,
    info: &mut ConnectionInfo,
) -> Result<Upstream, OutboundError> {
    let destination = resolve(ctx, &req.target, src).await?;
    if let Destination::Addr(a) = destination
        && ctx.config.own_listeners.contains(&a)
    {
        return Err(OutboundError::Loop {
            target: req.target.to_string(),
        });
    }
    let mut exclude: Vec<Str> = Vec::new();
    let mut last_error = None;
    for _ in 0..MAX_ATTEMPTS {
        let route = {
            let mesh = ctx.mesh.read();
            mesh.route(
                RouteRequest {
                    source: src,
                    destination: &destination,
                    exclude: &exclude,
                },
                &mut rand::rng(),
            )
        };
        let route = match (route, last_error.take()) {
            (Ok(r), _) => r,
            // Out of endpoints after a failure: report the failure, not "no upstream".
            (Err(_), Some(previous)) => return Err(previous),
            (Err(e), None) => return Err(e.into()),
        };
        describe(info, &route);
        // A client dialing one of this proxy's own ports on loopback would loop
        // through it (mesh workloads are reached by their own addresses instead).
        if let RouteKind::Passthrough(UpstreamAddr::Ip(a)) = &route.kind
            && a.ip().is_loopback()
            && ctx.config.illegal_ports.contains(&a.port())
        {
            return Err(OutboundError::Loop {
                target: req.target.to_string(),
            });
        }
        match dial(ctx, req, src, cert, &route).await {
            Ok(upstream) => return Ok(upstream),
            Err(e) if e.retryable() && route.endpoint.is_some() => {
                debug!(target = %req.target, error = %e, "endpoint failed, trying another");
                exclude.extend(route.endpoint);
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(
        last_error.unwrap_or(OutboundError::NoRoute(RouteError::NoHealthyUpstream {
            service: req.target.to_string().into(),
        })),
    )
}

/// Mesh names first (no DNS query leaves the task for them), then system DNS.
async fn resolve(
    ctx: &ProxyContext,
    target: &Target,
    src: &Workload,
) -> Result<Destination, OutboundError> {
    match target {
        Target::Addr(a) => Ok(Destination::Addr(*a)),
        Target::Host { name, port } => {
            if let Ok(ip) = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                return Ok(Destination::Addr(SocketAddr::new(ip, *port)));
            }
            let mesh_name =
                ctx.mesh
                    .read()
                    .resolve_hostname(name, &src.namespace, &ctx.config.names);
            if let Some(key) = mesh_name {
                return Ok(Destination::Service { key, port: *port });
            }
            let ips = ctx
                .dns
                .lookup(name)
                .await
                .map_err(|e| OutboundError::UnknownHost {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            Ok(Destination::Addr(SocketAddr::new(ips[0], *port)))
        }
    }
}

fn describe(info: &mut ConnectionInfo, route: &Route) {
    info.dst_service = route.dst_service.clone();
    info.dst_workload = route.dst_workload.clone();
    match &route.kind {
        RouteKind::Passthrough(a) | RouteKind::Tcp(a) => {
            info.dst_addr = Some(a.to_string());
            info.dst_hbone_addr = None;
            info.dst_identity = None;
            info.mtls = false;
        }
        RouteKind::Hbone { hop, authority } => {
            info.dst_addr = Some(hop.addr.to_string());
            info.dst_hbone_addr = Some(authority.to_string());
            info.dst_identity = route
                .dst_workload
                .as_deref()
                .and_then(Workload::identity)
                .or_else(|| hop.identities.first().cloned());
            info.mtls = true;
        }
        RouteKind::DoubleHbone {
            gateway,
            authority,
            inner_identities,
        } => {
            info.dst_addr = Some(gateway.addr.to_string());
            info.dst_hbone_addr = Some(authority.to_string());
            info.dst_identity = inner_identities.first().cloned();
            info.mtls = true;
        }
    }
}

async fn dial(
    ctx: &ProxyContext,
    req: &OutboundRequest,
    src: &Workload,
    cert: Option<&WorkloadCertificate>,
    route: &Route,
) -> Result<Upstream, OutboundError> {
    match &route.kind {
        RouteKind::Passthrough(addr) => {
            if ctx.config.outbound_policy == OutboundPolicy::RegistryOnly {
                return Err(OutboundError::NotInMesh {
                    target: req.target.to_string(),
                });
            }
            dial_tcp(ctx, addr).await.map(Upstream::Tcp)
        }
        RouteKind::Tcp(addr) => dial_tcp(ctx, addr).await.map(Upstream::Tcp),
        RouteKind::Hbone { hop, authority } => {
            let cert = cert.ok_or(OutboundError::NoCertificate)?;
            let authority = authority.to_string();
            let headers = request_headers(req, route, src);
            let (stream, _) = send_pooled(ctx, cert, hop, &authority, headers)
                .await
                .map_err(|e| hbone_error(e, &authority))?;
            Ok(Upstream::Hbone(stream))
        }
        RouteKind::DoubleHbone {
            gateway,
            authority,
            inner_identities,
        } => {
            let cert = cert.ok_or(OutboundError::NoCertificate)?;
            let authority = authority.to_string();
            let inner = InnerKey {
                src: cert.identity().cloned(),
                gateway: gateway.clone(),
                identities: inner_identities.clone(),
                authority: authority.clone(),
            };
            let conn = ctx
                .inner_pool
                .get_or_dial(inner, || async {
                    let headers = request_headers(req, route, src);
                    let (outer, _) = send_pooled(ctx, cert, gateway, &authority, headers).await?;
                    let tls =
                        zs_tls::client_config(cert, inner_identities.clone(), &ctx.config.tls)?;
                    zs_hbone::connect(outer, tls, &ctx.config.h2).await
                })
                .await
                .map_err(|e| hbone_error(e, &authority))?;
            let mut headers = request_headers(req, route, src);
            if let Ok(v) = http::HeaderValue::from_str(&src.network) {
                headers.insert(headers::X_FORWARDED_NETWORK, v);
            }
            let (stream, _) = conn
                .send_connect(ConnectRequest {
                    authority: authority.clone(),
                    headers,
                })
                .await
                .map_err(|e| hbone_error(e, &authority))?;
            Ok(Upstream::Hbone(stream))
        }
    }
}

async fn send_pooled(
    ctx: &ProxyContext,
    cert: &WorkloadCertificate,
    hop: &HboneHop,
    authority: &str,
    headers: HeaderMap,
) -> Result<(H2Stream, http::response::Parts), HboneError> {
    let src = cert
        .identity()
        .cloned()
        .ok_or(HboneError::Tls(TlsError::NoIdentity))?;
    let dst = match &hop.addr {
        UpstreamAddr::Ip(a) => *a,
        UpstreamAddr::Host { hostname, port } => {
            let ips = ctx
                .dns
                .lookup(hostname)
                .await
                .map_err(|e| HboneError::Connect {
                    dst: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), *port),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
                })?;
            SocketAddr::new(ips[0], *port)
        }
    };
    let key = PoolKey {
        src,
        dst_identities: hop.identities.clone(),
        dst,
    };
    ctx.pool
        .send(
            key,
            || zs_tls::client_config(cert, hop.identities.clone(), &ctx.config.tls),
            ConnectRequest {
                authority: authority.to_string(),
                headers,
            },
        )
        .await
}

async fn dial_tcp(ctx: &ProxyContext, addr: &UpstreamAddr) -> Result<TcpStream, OutboundError> {
    let dst = match addr {
        UpstreamAddr::Ip(a) => *a,
        UpstreamAddr::Host { hostname, port } => {
            let ips = ctx
                .dns
                .lookup(hostname)
                .await
                .map_err(|e| OutboundError::UnknownHost {
                    name: hostname.to_string(),
                    reason: e.to_string(),
                })?;
            SocketAddr::new(ips[0], *port)
        }
    };
    match tokio::time::timeout(ctx.config.connect_timeout, ctx.config.socket.connect(dst)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(io_error(dst, e)),
        Err(_) => Err(OutboundError::Timeout {
            addr: dst.to_string(),
        }),
    }
}

/// `forwarded`, `traceparent` and `baggage`, as ztunnel sends them.
fn request_headers(req: &OutboundRequest, route: &Route, src: &Workload) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        headers::FORWARDED,
        headers::forwarded(req.client, route.dst_service.as_ref().map(|s| &*s.hostname)),
    );
    h.insert(headers::TRACEPARENT, headers::traceparent());
    let baggage = baggage_of(src).to_header_value();
    if !baggage.is_empty() {
        h.insert(headers::BAGGAGE, baggage);
    }
    h
}

/// A workload's metadata as `baggage`.
pub fn baggage_of(w: &Workload) -> Baggage {
    Baggage {
        cluster_id: w.cluster_id.to_string(),
        namespace: w.namespace.to_string(),
        workload_kind: match &*w.workload_type {
            "deployment" => Some(WorkloadKind::Deployment),
            "cronjob" => Some(WorkloadKind::CronJob),
            "pod" => Some(WorkloadKind::Pod),
            "job" => Some(WorkloadKind::Job),
            _ => None,
        },
        workload_name: w.workload_name.to_string(),
        service_name: w.canonical_name.to_string(),
        service_version: w.canonical_revision.to_string(),
        region: w.locality.region.to_string(),
        zone: w.locality.zone.to_string(),
    }
}

/// Inner HTTP/2 connections of double HBONE, reused per gateway and destination
/// service identity (upstream ztunnel opens one per application connection).
/// Like the outer pool, a connection unused for the idle timeout is let go.
pub struct InnerPool {
    entries: parking_lot::Mutex<HashMap<InnerKey, Arc<InnerEntry>>>,
    idle_timeout: Duration,
}

impl Default for InnerPool {
    fn default() -> Self {
        InnerPool::new(zs_hbone::PoolConfig::default().idle_timeout)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InnerKey {
    src: Option<Identity>,
    gateway: HboneHop,
    identities: Vec<Identity>,
    /// `service hostname:port`; the gateway picks the endpoint per outer CONNECT,
    /// so an inner connection is bound to the service it was opened for.
    authority: String,
}

struct InnerEntry {
    conn: parking_lot::Mutex<Option<H2Connection>>,
    dial: tokio::sync::Mutex<()>,
    last_used: parking_lot::Mutex<std::time::Instant>,
}

impl Default for InnerEntry {
    fn default() -> Self {
        InnerEntry {
            conn: Default::default(),
            dial: Default::default(),
            last_used: parking_lot::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl InnerEntry {
    fn usable(&self) -> Option<H2Connection> {
        let guard = self.conn.lock();
        let conn = guard
            .as_ref()
            .filter(|c| c.is_ready() && c.active_streams() < c.max_streams())
            .cloned();
        if conn.is_some() {
            *self.last_used.lock() = std::time::Instant::now();
        }
        conn
    }

    /// Closed, or idle (no streams) for longer than `timeout`.
    fn expired(&self, timeout: Duration) -> bool {
        match &*self.conn.lock() {
            None => self.last_used.lock().elapsed() > timeout,
            Some(c) => {
                c.is_closed()
                    || (c.active_streams() == 0 && self.last_used.lock().elapsed() > timeout)
            }
        }
    }
}

impl InnerPool {
    /// An empty pool letting connections go after `idle_timeout` unused.
    pub fn new(idle_timeout: Duration) -> Self {
        InnerPool {
            entries: Default::default(),
            idle_timeout,
        }
    }

    async fn get_or_dial<F, Fut>(&self, key: InnerKey, dial: F) -> Result<H2Connection, HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<H2Connection, HboneError>>,
    {
        let entry = {
            let mut entries = self.entries.lock();
            // Dropping an entry drops the last handle: the connection closes
            // once its streams are done.
            entries.retain(|_, e| !e.expired(self.idle_timeout));
            entries.entry(key).or_default().clone()
        };
        if let Some(c) = entry.usable() {
            return Ok(c);
        }
        let _dialing = entry.dial.lock().await;
        if let Some(c) = entry.usable() {
            return Ok(c);
        }
        let conn = dial().await?;
        *entry.conn.lock() = Some(conn.clone());
        *entry.last_used.lock() = std::time::Instant::now();
        Ok(conn)
    }

    /// Number of inner connections still open (for diagnostics and tests).
    pub fn connections(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|e| e.conn.lock().as_ref().is_some_and(|c| !c.is_closed()))
            .count()
    }
}

impl std::fmt::Debug for InnerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InnerPool")
            .field("connections", &self.connections())
            .finish()
    }
}

/// Copies bytes between the application and the upstream until both close,
/// then records the connection's end. `cancel` (e.g. drain) ends it early.
pub fn proxy<C: ProxyIo + ?Sized>(
    client: &mut C,
    established: Established,
) -> impl Future<Output = ()> + '_ {
    // This future is what an idle proxied connection is made of, so it holds
    // each piece once: the parts are taken apart before the async block
    // captures them and are only borrowed inside. (An `async fn` keeps its
    // arguments for its whole life; a moved-out copy would sit beside them.)
    let Established {
        mut upstream,
        recorder,
    } = established;
    async move {
        let observer = recorder.observer(false);
        let result = match &mut upstream {
            Upstream::Tcp(s) => zs_hbone::copy::copy_bidirectional(client, s, &observer).await,
            Upstream::Hbone(s) => zs_hbone::copy::copy_bidirectional(client, s, &observer).await,
        };
        match result {
            Ok(totals) => recorder.finish(totals, ResponseFlags::None, None),
            Err(e) => recorder.finish((0, 0), ResponseFlags::Connect, Some(&e.to_string())),
        }
    }
}

/// The connect timeout for a single upstream dial (ztunnel's value).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
