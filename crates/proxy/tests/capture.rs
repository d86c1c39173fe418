//! Transparent capture once the original destination is known: ingress
//! authorization, delivery and the leak guard; egress routing. (Reading the
//! original destination from a real iptables redirect needs root and network
//! namespaces: the end-to-end suite covers it.)

mod support;

use std::net::{IpAddr, SocketAddr};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_proxy::capture::{self, LeakGuard};
use zs_state::zs_authz::Policy;

/// A connection from `src` as the server side sees it: (client end, server end, peer).
async fn accepted_from(src: IpAddr, listen: IpAddr) -> (TcpStream, TcpStream, SocketAddr) {
    let listener = TcpListener::bind(SocketAddr::new(listen, 0)).await.unwrap();
    let client = connect_from(src, listener.local_addr().unwrap()).await;
    let (server, peer) = listener.accept().await.unwrap();
    (client, server, peer)
}

/// Runs the ingress path for a plaintext connection from `src` to the echo app.
async fn ingress_from(mesh: &Mesh, src: IpAddr) -> TcpStream {
    ingress_to(mesh, src, mesh.echo.port()).await
}

async fn ingress_to(mesh: &Mesh, src: IpAddr, port: u16) -> TcpStream {
    let (client, server, peer) = accepted_from(src, mesh.server_ip()).await;
    let ctx = mesh.server.ctx.clone();
    let original = SocketAddr::new(mesh.server_ip(), port);
    tokio::spawn(async move {
        capture::ingress(&ctx, &LeakGuard::new(), server, peer, original).await;
    });
    client
}

fn bypasses(mesh: &Mesh) -> u64 {
    mesh.server
        .sample("ztunnel_sidecar_mesh_bypass_connections_total", &[])
}

fn policy(yaml: &str) -> Policy {
    serde_yaml::from_str(yaml).unwrap()
}

#[tokio::test]
async fn plaintext_from_a_mesh_workload_is_counted_as_a_bypass_and_still_delivered() {
    let mesh = Mesh::start().await;
    let mut s = ingress_from(&mesh, mesh.client_ip()).await;
    assert_eq!(roundtrip(&mut s, b"straight in").await, b"straight in");
    assert_eq!(bypasses(&mesh), 1);
    assert_eq!(
        mesh.server.sample(
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"destination\"",
                "source_workload=\"shell\"",
                "source_principal=\"unknown\"",
                "connection_security_policy=\"unknown\"",
                &format!("destination_principal=\"spiffe://cluster.local/ns/{NS}/sa/echo\""),
            ]
        ),
        1
    );
    assert_eq!(
        mesh.server.sample(
            "istio_tcp_received_bytes_total{",
            &["reporter=\"destination\""]
        ),
        11
    );
}

#[tokio::test]
async fn plaintext_from_outside_the_mesh_is_delivered_and_is_not_a_bypass() {
    let mesh = Mesh::start().await;
    let mut s = ingress_from(&mesh, mesh.block.ip(77)).await;
    assert_eq!(roundtrip(&mut s, b"outsider").await, b"outsider");
    assert_eq!(bypasses(&mesh), 0);
}

#[tokio::test]
async fn plaintext_from_a_workload_without_a_sidecar_is_not_a_bypass() {
    let mesh = Mesh::start().await;
    let mut s = ingress_from(&mesh, mesh.block.ip(3)).await;
    assert_eq!(roundtrip(&mut s, b"legacy").await, b"legacy");
    assert_eq!(bypasses(&mesh), 0);
}

#[tokio::test]
async fn plaintext_is_denied_by_a_policy_that_requires_a_peer_identity() {
    let allow_shell = "\n- name: allow-shell\n  namespace: ecs-demo-1\n  scope: Namespace\n  action: Allow\n  dryRun: false\n  rules:\n  - - - principals: [!Exact cluster.local/ns/ecs-demo-1/sa/shell]\n";
    let mesh = Mesh::start_with_policies(allow_shell).await;
    let mut s = ingress_from(&mesh, mesh.client_ip()).await;
    assert_eq!(read_all(&mut s).await, b"");
    assert_eq!(mesh.echo.accepted(), 0);
    assert_eq!(
        mesh.server.sample(
            "istio_tcp_connections_failed_total{",
            &["reporter=\"destination\"", "response_flags=\"DENY\""]
        ),
        1
    );
    // The bypass is counted whatever the policy decides.
    assert_eq!(bypasses(&mesh), 1);
}

#[tokio::test]
async fn a_policy_change_closes_an_open_plaintext_connection() {
    let mesh = Mesh::start().await;
    let mut s = ingress_from(&mesh, mesh.block.ip(77)).await;
    s.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within(s.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping");

    let deny = policy(&format!(
        "name: deny-77\nnamespace: ecs-demo-1\nscope: Namespace\naction: Deny\ndryRun: false\nrules:\n- - - sourceIps: [\"{}/32\"]\n",
        mesh.block.ip(77)
    ));
    mesh.update(|state| {
        state
            .policies_mut()
            .insert("ecs-demo-1/deny-77", deny.clone());
    });
    let closed = {
        let state = mesh.server.ctx.mesh.read();
        mesh.server
            .ctx
            .tracker
            .reevaluate(&state, &mesh.server.ctx.me.get())
    };
    assert_eq!(closed.len(), 1);
    assert_eq!(read_all(&mut s).await, b"");
    assert_eq!(
        mesh.server
            .sample("ztunnel_sidecar_policy_closed_connections_total", &[]),
        1
    );
}

#[tokio::test]
async fn plaintext_to_one_of_the_proxy_ports_is_refused() {
    let mesh = Mesh::start().await;
    let mut s = ingress_to(&mesh, mesh.block.ip(77), 15008).await;
    assert_eq!(read_all(&mut s).await, b"");
    assert_eq!(
        mesh.server.sample(
            "istio_tcp_connections_failed_total{",
            &["reporter=\"destination\""]
        ),
        1
    );
}

#[tokio::test]
async fn egress_carries_the_original_destination_over_hbone() {
    let mesh = Mesh::start().await;
    let (mut client, server, peer) = accepted_from(mesh.client_ip(), mesh.client_ip()).await;
    let ctx = mesh.client.ctx.clone();
    let original = SocketAddr::new(mesh.vip(), ECHO_PORT);
    tokio::spawn(async move { capture::egress(&ctx, server, peer, original).await });
    assert_eq!(roundtrip(&mut client, b"captured").await, b"captured");
    assert_eq!(
        mesh.client.sample(
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"source\"",
                &format!("destination_service=\"{HOST}\""),
                "connection_security_policy=\"mutual_tls\"",
            ]
        ),
        1
    );
}
