//! The health check client against a real readiness server, a closed port and
//! a server that never answers.

mod common;

use std::time::Duration;

use common::start;
use tokio::net::TcpListener;
use zs_admin::HealthError;
use zs_admin::healthcheck::check;
use zs_admin::readiness::{self, Readiness};

const TIMEOUT: Duration = Duration::from_millis(500);

async fn start_readiness(ready: &Readiness) -> common::Running {
    let ready = ready.clone();
    start(|listener, stop| async move {
        readiness::serve(listener, ready, async {
            let _ = stop.await;
        })
        .await
    })
    .await
}

#[tokio::test]
async fn ready_sidecar_passes() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    check(server.addr, TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn starting_sidecar_fails_with_its_pending_tasks() {
    let ready = Readiness::new();
    let _state = ready.register("state manager");
    let server = start_readiness(&ready).await;
    let err = check(server.addr, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, HealthError::NotReady(_)), "{err:?}");
    assert_eq!(err.to_string(), "not ready, pending: state manager");
}

#[tokio::test]
async fn draining_sidecar_fails() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    ready.set_not_ready("draining");
    let err = check(server.addr, TIMEOUT).await.unwrap_err();
    assert_eq!(err.to_string(), "not ready, pending: draining");
}

#[tokio::test]
async fn closed_port_says_connection_refused() {
    // Bind and drop to find a port nobody listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = check(addr, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, HealthError::Refused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("connection refused at {addr} — is the sidecar running?")
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts connections (the kernel completes the handshake) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let err = check(addr, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, HealthError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no answer from {addr} within 200ms")
    );
    hold.abort();
}

#[tokio::test]
async fn wrong_server_reports_its_status() {
    // The admin port answers 404 for /healthz/ready: a misconfigured address.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = socket.read(&mut buf).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\n\r\nno\x1bsuch\npath")
            .await
            .unwrap();
    });
    let err = check(addr, TIMEOUT).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("unexpected answer from {addr}: 404 Not Found no such pa")
    );
    server.await.unwrap();
}

#[tokio::test]
async fn non_http_server_is_a_bad_exchange() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
    });
    let err = check(addr, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, HealthError::Http { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("bad HTTP exchange with {addr}: ")),
        "{err}"
    );
    server.await.unwrap();
}
