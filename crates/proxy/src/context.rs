//! What every listener shares: the mesh state, this workload's identity and
//! certificate, the HBONE pools, DNS, metrics, and the proxy's settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use zs_hbone::socket::SocketOptions;
use zs_hbone::{H2Config, Pool};
use zs_state::{MeshState, NameConfig, SharedMesh, Str, Workload};
use zs_tls::{CertificateHandle, TlsOptions};

use crate::dns::Resolver;
use crate::metrics::TrafficMetrics;
use crate::outbound::InnerPool;
use crate::tracker::ConnectionTracker;

/// Outbound traffic to destinations outside the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Plain TCP passthrough, as ztunnel does.
    AllowAny,
    /// Refused: only mesh destinations are reachable.
    RegistryOnly,
}

/// Where inbound mesh traffic is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundDelivery {
    /// `127.0.0.1:<port>` (or `::1`): an app bound only to loopback is reachable
    /// solely through the mesh, with mTLS and policy.
    Loopback,
    /// The IP the HBONE connection arrived on (ztunnel's behaviour).
    TaskIp,
}

/// The proxy's settings (from the binary's configuration).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub names: NameConfig,
    pub tls: TlsOptions,
    pub h2: H2Config,
    pub outbound_policy: OutboundPolicy,
    pub inbound_delivery: InboundDelivery,
    /// Ports no inbound request may target and no client may loop back into.
    pub illegal_ports: Vec<u16>,
    /// Options for sockets the proxy opens.
    pub socket: SocketOptions,
    /// TCP connect timeout for upstreams (10 s, as ztunnel).
    pub connect_timeout: Duration,
    /// Send `baggage` on inbound 200 responses and read it from requests.
    pub response_baggage: bool,
    /// Log every policy decision at INFO instead of DEBUG.
    pub authz_info_logging: bool,
    /// HBONE pool settings.
    pub pool: zs_hbone::PoolConfig,
    /// The proxy's own listener addresses, which clients must not loop back into.
    pub own_listeners: Vec<SocketAddr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            names: NameConfig::default(),
            tls: TlsOptions::default(),
            h2: H2Config::default(),
            outbound_policy: OutboundPolicy::AllowAny,
            inbound_delivery: InboundDelivery::Loopback,
            illegal_ports: vec![15001, 15006, 15008, 15080, 15081],
            socket: SocketOptions::default(),
            connect_timeout: Duration::from_secs(10),
            response_baggage: true,
            authz_info_logging: false,
            pool: zs_hbone::PoolConfig::default(),
            own_listeners: Vec::new(),
        }
    }
}

/// This sidecar's own workload: the xDS record once istiod has sent it, else a
/// description built from configuration (so traffic can flow, with the right
/// identity, before or without that record).
#[derive(Debug)]
pub struct SelfWorkload {
    namespace: Str,
    name: Str,
    service_account: Str,
    fallback: Arc<Workload>,
    current: ArcSwap<Workload>,
}

impl SelfWorkload {
    /// `fallback` must carry the namespace, name and service account to look for.
    pub fn new(fallback: Workload) -> Self {
        let fallback = Arc::new(fallback);
        SelfWorkload {
            namespace: fallback.namespace.clone(),
            name: fallback.name.clone(),
            service_account: fallback.service_account.clone(),
            current: ArcSwap::new(fallback.clone()),
            fallback,
        }
    }

    /// The current record (cheap: an atomic load).
    pub fn get(&self) -> Arc<Workload> {
        self.current.load_full()
    }

    /// Whether istiod (or the local file) has described this workload.
    pub fn is_known(&self) -> bool {
        !Arc::ptr_eq(&self.current.load(), &self.fallback)
    }

    /// Looks this workload up again after a state change. Returns true if it changed.
    pub fn refresh(&self, state: &MeshState) -> bool {
        let found = state
            .find_workload(&self.namespace, &self.name, &self.service_account)
            .cloned()
            .unwrap_or_else(|| self.fallback.clone());
        let old = self.current.swap(found.clone());
        !Arc::ptr_eq(&old, &found)
    }
}

/// Everything the listeners share. Built once by the binary.
pub struct ProxyContext {
    pub config: ProxyConfig,
    pub mesh: SharedMesh,
    pub me: SelfWorkload,
    pub certs: CertificateHandle,
    pub pool: Pool,
    pub inner_pool: InnerPool,
    pub dns: Resolver,
    pub metrics: Arc<TrafficMetrics>,
    pub tracker: ConnectionTracker,
}

impl ProxyContext {
    /// A context with a fresh pool built from `config`.
    pub fn new(
        config: ProxyConfig,
        mesh: SharedMesh,
        me: SelfWorkload,
        certs: CertificateHandle,
        metrics: Arc<TrafficMetrics>,
        dns: Resolver,
    ) -> Arc<Self> {
        let pool = Pool::with_connector(
            config.h2.clone(),
            config.pool.clone(),
            zs_hbone::TcpConnector {
                options: config.socket.clone(),
            },
        );
        Arc::new(ProxyContext {
            inner_pool: InnerPool::new(config.pool.idle_timeout),
            config,
            mesh,
            me,
            certs,
            pool,
            dns,
            metrics,
            tracker: ConnectionTracker::new(),
        })
    }
}

impl std::fmt::Debug for ProxyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyContext")
            .field("config", &self.config)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context with an empty mesh and no certificate, for unit tests.
    pub(crate) fn context() -> Arc<ProxyContext> {
        let mut registry = prometheus_client::registry::Registry::default();
        ProxyContext::new(
            ProxyConfig::default(),
            SharedMesh::new(MeshState::new()),
            SelfWorkload::new(Workload::new("uid", "ns", "name", "sa")),
            CertificateHandle::new_empty(),
            TrafficMetrics::register(&mut registry),
            Resolver::from_system(),
        )
    }
}
