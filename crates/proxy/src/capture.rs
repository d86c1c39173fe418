//! Transparent capture (`CAPTURE_MODE=proxy-configuration`): the listeners
//! behind the redirect rules that ECS installs for a task definition's
//! `proxyConfiguration` (type `APPMESH`).
//!
//! With that block the platform, not the sidecar, programs the task's network
//! namespace: outbound TCP from the application containers is redirected to
//! `ProxyEgressPort` (15001) and inbound TCP to the application ports to
//! `ProxyIngressPort` (15006). Traffic of the sidecar's own user (`IgnoredUID`,
//! 1337) and to `EgressIgnoredIPs` (the ECS metadata and credentials
//! endpoints) is left alone, which is what keeps the sidecar's own dials from
//! looping back into it. The kernel keeps each redirected connection's original
//! destination; it is read back with `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6).
//!
//! * Egress: the original destination becomes an [`outbound::connect`] to that
//!   address: mesh workloads and services over HBONE, the rest per the
//!   outbound traffic policy. Applications need no proxy settings at all.
//! * Ingress: what arrives here is plaintext from outside the mesh (mesh peers
//!   use HBONE on 15008, which is not redirected). It is authorized like an
//!   HBONE connection but with no peer identity, tracked so a policy change can
//!   close it, and delivered to the application over loopback.
//!
//! Ingress is also where the **leak guard** sits: a plaintext connection whose
//! source address belongs to a mesh workload that speaks HBONE means a client
//! in that workload bypassed its sidecar (it ignored its proxy settings). Such
//! connections are counted in `ztunnel_sidecar_mesh_bypass_connections_total`
//! and logged as a warning naming the source workload, at most once per
//! workload every ten minutes, so operators can find and fix the client.
//!
//! A connection that reaches either port without having been redirected (its
//! original destination is the listener itself) is closed: serving it would
//! loop, or let anyone reach the mesh through the egress port.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};
use zs_state::zs_authz::{self, Connection, Decision};
use zs_state::{InboundProtocol, NetworkAddress, Str, Workload};

use crate::accept::accept_until_drained;
use crate::context::{InboundDelivery, ProxyContext};
use crate::drain::DrainWatch;
use crate::metrics::{ConnectionInfo, Reporter, ResponseFlags};
use crate::outbound::Target;
use crate::upstreams;

/// How often the bypass warning may repeat for one source workload.
pub const LEAK_WARNING_INTERVAL: Duration = Duration::from_secs(600);

/// Why a captured connection was not served.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The kernel has no original destination for the socket (no NAT entry).
    #[error(
        "no original destination for the connection from {peer} (was it redirected?): {source}"
    )]
    NoOriginalDestination {
        /// The client.
        peer: SocketAddr,
        /// What `getsockopt` said.
        source: io::Error,
    },
    /// The client dialed the capture port itself: serving it would loop, or
    /// open the mesh to anyone who can reach the port.
    #[error(
        "the connection from {peer} was not redirected: it targets the capture port {local} itself"
    )]
    NotRedirected {
        /// The client.
        peer: SocketAddr,
        /// The capture listener's address.
        local: SocketAddr,
    },
}

/// The destination the client dialed before iptables redirected it here.
/// IPv4 (including IPv4 on a dual-stack socket) is asked with `SO_ORIGINAL_DST`,
/// IPv6 with `IP6T_SO_ORIGINAL_DST`; IPv4-mapped addresses come back as IPv4.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let v4 = || sock.original_dst_v4();
    let v6 = || sock.original_dst_v6();
    // A dual-stack socket may hold either family: ask the likely one first.
    let v4_first = stream
        .local_addr()
        .map(|a| a.ip().to_canonical().is_ipv4())
        .unwrap_or(true);
    let addr = if v4_first {
        v4().or_else(|e| v6().map_err(|_| e))?
    } else {
        v6().or_else(|e| v4().map_err(|_| e))?
    };
    let addr = addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })?;
    Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// The original destination of a redirected connection, refusing one that
/// was not redirected.
pub fn redirected_destination(
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, CaptureError> {
    let original = original_dst(stream)
        .map_err(|source| CaptureError::NoOriginalDestination { peer, source })?;
    let local = stream
        .local_addr()
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .map_err(|source| CaptureError::NoOriginalDestination { peer, source })?;
    if original == local {
        return Err(CaptureError::NotRedirected { peer, local });
    }
    Ok(original)
}

/// Serves redirected outbound connections (`ProxyEgressPort`) until a drain starts.
pub async fn serve_egress(ctx: Arc<ProxyContext>, listener: TcpListener, drain: DrainWatch) {
    accept_until_drained(
        listener,
        drain,
        "capture egress",
        move |stream, peer, watch| {
            let ctx = ctx.clone();
            async move {
                let _ = ctx.config.socket.apply(&stream);
                match redirected_destination(&stream, peer) {
                    Ok(original) => egress(&ctx, stream, peer, original).await,
                    Err(e) => debug!(error = %e, "closing captured outbound connection"),
                }
                drop(watch);
            }
        },
    )
    .await;
}

/// Routes one redirected outbound connection to where the application sent it.
pub async fn egress(ctx: &ProxyContext, stream: TcpStream, peer: SocketAddr, original: SocketAddr) {
    upstreams::forward(ctx, stream, peer, &Target::Addr(original)).await;
}

/// Serves redirected inbound plaintext connections (`ProxyIngressPort`) until a
/// drain starts.
pub async fn serve_ingress(ctx: Arc<ProxyContext>, listener: TcpListener, drain: DrainWatch) {
    let leaks = Arc::new(LeakGuard::new());
    accept_until_drained(
        listener,
        drain,
        "capture ingress",
        move |stream, peer, watch| {
            let ctx = ctx.clone();
            let leaks = leaks.clone();
            async move {
                let _ = ctx.config.socket.apply(&stream);
                match redirected_destination(&stream, peer) {
                    Ok(original) => ingress(&ctx, &leaks, stream, peer, original).await,
                    Err(e) => debug!(error = %e, "closing captured inbound connection"),
                }
                drop(watch);
            }
        },
    )
    .await;
}

/// Authorizes one plaintext inbound connection (no peer identity) against the
/// local workload's policies and delivers it to the application port it was
/// sent to. Denied connections are closed.
pub async fn ingress(
    ctx: &ProxyContext,
    leaks: &LeakGuard,
    mut stream: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
) {
    let local = ctx.me.get();
    let src_ip = peer.ip().to_canonical();
    let source = ctx
        .mesh
        .read()
        .workload_by_address(&NetworkAddress::new(local.network.clone(), src_ip))
        .cloned();
    if let Some(source) = &source {
        leaks.check(ctx, source, peer, original);
    }
    let mut info = ConnectionInfo {
        reporter: Reporter::destination,
        src_addr: peer,
        src_workload: source,
        src_identity: None,
        dst_addr: None,
        dst_hbone_addr: None,
        dst_service: ctx
            .mesh
            .read()
            .guess_inbound_service(&local, original.port()),
        dst_workload: Some(local.clone()),
        dst_identity: local.identity(),
        mtls: false,
    };
    if ctx.config.illegal_ports.contains(&original.port()) {
        let msg = format!("port {} is one of the proxy's own ports", original.port());
        ctx.metrics.failed(info, ResponseFlags::Connect, &msg);
        return;
    }

    // Track first, so a policy push racing with this decision either is seen
    // here or re-evaluates this connection.
    let conn = Connection {
        src_ip,
        dst: original,
        src_identity: None,
    };
    let guard = ctx.tracker.track(conn);
    let decision = ctx.mesh.read().policies().evaluate(
        &zs_authz::Target::new(&local.namespace, &local.authorization_policies),
        guard.connection(),
    );
    if let Decision::Deny(reason) = decision {
        info!(src.addr = %peer, dst = %original, %reason, "plaintext connection denied by authorization policy");
        drop(guard);
        ctx.metrics
            .failed(info, ResponseFlags::Deny, &reason.to_string());
        return;
    }
    debug!(src.addr = %peer, dst = %original, "plaintext connection allowed by authorization policy");

    let app = match ctx.config.inbound_delivery {
        InboundDelivery::Loopback => SocketAddr::new(
            if original.is_ipv6() {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            },
            original.port(),
        ),
        InboundDelivery::TaskIp => original,
    };
    info.dst_addr = Some(app.to_string());
    let mut app_stream = match tokio::time::timeout(
        ctx.config.connect_timeout,
        ctx.config.socket.connect(app),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let msg = format!("connection to {app} failed: {e}");
            ctx.metrics.failed(info, ResponseFlags::Connect, &msg);
            return;
        }
        Err(_) => {
            let msg = format!("connection to {app} timed out");
            ctx.metrics.failed(info, ResponseFlags::Connect, &msg);
            return;
        }
    };

    let recorder = ctx.metrics.open(info);
    // a = the client's stream, b = the application.
    let observer = recorder.observer(false);
    tokio::select! {
        result = zs_hbone::copy::copy_bidirectional(&mut stream, &mut app_stream, &observer) => {
            match result {
                Ok(totals) => recorder.finish(totals, ResponseFlags::None, None),
                Err(e) => recorder.finish((0, 0), ResponseFlags::Connect, Some(&e.to_string())),
            }
        }
        () = guard.cancelled() => {
            ctx.metrics.policy_closed();
            recorder.finish((0, 0), ResponseFlags::Deny, Some("connection closed due to policy change"));
        }
    }
    drop(guard);
}

/// Counts plaintext connections from mesh workloads and rate-limits the
/// warning about them, per source workload.
#[derive(Debug, Default)]
pub struct LeakGuard {
    warned: parking_lot::Mutex<HashMap<Str, Instant>>,
}

impl LeakGuard {
    /// A guard that has warned about nobody yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A workload that speaks HBONE has a sidecar: plaintext from it bypassed
    /// the mesh. (A `TCP` workload is in the registry without one; plaintext is
    /// how it always talks.)
    fn check(&self, ctx: &ProxyContext, source: &Workload, peer: SocketAddr, dst: SocketAddr) {
        if source.protocol != InboundProtocol::HBONE {
            return;
        }
        ctx.metrics.mesh_bypass();
        if self.should_warn(&source.uid, Instant::now()) {
            warn!(
                src.addr = %peer,
                src.workload = %source.name,
                src.namespace = %source.namespace,
                dst = %dst,
                "a mesh workload connected to the application directly, bypassing its sidecar \
                 (no mTLS, no identity): make that client use its proxy settings"
            );
        }
    }

    /// Whether to warn about `workload` at `now`: the first time, then at most
    /// once per [`LEAK_WARNING_INTERVAL`].
    pub fn should_warn(&self, workload: &Str, now: Instant) -> bool {
        let mut warned = self.warned.lock();
        if let Some(last) = warned.get(workload)
            && now.saturating_duration_since(*last) < LEAK_WARNING_INTERVAL
        {
            return false;
        }
        // Forget the workloads whose interval has passed, so the map stays as
        // small as the set of recent offenders.
        if warned.len() >= 1024 {
            warned.retain(|_, t| now.saturating_duration_since(*t) < LEAK_WARNING_INTERVAL);
        }
        warned.insert(workload.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bypass_warning_repeats_only_after_the_interval() {
        let guard = LeakGuard::new();
        let t0 = Instant::now();
        let a: Str = "cluster1//Pod/ecs-demo-1/shell".into();
        let b: Str = "cluster1//Pod/ecs-demo-1/other".into();
        assert!(guard.should_warn(&a, t0));
        assert!(!guard.should_warn(&a, t0 + Duration::from_secs(599)));
        assert!(guard.should_warn(&b, t0 + Duration::from_secs(1)));
        assert!(guard.should_warn(&a, t0 + LEAK_WARNING_INTERVAL));
    }

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        // Without a NAT rule the kernel either has no original destination or
        // reports the listener itself; both are refusals.
        match redirected_destination(&stream, peer) {
            Err(CaptureError::NotRedirected { local, .. }) => assert_eq!(local, addr),
            Err(CaptureError::NoOriginalDestination { .. }) => {}
            Ok(a) => panic!("accepted an unredirected connection as going to {a}"),
        }
    }
}
