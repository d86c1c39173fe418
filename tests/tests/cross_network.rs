//! Routing across networks: double HBONE through an east-west gateway, the
//! receiving side of it, and failover between clusters under traffic.
//!
//! Scenario 3 of the workshop, on network namespaces. Network one
//! (`10.1.0.0/24`) holds the client and cluster 1; network two (`10.2.0.0/24`)
//! holds cluster 2. Only the gateway host has a leg in both (`10.1.0.254`,
//! `10.2.0.254`, no forwarding), running `ew-gateway`, a minimal HBONE relay
//! built for these tests.
//!
//! | host | address | what |
//! |---|---|---|
//! | client | 10.1.0.10 | `ecs-demo-1/shell-task` |
//! | c1-a, c1-b | 10.1.0.21-22 | `echo-service` tasks of cluster 1 (network one) |
//! | c2-a, c2-b | 10.2.0.21-22 | `echo-service` tasks of cluster 2 (network two) |
//! | gw | 10.1.0.254, 10.2.0.254 | the east-west gateway |
//!
//! Services: `echo-service.ecs.local` (all four tasks, locality FAILOVER by
//! network), `echo-service.ecs-demo-2.ecs.local` (cluster 2 only) and
//! `echo-mapped.ecs-demo-2.ecs.local` (port 80 → 8080 on c2-a).

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde_json::json;
use zs_e2e::gateway::{Gateway, GatewayConnect};
use zs_e2e::networks::{Host, Net};
use zs_e2e::topology::{ECHO_PORT, Task, Topology, counter, dumped_workload, spiffe, workload};
use zs_e2e::waypoint::{Received, WaypointStandIn};
use zs_e2e::*;
use zs_hbone::headers::{BAGGAGE, X_FORWARDED_NETWORK};
use zs_hbone::{ConnectRequest, H2Config, HboneError};

const EW_GATEWAY: &str = env!("CARGO_BIN_EXE_ew-gateway");

const NS1: &str = "ecs-demo-1";
const NS2: &str = "ecs-demo-2";
const GLOBAL: &str = "echo-service.ecs.local";
const C2: &str = "echo-service.ecs-demo-2.ecs.local";
const MAPPED: &str = "echo-mapped.ecs-demo-2.ecs.local";
const L7: &str = "echo-l7.ecs.local";
const WAYPOINT: &str = "waypoint.ecs-demo-2.svc.cluster.local";
const GW_NS: &str = "istio-system";
const GW_SA: &str = "istio-eastwestgateway";

/// What cluster 1's endpoints look like in the mesh.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cluster1 {
    Healthy,
    Unhealthy,
    /// Scaled to zero: the workloads are gone.
    Removed,
}

fn uid(cluster: u8, name: &str) -> String {
    format!("cluster-{cluster}//Pod/ecs-demo-{cluster}/{name}")
}

fn mesh(cluster1: Cluster1) -> MeshConfig {
    let mut global = ServiceSpec::new(NS1, "echo-service", GLOBAL)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net1/{}", Net::One.ip(100)))
        .san(NS1, "echo")
        .san(NS2, "echo");
    global.extra = json!({
        "loadBalancer": { "routingPreferences": ["Network"], "mode": "Failover", "healthPolicy": "OnlyHealthy" }
    });
    let c2 = ServiceSpec::new(NS2, "echo-service", C2)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net2/{}", Net::Two.ip(100)))
        .san(NS2, "echo");
    let mapped = ServiceSpec::new(NS2, "echo-mapped", MAPPED)
        .port(80, ECHO_PORT)
        .san(NS2, "echo");
    // A service whose waypoint is on network two, behind the gateway.
    let waypoint = ServiceSpec::new(NS2, "waypoint", WAYPOINT)
        .port(15008, 15008)
        .san(NS2, "waypoint");
    let mut l7 = ServiceSpec::new(NS2, "echo-l7", L7)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net1/{}", Net::One.ip(102)))
        .san(NS2, "echo");
    l7.extra = json!({ "waypoint": { "destination": format!("{NS2}/{WAYPOINT}"), "hboneMtlsPort": 15008 } });

    let mut client = workload(
        NS1,
        "shell-task",
        "shell",
        Net::One,
        Net::One.ip(10),
        "cluster-1",
    );
    client.extra["workloadName"] = json!("shell-task");
    client.extra["workloadType"] = json!("deployment");
    client.extra["canonicalName"] = json!("shell");
    let mut gateway = workload(GW_NS, GW_SA, GW_SA, Net::Two, Net::One.ip(254), "cluster-2");
    gateway.ips.push(Net::Two.ip(254));
    gateway.hbone = false;
    let mut m = MeshConfig::default().workload(client).workload(gateway);

    if cluster1 != Cluster1::Removed {
        for (name, n) in [("echo-service-a", 21), ("echo-service-b", 22)] {
            let mut w = workload(NS1, name, "echo", Net::One, Net::One.ip(n), "cluster-1")
                .in_service(&global.key(), ECHO_PORT, ECHO_PORT);
            if cluster1 == Cluster1::Unhealthy {
                w.extra["status"] = json!("Unhealthy");
            }
            m = m.workload(w);
        }
    }
    let remote = |mut w: WorkloadSpec| {
        w.extra["networkGateway"] = json!({
            "destination": format!("net2/{}", Net::One.ip(254)),
            "hboneMtlsPort": 15008,
        });
        w
    };
    for (name, n) in [("echo-service-a", 21), ("echo-service-b", 22)] {
        let mut w = workload(NS2, name, "echo", Net::Two, Net::Two.ip(n), "cluster-2")
            .in_service(&global.key(), ECHO_PORT, ECHO_PORT)
            .in_service(&c2.key(), ECHO_PORT, ECHO_PORT);
        if n == 21 {
            w = w.in_service(&mapped.key(), 80, ECHO_PORT).in_service(
                &l7.key(),
                ECHO_PORT,
                ECHO_PORT,
            );
        }
        m = m.workload(remote(w));
    }
    let wp = workload(
        NS2,
        "waypoint",
        "waypoint",
        Net::Two,
        Net::Two.ip(30),
        "cluster-2",
    )
    .in_service(&waypoint.key(), 15008, 15008);
    m.workload(remote(wp))
        .service(global)
        .service(c2)
        .service(mapped)
        .service(waypoint)
        .service(l7)
}

/// Everything of scenario 3 that is running.
struct World {
    // Dropped in this order: processes first, then namespaces, then the switches.
    gateway: Gateway,
    client: Task,
    c1: Vec<Task>,
    c2: Vec<Task>,
    gw_host: Host,
    topo: Topology,
}

async fn echo_task(topo: &Topology, cluster: u8, letter: char) -> Task {
    let (net, ns) = if cluster == 1 {
        (Net::One, NS1)
    } else {
        (Net::Two, NS2)
    };
    let n = if letter == 'a' { 21 } else { 22 };
    let banner = format!("c{cluster}-{letter}");
    topo.start_task(
        topo.nets.host(&banner, net, n),
        &format!("{ns}/echo-service-{letter}/echo"),
        Some(&banner),
        &[],
    )
    .await
}

async fn world(with_cluster1: bool) -> World {
    let topo = Topology::new(&mesh(Cluster1::Healthy));
    let gw_host = topo.nets.gateway_host();
    let gw_certs = topo.pki.cert_dir(GW_NS, GW_SA);
    let c2_endpoints = [Net::Two.ip(21), Net::Two.ip(22)];
    let client_workload = format!("{NS1}/shell-task/shell");
    let (client, c1a, c1b, c2a, c2b) = tokio::join!(
        topo.start_task(
            topo.nets.host("client", Net::One, 10),
            &client_workload,
            None,
            &[],
        ),
        async {
            match with_cluster1 {
                true => Some(echo_task(&topo, 1, 'a').await),
                false => None,
            }
        },
        async {
            match with_cluster1 {
                true => Some(echo_task(&topo, 1, 'b').await),
                false => None,
            }
        },
        echo_task(&topo, 2, 'a'),
        echo_task(&topo, 2, 'b'),
    );
    let c1 = [c1a, c1b].into_iter().flatten().collect();
    let gateway = Gateway::start(
        Path::new(EW_GATEWAY),
        &gw_host.ns,
        "0.0.0.0:15008".parse().unwrap(),
        &gw_certs,
        &[
            (&format!("{GLOBAL}:8080"), &c2_endpoints),
            (&format!("{C2}:8080"), &c2_endpoints),
            // Istio's gateway hands a service with a waypoint to the waypoint.
            (&format!("{L7}:8080"), &[Net::Two.ip(30)]),
        ],
    )
    .await;
    World {
        gateway,
        client,
        c1,
        c2: vec![c2a, c2b],
        gw_host,
        topo,
    }
}

fn name(host: &str) -> SocksTarget {
    SocksTarget::Domain(host.into(), ECHO_PORT)
}

/// Connections the destination side of `task` opened, with these source labels.
async fn inbound_opened(task: &Task, labels: &[(&str, &str)]) -> u64 {
    let mut all = vec![("reporter", "destination")];
    all.extend_from_slice(labels);
    counter(
        &task.metrics().await,
        "istio_tcp_connections_opened_total",
        &all,
    )
}

#[tokio::test]
async fn networks_are_joined_only_through_the_gateway() {
    require_netns!();
    let w = world(false).await;
    let direct = w
        .client
        .host
        .ns
        .connect((Net::Two.ip(21), 15008).into())
        .await;
    assert_eq!(
        direct.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NetworkUnreachable)
    );
    assert!(
        w.client
            .host
            .ns
            .connect((w.gw_host.ip, 15008).into())
            .await
            .is_ok()
    );
    assert!(
        w.gw_host
            .ns
            .connect((Net::Two.ip(21), 15008).into())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn remote_service_is_reached_by_double_hbone_through_the_gateway() {
    require_netns!();
    let w = world(false).await;
    let banner = w.client.request(name(C2)).await.expect("request");
    let (dst, upstream): (&Task, IpAddr) = match banner.as_str() {
        "c2-a" => (&w.c2[0], Net::Two.ip(21)),
        "c2-b" => (&w.c2[1], Net::Two.ip(22)),
        other => panic!("answered by {other}"),
    };
    // The outer CONNECT: the service name as authority, from the client's identity.
    assert_eq!(
        w.gateway.connects(),
        [GatewayConnect {
            authority: "echo-service.ecs-demo-2.ecs.local:8080".into(),
            identity: spiffe(NS1, "shell"),
            upstream: Some((upstream, 15008).into()),
            status: 200,
        }]
    );
    // The inner CONNECT carried x-forwarded-network: the source comes from
    // baggage, not from the TCP peer (the gateway, itself a workload there).
    let from_client = [
        ("source_workload", "shell-task"),
        ("source_workload_namespace", NS1),
        ("source_cluster", "cluster-1"),
        ("source_principal", &spiffe(NS1, "shell")),
        ("destination_service", C2),
    ];
    assert_eq!(inbound_opened(dst, &from_client).await, 1);
    assert_eq!(inbound_opened(dst, &[("source_workload", GW_SA)]).await, 0);
    let log = dst.sidecar.logs();
    let line = log
        .lines()
        .find(|l| l.contains("direction=\"inbound\""))
        .expect("an inbound access log line");
    for field in [
        "src.addr=10.2.0.254:",
        // Access logs name the pod (metrics the workload), as ztunnel's do.
        "src.workload=\"shell\"",
        "src.namespace=\"ecs-demo-1\"",
        "src.identity=\"spiffe://cluster.local/ns/ecs-demo-1/sa/shell\"",
        "dst.hbone_addr=echo-service.ecs-demo-2.ecs.local:8080 ",
        "dst.service=\"echo-service.ecs-demo-2.ecs.local\"",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
}

#[tokio::test]
async fn many_requests_through_the_gateway_share_one_inner_connection() {
    require_netns!();
    let w = world(false).await;
    for _ in 0..20 {
        let banner = w.client.request(name(C2)).await.expect("request");
        assert!(banner == "c2-a" || banner == "c2-b", "{banner}");
    }
    // One outer CONNECT, so one TCP connection and one inner TLS handshake at
    // the destination, carrying all 20 requests as streams.
    let connects = w.gateway.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    let apps: usize =
        w.c2.iter()
            .map(|t| t.app.as_ref().unwrap().accepted())
            .sum();
    assert_eq!(apps, 20);
    let mut opened = 0;
    for t in &w.c2 {
        opened += inbound_opened(t, &[("source_workload", "shell-task")]).await;
    }
    assert_eq!(opened, 20);
    // Seen from the destination: every stream came over one TCP connection
    // from the gateway (one source port), hence one TLS handshake.
    let mut peers: Vec<String> =
        w.c2.iter()
            .flat_map(|t| {
                t.sidecar
                    .logs()
                    .lines()
                    .filter(|l| l.contains("direction=\"inbound\""))
                    .filter_map(|l| {
                        l.split([' ', '\t'])
                            .find_map(|f| f.strip_prefix("src.addr="))
                            .map(str::to_string)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    assert_eq!(peers.len(), 20);
    peers.dedup();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(peers[0].starts_with("10.2.0.254:"), "{peers:?}");
}

#[tokio::test]
async fn remote_waypoint_is_reached_through_the_gateway_with_the_service_as_authority() {
    require_netns!();
    let w = world(false).await;
    let wp_host = w.topo.nets.host("wp", Net::Two, 30);
    let waypoint = WaypointStandIn::start(
        wp_host.ns.listen((wp_host.ip, 15008).into()).unwrap(),
        w.topo.cert(NS2, "waypoint"),
        "remote-waypoint",
    );
    assert_eq!(
        w.client.request(name(L7)).await.as_deref(),
        Ok("remote-waypoint")
    );
    assert_eq!(
        w.gateway.connects(),
        [GatewayConnect {
            authority: "echo-l7.ecs.local:8080".into(),
            identity: spiffe(NS1, "shell"),
            upstream: Some((Net::Two.ip(30), 15008).into()),
            status: 200,
        }]
    );
    // The inner CONNECT, end to end from the client through the relay.
    assert_eq!(
        waypoint.received(),
        [Received {
            authority: "echo-l7.ecs.local:8080".into(),
            identity: spiffe(NS1, "shell"),
        }]
    );
    assert_eq!(w.c2[0].app.as_ref().unwrap().accepted(), 0);
}

/// An HBONE client on the gateway host dialing c2-a directly, as the gateway
/// relays an inner connection: TLS as the client workload.
async fn inner_connect(
    w: &World,
    authority: &str,
    forwarded_network: Option<&str>,
) -> Result<String, HboneError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = w
        .gw_host
        .ns
        .connect((Net::Two.ip(21), 15008).into())
        .await
        .expect("TCP to c2-a");
    let client_cert = w.topo.cert(NS1, "shell");
    let expected = vec![zs_identity::Identity::new("cluster.local", NS2, "echo").unwrap()];
    let tls = zs_tls::client_config(&client_cert, expected, &Default::default()).unwrap();
    let conn = zs_hbone::connect(tcp, tls, &H2Config::default()).await?;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        BAGGAGE,
        HeaderValue::from_static(
            "k8s.cluster.name=cluster-1,k8s.namespace.name=ecs-demo-1,k8s.deployment.name=shell-task",
        ),
    );
    if let Some(n) = forwarded_network {
        headers.insert(X_FORWARDED_NETWORK, HeaderValue::from_str(n).unwrap());
    }
    let (mut stream, _) = conn
        .send_connect(ConnectRequest {
            authority: authority.into(),
            headers,
        })
        .await?;
    stream.write_all(b"ping\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    Ok(out)
}

#[tokio::test]
async fn hostname_authority_reaches_the_mapped_local_service_port() {
    require_netns!();
    let w = world(false).await;
    // Service port 80 maps to the app's 8080 on this endpoint.
    let answer = inner_connect(&w, &format!("{MAPPED}:80"), Some("net1")).await;
    assert_eq!(answer.expect("CONNECT"), "c2-a\nping\n");
    let unknown = inner_connect(&w, "no-such-service.ecs-demo-2.ecs.local:80", Some("net1")).await;
    assert_eq!(
        unknown.err().and_then(|e| e.status()),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    let wrong_port = inner_connect(&w, &format!("{MAPPED}:8080"), Some("net1")).await;
    assert_eq!(
        wrong_port.err().and_then(|e| e.status()),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(w.c2[0].app.as_ref().unwrap().accepted(), 1);
}

#[tokio::test]
async fn forwarded_network_makes_baggage_the_source_instead_of_the_gateway() {
    require_netns!();
    let w = world(false).await;
    let dst = &w.c2[0];
    inner_connect(&w, &format!("{C2}:8080"), Some("net1"))
        .await
        .expect("via gateway");
    assert_eq!(
        inbound_opened(dst, &[("source_workload", "shell-task")]).await,
        1
    );
    assert_eq!(inbound_opened(dst, &[("source_workload", GW_SA)]).await, 0);
    // Without the header (or naming this very network) the TCP peer is the source.
    inner_connect(&w, &format!("{C2}:8080"), None)
        .await
        .expect("direct");
    inner_connect(&w, &format!("{C2}:8080"), Some("NET2"))
        .await
        .expect("same network");
    assert_eq!(
        inbound_opened(dst, &[("source_workload", "shell-task")]).await,
        1
    );
    assert_eq!(inbound_opened(dst, &[("source_workload", GW_SA)]).await, 2);
}

/// One request of the traffic loop.
#[derive(Debug)]
struct Sample {
    started: Instant,
    finished: Instant,
    outcome: Result<String, String>,
}

/// Runs connect → request → close against `echo-service.ecs.local` in a loop
/// while `change` runs (after 20 requests); returns every request, and when
/// the change was seen applied by the client.
async fn traffic_during(
    w: &World,
    change: impl std::future::Future<Output = Instant>,
    after: usize,
) -> (Vec<Sample>, Instant) {
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let traffic = async {
        let mut log = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            let outcome = w.client.request(name(GLOBAL)).await;
            log.push(Sample {
                started,
                finished: Instant::now(),
                outcome,
            });
            done.fetch_add(1, Ordering::Release);
        }
        log
    };
    let control = async {
        while done.load(Ordering::Acquire) < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let applied = change.await;
        let at_applied = done.load(Ordering::Acquire);
        while done.load(Ordering::Acquire) < at_applied + after {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Release);
        applied
    };
    tokio::join!(traffic, control)
}

/// Before the change everything went to cluster 1 (FAILOVER keeps traffic on
/// the client's network); of the requests started after the client applied
/// it, none failed and all went to cluster 2.
fn check_failover(log: &[Sample], changed: Instant, applied: Instant) {
    let before: Vec<&Sample> = log.iter().filter(|s| s.finished < changed).collect();
    assert!(before.len() >= 20);
    for s in &before {
        let b = s.outcome.as_deref().expect("request before the change");
        assert!(
            b == "c1-a" || b == "c1-b",
            "answered by {b} before the change"
        );
    }
    let after: Vec<&Sample> = log.iter().filter(|s| s.started > applied).collect();
    assert!(
        after.len() >= 30,
        "only {} requests after the change",
        after.len()
    );
    let failed: Vec<&&Sample> = after.iter().filter(|s| s.outcome.is_err()).collect();
    assert_eq!(
        failed.len(),
        0,
        "requests failed after the update was applied: {failed:?}"
    );
    for s in &after {
        let b = s.outcome.as_deref().unwrap();
        assert!(
            b == "c2-a" || b == "c2-b",
            "answered by {b} after the change"
        );
    }
}

#[tokio::test]
async fn failover_to_the_other_cluster_when_one_is_scaled_to_zero() {
    require_netns!();
    let w = world(true).await;
    let mut changed = Instant::now();
    let change = async {
        changed = Instant::now();
        // The tasks stop, then istiod removes their workloads.
        for t in &w.c1 {
            t.sidecar.signal(libc::SIGKILL);
        }
        w.topo.push(&mesh(Cluster1::Removed));
        w.topo
            .wait_applied(&w.client, |d| {
                dumped_workload(d, &uid(1, "echo-service-a")).is_none()
                    && dumped_workload(d, &uid(1, "echo-service-b")).is_none()
            })
            .await
    };
    let (log, applied) = traffic_during(&w, change, 40).await;
    check_failover(&log, changed, applied);
    // Sequential requests after the failover share one inner connection.
    assert_eq!(w.gateway.connects().len(), 1, "{:?}", w.gateway.connects());
}

#[tokio::test]
async fn failover_to_the_other_cluster_when_its_endpoints_turn_unhealthy() {
    require_netns!();
    let w = world(true).await;
    let mut changed = Instant::now();
    let change = async {
        changed = Instant::now();
        w.topo.push(&mesh(Cluster1::Unhealthy));
        w.topo
            .wait_applied(&w.client, |d| {
                [uid(1, "echo-service-a"), uid(1, "echo-service-b")]
                    .iter()
                    .all(|u| dumped_workload(d, u).is_some_and(|w| w["status"] == "Unhealthy"))
            })
            .await
    };
    let (log, applied) = traffic_during(&w, change, 40).await;
    check_failover(&log, changed, applied);
    assert_eq!(w.gateway.connects().len(), 1, "{:?}", w.gateway.connects());
}
