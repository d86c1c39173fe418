//! Outbound routing on one network, by name as applications ask for it
//! (`socks5h`): mesh names and their expansions, service VIPs, names outside
//! the mesh, endpoint retry, and waypoints.
//!
//! Every task is its own network namespace on network one (`10.1.0.0/24`):
//!
//! | host | address | what |
//! |---|---|---|
//! | client | 10.1.0.10 | `ecs-demo-1/shell-task`, resolv.conf `search ecs.local`, a DNS stand-in on 127.0.0.1:53 |
//! | e1a, e1b | 10.1.0.21-22 | `echo-service` of cluster 1 (banners `echo-service-a`, `-b`) |
//! | wp1..wp3 | 10.1.0.31-33 | waypoint stand-ins |
//! | outside | 10.1.0.40, 10.1.0.104 | a plain TCP echo server, not in the mesh |

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::json;
use zs_e2e::dns::DnsServer;
use zs_e2e::networks::{Host, Net};
use zs_e2e::topology::{ECHO_PORT, Task, Topology, spiffe, workload};
use zs_e2e::waypoint::WaypointStandIn;
use zs_e2e::*;

const NS1: &str = "ecs-demo-1";
const ECHO: &str = "echo-service.ecs-demo-1.ecs.local";
const ECHO_K8S: &str = "echo.ecs-demo-1.svc.cluster.local";
const L7: &str = "echo-l7.ecs-demo-1.ecs.local";
const CANARY: &str = "echo-canary.ecs-demo-1.ecs.local";
const OUTSIDE_NAME: &str = "outside.example.net";

fn ip(n: u8) -> IpAddr {
    Net::One.ip(n)
}

fn waypoint_at(n: u8) -> serde_json::Value {
    json!({ "destination": format!("net1/{}", ip(n)), "hboneMtlsPort": 15008 })
}

/// The mesh every test here reads.
fn mesh() -> MeshConfig {
    let echo = ServiceSpec::new(NS1, "echo-service", ECHO)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net1/{}", ip(100)))
        .san(NS1, "echo");
    let echo_k8s = ServiceSpec::new(NS1, "echo", ECHO_K8S)
        .port(ECHO_PORT, ECHO_PORT)
        .san(NS1, "echo");
    // The same address as a host outside the mesh, but as a VIP of network two.
    let other_net = ServiceSpec::new(
        "ecs-demo-2",
        "echo-service",
        "echo-service.ecs-demo-2.ecs.local",
    )
    .port(ECHO_PORT, ECHO_PORT)
    .vip(&format!("net2/{}", ip(104)));
    let mut l7 = ServiceSpec::new(NS1, "echo-l7", L7)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net1/{}", ip(102)))
        .san(NS1, "echo");
    l7.extra = json!({ "waypoint": waypoint_at(31) });
    let mut canary = ServiceSpec::new(NS1, "echo-canary", CANARY)
        .port(ECHO_PORT, ECHO_PORT)
        .vip(&format!("net1/{}", ip(103)))
        .san(NS1, "echo");
    canary.extra = json!({
        // Without weights the single waypoint would be used: it must not be.
        "waypoint": waypoint_at(33),
        "weightedWaypoints": [
            { "destination": waypoint_at(31), "weight": 3 },
            { "destination": waypoint_at(32), "weight": 1 },
            { "destination": waypoint_at(33), "weight": 0 },
        ],
    });
    let mut client = workload(NS1, "shell-task", "shell", Net::One, ip(10), "cluster-1");
    client.extra["workloadName"] = json!("shell-task");
    client.extra["workloadType"] = json!("deployment");
    let mut m = MeshConfig::default().workload(client);
    for (name, n) in [("echo-service-a", 21), ("echo-service-b", 22)] {
        let mut w = workload(NS1, name, "echo", Net::One, ip(n), "cluster-1").in_service(
            &echo.key(),
            ECHO_PORT,
            ECHO_PORT,
        );
        if n == 21 {
            w = w
                .in_service(&echo_k8s.key(), ECHO_PORT, ECHO_PORT)
                .in_service(&l7.key(), ECHO_PORT, ECHO_PORT)
                .in_service(&canary.key(), ECHO_PORT, ECHO_PORT);
        }
        m = m.workload(w);
    }
    for n in [31, 32, 33] {
        m = m.workload(workload(
            NS1,
            &format!("waypoint-{}", n - 30),
            "waypoint",
            Net::One,
            ip(n),
            "cluster-1",
        ));
    }
    m.service(echo)
        .service(echo_k8s)
        .service(other_net)
        .service(l7)
        .service(canary)
}

/// The client task, with its resolver pointed at a DNS stand-in that knows
/// only `outside.example.net`.
async fn client(topo: &Topology, env: &[(&str, &str)]) -> (Task, DnsServer) {
    let host = topo.nets.host("client", Net::One, 10);
    host.ns
        .set_etc_file("resolv.conf", "nameserver 127.0.0.1\nsearch ecs.local\n");
    let dns_socket = host
        .ns
        .udp((Ipv4Addr::LOCALHOST, 53).into())
        .expect("bind the DNS stand-in");
    let dns = DnsServer::start(dns_socket, &[(OUTSIDE_NAME, Ipv4Addr::new(10, 1, 0, 40))]);
    let task = topo
        .start_task(host, &format!("{NS1}/shell-task/shell"), None, env)
        .await;
    (task, dns)
}

async fn echo_task(topo: &Topology, name: &str, n: u8) -> Task {
    topo.start_task(
        topo.nets.host(name, Net::One, n),
        &format!("{NS1}/{name}/echo"),
        Some(name),
        &[],
    )
    .await
}

/// The client and both cluster-1 echo tasks.
async fn client_and_echoes(topo: &Topology) -> (Task, DnsServer, Task, Task) {
    let ((client, dns), a, b) = tokio::join!(
        client(topo, &[]),
        echo_task(topo, "echo-service-a", 21),
        echo_task(topo, "echo-service-b", 22),
    );
    (client, dns, a, b)
}

/// A host outside the mesh with a plain echo server (banner `outside`) on
/// 10.1.0.40:8080 and 10.1.0.104:8080.
fn outside(topo: &Topology) -> (Host, EchoServer) {
    let host = topo.nets.host("outside", Net::One, 40);
    host.ns
        .ip(&["addr", "add", &format!("{}/24", ip(104)), "dev", "eth0"]);
    let listener = host
        .ns
        .listen((Ipv4Addr::UNSPECIFIED, ECHO_PORT).into())
        .expect("bind the outside server");
    (host, EchoServer::serve(listener, Some("outside")))
}

fn name(host: &str) -> SocksTarget {
    SocksTarget::Domain(host.into(), ECHO_PORT)
}

async fn banners(client: &Task, target: SocksTarget, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client.request(target.clone()).await.expect("request"));
    }
    out
}

fn distinct(v: &[String]) -> Vec<&str> {
    let mut d: Vec<&str> = v.iter().map(String::as_str).collect();
    d.sort_unstable();
    d.dedup();
    d
}

#[tokio::test]
async fn full_service_hostname_is_load_balanced_across_its_endpoints() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (client, dns, a, b) = client_and_echoes(&topo).await;
    let seen = banners(&client, name(ECHO), 20).await;
    assert_eq!(distinct(&seen), ["echo-service-a", "echo-service-b"]);
    assert_eq!(
        a.app.as_ref().unwrap().accepted() + b.app.as_ref().unwrap().accepted(),
        20
    );
    assert_eq!(
        dns.queries(),
        Vec::<String>::new(),
        "mesh names never reach DNS"
    );
}

#[tokio::test]
async fn short_name_is_completed_with_the_search_domain() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (client, dns, _a, _b) = client_and_echoes(&topo).await;
    // resolv.conf says `search ecs.local`: the name means echo-service.ecs-demo-1.ecs.local.
    let seen = banners(&client, name("echo-service.ecs-demo-1"), 10).await;
    assert_eq!(distinct(&seen), ["echo-service-a", "echo-service-b"]);
    assert_eq!(
        dns.queries(),
        Vec::<String>::new(),
        "mesh names never reach DNS"
    );
}

#[tokio::test]
async fn kubernetes_short_names_expand_with_the_client_namespace() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (client, dns, _a, _b) = client_and_echoes(&topo).await;
    for short in ["echo", "echo.ecs-demo-1", "echo.ecs-demo-1.svc", ECHO_K8S] {
        assert_eq!(
            client.request(name(short)).await.as_deref(),
            Ok("echo-service-a"),
            "{short}"
        );
    }
    assert_eq!(
        dns.queries(),
        Vec::<String>::new(),
        "mesh names never reach DNS"
    );
}

#[tokio::test]
async fn service_vip_on_the_client_network_is_load_balanced() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (client, _dns, _a, _b) = client_and_echoes(&topo).await;
    let seen = banners(&client, to(ip(100), ECHO_PORT), 20).await;
    assert_eq!(distinct(&seen), ["echo-service-a", "echo-service-b"]);
}

#[tokio::test]
async fn vip_of_another_network_is_not_the_service() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (_outside_host, outside) = outside(&topo);
    let (client, _dns) = client(&topo, &[]).await;
    // 10.1.0.104 is a VIP only on network two; here it is just a host.
    assert_eq!(
        client.request(to(ip(104), ECHO_PORT)).await.as_deref(),
        Ok("outside")
    );
    assert_eq!(outside.accepted(), 1);
}

#[tokio::test]
async fn name_outside_the_mesh_is_passed_through_as_plain_tcp() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (_outside_host, outside) = outside(&topo);
    let (client, dns) = client(&topo, &[]).await;
    // An echo server answers "ping" only if it got the bytes as sent, not TLS.
    assert_eq!(
        client.request(name(OUTSIDE_NAME)).await.as_deref(),
        Ok("outside")
    );
    assert_eq!(outside.accepted(), 1);
    assert_eq!(
        dns.queries().first().map(String::as_str),
        Some(OUTSIDE_NAME)
    );
}

#[tokio::test]
async fn name_outside_the_mesh_is_refused_when_outbound_must_stay_in_the_mesh() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (_outside_host, outside) = outside(&topo);
    let (client, _dns) = client(&topo, &[("OUTBOUND_TRAFFIC_POLICY", "REGISTRY_ONLY")]).await;
    match client.socks5(name(OUTSIDE_NAME)).await {
        SocksResult::Refused(code) => assert_eq!(code, 2, "connection not allowed by ruleset"),
        other => panic!("{other:?}"),
    }
    assert_eq!(outside.accepted(), 0);
}

#[tokio::test]
async fn name_with_no_mesh_match_and_no_dns_answer_is_host_unreachable() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let (client, dns) = client(&topo, &[]).await;
    match client.socks5(name("nowhere.ecs-demo-1")).await {
        SocksResult::Refused(code) => assert_eq!(code, 4, "host unreachable"),
        other => panic!("{other:?}"),
    }
    assert!(
        dns.queries().iter().any(|q| q == "nowhere.ecs-demo-1"),
        "DNS was asked: {:?}",
        dns.queries()
    );
}

#[tokio::test]
async fn refused_endpoint_is_retried_on_another_before_the_client_sees_an_error() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let ((client, _dns), a, mut b) = tokio::join!(
        client(
            &topo,
            &[("RUST_LOG", "info,access=debug,zs_proxy::outbound=debug")]
        ),
        echo_task(&topo, "echo-service-a", 21),
        echo_task(&topo, "echo-service-b", 22),
    );
    // Task b's sidecar dies; its host stays, so 10.1.0.22:15008 refuses.
    b.sidecar.signal(libc::SIGKILL);
    // Reaped (the exit "code" of a killed process is None, so it says nothing).
    let _ = b.sidecar.wait_exit(Duration::from_secs(5)).await;
    let refused = b.host.ns.connect((b.ip(), 15008).into()).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    let seen = banners(&client, name(ECHO), 20).await;
    assert_eq!(distinct(&seen), ["echo-service-a"]);
    assert_eq!(a.app.as_ref().unwrap().accepted(), 20);
    let retries = client
        .sidecar
        .logs()
        .matches("endpoint failed, trying another")
        .count();
    assert!(
        retries >= 1,
        "the dead endpoint was never chosen in 20 tries"
    );
}

#[tokio::test]
async fn endpoint_that_resets_the_connect_is_retried_on_another() {
    require_netns!();
    let topo = Topology::new(&mesh());
    // Task b's proxy completes mTLS and HTTP/2 but resets every CONNECT, as a
    // proxy stopping under a pooled connection does.
    let b_host = topo.nets.host("echo-service-b", Net::One, 22);
    let broken = WaypointStandIn::resetting(
        b_host.ns.listen((ip(22), 15008).into()).unwrap(),
        topo.cert(NS1, "echo"),
    );
    let ((client, _dns), a) =
        tokio::join!(client(&topo, &[]), echo_task(&topo, "echo-service-a", 21));
    let seen = banners(&client, name(ECHO), 20).await;
    assert_eq!(distinct(&seen), ["echo-service-a"]);
    assert_eq!(a.app.as_ref().unwrap().accepted(), 20);
    let resets = broken.received();
    assert!(
        !resets.is_empty(),
        "the broken endpoint was never chosen in 20 tries"
    );
    assert!(resets.iter().all(|r| r.authority == "10.1.0.22:8080"));
}

#[tokio::test]
async fn service_with_a_waypoint_is_reached_through_it_with_the_vip_as_authority() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let wp_host = topo.nets.host("wp1", Net::One, 31);
    let waypoint = WaypointStandIn::start(
        wp_host.ns.listen((ip(31), 15008).into()).unwrap(),
        topo.cert(NS1, "waypoint"),
        "waypoint-1",
    );
    let ((client, _dns), a) =
        tokio::join!(client(&topo, &[]), echo_task(&topo, "echo-service-a", 21));
    assert_eq!(client.request(name(L7)).await.as_deref(), Ok("waypoint-1"));
    assert_eq!(
        client.request(to(ip(102), ECHO_PORT)).await.as_deref(),
        Ok("waypoint-1")
    );
    let received = waypoint.received();
    assert_eq!(
        received
            .iter()
            .map(|r| r.authority.as_str())
            .collect::<Vec<_>>(),
        ["10.1.0.102:8080", "10.1.0.102:8080"]
    );
    assert!(received.iter().all(|r| r.identity == spiffe(NS1, "shell")));
    assert_eq!(
        a.app.as_ref().unwrap().accepted(),
        0,
        "nothing bypassed the waypoint"
    );
}

#[tokio::test]
async fn weighted_waypoints_are_honoured_and_weight_zero_is_never_chosen() {
    require_netns!();
    let topo = Topology::new(&mesh());
    let hosts: Vec<Host> = (31..=33)
        .map(|n| topo.nets.host(&format!("wp{}", n - 30), Net::One, n))
        .collect();
    let waypoints: Vec<WaypointStandIn> = hosts
        .iter()
        .zip(1..)
        .map(|(h, i)| {
            WaypointStandIn::start(
                h.ns.listen((h.ip, 15008).into()).unwrap(),
                topo.cert(NS1, "waypoint"),
                &format!("waypoint-{i}"),
            )
        })
        .collect();
    let (client, _dns) = client(&topo, &[]).await;
    let seen = banners(&client, name(CANARY), 60).await;
    let count = |b: &str| seen.iter().filter(|s| *s == b).count();
    assert_eq!(count("waypoint-3"), 0, "weight 0 was chosen");
    assert!(count("waypoint-2") > 0, "{seen:?}");
    // 3:1 weights; the chance of the lighter one winning in 60 draws is ~1e-6.
    assert!(count("waypoint-1") > count("waypoint-2"), "{seen:?}");
    assert_eq!(count("waypoint-1") + count("waypoint-2"), 60);
    assert!(waypoints[2].received().is_empty());
    assert!(
        waypoints[..2]
            .iter()
            .flat_map(|w| w.received())
            .all(|r| r.authority == "10.1.0.103:8080")
    );
}
