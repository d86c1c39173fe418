//! Route decisions: where an outbound connection goes, and which local port an
//! inbound HBONE request reaches.
//!
//! Outbound, for a destination `D` the client asked for (an IP and port, or a
//! mesh service found by hostname), following ztunnel's procedure:
//!
//! 1. `D`'s IP on the source's network is a workload, else a service VIP; a
//!    hostname names the service directly. Nothing found: plain TCP passthrough.
//! 2. A service with a waypoint goes to the waypoint, with `D` as `:authority`.
//! 3. A service is load-balanced to one endpoint (health, locality, capacity);
//!    a `PASSTHROUGH` service goes to `D` as plain TCP.
//! 4. An endpoint on another network is reached by double HBONE through its
//!    network gateway; a workload addressed directly with a waypoint goes there.
//! 5. Otherwise HBONE to `<endpoint IP>:15008` with `:authority`
//!    `<endpoint IP>:<target port>`, or plain TCP for non-HBONE workloads.
//!
//! Everything here is a pure function of the state, the request and a random
//! number generator, so tests can pin every choice.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::Rng;
use zs_identity::Identity;

use crate::lb_cache::{self, Tier};
use crate::model::*;
use crate::store::MeshState;

/// The port every ztunnel (and this sidecar) accepts HBONE on.
pub const HBONE_PORT: u16 = 15008;

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An address the client dialed (or that DNS returned for a non-mesh name).
    Addr(SocketAddr),
    /// A mesh service found by hostname, with the service port the client asked for.
    Service { key: NamespacedHostname, port: u16 },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Addr(a) => write!(f, "{a}"),
            Destination::Service { key, port } => write!(f, "{}:{port}", key.hostname),
        }
    }
}

/// One outbound route request.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    /// The workload sending (this sidecar's own workload).
    pub source: &'a Workload,
    pub destination: &'a Destination,
    /// Endpoint UIDs that already failed to connect for this request.
    pub exclude: &'a [Str],
}

/// Where to open a TCP connection: an IP, or a hostname to resolve at connect time
/// (workloads that only have a `hostname`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamAddr {
    Ip(SocketAddr),
    Host { hostname: Str, port: u16 },
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Ip(a) => write!(f, "{a}"),
            UpstreamAddr::Host { hostname, port } => write!(f, "{hostname}:{port}"),
        }
    }
}

/// The `:authority` of a CONNECT: `ip:port` (IPv6 bracketed) or `hostname:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    Addr(SocketAddr),
    Host { hostname: Str, port: u16 },
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::Addr(a) => write!(f, "{a}"),
            Authority::Host { hostname, port } => write!(f, "{hostname}:{port}"),
        }
    }
}

/// An HBONE next hop: where to dial and which server identities to accept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HboneHop {
    pub addr: UpstreamAddr,
    /// Accept the server if any of its SPIFFE identities is in this list.
    pub identities: Vec<Identity>,
}

/// How to carry the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Not in the mesh: plain TCP to the address the client asked for.
    Passthrough(UpstreamAddr),
    /// A mesh workload that does not speak HBONE: plain TCP to it.
    Tcp(UpstreamAddr),
    /// One HBONE hop (direct to the workload's ztunnel, or to a waypoint).
    Hbone { hop: HboneHop, authority: Authority },
    /// Double HBONE through an east-west gateway: an outer CONNECT to the gateway,
    /// inside it TLS to the final hop, accepted only with the service's SANs.
    DoubleHbone {
        gateway: HboneHop,
        authority: Authority,
        inner_identities: Vec<Identity>,
    },
}

/// A route decision with what metrics and logs need about the destination.
#[derive(Clone, Debug)]
pub struct Route {
    pub kind: RouteKind,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_service: Option<ServiceDescription>,
    /// The chosen service endpoint (workload UID), to exclude it on a connect retry.
    pub endpoint: Option<Str>,
    /// True when the next hop is a waypoint rather than the destination.
    pub via_waypoint: bool,
}

/// Why no route could be found. Each maps to a clear client-visible failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("service {0} is not known (or not visible to this workload)")]
    UnknownService(NamespacedHostname),
    #[error("service {service} has no port {port}")]
    NoServicePort { service: Str, port: u16 },
    #[error("no healthy upstream for service {service}")]
    NoHealthyUpstream { service: Str },
    #[error("unknown waypoint {0}")]
    UnknownWaypoint(String),
    #[error("unknown network gateway {0}")]
    UnknownNetworkGateway(String),
    #[error("workload {workload} is on network {network:?} and has no network gateway")]
    NoNetworkGateway { workload: Str, network: Str },
    #[error("workload {workload} has no usable address")]
    NoAddress { workload: Str },
}

/// The local application port an inbound HBONE request reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundTarget {
    /// The port to dial on the application (after service-port and app-tunnel mapping).
    pub port: u16,
    /// The destination as authorization sees it: local workload IP : target port.
    pub dst: SocketAddr,
    /// The service the client addressed, when known (hostname authority or `Forwarded; host=`).
    pub service: Option<ServiceDescription>,
}

/// Why an inbound CONNECT is refused (`BadRequest` → 400, the rest → 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("authority {authority} is not addressed to this workload ({local})")]
    WrongDestination {
        authority: SocketAddr,
        local: IpAddr,
    },
    #[error("no service {0} in the local namespace or visible to it")]
    UnknownService(Str),
    #[error("service {service} has no port {port} for this workload")]
    NoPort { service: Str, port: u16 },
    #[error("port {0} is reserved by the proxy")]
    IllegalPort(u16),
}

impl InboundError {
    /// Whether the request itself was malformed (HTTP 400) rather than unroutable (503).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, InboundError::WrongDestination { .. })
    }
}

enum Target<'a> {
    Workload(&'a Arc<Workload>, u16),
    Service(&'a Service, u16),
}

impl MeshState {
    /// Decides the route for one outbound connection.
    pub fn route(&self, req: RouteRequest<'_>, rng: &mut impl Rng) -> Result<Route, RouteError> {
        let src = req.source;
        let target = match req.destination {
            Destination::Addr(d) => {
                let na = NetworkAddress::new(src.network.clone(), d.ip().to_canonical());
                if let Some(wl) = self.workload_by_address(&na) {
                    Target::Workload(wl, d.port())
                } else if let Some(svc) = self.service_by_vip(&na, &src.namespace) {
                    Target::Service(svc, d.port())
                } else {
                    return Ok(plain(RouteKind::Passthrough(UpstreamAddr::Ip(*d))));
                }
            }
            Destination::Service { key, port } => match self.service(key) {
                Some(svc) if svc.visible_to(&src.namespace) => Target::Service(svc, *port),
                _ => return Err(RouteError::UnknownService(key.clone())),
            },
        };
        match target {
            Target::Service(svc, port) => self.route_service(req, svc, port, rng),
            Target::Workload(wl, port) => {
                if let Some(wp) = &wl.waypoint {
                    let authority = original_authority(req.destination, None);
                    if let Some(route) = self.via_waypoint(req, wp, authority, None, rng)? {
                        return Ok(Route {
                            dst_workload: Some(wl.clone()),
                            ..route
                        });
                    }
                }
                let dialed = match req.destination {
                    Destination::Addr(d) => Some(d.ip()),
                    Destination::Service { .. } => None,
                };
                self.route_to_workload(src, wl, port, None, dialed)
            }
        }
    }

    fn route_service(
        &self,
        req: RouteRequest<'_>,
        svc: &Service,
        port: u16,
        rng: &mut impl Rng,
    ) -> Result<Route, RouteError> {
        if let Some(wp) = pick_waypoint(svc, rng) {
            let authority = original_authority(req.destination, Some((svc, req.source)));
            if let Some(route) = self.via_waypoint(req, wp, authority, Some((svc, port)), rng)? {
                return Ok(Route {
                    dst_service: Some(svc.into()),
                    ..route
                });
            }
        }
        let passthrough = svc
            .load_balancer
            .as_ref()
            .is_some_and(|lb| lb.mode == LoadBalancerMode::Passthrough);
        if passthrough {
            let addr = match req.destination {
                Destination::Addr(d) => UpstreamAddr::Ip(*d),
                Destination::Service { .. } => UpstreamAddr::Host {
                    hostname: svc.hostname.clone(),
                    port,
                },
            };
            return Ok(Route {
                dst_service: Some(svc.into()),
                ..plain(RouteKind::Passthrough(addr))
            });
        }
        let (wl, target_port) =
            self.load_balance(req.source, svc, port, req.exclude, LbMode::Standard, rng)?;
        let dialed = match req.destination {
            Destination::Addr(d) => Some(d.ip()),
            Destination::Service { .. } => None,
        };
        let mut route =
            self.route_to_workload(req.source, &wl, target_port, Some((svc, port)), dialed)?;
        route.endpoint = Some(wl.uid.clone());
        Ok(route)
    }

    /// Direct route to a chosen workload: HBONE, plain TCP, or double HBONE when it
    /// is on another network. `service` is the service it was chosen from (with the
    /// service port the client used), when service-addressed.
    fn route_to_workload(
        &self,
        src: &Workload,
        wl: &Arc<Workload>,
        target_port: u16,
        service: Option<(&Service, u16)>,
        dialed: Option<IpAddr>,
    ) -> Result<Route, RouteError> {
        let dst_service = service.map(|(s, _)| ServiceDescription::from(s));
        if wl.network != src.network
            && let Some((svc, svc_port)) = service
        {
            {
                let gw =
                    wl.network_gateway
                        .as_ref()
                        .ok_or_else(|| RouteError::NoNetworkGateway {
                            workload: wl.uid.clone(),
                            network: wl.network.clone(),
                        })?;
                let gateway = self.resolve_gateway(src, gw, GatewayKind::Network)?;
                return Ok(Route {
                    kind: RouteKind::DoubleHbone {
                        gateway,
                        authority: Authority::Host {
                            hostname: svc.hostname.clone(),
                            port: svc_port,
                        },
                        inner_identities: svc.san_identities().collect(),
                    },
                    dst_workload: Some(wl.clone()),
                    dst_service,
                    endpoint: None,
                    via_waypoint: false,
                });
            }
        }
        let families = service.and_then(|(s, _)| s.ip_families);
        let addr = choose_address(wl, target_port, families, dialed)?;
        let kind = match wl.protocol {
            InboundProtocol::HBONE => {
                let mut identities: Vec<Identity> = service
                    .map(|(s, _)| s.san_identities().collect())
                    .unwrap_or_default();
                if let Some(id) = wl.identity()
                    && !identities.contains(&id)
                {
                    identities.push(id);
                }
                let (hop_addr, authority) = match addr {
                    UpstreamAddr::Ip(a) => (
                        UpstreamAddr::Ip(SocketAddr::new(a.ip(), HBONE_PORT)),
                        Authority::Addr(a),
                    ),
                    UpstreamAddr::Host { hostname, port } => (
                        UpstreamAddr::Host {
                            hostname: hostname.clone(),
                            port: HBONE_PORT,
                        },
                        Authority::Host { hostname, port },
                    ),
                };
                RouteKind::Hbone {
                    hop: HboneHop {
                        addr: hop_addr,
                        identities,
                    },
                    authority,
                }
            }
            InboundProtocol::TCP => RouteKind::Tcp(addr),
        };
        Ok(Route {
            kind,
            dst_workload: Some(wl.clone()),
            dst_service,
            endpoint: None,
            via_waypoint: false,
        })
    }

    /// Routes through a waypoint. Returns `None` when the waypoint is this very
    /// workload (a waypoint's own traffic goes direct). `service` is the service
    /// the client addressed and the port it used, when it addressed one.
    fn via_waypoint(
        &self,
        req: RouteRequest<'_>,
        wp: &GatewayAddress,
        authority: Authority,
        service: Option<(&Service, u16)>,
        rng: &mut impl Rng,
    ) -> Result<Option<Route>, RouteError> {
        let src = req.source;
        let (wl, port, svc) = self.resolve_gateway_endpoint(src, wp, GatewayKind::Waypoint, rng)?;
        if let Some(wl) = &wl
            && wl.uid == src.uid
            && !src.uid.is_empty()
        {
            return Ok(None);
        }
        let identities = gateway_identities(svc, wl.as_deref());
        let kind = match &wl {
            Some(w) if w.network != src.network => {
                let svc = svc.ok_or_else(|| RouteError::NoNetworkGateway {
                    workload: w.uid.clone(),
                    network: w.network.clone(),
                })?;
                let gw =
                    w.network_gateway
                        .as_ref()
                        .ok_or_else(|| RouteError::NoNetworkGateway {
                            workload: w.uid.clone(),
                            network: w.network.clone(),
                        })?;
                // As ztunnel: the gateway is asked for the service the client
                // wanted (it hands it to that service's waypoint on its side);
                // the inner session is with the waypoint's service.
                let authority = match service {
                    Some((target, port)) => Authority::Host {
                        hostname: target.hostname.clone(),
                        port,
                    },
                    None => Authority::Host {
                        hostname: svc.hostname.clone(),
                        port: wp.hbone_mtls_port,
                    },
                };
                RouteKind::DoubleHbone {
                    gateway: self.resolve_gateway(src, gw, GatewayKind::Network)?,
                    authority,
                    inner_identities: svc.san_identities().collect(),
                }
            }
            _ => RouteKind::Hbone {
                hop: HboneHop {
                    addr: port,
                    identities,
                },
                authority,
            },
        };
        Ok(Some(Route {
            kind,
            dst_workload: None,
            dst_service: None,
            endpoint: None,
            via_waypoint: true,
        }))
    }

    /// Resolves a network gateway to an HBONE hop (address + accepted identities).
    fn resolve_gateway(
        &self,
        src: &Workload,
        gw: &GatewayAddress,
        kind: GatewayKind,
    ) -> Result<HboneHop, RouteError> {
        // Gateways are chosen with a fixed RNG seed per call site only in tests; use a
        // thread-local generator here, as the choice among gateway replicas is not
        // something callers need to pin.
        let mut rng = rand::rng();
        let (wl, addr, svc) = self.resolve_gateway_endpoint(src, gw, kind, &mut rng)?;
        Ok(HboneHop {
            addr,
            identities: gateway_identities(svc, wl.as_deref()),
        })
    }

    /// Finds the workload (if known), the address to dial, and the service it was
    /// found through (if any) for a waypoint or gateway reference.
    fn resolve_gateway_endpoint<'s>(
        &'s self,
        src: &Workload,
        gw: &GatewayAddress,
        kind: GatewayKind,
        rng: &mut impl Rng,
    ) -> Result<GatewayEndpoint<'s>, RouteError> {
        let unknown = || match kind {
            GatewayKind::Waypoint => RouteError::UnknownWaypoint(gw_name(gw)),
            GatewayKind::Network => RouteError::UnknownNetworkGateway(gw_name(gw)),
        };
        let port = gw.hbone_mtls_port;
        // Found as a workload (dialed at the gateway port) or as a service
        // (load-balanced with the gateway port as service port). Either way the
        // chosen workload's own IP is dialed, preferring the referenced IP.
        let (wl, target, svc, referenced_ip) = match &gw.destination {
            GatewayDestination::Address(na) => {
                if let Some(wl) = self.workload_by_address(na) {
                    (wl.clone(), port, None, Some(na.address))
                } else if let Some(svc) = self.service_by_vip(na, &src.namespace) {
                    let (wl, target) =
                        self.load_balance(src, svc, port, &[], LbMode::Gateway, rng)?;
                    (wl, target, Some(svc), Some(na.address))
                } else {
                    return Err(unknown());
                }
            }
            GatewayDestination::Hostname(nh) => {
                if let Some(svc) = self.service(nh) {
                    let (wl, target) =
                        self.load_balance(src, svc, port, &[], LbMode::Gateway, rng)?;
                    (wl, target, Some(svc), None)
                } else if let Some(wl) = self.workload_by_hostname(nh) {
                    (wl.clone(), port, None, None)
                } else {
                    return Err(unknown());
                }
            }
        };
        let addr = choose_address(&wl, target, svc.and_then(|s| s.ip_families), referenced_ip)?;
        Ok((Some(wl), addr, svc))
    }

    /// Chooses one endpoint of `svc` for `svc_port`: healthy (per health policy),
    /// reachable, with a target port; ranked by locality under the service's mode;
    /// weighted by capacity. Returns the workload and the target port.
    pub fn load_balance(
        &self,
        src: &Workload,
        svc: &Service,
        svc_port: u16,
        exclude: &[Str],
        mode: LbMode,
        rng: &mut impl Rng,
    ) -> Result<(Arc<Workload>, u16), RouteError> {
        let service_target = svc.ports.get(&svc_port).copied();
        if mode == LbMode::Standard && service_target.is_none() {
            return Err(RouteError::NoServicePort {
                service: svc.hostname.clone(),
                port: svc_port,
            });
        }
        // Large services: the tier for this source is memoized until the
        // state changes (retries that exclude endpoints compute it afresh).
        let cacheable = exclude.is_empty() && svc.endpoints.len() >= lb_cache::MIN_ENDPOINTS;
        let key = cacheable.then(|| (svc.key(), svc_port, mode));
        if let Some(key) = &key
            && let Some(tier) = self.lb_cache().get(key, src)
        {
            return Ok(tier.pick(rng));
        }
        let tier = Tier::new(self.best_tier(src, svc, svc_port, service_target, exclude))
            .ok_or_else(|| RouteError::NoHealthyUpstream {
                service: svc.hostname.clone(),
            })?;
        let picked = tier.pick(rng);
        if let Some(key) = key {
            self.lb_cache().put(key, src, Arc::new(tier));
        }
        Ok(picked)
    }

    /// The endpoints of `svc` that may serve `svc_port` for `src`, in the
    /// service's endpoint order, keeping only the best locality rank: healthy
    /// (per health policy), reachable, with a target port.
    fn best_tier(
        &self,
        src: &Workload,
        svc: &Service,
        svc_port: u16,
        service_target: Option<u16>,
        exclude: &[Str],
    ) -> Vec<(Arc<Workload>, u16)> {
        let lb = svc.load_balancer.as_ref();
        let ranked = lb.filter(|lb| {
            matches!(
                lb.mode,
                LoadBalancerMode::Strict | LoadBalancerMode::Failover
            ) && !lb.routing_preferences.is_empty()
        });
        let mut best_rank = 0usize;
        let mut candidates: Vec<(&Arc<Workload>, u16, usize)> = Vec::new();
        for (uid, ep) in &svc.endpoints {
            if exclude.contains(uid) {
                continue;
            }
            let Some(wl) = self.workload(uid) else {
                continue;
            };
            if !svc.admits(wl.status) {
                continue;
            }
            let has_address = !wl.workload_ips.is_empty() || !wl.hostname.is_empty();
            if !has_address && (wl.network == src.network || wl.network_gateway.is_none()) {
                continue;
            }
            let target = match (ep.port.get(&svc_port), service_target) {
                (Some(&p), _) if p != 0 => p,
                (_, Some(p)) if p != 0 => p,
                _ if wl
                    .application_tunnel
                    .as_ref()
                    .is_some_and(|t| t.port.is_some()) =>
                {
                    svc_port
                }
                _ => continue,
            };
            let rank = match ranked {
                Some(lb) => match locality_rank(src, wl, lb) {
                    Some(r) => r,
                    None => continue, // STRICT and not matching every preference
                },
                None => 0,
            };
            if rank > best_rank {
                best_rank = rank;
                candidates.retain(|c| c.2 >= rank);
            } else if rank < best_rank {
                continue;
            }
            candidates.push((wl, target, rank));
        }
        candidates
            .into_iter()
            .map(|(wl, target, _)| (wl.clone(), target))
            .collect()
    }

    /// The local application port for an inbound CONNECT to this workload.
    ///
    /// `authority` is the CONNECT target, `conn_dst` the IP the HBONE connection was
    /// addressed to, and `illegal_ports` the proxy's own ports.
    pub fn inbound_target(
        &self,
        local: &Workload,
        authority: &Authority,
        conn_dst: IpAddr,
        illegal_ports: &[u16],
    ) -> Result<InboundTarget, InboundError> {
        let conn_dst = conn_dst.to_canonical();
        let (port, service) = match authority {
            Authority::Addr(a) => {
                let ip = a.ip().to_canonical();
                if ip != conn_dst
                    && local.application_tunnel.is_none()
                    && !self.waypoint_serves(local, ip)
                {
                    return Err(InboundError::WrongDestination {
                        authority: *a,
                        local: conn_dst,
                    });
                }
                (a.port(), None)
            }
            Authority::Host { hostname, port } => {
                let svc = self
                    .services_by_hostname(hostname, &local.namespace)
                    .ok_or_else(|| InboundError::UnknownService(hostname.clone()))?;
                let endpoint_port = svc
                    .endpoints
                    .get(&local.uid)
                    .and_then(|ep| ep.port.get(port))
                    .copied()
                    .filter(|p| *p != 0);
                let target = endpoint_port
                    .or_else(|| svc.ports.get(port).copied().filter(|p| *p != 0))
                    .ok_or_else(|| InboundError::NoPort {
                        service: svc.hostname.clone(),
                        port: *port,
                    })?;
                (target, Some(ServiceDescription::from(svc)))
            }
        };
        let port = local
            .application_tunnel
            .as_ref()
            .and_then(|t| t.port)
            .unwrap_or(port);
        if illegal_ports.contains(&port) {
            return Err(InboundError::IllegalPort(port));
        }
        Ok(InboundTarget {
            port,
            dst: SocketAddr::new(conn_dst, port),
            service,
        })
    }

    /// Whether `ip` names a service or workload whose waypoint is `local`.
    fn waypoint_serves(&self, local: &Workload, ip: IpAddr) -> bool {
        let na = NetworkAddress::new(local.network.clone(), ip);
        let waypoint = if let Some(wl) = self.workload_by_address(&na) {
            wl.waypoint.clone()
        } else if let Some(svc) = self.service_by_vip(&na, &local.namespace) {
            svc.waypoint.clone()
        } else {
            None
        };
        let Some(wp) = waypoint else { return false };
        match &wp.destination {
            GatewayDestination::Hostname(nh) => {
                self.service(nh)
                    .is_some_and(|s| s.endpoints.contains_key(&local.uid))
                    || self
                        .workload_by_hostname(nh)
                        .is_some_and(|w| w.uid == local.uid)
            }
            GatewayDestination::Address(na) => {
                self.service_by_vip(na, &local.namespace)
                    .is_some_and(|s| s.endpoints.contains_key(&local.uid))
                    || local.workload_ips.contains(&na.address)
            }
        }
    }

    /// The service a plain inbound connection to `port` most likely targeted: the
    /// first service of `local` whose target port (or endpoint mapping) equals it.
    pub fn guess_inbound_service(&self, local: &Workload, port: u16) -> Option<ServiceDescription> {
        local.services.iter().find_map(|key| {
            let svc = self.service(key)?;
            let ep = svc.endpoints.get(&local.uid);
            let matches = svc.ports.iter().any(|(sp, tp)| {
                *tp == port || ep.and_then(|e| e.port.get(sp)).is_some_and(|p| *p == port)
            });
            matches.then(|| ServiceDescription::from(svc))
        })
    }
}

/// Endpoint selection for a user-addressed service, or for a waypoint/gateway
/// service (whose port need not be declared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbMode {
    Standard,
    Gateway,
}

/// A resolved waypoint or gateway: its workload, the address to dial, and the
/// service it was found through.
type GatewayEndpoint<'s> = (Option<Arc<Workload>>, UpstreamAddr, Option<&'s Service>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GatewayKind {
    Waypoint,
    Network,
}

fn plain(kind: RouteKind) -> Route {
    Route {
        kind,
        dst_workload: None,
        dst_service: None,
        endpoint: None,
        via_waypoint: false,
    }
}

fn gw_name(gw: &GatewayAddress) -> String {
    match &gw.destination {
        GatewayDestination::Address(a) => a.to_string(),
        GatewayDestination::Hostname(h) => h.to_string(),
    }
}

fn gateway_identities(svc: Option<&Service>, wl: Option<&Workload>) -> Vec<Identity> {
    let mut ids: Vec<Identity> = svc
        .map(|s| s.san_identities().collect())
        .unwrap_or_default();
    if let Some(id) = wl.and_then(Workload::identity)
        && !ids.contains(&id)
    {
        ids.push(id);
    }
    ids
}

/// The waypoint to use for a service: a weighted choice when `weighted_waypoints`
/// can be sampled (some weight > 0), else `waypoint`.
fn pick_waypoint<'a>(svc: &'a Service, rng: &mut impl Rng) -> Option<&'a GatewayAddress> {
    let total: u64 = svc
        .weighted_waypoints
        .iter()
        .map(|w| u64::from(w.weight))
        .sum();
    if total > 0 {
        let mut pick = rng.random_range(0..total);
        for w in &svc.weighted_waypoints {
            let weight = u64::from(w.weight);
            if pick < weight {
                return Some(&w.destination);
            }
            pick -= weight;
        }
    }
    svc.waypoint.as_ref()
}

/// The `:authority` a waypoint receives: the original destination. A hostname
/// destination is expressed as the service's VIP on the client's network when it
/// has one (what the client would have dialed after DNS), else as `hostname:port`.
fn original_authority(dst: &Destination, svc: Option<(&Service, &Workload)>) -> Authority {
    match dst {
        Destination::Addr(a) => Authority::Addr(*a),
        Destination::Service { key, port } => {
            let vip = svc.and_then(|(s, src)| {
                let on_net = s.vips.iter().filter(|v| v.network == src.network);
                on_net
                    .clone()
                    .find(|v| v.address.is_ipv4())
                    .or_else(|| on_net.clone().next())
                    .map(|v| v.address)
            });
            match vip {
                Some(ip) => Authority::Addr(SocketAddr::new(ip, *port)),
                None => Authority::Host {
                    hostname: key.hostname.clone(),
                    port: *port,
                },
            }
        }
    }
}

/// Which of a workload's addresses to use: the one the client dialed if it is the
/// workload's; else one allowed by the service's IP families, preferring the
/// dialed family (IPv4 when unknown); else its hostname.
fn choose_address(
    wl: &Workload,
    port: u16,
    families: Option<IpFamily>,
    dialed: Option<IpAddr>,
) -> Result<UpstreamAddr, RouteError> {
    if let Some(d) = dialed
        && wl.workload_ips.contains(&d)
    {
        return Ok(UpstreamAddr::Ip(SocketAddr::new(d, port)));
    }
    let want_v6 = dialed.is_some_and(|d| d.is_ipv6());
    let allowed = wl
        .workload_ips
        .iter()
        .filter(|ip| families.is_none_or(|f| f.accepts(**ip)));
    let ip = allowed
        .clone()
        .find(|ip| ip.is_ipv6() == want_v6)
        .or_else(|| allowed.clone().next());
    match ip {
        Some(ip) => Ok(UpstreamAddr::Ip(SocketAddr::new(*ip, port))),
        None if !wl.hostname.is_empty() => Ok(UpstreamAddr::Host {
            hostname: wl.hostname.clone(),
            port,
        }),
        None => Err(RouteError::NoAddress {
            workload: wl.uid.clone(),
        }),
    }
}

/// ztunnel's locality rank: consecutive routing preferences matched, in order.
/// With NETWORK as the first preference a network mismatch is skipped (later
/// scopes still count) and a network match adds `len - 1`, so same-network
/// endpoints always win. `None` = excluded by STRICT.
fn locality_rank(src: &Workload, wl: &Workload, lb: &LoadBalancer) -> Option<usize> {
    let prefs = &lb.routing_preferences;
    let network_first = prefs.first() == Some(&LoadBalancerScope::Network);
    let mut rank = 0;
    let mut bonus = 0;
    for scope in prefs {
        let matched = match scope {
            LoadBalancerScope::Region => src.locality.region == wl.locality.region,
            LoadBalancerScope::Zone => src.locality.zone == wl.locality.zone,
            LoadBalancerScope::Subzone => src.locality.subzone == wl.locality.subzone,
            LoadBalancerScope::Node => src.node == wl.node,
            LoadBalancerScope::Cluster => src.cluster_id == wl.cluster_id,
            LoadBalancerScope::Network => {
                let m = src.network == wl.network;
                if network_first {
                    if !m {
                        continue;
                    }
                    bonus = prefs.len() - 1;
                }
                m
            }
        };
        if !matched {
            break;
        }
        rank += 1;
    }
    if lb.mode == LoadBalancerMode::Strict && rank != prefs.len() {
        return None;
    }
    Some(rank + bonus)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
