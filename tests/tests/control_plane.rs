//! Sidecars that get everything from a control plane: mesh configuration over
//! delta xDS and certificates from the CA, both from `local-istiod` over TLS
//! (no certificate directory, no local mesh file).

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs_e2e::istiod::{LocalIstiod, eventually, readiness};
use zs_e2e::*;

const TOKENS: [&str; 6] = [
    "--token",
    "t-shell=ecs-demo-1/shell",
    "--token",
    "t-echo=ecs-demo-1/echo",
    "--token",
    "t-echo2=ecs-demo-1/echo2",
];

/// How long a sidecar may take to notice a control-plane change (a push is
/// near-instant; a reconnect after an outage waits out the client's backoff,
/// which is at most 15 s).
const CONVERGE: Duration = Duration::from_secs(30);

/// A client task (`shell`) and a server task (`echo`, banner `echo`), both
/// configured only by local-istiod.
struct Mesh {
    block: AddrBlock,
    istiod: LocalIstiod,
    app: EchoServer,
    client: Sidecar,
    server: Sidecar,
}

impl Mesh {
    async fn start(istiod_args: &[&str], sidecar_env: &[(&str, &str)]) -> Mesh {
        let block = AddrBlock::new();
        let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("echo")).await;
        let mesh = Pair::mesh(&block, app.port());
        Mesh::start_with(block, app, mesh, istiod_args, sidecar_env).await
    }

    async fn start_with(
        block: AddrBlock,
        app: EchoServer,
        mesh: MeshConfig,
        istiod_args: &[&str],
        sidecar_env: &[(&str, &str)],
    ) -> Mesh {
        let mut args = TOKENS.to_vec();
        args.extend_from_slice(istiod_args);
        let istiod = LocalIstiod::start(block.ip(10), &mesh, &args).await;
        let mut client = istiod.sidecar(block.ip(1), &format!("{NS}/shell/shell"), Some("t-shell"));
        let mut server = istiod.sidecar(block.ip(2), &format!("{NS}/echo/echo"), Some("t-echo"));
        for (k, v) in sidecar_env {
            client = client.env(k, v);
            server = server.env(k, v);
        }
        let (client, server) = tokio::join!(Sidecar::start(client), Sidecar::start(server));
        Mesh {
            block,
            istiod,
            app,
            client,
            server,
        }
    }

    /// A second server task `echo2` at `.3` (banner `echo2`), whose workload
    /// the mesh file does not list yet.
    async fn start_echo2(&self) -> (EchoServer, Sidecar) {
        let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("echo2")).await;
        let spec = self.istiod.sidecar(
            self.block.ip(3),
            &format!("{NS}/echo2/echo2"),
            Some("t-echo2"),
        );
        (app, Sidecar::start(spec).await)
    }

    fn echo2_workload(&self) -> WorkloadSpec {
        WorkloadSpec::new(NS, "echo2", "echo2", self.block.ip(3))
    }

    fn base_mesh(&self) -> MeshConfig {
        Pair::mesh(&self.block, self.app.port())
    }
}

/// Connects through the client's SOCKS5 proxy and reads the backend's banner.
async fn banner_via(
    proxy: std::net::SocketAddr,
    target: SocksTarget,
) -> Result<(TcpStream, String), u8> {
    match socks5_connect(proxy, target).await {
        SocksResult::Connected(mut s) => {
            let banner = read_line(&mut s).await;
            Ok((s, banner))
        }
        SocksResult::Refused(code) => Err(code),
        SocksResult::Closed => Err(0xff),
    }
}

/// Writes `msg` and reads the same number of bytes back, keeping the stream open.
async fn ping(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.expect("read echo");
    back
}

async fn config_dump(sidecar: &Sidecar) -> Value {
    let (code, body) = http_get(sidecar.admin(), "/config_dump")
        .await
        .expect("config_dump");
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("config_dump JSON")
}

fn serial(dump: &Value) -> String {
    dump["certificates"][0]["certChain"][0]["serialNumber"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sidecars_configured_only_by_the_control_plane_reach_each_other_over_hbone() {
    let m = Mesh::start(&[], &[]).await;
    let (mut s, banner) = banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
        .await
        .expect("connected by IP");
    assert_eq!(banner, "echo");
    assert_eq!(
        echo_roundtrip(&mut s, b"hello istiod").await,
        b"hello istiod"
    );
    let (mut s, banner) = banner_via(m.client.socks5(), to(m.block.ip(100), SERVICE_PORT))
        .await
        .expect("connected by VIP");
    assert_eq!(banner, "echo");
    assert_eq!(echo_roundtrip(&mut s, b"via vip").await, b"via vip");
    assert_eq!(m.app.accepted(), 2);

    // Both certificates come from local-istiod's CA, chained to its root.
    let dump = config_dump(&m.client).await;
    let cert = &dump["certificates"][0];
    assert_eq!(
        cert["identity"],
        "spiffe://cluster.local/ns/ecs-demo-1/sa/shell"
    );
    assert_eq!(cert["state"], "Available");
    let root_b64 = cert["rootCerts"][0]["pem"].as_str().unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .decode(root_b64)
        .unwrap();
    assert_eq!(
        String::from_utf8(root).unwrap().trim(),
        m.istiod.root_pem().trim()
    );
    let status = m.istiod.status().await;
    assert_eq!(status["ca"]["issued"], 2);
    assert_eq!(status["streams"].as_array().unwrap().len(), 2);
    assert!(
        m.server
            .logs()
            .contains("spiffe://cluster.local/ns/ecs-demo-1/sa/shell")
    );
}

#[tokio::test]
async fn xds_and_ca_headers_reach_their_own_endpoint_only() {
    let m = Mesh::start(
        &[],
        &[
            ("XDS_HEADER_X-Team", "payments"),
            ("CA_HEADER_X-Ca-Ticket", "42"),
        ],
    )
    .await;
    let status = m.istiod.status().await;
    let streams = status["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for stream in streams {
        assert_eq!(
            stream["headers"],
            serde_json::json!({"x-team": "payments"}),
            "xDS stream metadata"
        );
    }
    assert_eq!(
        status["ca"]["lastHeaders"],
        serde_json::json!({"x-ca-ticket": "42"}),
        "CA request metadata"
    );
}

#[tokio::test]
async fn workload_added_at_runtime_becomes_reachable_by_ip() {
    let m = Mesh::start(&[], &[]).await;
    let (app2, _echo2) = m.start_echo2().await;
    // Not in the mesh yet: passed through as plain TCP to an address where
    // nothing listens (the app only listens on 127.0.0.1 behind its sidecar).
    assert_eq!(
        banner_via(m.client.socks5(), to(m.block.ip(3), app2.port()))
            .await
            .map(|(_, b)| b),
        Err(5)
    );
    m.istiod
        .update_mesh(&m.base_mesh().workload(m.echo2_workload()));
    eventually("echo2 reachable through the mesh", CONVERGE, || async {
        banner_via(m.client.socks5(), to(m.block.ip(3), app2.port()))
            .await
            .is_ok_and(|(_, b)| b == "echo2")
    })
    .await;
    assert_eq!(app2.accepted(), 1);
}

#[tokio::test]
async fn workload_removed_at_runtime_is_no_longer_a_mesh_destination() {
    let m = Mesh::start(&[], &[]).await;
    banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
        .await
        .expect("reachable before the removal");
    let mut without_echo = m.base_mesh();
    without_echo.workloads.retain(|w| w.name != "echo");
    m.istiod.update_mesh(&without_echo);
    // By IP: plain TCP to the task address, where the app does not listen.
    eventually("echo no longer a mesh destination", CONVERGE, || async {
        banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
            .await
            .map(|(_, b)| b)
            == Err(5)
    })
    .await;
    // By VIP: the service has no endpoint left; nothing reaches the app.
    let accepted = m.app.accepted();
    assert!(
        banner_via(m.client.socks5(), to(m.block.ip(100), SERVICE_PORT))
            .await
            .is_err()
    );
    assert_eq!(m.app.accepted(), accepted);
}

#[tokio::test]
async fn workload_changed_at_runtime_applies_to_new_connections_while_old_ones_continue() {
    let block = AddrBlock::new();
    let one = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("one")).await;
    let two = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("two")).await;
    let mesh = Pair::mesh(&block, one.port());
    let m = Mesh::start_with(block, one, mesh, &[], &[]).await;
    let (mut old, banner) = banner_via(m.client.socks5(), to(block.ip(100), SERVICE_PORT))
        .await
        .expect("long-lived connection");
    assert_eq!(banner, "one");
    // The same workload now serves the service on another target port.
    m.istiod.update_mesh(&Pair::mesh(&block, two.port()));
    eventually("new connections reach two", CONVERGE, || async {
        banner_via(m.client.socks5(), to(block.ip(100), SERVICE_PORT))
            .await
            .is_ok_and(|(_, b)| b == "two")
    })
    .await;
    assert_eq!(ping(&mut old, b"still on one").await, b"still on one");
    assert_eq!(echo_roundtrip(&mut old, b"bye").await, b"bye");
}

#[tokio::test]
async fn malformed_resource_is_nacked_while_the_rest_applies() {
    let broken = "cluster1//Pod/ecs-demo-1/broken";
    let m = Mesh::start(&["--test-corrupt-resource", broken], &[]).await;
    let (app2, _echo2) = m.start_echo2().await;
    // One push: a valid new workload and one served malformed.
    let broken_workload = {
        let mut w = WorkloadSpec::new(NS, "broken", "broken", m.block.ip(4));
        w.uid = broken.into();
        w
    };
    m.istiod.update_mesh(
        &m.base_mesh()
            .workload(m.echo2_workload())
            .workload(broken_workload),
    );
    eventually("the valid workload applied", CONVERGE, || async {
        banner_via(m.client.socks5(), to(m.block.ip(3), app2.port()))
            .await
            .is_ok_and(|(_, b)| b == "echo2")
    })
    .await;
    let client_node = format!("ztunnel~1.1.1.1~shell.{NS}~{NS}.svc.cluster.local");
    eventually("the client's NACK recorded", CONVERGE, || async {
        m.istiod.status().await["nacks"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["node"] == client_node.as_str()))
    })
    .await;
    let status = m.istiod.status().await;
    let nack = status["nacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == client_node.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        nack["typeUrl"],
        "type.googleapis.com/istio.workload.Address"
    );
    assert_eq!(
        nack["message"],
        "cluster1//Pod/ecs-demo-1/broken: IP address must be 4 or 16 bytes, got 3"
    );
    // The client stays ready and keeps serving.
    assert_eq!(
        readiness(m.client.readiness()).await,
        (200, "ready\n".to_string())
    );
    banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
        .await
        .expect("existing destinations still reachable");
}

#[tokio::test]
async fn control_plane_outage_keeps_the_last_state_and_resyncs_when_it_returns() {
    let mut m = Mesh::start(&[], &[]).await;
    let (app2, _echo2) = m.start_echo2().await;
    let (mut long_lived, banner) = banner_via(m.client.socks5(), to(m.block.ip(100), SERVICE_PORT))
        .await
        .expect("connected before the outage");
    assert_eq!(banner, "echo");

    m.istiod.kill();
    // Existing and new connections keep working on the last state.
    assert_eq!(
        ping(&mut long_lived, b"during the outage").await,
        b"during the outage"
    );
    let (mut fresh, banner) = banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
        .await
        .expect("new connection during the outage");
    assert_eq!(banner, "echo");
    assert_eq!(echo_roundtrip(&mut fresh, b"new").await, b"new");
    assert_eq!(
        readiness(m.client.readiness()).await,
        (200, "ready\n".to_string())
    );

    // A change made while the control plane is down...
    m.istiod
        .update_mesh(&m.base_mesh().workload(m.echo2_workload()));
    assert_eq!(
        banner_via(m.client.socks5(), to(m.block.ip(3), app2.port()))
            .await
            .map(|(_, b)| b),
        Err(5)
    );
    // ...takes effect once it is back.
    m.istiod.restart().await;
    eventually("echo2 reachable after the resync", CONVERGE, || async {
        banner_via(m.client.socks5(), to(m.block.ip(3), app2.port()))
            .await
            .is_ok_and(|(_, b)| b == "echo2")
    })
    .await;
    assert_eq!(
        ping(&mut long_lived, b"after the resync").await,
        b"after the resync"
    );
    // The reconnecting client sent what it had: only the new workload was pushed.
    assert!(
        m.istiod.logs().contains("resources=1 removed=0"),
        "{}",
        m.istiod.logs()
    );
}

#[tokio::test]
async fn certificates_rotate_under_traffic_with_a_short_ttl() {
    let m = Mesh::start(&[], &[("SECRET_TTL", "4s")]).await;
    let (mut long_lived, _) = banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
        .await
        .expect("long-lived connection");
    let mut serials = vec![serial(&config_dump(&m.client).await)];
    // Rotation is due every 2 s (half of 4 s); traffic flows across several.
    for i in 0..60 {
        let msg = format!("ping {i}");
        assert_eq!(ping(&mut long_lived, msg.as_bytes()).await, msg.as_bytes());
        let s = serial(&config_dump(&m.client).await);
        if serials.last() != Some(&s) {
            serials.push(s);
        }
        if serials.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(serials.len() >= 4, "saw serials {serials:?}");
    assert_eq!(echo_roundtrip(&mut long_lived, b"last").await, b"last");
    // New connections use the current certificates on both sides.
    for _ in 0..3 {
        let (mut s, _) = banner_via(m.client.socks5(), to(m.block.ip(2), m.app.port()))
            .await
            .expect("new connection after rotations");
        assert_eq!(echo_roundtrip(&mut s, b"fresh").await, b"fresh");
    }
    let issued = m.istiod.status().await["ca"]["issued"].as_u64().unwrap();
    assert!(issued >= 6, "issued {issued}");
}

/// A sidecar that cannot get its configuration or certificate: it says why in
/// its log, its readiness names what is pending, and it accepts no traffic.
async fn assert_stuck(sidecar: &Sidecar, pending: &str, error: &str) {
    let deadline = std::time::Instant::now() + CONVERGE;
    while !sidecar.logs().contains(error) {
        assert!(
            std::time::Instant::now() < deadline,
            "{error:?} not in the sidecar log:\n{}",
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        readiness(sidecar.readiness()).await,
        (500, format!("not ready, pending: {pending}\n"))
    );
    // The SOCKS5 listener is bound but not served: a greeting gets no answer.
    let mut s = TcpStream::connect(sidecar.socks5()).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut reply = [0u8; 2];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut reply))
            .await
            .is_err(),
        "a sidecar that is not ready answered: {reply:?}"
    );
}

async fn istiod_alone(args: &[&str]) -> (AddrBlock, LocalIstiod) {
    let block = AddrBlock::new();
    let mut all = TOKENS.to_vec();
    all.extend_from_slice(args);
    let istiod = LocalIstiod::start(block.ip(10), &Pair::mesh(&block, 8080), &all).await;
    (block, istiod)
}

#[tokio::test]
async fn wrong_root_ca_is_reported_and_the_sidecar_never_becomes_ready() {
    let (block, istiod) = istiod_alone(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let other_root = dir.path().join("other-root.pem");
    std::fs::write(&other_root, zs_tls::testing::TestCa::new().roots_pem()).unwrap();
    let spec = istiod
        .sidecar(block.ip(1), &format!("{NS}/shell/shell"), Some("t-shell"))
        .env("XDS_ROOT_CA", other_root.display())
        .env("CA_ROOT_CA", other_root.display());
    let sidecar = Sidecar::spawn(spec);
    let error = format!(
        "istiod's certificate at {} does not verify against XDS_ROOT_CA (file {}): UnknownIssuer",
        istiod.url(),
        other_root.display()
    );
    assert_stuck(&sidecar, "certificates, state manager", &error).await;
    assert_eq!(istiod.status().await["ca"]["issued"], 0);
}

#[tokio::test]
async fn wrong_token_is_reported_and_the_sidecar_never_becomes_ready() {
    let (block, istiod) = istiod_alone(&[]).await;
    let spec = istiod.sidecar(
        block.ip(1),
        &format!("{NS}/shell/shell"),
        Some("not-the-token"),
    );
    let sidecar = Sidecar::spawn(spec);
    assert_stuck(
        &sidecar,
        "certificates, state manager",
        "bearer token not accepted",
    )
    .await;
    let status = istiod.status().await;
    assert_eq!(status["ca"]["lastRefusal"], "bearer token not accepted");
    assert_eq!(status["streams"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn expired_certificate_from_the_ca_is_refused_and_the_sidecar_never_becomes_ready() {
    let (block, istiod) = istiod_alone(&["--test-expired-certs"]).await;
    let spec = istiod.sidecar(block.ip(1), &format!("{NS}/shell/shell"), Some("t-shell"));
    let sidecar = Sidecar::spawn(spec);
    assert_stuck(
        &sidecar,
        "certificates",
        "the CA issued an already expired certificate for spiffe://cluster.local/ns/ecs-demo-1/sa/shell",
    )
    .await;
}

#[tokio::test]
async fn bootstrap_token_alone_configures_the_sidecar() {
    let m = Mesh::start(&[], &[]).await;
    // A third task, `shell2`, enrolled with nothing but a bootstrap token
    // (generic platform: a bearer token inside) and its workload name.
    let mut mesh = m.base_mesh();
    mesh = mesh.workload(WorkloadSpec::new(NS, "shell2", "shell", m.block.ip(5)));
    m.istiod.update_mesh(&mesh);
    m.istiod.wait_generation(2).await;
    let token = m.istiod.bootstrap_token(
        NS,
        "shell",
        serde_json::json!({"token": "t-shell", "platform": ""}),
    );
    let spec = SidecarSpec::new(m.block.ip(5), &format!("{NS}/shell2/shell"))
        .env("BOOTSTRAP_TOKEN", token);
    let sidecar = Sidecar::start(spec).await;
    let (mut s, banner) = banner_via(sidecar.socks5(), to(m.block.ip(100), SERVICE_PORT))
        .await
        .expect("connected through the bootstrapped sidecar");
    assert_eq!(banner, "echo");
    assert_eq!(
        echo_roundtrip(&mut s, b"bootstrapped").await,
        b"bootstrapped"
    );
    let dump = config_dump(&sidecar).await;
    assert_eq!(
        dump["certificates"][0]["identity"],
        "spiffe://cluster.local/ns/ecs-demo-1/sa/shell"
    );
    let status = m.istiod.status().await;
    let callers: Vec<&str> = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["caller"].as_str())
        .collect();
    assert_eq!(
        callers
            .iter()
            .filter(|c| **c == "token for ecs-demo-1/shell")
            .count(),
        2,
        "{callers:?}"
    );
}

#[tokio::test]
async fn expired_certificate_files_keep_the_sidecar_not_ready() {
    let (block, istiod) = istiod_alone(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = zs_tls::testing::TestCa::new();
    let now = std::time::SystemTime::now();
    let id = zs_identity::Identity::new("cluster.local", NS, "shell").unwrap();
    ca.issue_valid(
        &id,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    )
    .write_to(dir.path())
    .unwrap();
    // Configuration from istiod, certificate from files (a user's own PKI).
    let spec = SidecarSpec::new(block.ip(1), &format!("{NS}/shell/shell"))
        .env("XDS_ADDRESS", istiod.url())
        .env("XDS_ROOT_CA", istiod.root_cert().display())
        .env("AUTH_TOKEN", "t-shell")
        .certs(dir.path().to_path_buf());
    let sidecar = Sidecar::spawn(spec);
    assert_stuck(
        &sidecar,
        "certificates",
        "the workload certificate has expired",
    )
    .await;
}
