//! Operating the sidecar the way an ambient-mesh operator operates ztunnel:
//! Prometheus metrics after real traffic (names, label sets in ztunnel's order,
//! values), access logs (text and JSON, filtering, runtime level changes), and
//! `/config_dump` compared with the mesh and read the way istioctl reads it.
//!
//! The traffic is real: SOCKS5 clients through the client sidecar, HBONE with
//! mTLS to the server sidecar, an application behind it. The workloads carry
//! every label source (workload name and type, canonical name and revision,
//! cluster, locality on the server only) so each label has a literal value to
//! check, and `unknown` shows where a value is absent.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs_e2e::istiod::LocalIstiod;
use zs_e2e::logs::{Field, LogLine, access_lines, json_access_lines};
use zs_e2e::prom::{Exposition, http_fetch, scrape, scrape_path};
use zs_e2e::*;

/// A port on the server task that a DENY policy covers.
const DENIED_PORT: u16 = 9;
const CLIENT_ID: &str = "spiffe://cluster.local/ns/ecs-demo-1/sa/shell";
const SERVER_ID: &str = "spiffe://cluster.local/ns/ecs-demo-1/sa/echo";
const DENY_POLICY: &str = "name: deny-port-9\nnamespace: ecs-demo-1\nscope: Namespace\naction: Deny\ndryRun: false\nrules: [[[{destinationPorts: [9]}]]]";

/// The default pair's mesh, with every label source filled in (the client has
/// no locality), the DENY policy, and a banner-writing echo application.
async fn labelled_pair(client_env: &[(&str, &str)], server_env: &[(&str, &str)]) -> Pair {
    let block = AddrBlock::new();
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("echo")).await;
    let mut mesh = Pair::mesh(&block, app.port()).policy(DENY_POLICY);
    mesh.workloads[0].extra = json!({
        "workloadName": "shell-deploy",
        "workloadType": "deployment",
        "canonicalName": "shell",
        "canonicalRevision": "v1",
        "clusterId": "ecs-cluster-1",
    });
    mesh.workloads[1].extra = json!({
        "workloadName": "echo-deploy",
        "workloadType": "deployment",
        "canonicalName": "echo",
        "canonicalRevision": "v2",
        "clusterId": "ecs-cluster-1",
        "locality": {"region": "us-east-2", "zone": "us-east-2a"},
    });
    Pair::start_with(block, app, mesh, client_env, server_env).await
}

/// A free loopback port: nothing listens there.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One echo exchange through the client's SOCKS5 proxy; returns the client's
/// own address (the `src.addr` the client sidecar sees) and what came back.
async fn exchange(pair: &Pair, target: SocksTarget, msg: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = socks5_connect(pair.client.socks5(), target)
        .await
        .expect_connected();
    let local = s.local_addr().unwrap();
    let back = echo_roundtrip(&mut s, msg).await;
    (local, back)
}

/// Two connections by IP (`hello mesh`, 10 bytes each), one by hostname
/// (`by name!`, 8 bytes), one a policy denies and one to a closed port. Every
/// successful one receives the 5-byte banner plus the echo.
async fn traffic(pair: &Pair) {
    for _ in 0..2 {
        let (_, back) = exchange(pair, to(pair.server_ip(), pair.app.port()), b"hello mesh").await;
        assert_eq!(back, b"echo\nhello mesh");
    }
    let (_, back) = exchange(
        pair,
        SocksTarget::Domain(HOST.into(), SERVICE_PORT),
        b"by name!",
    )
    .await;
    assert_eq!(back, b"echo\nby name!");
    match socks5_connect(pair.client.socks5(), to(pair.server_ip(), DENIED_PORT)).await {
        SocksResult::Refused(2) => {}
        other => panic!("the denied connection: {other:?}"),
    }
    match socks5_connect(pair.client.socks5(), to(pair.server_ip(), closed_port())).await {
        SocksResult::Refused(5) => {}
        other => panic!("the refused connection: {other:?}"),
    }
}

/// Scrapes until `done` holds (connections are recorded as they close, which
/// the client may see first), at most 10 s; returns the last scrape.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = scrape(addr).await;
        if done(&e) || Instant::now() > deadline {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes both sidecars once all five connections are recorded as closed.
async fn settled(pair: &Pair) -> (Exposition, Exposition) {
    let closed = |e: &Exposition| e.sum("istio_tcp_connections_closed_total", &[]) >= 5.0;
    (
        scrape_until(pair.client.stats(), closed).await,
        scrape_until(pair.server.stats(), closed).await,
    )
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The client side's labels for a connection to the echo workload.
fn source_labels(service: &str, flags: &str, principal: &str) -> Vec<(String, String)> {
    let (svc, svc_ns, svc_name) = if service.is_empty() {
        ("unknown", "unknown", "unknown")
    } else {
        (service, "ecs-demo-1", "echo-service")
    };
    owned(&[
        ("reporter", "source"),
        ("source_workload", "shell-deploy"),
        ("source_canonical_service", "shell"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "ecs-demo-1"),
        ("source_principal", principal),
        ("source_app", "shell"),
        ("source_version", "v1"),
        ("source_cluster", "ecs-cluster-1"),
        ("destination_service", svc),
        ("destination_service_namespace", svc_ns),
        ("destination_service_name", svc_name),
        ("destination_workload", "echo-deploy"),
        ("destination_canonical_service", "echo"),
        ("destination_canonical_revision", "v2"),
        ("destination_workload_namespace", "ecs-demo-1"),
        ("destination_principal", SERVER_ID),
        ("destination_app", "echo"),
        ("destination_version", "v2"),
        ("destination_cluster", "ecs-cluster-1"),
        ("request_protocol", "tcp"),
        ("response_flags", flags),
        ("connection_security_policy", "mutual_tls"),
        ("source_region", "unknown"),
        ("source_zone", "unknown"),
        ("destination_region", "us-east-2"),
        ("destination_zone", "us-east-2a"),
    ])
}

/// The server side's labels: the source comes from the TLS peer identity and
/// the client's baggage, the destination service is the one the connection
/// was for (named, or guessed from the target port).
fn destination_labels(service: &str, flags: &str) -> Vec<(String, String)> {
    let mut l = source_labels(service, flags, CLIENT_ID);
    l[0].1 = "destination".into();
    l
}

/// The value of the series with exactly `labels` (in this order).
fn value(e: &Exposition, name: &str, labels: &[(String, String)]) -> Option<f64> {
    e.series(name)
        .into_iter()
        .find(|s| s.labels == labels)
        .map(|s| s.value)
}

fn series_dump(e: &Exposition, name: &str) -> String {
    e.series(name)
        .iter()
        .map(|s| format!("{:?} {}\n", s.labels, s.value))
        .collect()
}

// ---- metrics --------------------------------------------------------------

#[tokio::test]
async fn traffic_metrics_carry_ztunnels_labels_in_order_with_literal_values() {
    let pair = labelled_pair(&[], &[]).await;
    traffic(&pair).await;
    let (client, server) = settled(&pair).await;

    let by_name = source_labels(HOST, "-", CLIENT_ID);
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    ] {
        assert_eq!(
            value(&client, name, &by_name),
            Some(1.0),
            "{name} on the client:\n{}",
            series_dump(&client, name)
        );
    }
    // The server saw all three successful connections as for the service: one
    // named it, the two by IP targeted its target port.
    let inbound = destination_labels(HOST, "-");
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    ] {
        assert_eq!(
            value(&server, name, &inbound),
            Some(3.0),
            "{name} on the server:\n{}",
            series_dump(&server, name)
        );
    }
    assert_eq!(
        client.type_of("istio_tcp_connections_opened"),
        Some("counter")
    );
    assert_eq!(client.type_of("istio_tcp_received_bytes"), Some("counter"));
    assert_eq!(client.type_of("istio_tcp_sockets_open"), Some("gauge"));
}

#[tokio::test]
async fn failed_connections_are_counted_with_deny_and_connect_flags_on_both_sides() {
    let pair = labelled_pair(&[], &[]).await;
    traffic(&pair).await;
    let (client, server) = settled(&pair).await;

    // Outbound HBONE reports the sidecar's own identity as the source
    // principal whether or not the connection succeeds, as ztunnel does.
    for (flags, side, e, labels) in [
        (
            "DENY",
            "client",
            &client,
            source_labels("", "DENY", CLIENT_ID),
        ),
        (
            "CONNECT",
            "client",
            &client,
            source_labels("", "CONNECT", CLIENT_ID),
        ),
        ("DENY", "server", &server, destination_labels("", "DENY")),
        (
            "CONNECT",
            "server",
            &server,
            destination_labels("", "CONNECT"),
        ),
    ] {
        for name in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "istio_tcp_connections_failed_total",
        ] {
            assert_eq!(
                value(e, name, &labels),
                Some(1.0),
                "{name} {flags} on the {side}:\n{}",
                series_dump(e, name)
            );
        }
    }
    // Successful connections are never counted as failed.
    for e in [&client, &server] {
        assert_eq!(
            e.sum(
                "istio_tcp_connections_failed_total",
                &[("response_flags", "-")]
            ),
            0.0
        );
        assert_eq!(e.sum("istio_tcp_connections_failed_total", &[]), 2.0);
    }
}

#[tokio::test]
async fn connection_counters_equal_the_connections_made() {
    let pair = labelled_pair(&[], &[]).await;
    traffic(&pair).await;
    let (client, server) = settled(&pair).await;
    for (side, e, reporter) in [
        ("client", &client, "source"),
        ("server", &server, "destination"),
    ] {
        for name in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        ] {
            assert_eq!(
                e.sum(name, &[("reporter", reporter)]),
                5.0,
                "{name} on the {side}:\n{}",
                series_dump(e, name)
            );
        }
        assert_eq!(e.sum("istio_tcp_connections_opened_total", &[]), 5.0);
    }
    // By IP, the client does not know a service: its own series.
    let by_ip = source_labels("", "-", CLIENT_ID);
    assert_eq!(
        value(&client, "istio_tcp_connections_opened_total", &by_ip),
        Some(2.0)
    );
}

#[tokio::test]
async fn byte_counters_count_client_to_server_as_received() {
    let pair = labelled_pair(&[], &[]).await;
    traffic(&pair).await;
    let (client, server) = settled(&pair).await;
    // Client → server: 2 × 10 + 8 bytes; server → client: the same plus a
    // 5-byte banner per connection.
    let by_ip = source_labels("", "-", CLIENT_ID);
    let by_name = source_labels(HOST, "-", CLIENT_ID);
    assert_eq!(
        value(&client, "istio_tcp_received_bytes_total", &by_ip),
        Some(20.0)
    );
    assert_eq!(
        value(&client, "istio_tcp_sent_bytes_total", &by_ip),
        Some(30.0)
    );
    assert_eq!(
        value(&client, "istio_tcp_received_bytes_total", &by_name),
        Some(8.0)
    );
    assert_eq!(
        value(&client, "istio_tcp_sent_bytes_total", &by_name),
        Some(13.0)
    );
    let inbound = destination_labels(HOST, "-");
    assert_eq!(
        value(&server, "istio_tcp_received_bytes_total", &inbound),
        Some(28.0),
        "{}",
        series_dump(&server, "istio_tcp_received_bytes_total")
    );
    assert_eq!(
        value(&server, "istio_tcp_sent_bytes_total", &inbound),
        Some(43.0)
    );
    // Failed connections carried no bytes.
    for e in [&client, &server] {
        assert_eq!(e.sum("istio_tcp_received_bytes_total", &[]), 28.0);
        assert_eq!(e.sum("istio_tcp_sent_bytes_total", &[]), 43.0);
    }
}

#[tokio::test]
async fn byte_counters_grow_while_a_connection_is_open_and_sockets_open_returns_to_zero() {
    let pair = labelled_pair(&[], &[]).await;
    let mut s = socks5_connect(pair.client.socks5(), to(pair.server_ip(), pair.app.port()))
        .await
        .expect_connected();
    assert_eq!(read_line(&mut s).await, "echo");
    s.write_all(&[7u8; 1000]).await.unwrap();
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).await.unwrap();

    let open = |e: &Exposition| e.get("istio_tcp_received_bytes_total", &[]) == Some(1000.0);
    let (client, server) = (
        scrape_until(pair.client.stats(), open).await,
        scrape_until(pair.server.stats(), open).await,
    );
    for (side, e, reporter) in [
        ("client", &client, "source"),
        ("server", &server, "destination"),
    ] {
        assert_eq!(
            e.get("istio_tcp_received_bytes_total", &[]),
            Some(1000.0),
            "{side}"
        );
        assert_eq!(
            e.get("istio_tcp_sent_bytes_total", &[]),
            Some(1005.0),
            "{side}"
        );
        assert_eq!(
            e.get("istio_tcp_sockets_open", &[("reporter", reporter)]),
            Some(1.0),
            "{side}"
        );
        assert_eq!(
            e.sum("istio_tcp_connections_closed_total", &[]),
            0.0,
            "{side}"
        );
    }

    drop(s);
    let closed = |e: &Exposition| e.sum("istio_tcp_connections_closed_total", &[]) == 1.0;
    for (side, addr, reporter) in [
        ("client", pair.client.stats(), "source"),
        ("server", pair.server.stats(), "destination"),
    ] {
        let e = scrape_until(addr, closed).await;
        assert_eq!(
            e.sum("istio_tcp_connections_closed_total", &[]),
            1.0,
            "{side}"
        );
        assert_eq!(
            e.series("istio_tcp_sockets_open")
                .iter()
                .map(|s| (s.labels.clone(), s.value))
                .collect::<Vec<_>>(),
            vec![(owned(&[("reporter", reporter)]), 0.0)],
            "{side}"
        );
    }
}

#[tokio::test]
async fn build_info_names_ztunnel_and_the_istio_version() {
    let pair = labelled_pair(&[("ISTIO_META_ISTIO_VERSION", "1.28.0")], &[]).await;
    let client = scrape(pair.client.stats()).await;
    let server = scrape(pair.server.stats()).await;
    assert_eq!(
        client.series("istio_build")[0].labels,
        owned(&[("component", "ztunnel"), ("tag", "1.28.0")])
    );
    assert_eq!(client.get("istio_build", &[]), Some(1.0));
    assert_eq!(client.type_of("istio_build"), Some("gauge"));
    assert_eq!(
        server.series("istio_build")[0].labels,
        owned(&[("component", "ztunnel"), ("tag", "unknown")])
    );
}

#[tokio::test]
async fn both_metrics_paths_serve_the_same_families() {
    let pair = labelled_pair(&[], &[]).await;
    let families = |e: &Exposition| e.types.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    let a = scrape_path(pair.client.stats(), "/stats/prometheus").await;
    let b = scrape_path(pair.client.stats(), "/metrics").await;
    assert_eq!(families(&a), families(&b));
    assert!(families(&a).contains(&"istio_build".to_string()));
    let other = http_fetch(pair.client.stats(), "GET", "/stats", &[])
        .await
        .unwrap();
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn openmetrics_is_served_when_the_scraper_asks_for_it() {
    let pair = labelled_pair(&[], &[]).await;
    let plain = http_fetch(pair.client.stats(), "GET", "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // What Prometheus 3 sends.
    let accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let om = http_fetch(
        pair.client.stats(),
        "GET",
        "/metrics",
        &[("Accept", accept)],
    )
    .await
    .unwrap();
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text;charset=utf-8;version=1.0.0")
    );
    let text = om.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let e = Exposition::parse(&text);
    assert!(e.eof);
    assert_eq!(e.get("istio_build", &[("component", "ztunnel")]), Some(1.0));
}

#[tokio::test]
async fn gzip_is_served_when_the_scraper_accepts_it() {
    use std::io::Read as _;
    let pair = labelled_pair(&[], &[]).await;
    let resp = http_fetch(
        pair.client.stats(),
        "GET",
        "/stats/prometheus",
        &[("Accept-Encoding", "gzip")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&resp.body[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    let e = Exposition::parse(&text);
    assert_eq!(e.get("istio_build", &[("component", "ztunnel")]), Some(1.0));
    // The same families as the identity-encoded scrape.
    let plain = scrape(pair.client.stats()).await;
    assert_eq!(e.types, plain.types, "{text}");
    assert_eq!(
        e.type_of("ztunnel_sidecar_hbone_pool_connections"),
        Some("gauge")
    );
}

#[tokio::test]
async fn certificate_expiry_gauge_is_the_certificates_not_after() {
    let pair = labelled_pair(&[], &[]).await;
    let dir = pair.client.spec.cert_dir.clone().unwrap();
    let chain = ders(&std::fs::read(dir.join("cert-chain.pem")).unwrap());
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let not_after = cert.validity().not_after.timestamp();
    let e = scrape(pair.client.stats()).await;
    assert_eq!(
        e.get("ztunnel_sidecar_certificate_expiry_timestamp_seconds", &[]),
        Some(not_after as f64)
    );
    assert_eq!(
        e.type_of("ztunnel_sidecar_certificate_expiry_timestamp_seconds"),
        Some("gauge")
    );
}

#[tokio::test]
async fn socks5_handshake_failures_are_counted_by_reason() {
    let pair = labelled_pair(&[], &[]).await;
    // A SOCKS4 client.
    let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
    s.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    // A SOCKS5 client that offers only username/password authentication.
    let mut s = TcpStream::connect(pair.client.socks5()).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap();
    let _ = s.read_to_end(&mut rest).await;

    let counted =
        |e: &Exposition| e.sum("ztunnel_sidecar_socks5_handshake_failures_total", &[]) >= 2.0;
    let e = scrape_until(pair.client.stats(), counted).await;
    let mut failures: Vec<(Vec<(String, String)>, f64)> = e
        .series("ztunnel_sidecar_socks5_handshake_failures_total")
        .iter()
        .map(|s| (s.labels.clone(), s.value))
        .collect();
    // Series order within a family is not specified.
    failures.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        failures,
        vec![
            (owned(&[("reason", "bad_version")]), 1.0),
            (owned(&[("reason", "no_acceptable_auth")]), 1.0),
        ]
    );
    // Nothing reached the mesh.
    assert_eq!(e.sum("istio_tcp_connections_opened_total", &[]), 0.0);
}

#[tokio::test]
async fn hbone_pool_gauge_counts_the_pooled_connection_after_traffic() {
    let pair = labelled_pair(&[], &[]).await;
    let before = scrape(pair.client.stats()).await;
    assert_eq!(
        before.get("ztunnel_sidecar_hbone_pool_connections", &[]),
        Some(0.0)
    );
    traffic(&pair).await;
    // Every connection to the server task shares one HBONE connection.
    let after = scrape(pair.client.stats()).await;
    assert_eq!(
        after.get("ztunnel_sidecar_hbone_pool_connections", &[]),
        Some(1.0)
    );
    // The server keeps no client pool.
    let server = scrape(pair.server.stats()).await;
    assert_eq!(
        server.get("ztunnel_sidecar_hbone_pool_connections", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn xds_metrics_count_messages_per_type_and_show_the_connection() {
    let block = AddrBlock::new();
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), None).await;
    let mesh = Pair::mesh(&block, app.port());
    let istiod = LocalIstiod::start(
        block.ip(10),
        &mesh,
        &["--token", "t-shell=ecs-demo-1/shell"],
    )
    .await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let sidecar =
        Sidecar::start(istiod.sidecar(block.ip(1), &format!("{NS}/shell/shell"), Some("t-shell")))
            .await;
    let e = scrape(sidecar.stats()).await;
    for url in [
        "type.googleapis.com/istio.workload.Address",
        "type.googleapis.com/istio.security.Authorization",
    ] {
        let messages = e.get("istio_xds_message_total", &[("url", url)]);
        assert!(messages >= Some(1.0), "{url}: {messages:?}\n{}", e.text);
        let bytes = e.get("istio_xds_message_bytes_total", &[("url", url)]);
        assert!(bytes > Some(0.0), "{url}: {bytes:?}");
        assert_eq!(
            e.series("istio_xds_message_total")
                .iter()
                .find(|s| s.label("url") == Some(url))
                .map(|s| s.labels.len()),
            Some(1),
            "istio_xds_message_total has the url label only"
        );
    }
    assert_eq!(e.type_of("istio_xds_message"), Some("counter"));
    assert_eq!(e.get("ztunnel_sidecar_xds_connected", &[]), Some(1.0));
    let last_ack = e
        .get("ztunnel_sidecar_xds_last_ack_timestamp_seconds", &[])
        .expect("last ACK time");
    assert!(last_ack >= started.floor(), "{last_ack} < {started}");

    // The control plane goes away: the stream ends and is counted.
    istiod.pause().await;
    let e = scrape_until(sidecar.stats(), |e| {
        e.get("ztunnel_sidecar_xds_connected", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(e.get("ztunnel_sidecar_xds_connected", &[]), Some(0.0));
    assert!(
        e.sum("istio_xds_connection_terminations_total", &[]) >= 1.0,
        "{}",
        series_dump(&e, "istio_xds_connection_terminations_total")
    );
}

// ---- access logs ----------------------------------------------------------

/// ztunnel's access log fields, in its order.
const ACCESS_FIELDS: [&str; 16] = [
    "src.addr",
    "src.workload",
    "src.namespace",
    "src.identity",
    "src.cluster",
    "dst.addr",
    "dst.hbone_addr",
    "dst.service",
    "dst.workload",
    "dst.namespace",
    "dst.identity",
    "dst.cluster",
    "direction",
    "bytes_sent",
    "bytes_recv",
    "duration",
];

fn quoted(s: &str) -> Field {
    Field::Quoted(s.into())
}

fn bare(s: impl ToString) -> Field {
    Field::Bare(s.to_string())
}

/// Waits until `sidecar`'s log holds `n` access lines.
async fn access_log(sidecar: &Sidecar, n: usize) -> Vec<LogLine> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_lines(&sidecar.logs());
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_duration(line: &LogLine) {
    match line.field("duration") {
        Some(Field::Quoted(d)) => assert!(
            d.strip_suffix("ms")
                .is_some_and(|n| n.parse::<u64>().is_ok()),
            "duration {d:?}"
        ),
        other => panic!("duration {other:?}"),
    }
}

/// The fields of `line` but `duration` (and, inbound, the client port).
fn fields_without_duration(line: &LogLine) -> Vec<(String, Field)> {
    line.fields
        .iter()
        .filter(|(k, _)| k != "duration")
        .cloned()
        .collect()
}

#[tokio::test]
async fn access_logs_have_ztunnels_fields_in_order_with_the_right_values_on_both_sides() {
    let pair = labelled_pair(&[], &[]).await;
    let (client_addr, back) = exchange(
        &pair,
        SocksTarget::Domain(HOST.into(), SERVICE_PORT),
        b"by name!",
    )
    .await;
    assert_eq!(back, b"echo\nby name!");
    let server_ip = pair.server_ip();
    let hbone = SocketAddr::new(server_ip, 15008);
    let target = SocketAddr::new(server_ip, pair.app.port());

    let out = access_log(&pair.client, 1).await;
    assert_eq!(out.len(), 1, "{}", pair.client.logs());
    let out = &out[0];
    assert_eq!(
        (out.level.as_str(), out.message.as_str()),
        ("info", "connection complete")
    );
    assert_eq!(out.keys(), ACCESS_FIELDS);
    assert_duration(out);
    assert_eq!(
        fields_without_duration(out),
        vec![
            ("src.addr".into(), bare(client_addr)),
            ("src.workload".into(), quoted("shell")),
            ("src.namespace".into(), quoted("ecs-demo-1")),
            ("src.identity".into(), quoted(CLIENT_ID)),
            ("src.cluster".into(), quoted("ecs-cluster-1")),
            ("dst.addr".into(), bare(hbone)),
            ("dst.hbone_addr".into(), bare(target)),
            ("dst.service".into(), quoted(HOST)),
            ("dst.workload".into(), quoted("echo")),
            ("dst.namespace".into(), quoted("ecs-demo-1")),
            ("dst.identity".into(), quoted(SERVER_ID)),
            ("dst.cluster".into(), quoted("ecs-cluster-1")),
            ("direction".into(), quoted("outbound")),
            // From the client application's side: it sent 8, got 13 back.
            ("bytes_sent".into(), bare(8)),
            ("bytes_recv".into(), bare(13)),
        ]
    );

    let inb = access_log(&pair.server, 1).await;
    assert_eq!(inb.len(), 1, "{}", pair.server.logs());
    let inb = &inb[0];
    assert_eq!(
        (inb.level.as_str(), inb.message.as_str()),
        ("info", "connection complete")
    );
    assert_eq!(inb.keys(), ACCESS_FIELDS);
    assert_duration(inb);
    // The HBONE connection's source: the client sidecar's socket.
    let peer: SocketAddr = inb.get("src.addr").unwrap().parse().expect("src.addr");
    assert!(matches!(inb.field("src.addr"), Some(Field::Bare(_))));
    assert_eq!(peer.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    let mut fields = fields_without_duration(inb);
    fields.remove(0);
    assert_eq!(
        fields,
        vec![
            // The source is known from its baggage only (its address is not a
            // workload's), so ztunnel names it by its canonical name.
            ("src.workload".into(), quoted("shell")),
            ("src.namespace".into(), quoted("ecs-demo-1")),
            ("src.identity".into(), quoted(CLIENT_ID)),
            ("src.cluster".into(), quoted("ecs-cluster-1")),
            ("dst.addr".into(), bare(hbone)),
            ("dst.hbone_addr".into(), bare(target)),
            ("dst.service".into(), quoted(HOST)),
            ("dst.workload".into(), quoted("echo")),
            ("dst.namespace".into(), quoted("ecs-demo-1")),
            ("dst.identity".into(), quoted(SERVER_ID)),
            ("dst.cluster".into(), quoted("ecs-cluster-1")),
            ("direction".into(), quoted("inbound")),
            // From the server application's side: it sent 13, got 8.
            ("bytes_sent".into(), bare(13)),
            ("bytes_recv".into(), bare(8)),
        ]
    );
}

#[tokio::test]
async fn failed_connections_are_logged_at_error_with_the_reason_last() {
    let pair = labelled_pair(&[], &[]).await;
    match socks5_connect(pair.client.socks5(), to(pair.server_ip(), DENIED_PORT)).await {
        SocksResult::Refused(2) => {}
        other => panic!("{other:?}"),
    }
    let out = access_log(&pair.client, 1).await;
    let inb = access_log(&pair.server, 1).await;
    let target = SocketAddr::new(pair.server_ip(), DENIED_PORT).to_string();
    for (side, lines, direction) in [("client", &out, "outbound"), ("server", &inb, "inbound")] {
        assert_eq!(lines.len(), 1, "{side}");
        let l = &lines[0];
        assert_eq!(
            (l.level.as_str(), l.message.as_str()),
            ("error", "connection complete"),
            "{side}"
        );
        let keys = l.keys();
        assert_eq!(keys.last(), Some(&"error"), "{side}: {keys:?}");
        assert_eq!(l.get("direction"), Some(direction));
        assert_eq!(l.get("dst.hbone_addr"), Some(target.as_str()), "{side}");
        assert_eq!(l.get("bytes_sent"), Some("0"));
        assert_eq!(l.get("bytes_recv"), Some("0"));
    }
    assert_eq!(
        inb[0].field("error"),
        Some(&quoted("explicitly denied by: ecs-demo-1/deny-port-9"))
    );
    let client_error = out[0].get("error").unwrap();
    assert!(
        client_error.contains(&target),
        "the client's reason names the target: {client_error}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_access_fields_at_the_top_level() {
    let env = [("LOG_FORMAT", "json")];
    let pair = labelled_pair(&env, &env).await;
    let (client_addr, _) = exchange(
        &pair,
        SocksTarget::Domain(HOST.into(), SERVICE_PORT),
        b"by name!",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (out, inb) = loop {
        let out = json_access_lines(&pair.client.logs());
        let inb = json_access_lines(&pair.server.logs());
        if (!out.is_empty() && !inb.is_empty()) || Instant::now() > deadline {
            break (out, inb);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out.len(), 1, "{}", pair.client.logs());
    let o = &out[0];
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want: Vec<&str> = ACCESS_FIELDS
        .iter()
        .copied()
        .chain(["level", "time", "scope", "message"])
        .collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(o["level"], "info");
    assert_eq!(o["scope"], "access");
    assert_eq!(o["message"], "connection complete");
    assert_eq!(o["src.addr"], client_addr.to_string());
    assert_eq!(o["src.identity"], CLIENT_ID);
    assert_eq!(o["dst.service"], HOST);
    assert_eq!(o["direction"], "outbound");
    // Counts stay numbers, so a log query can sum them.
    assert_eq!(o["bytes_sent"], json!(8));
    assert_eq!(o["bytes_recv"], json!(13));
    assert!(o["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(inb.len(), 1);
    assert_eq!(inb[0]["direction"], "inbound");
    assert_eq!(inb[0]["bytes_sent"], json!(13));
    assert_eq!(inb[0]["src.identity"], CLIENT_ID);
}

#[tokio::test]
async fn rust_log_warn_hides_access_logs_until_the_logging_endpoint_enables_them() {
    let pair = labelled_pair(&[("RUST_LOG", "warn")], &[]).await;
    exchange(&pair, to(pair.server_ip(), pair.app.port()), b"quiet").await;
    // The server logs it (its filter shows access logs), the client must not.
    assert_eq!(access_log(&pair.server, 1).await.len(), 1);
    assert_eq!(
        access_lines(&pair.client.logs()).len(),
        0,
        "{}",
        pair.client.logs()
    );

    let get = http_fetch(pair.client.admin(), "GET", "/logging", &[])
        .await
        .unwrap();
    assert_eq!(get.status, 405);
    let shown = http_fetch(pair.client.admin(), "POST", "/logging", &[])
        .await
        .unwrap();
    assert_eq!(
        (shown.status, shown.text()),
        (200, "current log level is warn\n".into())
    );
    let changed = http_fetch(
        pair.client.admin(),
        "POST",
        "/logging?level=access=info",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(changed.status, 200);
    // Printed like tracing's EnvFilter (and so ztunnel): most specific first.
    assert_eq!(changed.text(), "current log level is access=info,warn\n");

    exchange(&pair, to(pair.server_ip(), pair.app.port()), b"loud").await;
    let lines = access_log(&pair.client, 1).await;
    assert_eq!(lines.len(), 1, "{}", pair.client.logs());
    assert_eq!(lines[0].get("bytes_sent"), Some("4"));

    // Back to the startup filter: quiet again.
    let reset = http_fetch(pair.client.admin(), "POST", "/logging?reset", &[])
        .await
        .unwrap();
    assert_eq!(reset.text(), "current log level is warn\n");
    exchange(&pair, to(pair.server_ip(), pair.app.port()), b"quiet again").await;
    assert_eq!(access_log(&pair.server, 3).await.len(), 3);
    assert_eq!(access_lines(&pair.client.logs()).len(), 1);

    let bad = http_fetch(pair.client.admin(), "POST", "/logging?level=loud", &[])
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
}

// ---- /config_dump ---------------------------------------------------------

/// A mesh whose file lists everything out of order: three workloads, two
/// services, two policies.
async fn dump_pair() -> Pair {
    let block = AddrBlock::new();
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), None).await;
    let base = Pair::mesh(&block, app.port());
    let zeta = WorkloadSpec::new(NS, "zeta", "zeta", block.ip(3));
    let other = ServiceSpec::new(NS, "zeta-service", "zeta-service.ecs-demo-1.ecs.local")
        .port(9090, 9090)
        .vip(&format!("/{}", block.ip(101)))
        .san(NS, "zeta");
    let zeta = zeta.in_service(&other.key(), 9090, 9090);
    let mesh = MeshConfig::default()
        .workload(zeta)
        .workload(base.workloads[1].clone())
        .workload(base.workloads[0].clone())
        .service(other)
        .service(base.services[0].clone())
        .policy("name: zz-allow\nnamespace: ecs-demo-1\nscope: Namespace\naction: Allow\ndryRun: false\nrules: [[[{namespaces: [!Exact ecs-demo-1]}]]]")
        .policy(DENY_POLICY);
    Pair::start_with(block, app, mesh, &[], &[]).await
}

async fn config_dump(sidecar: &Sidecar) -> (Vec<u8>, Value) {
    let resp = http_fetch(sidecar.admin(), "GET", "/config_dump", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let value = serde_json::from_slice(&resp.body).expect("config dump JSON");
    (resp.body, value)
}

fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn config_dump_lists_the_mesh_state_sorted_like_ztunnel() {
    let pair = dump_pair().await;
    let (_, dump) = config_dump(&pair.server).await;
    let w = &dump["workloads"];
    assert_eq!(
        strings(w, "uid"),
        [
            "cluster1//Pod/ecs-demo-1/echo",
            "cluster1//Pod/ecs-demo-1/shell",
            "cluster1//Pod/ecs-demo-1/zeta",
        ]
    );
    assert_eq!(
        strings(&dump["services"], "hostname"),
        [HOST, "zeta-service.ecs-demo-1.ecs.local"]
    );
    assert_eq!(
        strings(&dump["policies"], "name"),
        ["deny-port-9", "zz-allow"]
    );

    let echo = &w[0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["namespace"], NS);
    assert_eq!(echo["serviceAccount"], "echo");
    assert_eq!(echo["trustDomain"], "cluster.local");
    assert_eq!(echo["protocol"], "HBONE");
    assert_eq!(echo["workloadIps"], json!([pair.server_ip().to_string()]));
    assert_eq!(echo["status"], "Healthy");
    assert_eq!(echo["services"], json!([format!("{NS}/{HOST}")]));

    let svc = &dump["services"][0];
    assert_eq!(svc["name"], "echo-service");
    assert_eq!(svc["namespace"], NS);
    assert_eq!(svc["vips"], json!([format!("/{}", pair.block.ip(100))]));
    assert_eq!(
        svc["ports"],
        json!({ SERVICE_PORT.to_string(): pair.app.port() })
    );
    assert_eq!(
        svc["endpoints"],
        json!({
            "cluster1//Pod/ecs-demo-1/echo": {
                "workloadUid": "cluster1//Pod/ecs-demo-1/echo",
                "port": { SERVICE_PORT.to_string(): pair.app.port() },
                "status": "Healthy",
            }
        })
    );
    assert_eq!(svc["subjectAltNames"], json!([SERVER_ID]));

    let deny = &dump["policies"][0];
    assert_eq!(deny["namespace"], NS);
    assert_eq!(deny["action"], "Deny");
    assert_eq!(deny["scope"], "Namespace");
    assert_eq!(
        deny["rules"],
        json!([[[{"destinationPorts": [DENIED_PORT]}]]])
    );

    // The rest of ztunnel's document.
    assert_eq!(
        dump["staticConfig"]["workloads"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(dump["stagedServices"], json!({}));
    assert_eq!(dump["version"]["version"], env!("CARGO_PKG_VERSION"));
    for key in [
        "gitRevision",
        "rustVersion",
        "buildProfile",
        "buildStatus",
        "istioVersion",
        "cryptoProvider",
    ] {
        assert!(dump["version"][key].is_string(), "version.{key}");
    }
    assert_eq!(dump["config"]["statsAddr"], pair.server.stats().to_string());
}

/// The PEM blocks of a file (or of a dump's base64 PEM), as DER.
fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.expect("PEM").contents)
        .collect()
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn config_dump_certificate_is_the_one_in_cert_dir() {
    use base64::Engine as _;
    let pair = dump_pair().await;
    let (_, dump) = config_dump(&pair.server).await;
    let dir = pair.server.spec.cert_dir.clone().unwrap();
    let chain_pem = std::fs::read(dir.join("cert-chain.pem")).unwrap();
    let root_pem = std::fs::read(dir.join("root-cert.pem")).unwrap();

    let certs = dump["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1);
    let c = &certs[0];
    assert_eq!(c["identity"], SERVER_ID);
    assert_eq!(c["state"], "Available");
    let b64 = base64::engine::general_purpose::STANDARD;
    let dumped = |list: &Value| -> Vec<Vec<u8>> {
        list.as_array()
            .unwrap()
            .iter()
            .flat_map(|x| ders(&b64.decode(x["pem"].as_str().unwrap()).unwrap()))
            .collect()
    };
    assert_eq!(dumped(&c["certChain"]), ders(&chain_pem));
    assert_eq!(dumped(&c["rootCerts"]), ders(&root_pem));

    for (list, der) in [
        (&c["certChain"], ders(&chain_pem)),
        (&c["rootCerts"], ders(&root_pem)),
    ] {
        for (entry, der) in list.as_array().unwrap().iter().zip(der) {
            let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
            // Decimal, as istioctl parses it.
            assert_eq!(
                entry["serialNumber"],
                x509.tbs_certificate.serial.to_string()
            );
            assert_eq!(entry["validFrom"], rfc3339(x509.validity().not_before));
            assert_eq!(entry["expirationTime"], rfc3339(x509.validity().not_after));
        }
    }
}

#[tokio::test]
async fn istioctl_prints_ztunnels_tables_from_a_real_sidecar() {
    use zs_admin::istioctl;
    let pair = dump_pair().await;
    let (body, dump) = config_dump(&pair.server).await;
    let parsed = istioctl::prime(&body).expect("istioctl reads the dump");
    assert_eq!(
        istioctl::workload_summary(&parsed),
        expected_workloads(&[(2, "echo"), (1, "shell"), (3, "zeta")], &pair.block)
    );
    let vip = |n: u8| pair.block.ip(n).to_string();
    assert_eq!(
        istioctl::service_summary(&parsed),
        tab(
            &[
                vec![
                    "NAMESPACE",
                    "SERVICE NAME",
                    "SERVICE VIP",
                    "WAYPOINT",
                    "ENDPOINTS"
                ],
                vec![NS, "echo-service", &vip(100), "None", "1/1"],
                vec![NS, "zeta-service", &vip(101), "None", "1/1"],
            ],
            1
        )
    );
    assert_eq!(
        istioctl::policy_summary(&parsed),
        tab(
            &[
                vec!["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"],
                vec![NS, "deny-port-9", "Deny", "Namespace"],
                vec![NS, "zz-allow", "Allow", "Namespace"],
            ],
            1
        )
    );
    let cert = &dump["certificates"][0];
    let leaf = &cert["certChain"][0];
    let root = &cert["rootCerts"][0];
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let hex = |v: &Value| istioctl::decimal_to_hex(v.as_str().unwrap());
    assert_eq!(
        istioctl::secret_summary(&parsed),
        tab(
            &[
                vec![
                    "CERTIFICATE NAME",
                    "TYPE",
                    "STATUS",
                    "VALID CERT",
                    "SERIAL NUMBER",
                    "NOT AFTER",
                    "NOT BEFORE"
                ],
                vec![
                    SERVER_ID,
                    "Leaf",
                    "Available",
                    "true",
                    &hex(&leaf["serialNumber"]),
                    &s(&leaf["expirationTime"]),
                    &s(&leaf["validFrom"])
                ],
                vec![
                    SERVER_ID,
                    "Root",
                    "Available",
                    "true",
                    &hex(&root["serialNumber"]),
                    &s(&root["expirationTime"]),
                    &s(&root["validFrom"])
                ],
            ],
            5
        )
    );
}

/// The workload table rows for `(address index, name)`, sorted as given.
fn expected_workloads(rows: &[(u8, &str)], block: &AddrBlock) -> String {
    let mut table = vec![vec![
        "NAMESPACE".to_string(),
        "POD NAME".into(),
        "ADDRESS".into(),
        "NODE".into(),
        "WAYPOINT".into(),
        "PROTOCOL".into(),
    ]];
    for (n, name) in rows {
        table.push(vec![
            NS.to_string(),
            name.to_string(),
            block.ip(*n).to_string(),
            String::new(),
            "None".into(),
            "HBONE".into(),
        ]);
    }
    let refs: Vec<Vec<&str>> = table
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    tab(&refs, 1)
}

/// Go's tabwriter layout, written independently of the one under test: every
/// column but the last padded to its widest cell plus `padding`.
fn tab(rows: &[Vec<&str>], padding: usize) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap() + padding)
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:w$}", w = widths[c]));
                }
            }
            line + "\n"
        })
        .collect()
}
