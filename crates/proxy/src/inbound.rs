//! The inbound data path: HBONE on port 15008 to the local application.
//!
//! For each CONNECT stream, in ztunnel's order:
//! 1. parse `:authority` (400 if malformed);
//! 2. resolve the local target port: an IP authority must be this workload's
//!    address, a hostname authority names a local service (400 / 503);
//! 3. authorize: the peer's identity from its certificate, the source IP of the
//!    TCP peer, the destination port (401 if denied, logged with the policy);
//! 4. dial the application, over loopback by default (503 if nothing listens);
//! 5. answer 200 and copy bytes. The connection stays tracked so that a policy
//!    change that now denies it closes it at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::{HeaderMap, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Level, debug, event, info, warn};
use zs_hbone::headers::{self, Baggage};
use zs_hbone::{ConnectHandler, IncomingConnect, serve_connection};
use zs_state::zs_authz::{Connection, Decision, Target};
use zs_state::{Authority, NetworkAddress, ServiceDescription, Workload};
use zs_tls::WorkloadCertificate;

use crate::accept::accept_until_drained;
use crate::context::{InboundDelivery, ProxyContext};
use crate::drain::DrainWatch;
use crate::metrics::{ConnectionInfo, Reporter, ResponseFlags};
use crate::outbound::baggage_of;

/// Handles CONNECT streams for this sidecar's workload.
pub struct InboundHandler {
    ctx: Arc<ProxyContext>,
}

impl InboundHandler {
    pub fn new(ctx: Arc<ProxyContext>) -> Arc<Self> {
        Arc::new(InboundHandler { ctx })
    }
}

/// What the copy phase of an accepted inbound connection needs.
struct Accepted {
    app: TcpStream,
    stream: zs_hbone::H2Stream,
    recorder: crate::metrics::ConnectionRecorder,
    guard: crate::tracker::TrackGuard,
}

impl ConnectHandler for InboundHandler {
    fn handle(self: Arc<Self>, req: IncomingConnect) -> impl Future<Output = ()> + Send + 'static {
        // Set-up runs in a boxed future that takes the request and is freed
        // before the copy starts: an idle proxied connection keeps only what
        // the copy needs.
        let this = self.clone();
        let setup = Box::pin(async move { this.accept(req).await });
        self.serve(setup)
    }
}

impl InboundHandler {
    async fn serve(
        self: Arc<Self>,
        setup: std::pin::Pin<Box<impl Future<Output = Option<Accepted>> + Send>>,
    ) {
        let Some(Accepted {
            mut app,
            mut stream,
            recorder,
            guard,
        }) = setup.await
        else {
            return;
        };
        // a = the application, b = the HBONE peer (the client).
        let observer = recorder.observer(true);
        tokio::select! {
            result = zs_hbone::copy::copy_bidirectional(&mut app, &mut stream, &observer) => {
                match result {
                    Ok((to_stream, to_app)) => recorder.finish((to_app, to_stream), ResponseFlags::None, None),
                    Err(e) => recorder.finish((0, 0), ResponseFlags::Connect, Some(&e.to_string())),
                }
            }
            () = guard.cancelled() => {
                self.ctx.metrics.policy_closed();
                recorder.finish((0, 0), ResponseFlags::Deny, Some("connection closed due to policy change"));
            }
        }
        drop(guard);
    }

    /// Steps 1–5 up to the 200; `None` when the request was answered with an error.
    async fn accept(&self, req: IncomingConnect) -> Option<Accepted> {
        let ctx = &*self.ctx;
        let local = ctx.me.get();
        let peer = req.peer().clone();
        let src_addr = SocketAddr::new(peer.peer_addr.ip().to_canonical(), peer.peer_addr.port());
        let local_addr =
            SocketAddr::new(peer.local_addr.ip().to_canonical(), peer.local_addr.port());
        let mut info = ConnectionInfo {
            reporter: Reporter::destination,
            src_addr,
            src_workload: None,
            src_identity: peer.identity.clone(),
            // As ztunnel logs it: the HBONE address the connection arrived on.
            dst_addr: Some(local_addr.to_string()),
            dst_hbone_addr: req.authority().map(str::to_string),
            dst_service: None,
            dst_workload: Some(local.clone()),
            dst_identity: local.identity(),
            mtls: true,
        };
        info.src_workload = source_workload(ctx, &local, &peer.peer_addr, req.headers());

        // 1. authority
        let authority = match req.authority().map(headers::parse_authority) {
            Some(Ok(headers::Authority::Addr(a))) => Authority::Addr(a),
            Some(Ok(headers::Authority::Host { host, port })) => Authority::Host {
                hostname: host.into(),
                port,
            },
            Some(Err(e)) => {
                return reject(
                    ctx,
                    req,
                    info,
                    StatusCode::BAD_REQUEST,
                    ResponseFlags::Connect,
                    &e.to_string(),
                );
            }
            None => {
                return reject(
                    ctx,
                    req,
                    info,
                    StatusCode::BAD_REQUEST,
                    ResponseFlags::Connect,
                    "CONNECT without :authority",
                );
            }
        };

        // 2. target
        let target = ctx.mesh.read().inbound_target(
            &local,
            &authority,
            peer.local_addr.ip(),
            &ctx.config.illegal_ports,
        );
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let status = if e.is_bad_request() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return reject(
                    ctx,
                    req,
                    info,
                    status,
                    ResponseFlags::Connect,
                    &e.to_string(),
                );
            }
        };
        info.dst_service = target
            .service
            .clone()
            .or_else(|| forwarded_service(ctx, &local, req.headers()))
            .or_else(|| ctx.mesh.read().guess_inbound_service(&local, target.port));

        // 3. authorization. Track first, so a policy push racing with this
        // decision either is seen here or re-evaluates this connection.
        let conn = Connection {
            src_ip: peer.peer_addr.ip().to_canonical(),
            dst: target.dst,
            src_identity: peer.identity.clone(),
        };
        let guard = ctx.tracker.track(conn);
        let conn = guard.connection();
        let decision = {
            let mesh = ctx.mesh.read();
            mesh.policies().evaluate(
                &Target::new(&local.namespace, &local.authorization_policies),
                conn,
            )
        };
        log_decision(ctx, conn, &decision);
        if let Decision::Deny(reason) = &decision {
            drop(guard);
            return reject(
                ctx,
                req,
                info,
                StatusCode::UNAUTHORIZED,
                ResponseFlags::Deny,
                &reason.to_string(),
            );
        }

        // 4. the application
        let app = match ctx.config.inbound_delivery {
            InboundDelivery::Loopback => SocketAddr::new(
                if target.dst.is_ipv6() {
                    IpAddr::V6(Ipv6Addr::LOCALHOST)
                } else {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                },
                target.port,
            ),
            InboundDelivery::TaskIp => target.dst,
        };
        let dialed =
            tokio::time::timeout(ctx.config.connect_timeout, ctx.config.socket.connect(app)).await;
        let app_stream: TcpStream = match dialed {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                drop(guard);
                let msg = format!("connection to {app} failed: {e}");
                return reject(
                    ctx,
                    req,
                    info,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::Connect,
                    &msg,
                );
            }
            Err(_) => {
                drop(guard);
                let msg = format!("connection to {app} timed out");
                return reject(
                    ctx,
                    req,
                    info,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::Connect,
                    &msg,
                );
            }
        };

        // 5. 200 and copy
        let mut extra = HeaderMap::new();
        if ctx.config.response_baggage {
            let b = baggage_of(&local).to_header_value();
            if !b.is_empty() {
                extra.insert(headers::BAGGAGE, b);
            }
        }
        let stream = match req.accept(extra) {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %peer.peer_addr, error = %e, "HBONE client left before the 200");
                return None;
            }
        };
        Some(Accepted {
            app: app_stream,
            stream,
            recorder: ctx.metrics.open(info),
            guard,
        })
    }
}

fn reject(
    ctx: &ProxyContext,
    req: IncomingConnect,
    info: ConnectionInfo,
    status: StatusCode,
    flags: ResponseFlags,
    error: &str,
) -> Option<Accepted> {
    req.reject(status);
    ctx.metrics.failed(info, flags, error);
    None
}

fn log_decision(ctx: &ProxyContext, conn: &Connection, decision: &Decision) {
    let dry = decision.dry_run();
    if !dry.is_empty() {
        info!(
            src.addr = %conn.src_ip,
            src.identity = ?conn.src_identity,
            dst = %conn.dst,
            would_deny = ?dry.denied_by(),
            would_allow = ?dry.allowed_by(),
            "dry-run authorization policy result"
        );
    }
    let level = if ctx.config.authz_info_logging {
        Level::INFO
    } else {
        Level::DEBUG
    };
    match decision {
        Decision::Deny(reason) => {
            // Denials are always visible: they are what an operator debugs.
            info!(
                src.addr = %conn.src_ip,
                src.identity = ?conn.src_identity,
                dst = %conn.dst,
                %reason,
                "connection denied by authorization policy"
            );
        }
        Decision::Allow { .. } => {
            if level == Level::INFO {
                event!(Level::INFO, src.addr = %conn.src_ip, dst = %conn.dst, "connection allowed by authorization policy");
            } else {
                event!(Level::DEBUG, src.addr = %conn.src_ip, dst = %conn.dst, "connection allowed by authorization policy");
            }
        }
    }
}

/// The source workload for metrics: by the peer's IP on our network, unless the
/// request came through an east-west gateway (`x-forwarded-network` names another
/// network), where `baggage` describes it instead.
fn source_workload(
    ctx: &ProxyContext,
    local: &Workload,
    peer: &SocketAddr,
    headers: &HeaderMap,
) -> Option<Arc<Workload>> {
    let via_gateway = headers
        .get(headers::X_FORWARDED_NETWORK)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| !n.eq_ignore_ascii_case(&local.network));
    if !via_gateway {
        let addr = NetworkAddress::new(local.network.clone(), peer.ip().to_canonical());
        if let Some(w) = ctx.mesh.read().workload_by_address(&addr) {
            return Some(w.clone());
        }
    }
    if !ctx.config.response_baggage {
        return None;
    }
    let b = Baggage::parse(headers.get_all(headers::BAGGAGE));
    if b.namespace.is_empty() && b.workload_name.is_empty() {
        return None;
    }
    // Only the workload name is known, not the pod's: the name stays empty, so
    // access logs name the source by its canonical name, as ztunnel does.
    let mut w = Workload::new("", b.namespace.as_str(), "", "");
    w.workload_name = b.workload_name.as_str().into();
    w.canonical_name = b.service_name.as_str().into();
    w.canonical_revision = b.service_version.as_str().into();
    w.cluster_id = b.cluster_id.as_str().into();
    w.locality.region = b.region.as_str().into();
    w.locality.zone = b.zone.as_str().into();
    Some(Arc::new(w))
}

/// The service named by `Forwarded: ...;host=`, when it is one of ours.
fn forwarded_service(
    ctx: &ProxyContext,
    local: &Workload,
    headers: &HeaderMap,
) -> Option<ServiceDescription> {
    let host = headers
        .get(headers::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(headers::forwarded_host)?;
    ctx.mesh
        .read()
        .services_by_hostname(host, &local.namespace)
        .map(ServiceDescription::from)
}

/// Caches the rustls server config for the current certificate: rebuilt only
/// when the certificate rotates, so new connections get the new one.
#[derive(Default)]
struct ServerConfigCache {
    cached: ArcSwapOption<(Arc<WorkloadCertificate>, Arc<rustls::ServerConfig>)>,
}

impl ServerConfigCache {
    fn get(&self, ctx: &ProxyContext) -> Option<Arc<rustls::ServerConfig>> {
        let cert = ctx.certs.current()?;
        if let Some(c) = &*self.cached.load()
            && Arc::ptr_eq(&c.0, &cert)
        {
            return Some(c.1.clone());
        }
        match zs_tls::server_config(&cert, &ctx.config.tls) {
            Ok(cfg) => {
                self.cached.store(Some(Arc::new((cert, cfg.clone()))));
                Some(cfg)
            }
            Err(e) => {
                warn!(error = %e, "cannot build the HBONE server TLS configuration");
                None
            }
        }
    }
}

/// Accepts HBONE connections until a drain starts; then every open connection
/// gets a GOAWAY and keeps serving its streams (each holds a drain watch).
pub async fn serve(ctx: Arc<ProxyContext>, listener: TcpListener, drain: DrainWatch) {
    let handler = InboundHandler::new(ctx.clone());
    let tls = Arc::new(ServerConfigCache::default());
    accept_until_drained(listener, drain, "hbone", move |tcp, peer, watch| {
        let config = tls.get(&ctx);
        let (ctx, handler) = (ctx.clone(), handler.clone());
        async move {
            let Some(config) = config else {
                debug!(%peer, "no workload certificate yet; refusing HBONE connection");
                return;
            };
            let shutdown = watch.signaled_owned();
            if let Err(e) = serve_connection(tcp, config, &ctx.config.h2, handler, shutdown).await {
                ctx.metrics.inbound_failure();
                tracing::event!(target: "access", Level::WARN, src.addr = %peer, direction = "inbound", error = %e, "connection failed");
            }
            drop(watch);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: Future>(_f: impl Fn(Arc<InboundHandler>, IncomingConnect) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle inbound connection is mostly its stream task's future: the
    /// request and the set-up must not stay in it. (Sizes move a little with
    /// the compiler; the bound leaves room for that.)
    #[test]
    fn the_per_stream_future_stays_small() {
        let size = future_size(<InboundHandler as ConnectHandler>::handle);
        assert!(size <= 512, "InboundHandler::handle future is {size} bytes");
    }
}
