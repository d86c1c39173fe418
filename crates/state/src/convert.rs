//! Conversion between the xDS protobuf resources and the mesh model.
//!
//! Inbound (proto → model) applies the defaults istiod relies on ztunnel to fill
//! in (`cluster.local`, `default`, `Kubernetes`) and rejects what ztunnel rejects:
//! IP byte strings that are not 4 or 16 bytes, unknown enum values, the
//! `LEGACY_ISTIO_MTLS` tunnel, gateway references without a destination, and
//! malformed `namespace/hostname` keys. A rejected resource is NACKed by name;
//! it never aborts the rest of the push.
//!
//! Outbound (model → proto) exists for the local control plane, which serves a
//! YAML file over xDS.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use zs_proto::istio::workload as pb;

use crate::model::*;

/// Why an xDS resource could not be turned into the mesh model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("IP address must be 4 or 16 bytes, got {0}")]
    IpLength(usize),
    #[error("unknown value {value} for enum {field}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("unsupported tunnel protocol: legacy istio mtls")]
    LegacyIstioMtls,
    #[error("gateway address has no destination")]
    MissingGatewayDestination,
    #[error("{0:?} is not of the form <namespace>/<hostname>")]
    NamespacedHostname(String),
    #[error("invalid CIDR prefix length {length} for {ip}")]
    CidrLength { ip: IpAddr, length: u32 },
    #[error("port {0} is out of range")]
    Port(u32),
    #[error("routing preference must not be UNSPECIFIED_SCOPE")]
    UnspecifiedScope,
    #[error("address resource has neither a workload nor a service")]
    EmptyAddress,
    #[error("service {0:?} has a '/' in its namespace or hostname")]
    InvalidServiceName(String),
    #[error("failed to decode {type_url}: {reason}")]
    Decode { type_url: String, reason: String },
}

pub(crate) fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, ConversionError> {
    match b.len() {
        4 => Ok(IpAddr::from(
            <[u8; 4]>::try_from(b).expect("length checked"),
        )),
        16 => Ok(IpAddr::from(
            <[u8; 16]>::try_from(b).expect("length checked"),
        )),
        n => Err(ConversionError::IpLength(n)),
    }
}

fn ip_to_bytes(ip: IpAddr) -> Bytes {
    match ip {
        IpAddr::V4(v4) => Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => Bytes::copy_from_slice(&v6.octets()),
    }
}

fn port(p: u32) -> Result<u16, ConversionError> {
    u16::try_from(p).map_err(|_| ConversionError::Port(p))
}

fn enum_value<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<E, ConversionError> {
    E::try_from(value).map_err(|_| ConversionError::UnknownEnum { field, value })
}

fn or_default(s: String, default: &str) -> Str {
    if s.is_empty() {
        default.into()
    } else {
        s.into()
    }
}

fn port_map(ports: &[pb::Port]) -> Result<BTreeMap<u16, u16>, ConversionError> {
    ports
        .iter()
        .map(|p| Ok((port(p.service_port)?, port(p.target_port)?)))
        .collect()
}

fn gateway(g: &pb::GatewayAddress) -> Result<GatewayAddress, ConversionError> {
    let destination = match &g.destination {
        Some(pb::gateway_address::Destination::Address(a)) => GatewayDestination::Address(
            NetworkAddress::new(a.network.as_str(), ip_from_bytes(&a.address)?),
        ),
        Some(pb::gateway_address::Destination::Hostname(h)) => GatewayDestination::Hostname(
            NamespacedHostname::new(h.namespace.as_str(), h.hostname.as_str()),
        ),
        None => return Err(ConversionError::MissingGatewayDestination),
    };
    Ok(GatewayAddress {
        destination,
        hbone_mtls_port: port(g.hbone_mtls_port)?,
    })
}

/// The per-service port maps a workload carries (`Workload.services`).
pub type WorkloadServicePorts = BTreeMap<NamespacedHostname, BTreeMap<u16, u16>>;

/// Converts an xDS workload into the model, returning its per-service port maps alongside.
pub fn workload_from_proto(
    w: pb::Workload,
) -> Result<(Workload, WorkloadServicePorts), ConversionError> {
    let protocol = match enum_value::<pb::TunnelProtocol>("TunnelProtocol", w.tunnel_protocol)? {
        pb::TunnelProtocol::None => InboundProtocol::TCP,
        pb::TunnelProtocol::Hbone => InboundProtocol::HBONE,
        pb::TunnelProtocol::LegacyIstioMtls => return Err(ConversionError::LegacyIstioMtls),
    };
    let network_mode = match enum_value::<pb::NetworkMode>("NetworkMode", w.network_mode)? {
        pb::NetworkMode::Standard => NetworkMode::Standard,
        pb::NetworkMode::HostNetwork => NetworkMode::HostNetwork,
    };
    let status = match enum_value::<pb::WorkloadStatus>("WorkloadStatus", w.status)? {
        pb::WorkloadStatus::Healthy => HealthStatus::Healthy,
        pb::WorkloadStatus::Unhealthy => HealthStatus::Unhealthy,
    };
    let workload_type = enum_value::<pb::WorkloadType>("WorkloadType", w.workload_type)?
        .as_str_name()
        .to_ascii_lowercase();
    let application_tunnel = match &w.application_tunnel {
        Some(t) => Some(ApplicationTunnel {
            protocol: match enum_value::<pb::application_tunnel::Protocol>(
                "ApplicationTunnel.Protocol",
                t.protocol,
            )? {
                pb::application_tunnel::Protocol::None => AppTunnelProtocol::NONE,
                pb::application_tunnel::Protocol::Proxy => AppTunnelProtocol::PROXY,
            },
            port: match t.port {
                0 => None,
                p => Some(port(p)?),
            },
        }),
        None => None,
    };
    let mut services = BTreeMap::new();
    for (key, ports) in &w.services {
        let nh: NamespacedHostname = key
            .parse()
            .map_err(|_| ConversionError::NamespacedHostname(key.clone()))?;
        services.insert(nh, port_map(&ports.ports)?);
    }
    let workload = Workload {
        workload_ips: w
            .addresses
            .iter()
            .map(|a| ip_from_bytes(a))
            .collect::<Result<_, _>>()?,
        waypoint: w.waypoint.as_ref().map(gateway).transpose()?,
        network_gateway: w.network_gateway.as_ref().map(gateway).transpose()?,
        protocol,
        network_mode,
        uid: w.uid.into(),
        name: w.name.into(),
        namespace: w.namespace.into(),
        trust_domain: or_default(w.trust_domain, zs_identity::DEFAULT_TRUST_DOMAIN),
        service_account: or_default(w.service_account, "default"),
        network: w.network.into(),
        workload_name: w.workload_name.into(),
        workload_type: workload_type.into(),
        canonical_name: w.canonical_name.into(),
        canonical_revision: w.canonical_revision.into(),
        hostname: w.hostname.into(),
        node: w.node.into(),
        native_tunnel: w.native_tunnel,
        application_tunnel,
        authorization_policies: w
            .authorization_policies
            .into_iter()
            .map(Into::into)
            .collect(),
        status,
        cluster_id: or_default(w.cluster_id, "Kubernetes"),
        locality: w
            .locality
            .map(|l| Locality {
                region: l.region.into(),
                zone: l.zone.into(),
                subzone: l.subzone.into(),
            })
            .unwrap_or_default(),
        services: services.keys().cloned().collect(),
        capacity: w.capacity.unwrap_or(1),
    };
    Ok((workload, services))
}

/// Converts an xDS service into the model (with no endpoints: those come from workloads).
pub fn service_from_proto(s: pb::Service) -> Result<Service, ConversionError> {
    // Its resource name is `namespace/hostname`: with another '/' in either
    // part, a removal could never name it again.
    if s.namespace.contains('/') || s.hostname.contains('/') {
        return Err(ConversionError::InvalidServiceName(format!(
            "{}/{}",
            s.namespace, s.hostname
        )));
    }
    let mut vips = Vec::new();
    let mut cidr_vips = Vec::new();
    for a in &s.addresses {
        let ip = ip_from_bytes(&a.address)?;
        let full = if ip.is_ipv4() { 32 } else { 128 };
        match a.length {
            Some(length) if length != full => {
                let cidr = u8::try_from(length)
                    .ok()
                    .and_then(|l| ipnet::IpNet::new(ip, l).ok())
                    .ok_or(ConversionError::CidrLength { ip, length })?;
                cidr_vips.push(NetworkCidr {
                    network: a.network.as_str().into(),
                    cidr: cidr.trunc(),
                });
            }
            _ => vips.push(NetworkAddress::new(a.network.as_str(), ip)),
        }
    }
    let load_balancer = match &s.load_balancing {
        Some(lb) => Some(LoadBalancer {
            routing_preferences: lb
                .routing_preference
                .iter()
                .map(|&r| {
                    use pb::load_balancing::Scope as S;
                    Ok(match enum_value::<S>("LoadBalancing.Scope", r)? {
                        S::UnspecifiedScope => return Err(ConversionError::UnspecifiedScope),
                        S::Region => LoadBalancerScope::Region,
                        S::Zone => LoadBalancerScope::Zone,
                        S::Subzone => LoadBalancerScope::Subzone,
                        S::Node => LoadBalancerScope::Node,
                        S::Cluster => LoadBalancerScope::Cluster,
                        S::Network => LoadBalancerScope::Network,
                    })
                })
                .collect::<Result<_, _>>()?,
            mode: {
                use pb::load_balancing::Mode as M;
                match enum_value::<M>("LoadBalancing.Mode", lb.mode)? {
                    M::UnspecifiedMode => LoadBalancerMode::Standard,
                    M::Strict => LoadBalancerMode::Strict,
                    M::Failover => LoadBalancerMode::Failover,
                    M::Passthrough => LoadBalancerMode::Passthrough,
                }
            },
            health_policy: {
                use pb::load_balancing::HealthPolicy as H;
                match enum_value::<H>("LoadBalancing.HealthPolicy", lb.health_policy)? {
                    H::OnlyHealthy => LoadBalancerHealthPolicy::OnlyHealthy,
                    H::AllowAll => LoadBalancerHealthPolicy::AllowAll,
                }
            },
        }),
        None => None,
    };
    let ip_families = match enum_value::<pb::IpFamilies>("IPFamilies", s.ip_families)? {
        pb::IpFamilies::Automatic => None,
        pb::IpFamilies::Ipv4Only => Some(IpFamily::IPv4),
        pb::IpFamilies::Ipv6Only => Some(IpFamily::IPv6),
        pb::IpFamilies::Dual => Some(IpFamily::Dual),
    };
    let weighted_waypoints = s
        .weighted_waypoints
        .iter()
        .map(|w| {
            Ok(WeightedWaypoint {
                destination: gateway(
                    w.destination
                        .as_ref()
                        .ok_or(ConversionError::MissingGatewayDestination)?,
                )?,
                weight: w.weight,
            })
        })
        .collect::<Result<_, ConversionError>>()?;
    Ok(Service {
        name: s.name.into(),
        namespace: s.namespace.into(),
        hostname: s.hostname.into(),
        vips,
        cidr_vips,
        ports: port_map(&s.ports)?,
        endpoints: BTreeMap::new(),
        subject_alt_names: s.subject_alt_names.into_iter().map(Into::into).collect(),
        waypoint: s.waypoint.as_ref().map(gateway).transpose()?,
        weighted_waypoints,
        load_balancer,
        ip_families,
        canonical: s.canonical,
        // Unknown visibility values are treated as PUBLIC, as ztunnel does.
        visibility: if s.visibility == pb::service::Visibility::Namespace as i32 {
            Visibility::Namespace
        } else {
            Visibility::Public
        },
    })
}

fn gateway_to_proto(g: &GatewayAddress) -> pb::GatewayAddress {
    pb::GatewayAddress {
        destination: Some(match &g.destination {
            GatewayDestination::Address(a) => {
                pb::gateway_address::Destination::Address(pb::NetworkAddress {
                    network: a.network.to_string(),
                    address: ip_to_bytes(a.address).to_vec(),
                    length: None,
                })
            }
            GatewayDestination::Hostname(h) => {
                pb::gateway_address::Destination::Hostname(pb::NamespacedHostname {
                    namespace: h.namespace.to_string(),
                    hostname: h.hostname.to_string(),
                })
            }
        }),
        hbone_mtls_port: g.hbone_mtls_port.into(),
    }
}

fn ports_to_proto(ports: &BTreeMap<u16, u16>) -> Vec<pb::Port> {
    ports
        .iter()
        .map(|(&s, &t)| pb::Port {
            service_port: s.into(),
            target_port: t.into(),
            app_protocol: 0,
        })
        .collect()
}

/// Converts a model workload (and its per-service port maps) back into an xDS resource.
pub fn workload_to_proto(w: &Workload, services: &WorkloadServicePorts) -> pb::Workload {
    let workload_type = match &*w.workload_type {
        "cronjob" => pb::WorkloadType::Cronjob,
        "pod" => pb::WorkloadType::Pod,
        "job" => pb::WorkloadType::Job,
        _ => pb::WorkloadType::Deployment,
    };
    pb::Workload {
        uid: w.uid.to_string(),
        name: w.name.to_string(),
        namespace: w.namespace.to_string(),
        addresses: w.workload_ips.iter().map(|ip| ip_to_bytes(*ip)).collect(),
        hostname: w.hostname.to_string(),
        network: w.network.to_string(),
        tunnel_protocol: match w.protocol {
            InboundProtocol::TCP => pb::TunnelProtocol::None,
            InboundProtocol::HBONE => pb::TunnelProtocol::Hbone,
        } as i32,
        trust_domain: w.trust_domain.to_string(),
        service_account: w.service_account.to_string(),
        waypoint: w.waypoint.as_ref().map(gateway_to_proto),
        network_gateway: w.network_gateway.as_ref().map(gateway_to_proto),
        node: w.node.to_string(),
        canonical_name: w.canonical_name.to_string(),
        canonical_revision: w.canonical_revision.to_string(),
        workload_type: workload_type as i32,
        workload_name: w.workload_name.to_string(),
        native_tunnel: w.native_tunnel,
        application_tunnel: w
            .application_tunnel
            .as_ref()
            .map(|t| pb::ApplicationTunnel {
                protocol: match t.protocol {
                    AppTunnelProtocol::NONE => pb::application_tunnel::Protocol::None,
                    AppTunnelProtocol::PROXY => pb::application_tunnel::Protocol::Proxy,
                } as i32,
                port: t.port.unwrap_or(0).into(),
            }),
        services: services
            .iter()
            .map(|(k, ports)| {
                (
                    k.to_string(),
                    pb::PortList {
                        ports: ports_to_proto(ports),
                    },
                )
            })
            .collect(),
        authorization_policies: w
            .authorization_policies
            .iter()
            .map(|p| p.to_string())
            .collect(),
        status: match w.status {
            HealthStatus::Healthy => pb::WorkloadStatus::Healthy,
            HealthStatus::Unhealthy => pb::WorkloadStatus::Unhealthy,
        } as i32,
        cluster_id: w.cluster_id.to_string(),
        locality: (w.locality != Locality::default()).then(|| pb::Locality {
            region: w.locality.region.to_string(),
            zone: w.locality.zone.to_string(),
            subzone: w.locality.subzone.to_string(),
        }),
        network_mode: match w.network_mode {
            NetworkMode::Standard => pb::NetworkMode::Standard,
            NetworkMode::HostNetwork => pb::NetworkMode::HostNetwork,
        } as i32,
        extensions: Vec::new(),
        capacity: (w.capacity != 1).then_some(w.capacity),
    }
}

/// Converts a model service back into an xDS resource (endpoints are not part of it).
pub fn service_to_proto(s: &Service) -> pb::Service {
    let mut addresses: Vec<pb::NetworkAddress> = s
        .vips
        .iter()
        .map(|v| pb::NetworkAddress {
            network: v.network.to_string(),
            address: ip_to_bytes(v.address).to_vec(),
            length: None,
        })
        .collect();
    addresses.extend(s.cidr_vips.iter().map(|c| pb::NetworkAddress {
        network: c.network.to_string(),
        address: ip_to_bytes(c.cidr.addr()).to_vec(),
        length: Some(c.cidr.prefix_len().into()),
    }));
    pb::Service {
        name: s.name.to_string(),
        namespace: s.namespace.to_string(),
        hostname: s.hostname.to_string(),
        addresses,
        ports: ports_to_proto(&s.ports),
        subject_alt_names: s.subject_alt_names.iter().map(|x| x.to_string()).collect(),
        waypoint: s.waypoint.as_ref().map(gateway_to_proto),
        load_balancing: s.load_balancer.as_ref().map(|lb| pb::LoadBalancing {
            routing_preference: lb
                .routing_preferences
                .iter()
                .map(|p| {
                    use pb::load_balancing::Scope as S;
                    (match p {
                        LoadBalancerScope::Region => S::Region,
                        LoadBalancerScope::Zone => S::Zone,
                        LoadBalancerScope::Subzone => S::Subzone,
                        LoadBalancerScope::Node => S::Node,
                        LoadBalancerScope::Cluster => S::Cluster,
                        LoadBalancerScope::Network => S::Network,
                    }) as i32
                })
                .collect(),
            mode: {
                use pb::load_balancing::Mode as M;
                (match lb.mode {
                    LoadBalancerMode::Standard => M::UnspecifiedMode,
                    LoadBalancerMode::Strict => M::Strict,
                    LoadBalancerMode::Failover => M::Failover,
                    LoadBalancerMode::Passthrough => M::Passthrough,
                }) as i32
            },
            health_policy: match lb.health_policy {
                LoadBalancerHealthPolicy::OnlyHealthy => {
                    pb::load_balancing::HealthPolicy::OnlyHealthy
                }
                LoadBalancerHealthPolicy::AllowAll => pb::load_balancing::HealthPolicy::AllowAll,
            } as i32,
        }),
        ip_families: match s.ip_families {
            None => pb::IpFamilies::Automatic,
            Some(IpFamily::IPv4) => pb::IpFamilies::Ipv4Only,
            Some(IpFamily::IPv6) => pb::IpFamilies::Ipv6Only,
            Some(IpFamily::Dual) => pb::IpFamilies::Dual,
        } as i32,
        extensions: Vec::new(),
        canonical: s.canonical,
        ingress_use_waypoint: false,
        weighted_waypoints: s
            .weighted_waypoints
            .iter()
            .map(|w| pb::WeightedWaypoint {
                destination: Some(gateway_to_proto(&w.destination)),
                weight: w.weight,
            })
            .collect(),
        visibility: match s.visibility {
            Visibility::Public => pb::service::Visibility::Public,
            Visibility::Namespace => pb::service::Visibility::Namespace,
        } as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_workload() -> pb::Workload {
        pb::Workload {
            uid: "cluster1//v1/Pod/ns/a".into(),
            name: "a".into(),
            namespace: "ns".into(),
            addresses: vec![Bytes::from_static(&[10, 0, 0, 1])],
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            services: [(
                "ns/echo.ns.svc.cluster.local".to_string(),
                pb::PortList {
                    ports: vec![pb::Port {
                        service_port: 80,
                        target_port: 8080,
                        app_protocol: 0,
                    }],
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn workload_conversion_fills_istio_defaults() {
        let (w, services) = workload_from_proto(pb_workload()).unwrap();
        assert_eq!(&*w.trust_domain, "cluster.local");
        assert_eq!(&*w.service_account, "default");
        assert_eq!(&*w.cluster_id, "Kubernetes");
        assert_eq!(&*w.workload_type, "deployment");
        assert_eq!(w.capacity, 1);
        assert_eq!(w.protocol, InboundProtocol::HBONE);
        assert_eq!(w.workload_ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let key = NamespacedHostname::new("ns", "echo.ns.svc.cluster.local");
        assert_eq!(w.services, vec![key.clone()]);
        assert_eq!(services[&key], BTreeMap::from([(80, 8080)]));
    }

    #[test]
    fn workload_with_a_five_byte_address_is_rejected() {
        let mut w = pb_workload();
        w.addresses.push(Bytes::from_static(&[1, 2, 3, 4, 5]));
        assert_eq!(
            workload_from_proto(w).unwrap_err(),
            ConversionError::IpLength(5)
        );
    }

    #[test]
    fn legacy_istio_mtls_workload_is_rejected() {
        let mut w = pb_workload();
        w.tunnel_protocol = pb::TunnelProtocol::LegacyIstioMtls as i32;
        assert_eq!(
            workload_from_proto(w).unwrap_err(),
            ConversionError::LegacyIstioMtls
        );
    }

    #[test]
    fn unknown_enum_value_is_rejected() {
        let mut w = pb_workload();
        w.status = 7;
        assert_eq!(
            workload_from_proto(w).unwrap_err(),
            ConversionError::UnknownEnum {
                field: "WorkloadStatus",
                value: 7
            }
        );
    }

    #[test]
    fn services_key_without_namespace_is_rejected() {
        let mut w = pb_workload();
        w.services.insert("nohost".into(), pb::PortList::default());
        assert!(matches!(
            workload_from_proto(w).unwrap_err(),
            ConversionError::NamespacedHostname(_)
        ));
    }

    #[test]
    fn gateway_without_destination_is_rejected() {
        let mut w = pb_workload();
        w.network_gateway = Some(pb::GatewayAddress {
            destination: None,
            hbone_mtls_port: 15008,
        });
        assert_eq!(
            workload_from_proto(w).unwrap_err(),
            ConversionError::MissingGatewayDestination
        );
    }

    #[test]
    fn service_address_with_short_prefix_is_a_cidr_vip() {
        let s = pb::Service {
            name: "s".into(),
            namespace: "ns".into(),
            hostname: "s.ns".into(),
            addresses: vec![
                pb::NetworkAddress {
                    network: "".into(),
                    address: vec![10, 1, 0, 0],
                    length: Some(16),
                },
                pb::NetworkAddress {
                    network: "".into(),
                    address: vec![10, 2, 0, 1],
                    length: Some(32),
                },
            ],
            ..Default::default()
        };
        let svc = service_from_proto(s).unwrap();
        assert_eq!(svc.vips, vec!["/10.2.0.1".parse().unwrap()]);
        assert_eq!(svc.cidr_vips[0].cidr, "10.1.0.0/16".parse().unwrap());
    }

    #[test]
    fn unspecified_routing_scope_rejects_the_service() {
        let s = pb::Service {
            load_balancing: Some(pb::LoadBalancing {
                routing_preference: vec![0],
                mode: 0,
                health_policy: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            service_from_proto(s).unwrap_err(),
            ConversionError::UnspecifiedScope
        );
    }

    #[test]
    fn service_name_with_a_slash_is_rejected() {
        let s = pb::Service {
            namespace: "ns".into(),
            hostname: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(
            service_from_proto(s).unwrap_err(),
            ConversionError::InvalidServiceName("ns/a/b".into())
        );
    }

    #[test]
    fn unknown_visibility_is_public() {
        let s = pb::Service {
            visibility: 9,
            ..Default::default()
        };
        assert_eq!(
            service_from_proto(s).unwrap().visibility,
            Visibility::Public
        );
    }

    #[test]
    fn workload_round_trips_through_proto() {
        let (w, services) = workload_from_proto(pb_workload()).unwrap();
        let back = workload_to_proto(&w, &services);
        let (w2, services2) = workload_from_proto(back).unwrap();
        assert_eq!(w, w2);
        assert_eq!(services, services2);
    }

    #[test]
    fn service_round_trips_through_proto() {
        let mut s = Service::new("ns", "s", "s.ns.svc.cluster.local");
        s.vips = vec!["net1/10.0.0.9".parse().unwrap()];
        s.ports = BTreeMap::from([(80, 8080)]);
        s.subject_alt_names = vec!["spiffe://cluster.local/ns/ns/sa/s".into()];
        s.load_balancer = Some(LoadBalancer {
            routing_preferences: vec![LoadBalancerScope::Network, LoadBalancerScope::Region],
            mode: LoadBalancerMode::Failover,
            health_policy: LoadBalancerHealthPolicy::AllowAll,
        });
        s.waypoint = Some(GatewayAddress {
            destination: GatewayDestination::Hostname(NamespacedHostname::new("ns", "wp")),
            hbone_mtls_port: 15008,
        });
        let back = service_from_proto(service_to_proto(&s)).unwrap();
        assert_eq!(s, back);
    }
}
