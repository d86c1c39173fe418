//! Route decisions, one behaviour per test, with literal expectations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use crate::convert::WorkloadServicePorts;

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Mesh {
    m: MeshState,
    src: Workload,
}

impl Mesh {
    fn new() -> Self {
        let mut src = Workload::new("src-uid", "client-ns", "client", "client-sa");
        src.workload_ips = vec!["10.0.0.100".parse().unwrap()];
        src.locality = Locality {
            region: "us-east-2".into(),
            zone: "us-east-2a".into(),
            subzone: "".into(),
        };
        Mesh {
            m: MeshState::new(),
            src,
        }
    }

    fn workload(&mut self, uid: &str, ip: &str, f: impl FnOnce(&mut Workload)) {
        let mut w = Workload::new(uid, "ns", uid, uid);
        if !ip.is_empty() {
            w.workload_ips = vec![ip.parse().unwrap()];
        }
        f(&mut w);
        self.m.insert_workload(w, WorkloadServicePorts::new());
    }

    fn endpoint(
        &mut self,
        uid: &str,
        ip: &str,
        svc: &str,
        ports: &[(u16, u16)],
        f: impl FnOnce(&mut Workload),
    ) {
        let mut w = Workload::new(uid, "ns", uid, uid);
        if !ip.is_empty() {
            w.workload_ips = vec![ip.parse().unwrap()];
        }
        let key: NamespacedHostname = svc.parse().unwrap();
        w.services = vec![key.clone()];
        f(&mut w);
        let mut p = WorkloadServicePorts::new();
        p.insert(key, ports.iter().copied().collect());
        self.m.insert_workload(w, p);
    }

    fn service(
        &mut self,
        host: &str,
        vip: &str,
        ports: &[(u16, u16)],
        f: impl FnOnce(&mut Service),
    ) {
        let mut s = Service::new("ns", host.split('.').next().unwrap(), host);
        if !vip.is_empty() {
            s.vips = vec![format!("/{vip}").parse().unwrap()];
        }
        s.ports = ports.iter().copied().collect();
        s.subject_alt_names =
            vec![format!("spiffe://cluster.local/ns/ns/sa/{}-san", s.name).into()];
        f(&mut s);
        self.m.insert_service(s);
    }

    fn route_with(
        &self,
        dst: Destination,
        exclude: &[Str],
        seed: u64,
    ) -> Result<Route, RouteError> {
        let mut rng = SmallRng::seed_from_u64(seed);
        self.m.route(
            RouteRequest {
                source: &self.src,
                destination: &dst,
                exclude,
            },
            &mut rng,
        )
    }

    fn route(&self, dst: Destination) -> Result<Route, RouteError> {
        self.route_with(dst, &[], 1)
    }

    /// Endpoint UIDs chosen over many seeds.
    fn chosen(&self, dst: Destination) -> BTreeSet<String> {
        (0..200)
            .filter_map(|seed| self.route_with(dst.clone(), &[], seed).ok())
            .filter_map(|r| r.dst_workload.map(|w| w.uid.to_string()))
            .collect()
    }
}

fn to(s: &str) -> Destination {
    Destination::Addr(addr(s))
}

fn hbone(hop: &str, authority: &str, ids: &[&str]) -> RouteKind {
    RouteKind::Hbone {
        hop: HboneHop {
            addr: UpstreamAddr::Ip(addr(hop)),
            identities: ids.iter().map(|s| id(s)).collect(),
        },
        authority: Authority::Addr(addr(authority)),
    }
}

#[test]
fn unknown_ip_is_passed_through_as_plain_tcp() {
    let mesh = Mesh::new();
    let r = mesh.route(to("93.184.216.34:443")).unwrap();
    assert_eq!(
        r.kind,
        RouteKind::Passthrough(UpstreamAddr::Ip(addr("93.184.216.34:443")))
    );
    assert!(r.dst_workload.is_none());
}

#[test]
fn hbone_workload_ip_goes_to_its_15008_with_ip_port_authority() {
    let mut mesh = Mesh::new();
    mesh.workload("w1", "10.0.0.1", |w| w.protocol = InboundProtocol::HBONE);
    let r = mesh.route(to("10.0.0.1:8080")).unwrap();
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.1:15008",
            "10.0.0.1:8080",
            &["spiffe://cluster.local/ns/ns/sa/w1"]
        )
    );
    assert_eq!(&*r.dst_workload.unwrap().uid, "w1");
}

#[test]
fn tcp_workload_gets_plain_tcp() {
    let mut mesh = Mesh::new();
    mesh.workload("w1", "10.0.0.1", |w| w.protocol = InboundProtocol::TCP);
    let r = mesh.route(to("10.0.0.1:8080")).unwrap();
    assert_eq!(
        r.kind,
        RouteKind::Tcp(UpstreamAddr::Ip(addr("10.0.0.1:8080")))
    );
}

#[test]
fn ipv6_workload_authority_is_bracketed() {
    let mut mesh = Mesh::new();
    mesh.workload("w6", "fd00::1", |_| {});
    let r = mesh.route(to("[fd00::1]:80")).unwrap();
    match r.kind {
        RouteKind::Hbone { hop, authority } => {
            assert_eq!(hop.addr.to_string(), "[fd00::1]:15008");
            assert_eq!(authority.to_string(), "[fd00::1]:80");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn service_vip_translates_to_the_target_port_and_accepts_service_sans() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "e1",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    let r = mesh.route(to("10.96.0.1:80")).unwrap();
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.1:15008",
            "10.0.0.1:8080",
            &[
                "spiffe://cluster.local/ns/ns/sa/echo-san",
                "spiffe://cluster.local/ns/ns/sa/e1"
            ]
        )
    );
    assert_eq!(r.endpoint.as_deref(), Some("e1"));
    assert_eq!(
        &*r.dst_service.unwrap().hostname,
        "echo.ns.svc.cluster.local"
    );
}

#[test]
fn endpoint_port_mapping_overrides_the_service_target_port() {
    let mut mesh = Mesh::new();
    mesh.service("echo.ns.svc.cluster.local", "10.96.0.1", &[(80, 0)], |_| {});
    mesh.endpoint(
        "named",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[(80, 9090)],
        |_| {},
    );
    mesh.endpoint(
        "unnamed",
        "10.0.0.2",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    // target port 0 and no endpoint mapping: that endpoint is unusable.
    assert_eq!(
        mesh.chosen(to("10.96.0.1:80")),
        BTreeSet::from(["named".to_string()])
    );
    let r = mesh.route(to("10.96.0.1:80")).unwrap();
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.1:15008",
            "10.0.0.1:9090",
            &[
                "spiffe://cluster.local/ns/ns/sa/echo-san",
                "spiffe://cluster.local/ns/ns/sa/named"
            ]
        )
    );
}

#[test]
fn port_not_on_the_service_is_an_error() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "e1",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    assert_eq!(
        mesh.route(to("10.96.0.1:81")).unwrap_err(),
        RouteError::NoServicePort {
            service: "echo.ns.svc.cluster.local".into(),
            port: 81
        }
    );
}

#[test]
fn unhealthy_endpoints_are_skipped_unless_the_service_allows_all() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "sick",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| w.status = HealthStatus::Unhealthy,
    );
    assert_eq!(
        mesh.route(to("10.96.0.1:80")).unwrap_err(),
        RouteError::NoHealthyUpstream {
            service: "echo.ns.svc.cluster.local".into()
        }
    );
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.load_balancer = Some(LoadBalancer {
                routing_preferences: vec![],
                mode: LoadBalancerMode::Standard,
                health_policy: LoadBalancerHealthPolicy::AllowAll,
            })
        },
    );
    assert_eq!(
        mesh.chosen(to("10.96.0.1:80")),
        BTreeSet::from(["sick".to_string()])
    );
}

#[test]
fn a_failed_endpoint_is_excluded_on_retry() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint("a", "10.0.0.1", "ns/echo.ns.svc.cluster.local", &[], |_| {});
    mesh.endpoint("b", "10.0.0.2", "ns/echo.ns.svc.cluster.local", &[], |_| {});
    for seed in 0..50 {
        let r = mesh
            .route_with(to("10.96.0.1:80"), &["a".into()], seed)
            .unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("b"));
    }
    assert!(matches!(
        mesh.route_with(to("10.96.0.1:80"), &["a".into(), "b".into()], 1),
        Err(RouteError::NoHealthyUpstream { .. })
    ));
}

#[test]
fn capacity_weights_the_choice_and_zero_capacity_is_never_chosen() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "zero",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| w.capacity = 0,
    );
    mesh.endpoint(
        "one",
        "10.0.0.2",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    mesh.endpoint(
        "three",
        "10.0.0.3",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| w.capacity = 3,
    );
    let mut counts = BTreeMap::new();
    for seed in 0..4000 {
        let r = mesh.route_with(to("10.96.0.1:80"), &[], seed).unwrap();
        *counts.entry(r.endpoint.unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("zero"), None);
    let ratio = f64::from(counts["three"]) / f64::from(counts["one"]);
    assert!((2.5..3.5).contains(&ratio), "three:one = {ratio}");
}

#[test]
fn passthrough_service_goes_to_the_dialed_address() {
    let mut mesh = Mesh::new();
    mesh.service(
        "db.ns.svc.cluster.local",
        "10.96.0.9",
        &[(5432, 5432)],
        |s| {
            s.load_balancer = Some(LoadBalancer {
                routing_preferences: vec![],
                mode: LoadBalancerMode::Passthrough,
                health_policy: LoadBalancerHealthPolicy::OnlyHealthy,
            })
        },
    );
    let r = mesh.route(to("10.96.0.9:5432")).unwrap();
    assert_eq!(
        r.kind,
        RouteKind::Passthrough(UpstreamAddr::Ip(addr("10.96.0.9:5432")))
    );
    assert_eq!(&*r.dst_service.unwrap().name, "db");
}

fn failover(prefs: Vec<LoadBalancerScope>, mode: LoadBalancerMode) -> impl FnOnce(&mut Service) {
    move |s| {
        s.load_balancer = Some(LoadBalancer {
            routing_preferences: prefs,
            mode,
            health_policy: LoadBalancerHealthPolicy::OnlyHealthy,
        })
    }
}

fn in_zone(zone: &'static str) -> impl FnOnce(&mut Workload) {
    move |w| {
        w.locality = Locality {
            region: "us-east-2".into(),
            zone: zone.into(),
            subzone: "".into(),
        }
    }
}

#[test]
fn failover_prefers_the_same_zone_and_falls_back_when_it_is_gone() {
    let mut mesh = Mesh::new();
    let prefs = vec![LoadBalancerScope::Region, LoadBalancerScope::Zone];
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        failover(prefs, LoadBalancerMode::Failover),
    );
    mesh.endpoint(
        "near",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        in_zone("us-east-2a"),
    );
    mesh.endpoint(
        "far",
        "10.0.0.2",
        "ns/echo.ns.svc.cluster.local",
        &[],
        in_zone("us-east-2b"),
    );
    assert_eq!(
        mesh.chosen(to("10.96.0.1:80")),
        BTreeSet::from(["near".to_string()])
    );
    mesh.m.remove_workload("near");
    assert_eq!(
        mesh.chosen(to("10.96.0.1:80")),
        BTreeSet::from(["far".to_string()])
    );
}

#[test]
fn strict_never_leaves_the_preferred_locality() {
    let mut mesh = Mesh::new();
    let prefs = vec![LoadBalancerScope::Region, LoadBalancerScope::Zone];
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        failover(prefs, LoadBalancerMode::Strict),
    );
    mesh.endpoint(
        "far",
        "10.0.0.2",
        "ns/echo.ns.svc.cluster.local",
        &[],
        in_zone("us-east-2b"),
    );
    assert!(matches!(
        mesh.route(to("10.96.0.1:80")),
        Err(RouteError::NoHealthyUpstream { .. })
    ));
}

#[test]
fn network_first_preference_ranks_same_network_above_any_locality_match() {
    let mut mesh = Mesh::new();
    let prefs = vec![
        LoadBalancerScope::Network,
        LoadBalancerScope::Region,
        LoadBalancerScope::Zone,
    ];
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        failover(prefs, LoadBalancerMode::Failover),
    );
    // Remote network endpoint in our exact zone vs local network endpoint in another region.
    mesh.endpoint(
        "remote-same-zone",
        "10.9.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| {
            w.network = "other".into();
            in_zone("us-east-2a")(w);
        },
    );
    mesh.endpoint(
        "local-far",
        "10.0.0.2",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| {
            w.locality.region = "eu-west-1".into();
        },
    );
    assert_eq!(
        mesh.chosen(to("10.96.0.1:80")),
        BTreeSet::from(["local-far".to_string()])
    );
}

#[test]
fn service_with_a_waypoint_goes_to_the_waypoint_with_the_original_authority() {
    let mut mesh = Mesh::new();
    mesh.service(
        "waypoint.ns.svc.cluster.local",
        "10.96.0.50",
        &[(15008, 15008)],
        |_| {},
    );
    mesh.endpoint(
        "wp-pod",
        "10.0.0.50",
        "ns/waypoint.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.waypoint = Some(GatewayAddress {
                destination: GatewayDestination::Hostname(NamespacedHostname::new(
                    "ns",
                    "waypoint.ns.svc.cluster.local",
                )),
                hbone_mtls_port: 15008,
            })
        },
    );
    mesh.endpoint(
        "e1",
        "10.0.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |_| {},
    );
    let r = mesh.route(to("10.96.0.1:80")).unwrap();
    assert!(r.via_waypoint);
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.50:15008",
            "10.96.0.1:80",
            &[
                "spiffe://cluster.local/ns/ns/sa/waypoint-san",
                "spiffe://cluster.local/ns/ns/sa/wp-pod"
            ]
        )
    );
    assert_eq!(&*r.dst_service.unwrap().name, "echo");
}

#[test]
fn hostname_destination_through_a_waypoint_uses_the_service_vip_as_authority() {
    let mut mesh = Mesh::new();
    mesh.workload("wp", "10.0.0.50", |w| w.hostname = "wp.example".into());
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.waypoint = Some(GatewayAddress {
                destination: GatewayDestination::Hostname(NamespacedHostname::new(
                    "ns",
                    "wp.example",
                )),
                hbone_mtls_port: 15008,
            })
        },
    );
    let dst = Destination::Service {
        key: NamespacedHostname::new("ns", "echo.ns.svc.cluster.local"),
        port: 80,
    };
    let r = mesh.route(dst).unwrap();
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.50:15008",
            "10.96.0.1:80",
            &["spiffe://cluster.local/ns/ns/sa/wp"]
        )
    );
}

#[test]
fn weighted_waypoints_never_pick_a_zero_weight() {
    let mut mesh = Mesh::new();
    mesh.workload("wp-a", "10.0.0.51", |_| {});
    mesh.workload("wp-b", "10.0.0.52", |_| {});
    let gw = |ip: &str| GatewayAddress {
        destination: GatewayDestination::Address(format!("/{ip}").parse().unwrap()),
        hbone_mtls_port: 15008,
    };
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.waypoint = Some(gw("10.0.0.51"));
            s.weighted_waypoints = vec![
                WeightedWaypoint {
                    destination: gw("10.0.0.51"),
                    weight: 0,
                },
                WeightedWaypoint {
                    destination: gw("10.0.0.52"),
                    weight: 5,
                },
            ];
        },
    );
    for seed in 0..50 {
        match mesh.route_with(to("10.96.0.1:80"), &[], seed).unwrap().kind {
            RouteKind::Hbone { hop, .. } => assert_eq!(hop.addr.to_string(), "10.0.0.52:15008"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_workload_addressed_directly_uses_its_own_waypoint() {
    let mut mesh = Mesh::new();
    mesh.workload("wp", "10.0.0.50", |_| {});
    mesh.workload("w1", "10.0.0.1", |w| {
        w.waypoint = Some(GatewayAddress {
            destination: GatewayDestination::Address("/10.0.0.50".parse().unwrap()),
            hbone_mtls_port: 15008,
        })
    });
    let r = mesh.route(to("10.0.0.1:8080")).unwrap();
    assert!(r.via_waypoint);
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.50:15008",
            "10.0.0.1:8080",
            &["spiffe://cluster.local/ns/ns/sa/wp"]
        )
    );
}

#[test]
fn unknown_waypoint_is_an_error() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.waypoint = Some(GatewayAddress {
                destination: GatewayDestination::Hostname(NamespacedHostname::new("ns", "missing")),
                hbone_mtls_port: 15008,
            })
        },
    );
    assert_eq!(
        mesh.route(to("10.96.0.1:80")).unwrap_err(),
        RouteError::UnknownWaypoint("ns/missing".into())
    );
}

fn remote_gateway() -> GatewayAddress {
    GatewayAddress {
        destination: GatewayDestination::Address("remote/172.16.0.1".parse().unwrap()),
        hbone_mtls_port: 15008,
    }
}

#[test]
fn endpoint_on_another_network_is_reached_by_double_hbone() {
    let mut mesh = Mesh::new();
    mesh.workload("ew-gateway", "172.16.0.1", |w| {
        w.network = "remote".into();
        w.service_account = "istio-eastwestgateway".into();
        w.namespace = "istio-system".into();
    });
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "remote-echo",
        "",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| {
            w.network = "remote".into();
            w.network_gateway = Some(remote_gateway());
        },
    );
    let r = mesh.route(to("10.96.0.1:80")).unwrap();
    assert_eq!(
        r.kind,
        RouteKind::DoubleHbone {
            gateway: HboneHop {
                addr: UpstreamAddr::Ip(addr("172.16.0.1:15008")),
                identities: vec![id(
                    "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway"
                )],
            },
            authority: Authority::Host {
                hostname: "echo.ns.svc.cluster.local".into(),
                port: 80
            },
            inner_identities: vec![id("spiffe://cluster.local/ns/ns/sa/echo-san")],
        }
    );
}

#[test]
fn remote_waypoint_is_reached_by_double_hbone_with_the_service_as_authority() {
    let mut mesh = Mesh::new();
    mesh.workload("ew-gateway", "172.16.0.1", |w| {
        w.network = "remote".into();
        w.service_account = "istio-eastwestgateway".into();
        w.namespace = "istio-system".into();
    });
    mesh.service(
        "waypoint.ns.svc.cluster.local",
        "",
        &[(15008, 15008)],
        |_| {},
    );
    mesh.endpoint(
        "remote-wp",
        "10.200.0.50",
        "ns/waypoint.ns.svc.cluster.local",
        &[],
        |w| {
            w.network = "remote".into();
            w.network_gateway = Some(remote_gateway());
        },
    );
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |s| {
            s.waypoint = Some(GatewayAddress {
                destination: GatewayDestination::Hostname(NamespacedHostname::new(
                    "ns",
                    "waypoint.ns.svc.cluster.local",
                )),
                hbone_mtls_port: 15008,
            })
        },
    );
    let r = mesh.route(to("10.96.0.1:80")).unwrap();
    assert!(r.via_waypoint);
    // The gateway routes by the service the client wanted (and hands it to the
    // service's waypoint); the inner session is with the waypoint's service.
    assert_eq!(
        r.kind,
        RouteKind::DoubleHbone {
            gateway: HboneHop {
                addr: UpstreamAddr::Ip(addr("172.16.0.1:15008")),
                identities: vec![id(
                    "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway"
                )],
            },
            authority: Authority::Host {
                hostname: "echo.ns.svc.cluster.local".into(),
                port: 80
            },
            inner_identities: vec![id("spiffe://cluster.local/ns/ns/sa/waypoint-san")],
        }
    );
}

#[test]
fn remote_endpoint_without_a_gateway_fails_clearly() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "remote-echo",
        "10.9.0.1",
        "ns/echo.ns.svc.cluster.local",
        &[],
        |w| {
            w.network = "remote".into();
        },
    );
    assert_eq!(
        mesh.route(to("10.96.0.1:80")).unwrap_err(),
        RouteError::NoNetworkGateway {
            workload: "remote-echo".into(),
            network: "remote".into()
        }
    );
}

#[test]
fn remote_endpoint_without_address_or_gateway_is_not_a_candidate() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo.ns.svc.cluster.local",
        "10.96.0.1",
        &[(80, 8080)],
        |_| {},
    );
    mesh.endpoint("ghost", "", "ns/echo.ns.svc.cluster.local", &[], |w| {
        w.network = "remote".into()
    });
    assert!(matches!(
        mesh.route(to("10.96.0.1:80")),
        Err(RouteError::NoHealthyUpstream { .. })
    ));
}

#[test]
fn hostname_destination_needs_no_vip() {
    let mut mesh = Mesh::new();
    mesh.service(
        "echo-service.ecs-demo-1.ecs.local",
        "",
        &[(8080, 8080)],
        |_| {},
    );
    mesh.endpoint(
        "task",
        "10.0.0.7",
        "ns/echo-service.ecs-demo-1.ecs.local",
        &[],
        |_| {},
    );
    let dst = Destination::Service {
        key: NamespacedHostname::new("ns", "echo-service.ecs-demo-1.ecs.local"),
        port: 8080,
    };
    let r = mesh.route(dst).unwrap();
    assert_eq!(
        r.kind,
        hbone(
            "10.0.0.7:15008",
            "10.0.0.7:8080",
            &[
                "spiffe://cluster.local/ns/ns/sa/echo-service-san",
                "spiffe://cluster.local/ns/ns/sa/task"
            ]
        )
    );
}

#[test]
fn hostname_only_workload_is_resolved_at_connect_time() {
    let mut mesh = Mesh::new();
    mesh.service("ext.ns", "10.96.0.1", &[(443, 443)], |_| {});
    mesh.endpoint("by-name", "", "ns/ext.ns", &[], |w| {
        w.hostname = "api.example.com".into();
        w.protocol = InboundProtocol::TCP;
    });
    let r = mesh.route(to("10.96.0.1:443")).unwrap();
    assert_eq!(
        r.kind,
        RouteKind::Tcp(UpstreamAddr::Host {
            hostname: "api.example.com".into(),
            port: 443
        })
    );
}

#[test]
fn namespace_private_service_is_unknown_to_other_namespaces() {
    let mut mesh = Mesh::new();
    mesh.service("db.ns", "", &[(5432, 5432)], |s| {
        s.visibility = Visibility::Namespace
    });
    let dst = Destination::Service {
        key: NamespacedHostname::new("ns", "db.ns"),
        port: 5432,
    };
    assert!(matches!(
        mesh.route(dst),
        Err(RouteError::UnknownService(_))
    ));
}

// ---- inbound ---------------------------------------------------------------

fn local() -> (MeshState, Workload) {
    let mut m = MeshState::new();
    let mut s = Service::new(
        "ecs-demo-1",
        "echo-service",
        "echo-service.ecs-demo-1.ecs.local",
    );
    s.ports = BTreeMap::from([(80, 8080), (9000, 0)]);
    m.insert_service(s);
    let mut w = Workload::new("task-1", "ecs-demo-1", "task-1", "echo");
    w.workload_ips = vec!["10.0.0.7".parse().unwrap()];
    let key = NamespacedHostname::new("ecs-demo-1", "echo-service.ecs-demo-1.ecs.local");
    w.services = vec![key.clone()];
    let mut p = WorkloadServicePorts::new();
    p.insert(key, BTreeMap::from([(9000, 9999)]));
    m.insert_workload(w.clone(), p);
    (m, w)
}

#[test]
fn inbound_ip_authority_must_be_the_connection_destination() {
    let (m, w) = local();
    let ok = m
        .inbound_target(
            &w,
            &Authority::Addr(addr("10.0.0.7:8080")),
            "10.0.0.7".parse().unwrap(),
            &[15008],
        )
        .unwrap();
    assert_eq!(ok.port, 8080);
    assert_eq!(ok.dst, addr("10.0.0.7:8080"));
    let err = m
        .inbound_target(
            &w,
            &Authority::Addr(addr("10.0.0.8:8080")),
            "10.0.0.7".parse().unwrap(),
            &[15008],
        )
        .unwrap_err();
    assert!(err.is_bad_request());
}

#[test]
fn inbound_ipv4_mapped_connection_address_matches() {
    let (m, w) = local();
    let ok = m.inbound_target(
        &w,
        &Authority::Addr(addr("10.0.0.7:8080")),
        "::ffff:10.0.0.7".parse().unwrap(),
        &[],
    );
    assert!(ok.is_ok());
}

#[test]
fn inbound_hostname_authority_maps_the_service_port() {
    let (m, w) = local();
    let host = |port| Authority::Host {
        hostname: "echo-service.ecs-demo-1.ecs.local".into(),
        port,
    };
    let t = m
        .inbound_target(&w, &host(80), "10.0.0.7".parse().unwrap(), &[])
        .unwrap();
    assert_eq!(t.port, 8080);
    assert_eq!(&*t.service.unwrap().name, "echo-service");
    // service target port 0: the endpoint's own mapping applies.
    let t = m
        .inbound_target(&w, &host(9000), "10.0.0.7".parse().unwrap(), &[])
        .unwrap();
    assert_eq!(t.port, 9999);
    assert!(matches!(
        m.inbound_target(&w, &host(81), "10.0.0.7".parse().unwrap(), &[]),
        Err(InboundError::NoPort { .. })
    ));
}

#[test]
fn inbound_to_a_proxy_port_is_refused() {
    let (m, w) = local();
    assert_eq!(
        m.inbound_target(
            &w,
            &Authority::Addr(addr("10.0.0.7:15008")),
            "10.0.0.7".parse().unwrap(),
            &[15008, 15080]
        ),
        Err(InboundError::IllegalPort(15008))
    );
}

#[test]
fn application_tunnel_port_replaces_the_target() {
    let (m, mut w) = local();
    w.application_tunnel = Some(ApplicationTunnel {
        protocol: AppTunnelProtocol::NONE,
        port: Some(15088),
    });
    let t = m
        .inbound_target(
            &w,
            &Authority::Addr(addr("10.0.0.7:8080")),
            "10.0.0.7".parse().unwrap(),
            &[],
        )
        .unwrap();
    assert_eq!(t.port, 15088);
}

#[test]
fn inbound_service_is_guessed_from_the_target_port() {
    let (m, w) = local();
    assert_eq!(
        &*m.guess_inbound_service(&w, 8080).unwrap().name,
        "echo-service"
    );
    assert!(m.guess_inbound_service(&w, 1234).is_none());
}

/// A failover service with `n` endpoints, every third in the client's zone.
fn large_failover_mesh(n: usize) -> Mesh {
    let mut mesh = Mesh::new();
    let prefs = vec![LoadBalancerScope::Region, LoadBalancerScope::Zone];
    mesh.service(
        "big.ns.svc.cluster.local",
        "10.96.0.50",
        &[(80, 8080)],
        failover(prefs, LoadBalancerMode::Failover),
    );
    for i in 0..n {
        let zone = ["us-east-2a", "us-east-2b", "us-east-2c"][i % 3];
        mesh.endpoint(
            &format!("big-{i:03}"),
            &format!("10.1.{}.{}", i / 200, i % 200 + 1),
            "ns/big.ns.svc.cluster.local",
            &[],
            in_zone(zone),
        );
    }
    mesh
}

#[test]
fn large_service_tiers_are_cached_and_pick_as_the_uncached_walk_does() {
    let n = lb_cache::MIN_ENDPOINTS * 3;
    let mesh = large_failover_mesh(n);
    assert!(mesh.m.lb_cache().is_empty());
    // The first decision fills the cache; the same seed then picks the same
    // endpoint from the cached tier as from a fresh walk.
    let first: Vec<_> = (0..50)
        .map(|seed| {
            mesh.route_with(to("10.96.0.50:80"), &[], seed)
                .unwrap()
                .endpoint
        })
        .collect();
    assert_eq!(mesh.m.lb_cache().len(), 1);
    let fresh = large_failover_mesh(n);
    let uncached: Vec<_> = (0..50)
        .map(|seed| {
            // A retry (non-empty exclude) never uses the cache.
            let none: [Str; 1] = ["nobody".into()];
            fresh
                .route_with(to("10.96.0.50:80"), &none, seed)
                .unwrap()
                .endpoint
        })
        .collect();
    assert!(fresh.m.lb_cache().is_empty());
    assert_eq!(first, uncached);
    // Only same-zone endpoints (every third, from 0) are ever chosen.
    let zones: BTreeSet<_> = mesh
        .chosen(to("10.96.0.50:80"))
        .iter()
        .map(|uid| uid[4..].parse::<usize>().unwrap() % 3)
        .collect();
    assert_eq!(zones, BTreeSet::from([0]));
}

#[test]
fn a_state_change_clears_cached_tiers() {
    let n = lb_cache::MIN_ENDPOINTS * 3;
    let mut mesh = large_failover_mesh(n);
    mesh.route(to("10.96.0.50:80")).unwrap();
    assert_eq!(mesh.m.lb_cache().len(), 1);
    // Every same-zone endpoint goes away: the next decision must fail over.
    for i in (0..n).step_by(3) {
        mesh.m.remove_workload(&format!("big-{i:03}"));
    }
    assert!(mesh.m.lb_cache().is_empty());
    let zones: BTreeSet<_> = mesh
        .chosen(to("10.96.0.50:80"))
        .iter()
        .map(|uid| uid[4..].parse::<usize>().unwrap() % 3)
        .collect();
    assert_eq!(zones, BTreeSet::from([1, 2]));
}

#[test]
fn a_cached_tier_is_not_used_for_a_source_elsewhere() {
    let mut mesh = large_failover_mesh(lb_cache::MIN_ENDPOINTS * 3);
    mesh.route(to("10.96.0.50:80")).unwrap();
    // Same state, a client in another zone: its own tier.
    mesh.src.locality.zone = "us-east-2c".into();
    let zones: BTreeSet<_> = mesh
        .chosen(to("10.96.0.50:80"))
        .iter()
        .map(|uid| uid[4..].parse::<usize>().unwrap() % 3)
        .collect();
    assert_eq!(zones, BTreeSet::from([2]));
}
