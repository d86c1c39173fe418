//! Our HTTP/2 layer against the `h2` crate, the HTTP/2 implementation upstream
//! ztunnel is built on, in both directions, over real TLS: CONNECT, echo,
//! half-close, transfers larger than every flow-control window, resets,
//! header blocks split into CONTINUATION frames, many concurrent streams, and
//! both ztunnel's settings and h2's defaults (16 KiB frames, 64 KiB windows).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_hbone::{H2Config, IncomingConnect};

type H2Client = h2::client::SendRequest<Bytes>;

/// An `h2` client over TLS to `addr`, configured as ztunnel configures it, or
/// with h2's defaults.
async fn h2_client(mesh: &Mesh, addr: std::net::SocketAddr, ztunnel_settings: bool) -> H2Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(mesh.client_tls(&[SERVER]))
        .connect(zs_tls::hbone_server_name(), tcp)
        .await
        .unwrap();
    let mut builder = h2::client::Builder::new();
    if ztunnel_settings {
        builder
            .initial_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .max_frame_size(1024 * 1024);
    }
    let (send, conn) = builder.handshake::<_, Bytes>(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn h2_connect(
    client: &mut H2Client,
    authority: &str,
    headers: HeaderMap,
) -> (StatusCode, h2::SendStream<Bytes>, h2::RecvStream) {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(())
        .unwrap();
    *request.headers_mut() = headers;
    let mut ready = client.clone().ready().await.unwrap();
    let (response, send) = ready.send_request(request, false).unwrap();
    let response = within(Duration::from_secs(10), response).await.unwrap();
    let status = response.status();
    (status, send, response.into_body())
}

/// Sends `data` on an h2 stream, respecting its flow control.
async fn h2_send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes, end: bool) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let n = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .unwrap()
            .unwrap();
        let chunk = data.split_to(n.min(data.len()));
        send.send_data(chunk, false).unwrap();
    }
    if end {
        send.send_data(Bytes::new(), true).unwrap();
    }
}

/// Reads an h2 stream to its end, releasing window as it goes.
async fn h2_read_all(recv: &mut h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        recv.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    out
}

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn h2_client_to_our_server_echoes_with_either_settings() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    for ztunnel_settings in [true, false] {
        let mut client = h2_client(&mesh, server.addr, ztunnel_settings).await;
        let (status, mut send, mut recv) =
            h2_connect(&mut client, "10.0.0.1:8080", HeaderMap::new()).await;
        assert_eq!(status, StatusCode::OK);
        // Larger than h2's default 64 KiB windows and our 4 MiB stream window.
        let data = pattern(9 * 1024 * 1024 + 17);
        let sender = {
            let data = data.clone();
            tokio::spawn(async move { h2_send_all(&mut send, data, true).await })
        };
        let echoed = within(Duration::from_secs(60), h2_read_all(&mut recv)).await;
        sender.await.unwrap();
        assert_eq!(echoed.len(), data.len());
        assert!(
            echoed == data[..],
            "echo differs (ztunnel settings: {ztunnel_settings})"
        );
    }
}

#[tokio::test]
async fn h2_client_sees_our_server_answer_and_headers() {
    let mesh = Mesh::new();
    let handler = Arc::new(FnHandler(|req: IncomingConnect| async move {
        let mut extra = HeaderMap::new();
        // The request's headers come back, so the test sees what arrived.
        for (name, value) in req.headers() {
            extra.append(name.clone(), value.clone());
        }
        match req.authority() {
            Some("10.0.0.1:401") => req.reject(StatusCode::UNAUTHORIZED),
            _ => {
                let stream = req.accept(extra).unwrap();
                drop(stream);
            }
        }
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let mut client = h2_client(&mesh, server.addr, false).await;

    // A header block of 40 KiB: h2 splits it into HEADERS + CONTINUATION.
    let mut headers = HeaderMap::new();
    let big = "b".repeat(40 * 1024);
    headers.insert("baggage", HeaderValue::from_str(&big).unwrap());
    headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri("10.0.0.1:8080")
        .body(())
        .unwrap();
    *request.headers_mut() = headers;
    let (response, _send) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(request, false)
        .unwrap();
    let response: Response<h2::RecvStream> =
        within(Duration::from_secs(10), response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["baggage"].len(), big.len());
    assert_eq!(response.headers()["traceparent"], "00-abc-def-01");

    let (status, _, _) = h2_connect(&mut client, "10.0.0.1:401", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn h2_client_reset_reads_as_eof_on_our_server() {
    let mesh = Mesh::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = Arc::new(FnHandler(move |req: IncomingConnect| {
        let tx = tx.clone();
        async move {
            let mut stream = req.accept(HeaderMap::new()).unwrap();
            let mut buf = Vec::new();
            let res = stream.read_to_end(&mut buf).await;
            let _ = tx.send((res.map_err(|e| e.kind()), buf));
        }
    }));
    let server = TestServer::start(&mesh, H2Config::default(), handler).await;
    let mut client = h2_client(&mesh, server.addr, true).await;
    let (_, mut send, _recv) = h2_connect(&mut client, "10.0.0.1:8080", HeaderMap::new()).await;
    send.send_data(Bytes::from_static(b"partial"), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    send.send_reset(h2::Reason::CANCEL);
    let (res, buf) = within(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert_eq!(res, Ok(7));
    assert_eq!(buf, b"partial");
}

#[tokio::test]
async fn many_concurrent_h2_streams_to_our_server() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    let client = h2_client(&mesh, server.addr, true).await;
    let mut tasks = Vec::new();
    for i in 0..150u32 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (status, mut send, mut recv) =
                h2_connect(&mut client, "10.0.0.1:8080", HeaderMap::new()).await;
            assert_eq!(status, StatusCode::OK);
            let msg = Bytes::from(format!("stream {i} ").repeat(100));
            h2_send_all(&mut send, msg.clone(), true).await;
            assert_eq!(h2_read_all(&mut recv).await, msg);
        }));
    }
    for t in tasks {
        within(Duration::from_secs(30), t).await.unwrap();
    }
}

/// An `h2` server over TLS that answers every CONNECT with 200 and echoes, or
/// resets streams whose authority asks for it.
async fn h2_server(mesh: &Mesh, ztunnel_settings: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(mesh.server_tls());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let tls = tls.accept(tcp).await.unwrap();
                let mut builder = h2::server::Builder::new();
                if ztunnel_settings {
                    builder
                        .initial_window_size(4 * 1024 * 1024)
                        .initial_connection_window_size(16 * 1024 * 1024)
                        .max_frame_size(1024 * 1024)
                        .max_concurrent_streams(200);
                }
                let mut conn = builder.handshake::<_, Bytes>(tls).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let authority = request.uri().authority().map(|a| a.to_string());
                        let mut recv = request.into_body();
                        if authority.as_deref() == Some("10.0.0.1:9") {
                            let _ = respond.send_response(Response::new(()), false).unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            respond.send_reset(h2::Reason::INTERNAL_ERROR);
                            return;
                        }
                        let mut send = respond.send_response(Response::new(()), false).unwrap();
                        let data = h2_read_all(&mut recv).await;
                        h2_send_all(&mut send, data.into(), true).await;
                    });
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn our_client_to_h2_server_with_either_settings() {
    let mesh = Mesh::new();
    for ztunnel_settings in [true, false] {
        let addr = h2_server(&mesh, ztunnel_settings).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn = zs_hbone::connect(tcp, mesh.client_tls(&[SERVER]), &H2Config::default())
            .await
            .unwrap();
        let request = zs_hbone::ConnectRequest {
            authority: "10.0.0.1:8080".into(),
            headers: HeaderMap::new(),
        };
        let (mut stream, response) = conn.send_connect(request.clone()).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        let data = pattern(6 * 1024 * 1024 + 3);
        let (mut r, mut w) = tokio::io::split(&mut stream);
        let write = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let read = async {
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.unwrap();
            out
        };
        let ((), echoed) =
            within(Duration::from_secs(60), async { tokio::join!(write, read) }).await;
        assert!(
            echoed == data[..],
            "echo differs (ztunnel settings: {ztunnel_settings})"
        );

        // Concurrent streams on the same connection.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (conn, request) = (conn.clone(), request.clone());
            tasks.push(tokio::spawn(async move {
                let (mut s, _) = conn.send_connect(request).await.unwrap();
                let msg = format!("hello {i}").repeat(50);
                s.write_all(msg.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                assert_eq!(out, msg);
            }));
        }
        for t in tasks {
            within(Duration::from_secs(20), t).await.unwrap();
        }
    }
}

#[tokio::test]
async fn h2_server_reset_is_an_error_on_our_stream() {
    let mesh = Mesh::new();
    let addr = h2_server(&mesh, true).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let conn = zs_hbone::connect(tcp, mesh.client_tls(&[SERVER]), &H2Config::default())
        .await
        .unwrap();
    let (mut stream, _) = conn
        .send_connect(zs_hbone::ConnectRequest {
            authority: "10.0.0.1:9".into(),
            headers: HeaderMap::new(),
        })
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let err = within(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("INTERNAL_ERROR"), "{err}");
    // The connection itself is fine.
    assert!(conn.is_ready());
}
