//! The readiness server on a real loopback socket.

mod common;

use common::{get, post, raw, start};
use http::StatusCode;
use zs_admin::readiness::{self, Readiness};

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
async fn ready_when_nothing_is_pending() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let answer = get(server.addr, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "ready\n");
    assert_eq!(answer.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn not_ready_lists_pending_tasks_sorted() {
    let ready = Readiness::new();
    let _proxy = ready.register("proxy");
    let _state = ready.register("state manager");
    let _certs = ready.register("certificates");
    let server = start_readiness(&ready).await;
    let answer = get(server.addr, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.text(),
        "not ready, pending: certificates, proxy, state manager\n"
    );
}

#[tokio::test]
async fn releasing_the_last_task_makes_it_ready() {
    let ready = Readiness::new();
    let proxy = ready.register("proxy");
    let state = ready.register("state manager");
    let server = start_readiness(&ready).await;

    drop(proxy);
    assert_eq!(
        get(server.addr, "/healthz/ready").await.text(),
        "not ready, pending: state manager\n"
    );
    state.release();
    let answer = get(server.addr, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "ready\n");
}

#[tokio::test]
async fn a_name_registered_twice_stays_pending_until_both_release() {
    let ready = Readiness::new();
    let first = ready.register("proxy");
    let second = ready.register("proxy");
    assert_eq!(ready.pending(), vec!["proxy".to_owned()]);
    drop(first);
    assert!(!ready.is_ready());
    drop(second);
    assert!(ready.is_ready());
    assert!(ready.pending().is_empty());
}

#[tokio::test]
async fn draining_makes_it_not_ready_for_good() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    assert_eq!(
        get(server.addr, "/healthz/ready").await.status,
        StatusCode::OK
    );

    ready.set_not_ready("draining");
    ready.set_not_ready("a second reason is ignored");
    let answer = get(server.addr, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.text(), "not ready, pending: draining\n");

    // A task registered and released afterwards does not bring it back.
    ready.register("proxy").release();
    assert!(!ready.is_ready());
    assert_eq!(ready.pending(), vec!["draining".to_owned()]);
}

#[tokio::test]
async fn draining_reason_sorts_among_pending_tasks() {
    let ready = Readiness::new();
    let _state = ready.register("state manager");
    let _cert = ready.register("certificates");
    ready.set_not_ready("draining");
    assert_eq!(
        ready.pending(),
        vec!["certificates", "draining", "state manager"]
    );
}

#[tokio::test]
async fn other_methods_get_405() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let answer = post(server.addr, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.body.is_empty());
}

#[tokio::test]
async fn other_paths_get_404() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    assert_eq!(
        get(server.addr, "/healthz").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(server.addr, "/healthz/ready/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(post(server.addr, "/").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn garbage_gets_400_and_the_server_keeps_serving() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let answer = raw(server.addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert_eq!(
        get(server.addr, "/healthz/ready").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_an_answer() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let answer = common::raw_then(server.addr, b"GET /healthz/ready HTTP/1.0\r\n\r\n", true).await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nready\n"), "{answer:?}");
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let mut request = b"GET /healthz/ready HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 16 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let answer = raw(server.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_sends_no_headers_is_disconnected() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    // Half a request line, then silence: the header read timeout closes it.
    let answer = raw(server.addr, b"GET /healthz").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serve_returns() {
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let addr = server.addr;
    assert_eq!(get(addr, "/healthz/ready").await.status, StatusCode::OK);
    server.stop().await;
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn serves_from_a_separate_single_threaded_runtime() {
    // The sidecar runs operator servers on their own current-thread runtime;
    // the server must not need the caller's (or any multi-thread) runtime.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let ready = Readiness::new();
    let pending = ready.register("state manager");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let control = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            readiness::serve(listener, ready, async {
                let _ = stop_rx.await;
            })
            .await
        });
    });
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(async {
        assert_eq!(
            get(addr, "/healthz/ready").await.text(),
            "not ready, pending: state manager\n"
        );
        drop(pending);
        assert_eq!(get(addr, "/healthz/ready").await.text(), "ready\n");
    });
    stop_tx.send(()).unwrap();
    control.join().unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    use bytes::Bytes;
    use http_body_util::Empty;
    let ready = Readiness::new();
    let server = start_readiness(&ready).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let client_conn = tokio::spawn(conn);
    let request = http::Request::get("/healthz/ready")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        sender.send_request(request).await.unwrap().status(),
        StatusCode::OK
    );

    // The client keeps its connection open; shutdown must still complete.
    server.stop().await;
    client_conn.await.unwrap().unwrap();
    assert!(sender.ready().await.is_err(), "connection should be closed");
}
