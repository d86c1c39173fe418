//! Fixed local upstream ports (`LOCAL_UPSTREAMS`) against a real HBONE server.

mod support;

use std::net::SocketAddr;

use support::*;
use tokio::net::{TcpListener, TcpStream};
use zs_proxy::outbound::Target;
use zs_proxy::upstreams;

async fn start_upstream(mesh: &Mesh, target: Target) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(mesh.client_ip(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(upstreams::serve(
        mesh.client.ctx.clone(),
        listener,
        target,
        mesh.watch.clone(),
    ));
    addr
}

#[tokio::test]
async fn a_local_upstream_port_carries_raw_tcp_to_the_mesh_service() {
    let mesh = Mesh::start().await;
    let port = start_upstream(
        &mesh,
        Target::Host {
            name: HOST.into(),
            port: ECHO_PORT,
        },
    )
    .await;
    for msg in [&b"first client"[..], b"second client"] {
        let mut s = TcpStream::connect(port).await.unwrap();
        assert_eq!(roundtrip(&mut s, msg).await, msg);
    }
    assert_eq!(mesh.echo.accepted(), 2);
    assert_eq!(
        mesh.client.sample(
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"source\"",
                &format!("destination_service=\"{HOST}\""),
                "connection_security_policy=\"mutual_tls\"",
            ]
        ),
        2
    );
}

#[tokio::test]
async fn a_local_upstream_whose_target_has_no_endpoint_closes_and_counts_a_failure() {
    let mesh = Mesh::start().await;
    let port = start_upstream(
        &mesh,
        Target::Host {
            name: EMPTY_HOST.into(),
            port: ECHO_PORT,
        },
    )
    .await;
    let mut s = TcpStream::connect(port).await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    assert_eq!(
        mesh.client.sample(
            "istio_tcp_connections_failed_total{",
            &["reporter=\"source\"", "response_flags=\"CONNECT\""]
        ),
        1
    );
}
