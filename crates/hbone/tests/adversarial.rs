//! A client that breaks HTTP/2's rules on purpose, over real TLS, against the
//! real HBONE server: each violation gets the error code RFC 9113 names (a
//! GOAWAY for connection errors, RST_STREAM for stream errors, 400 for a
//! malformed CONNECT), and the server goes on serving other clients.

mod common;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs_hbone::H2Config;
use zs_hbone::frame::{self, Field, Head, Reason};

/// Frames the server sent back.
struct Reply(Vec<(Head, Vec<u8>)>);

impl Reply {
    fn goaway(&self) -> Option<Reason> {
        self.0
            .iter()
            .find(|(h, _)| h.kind == frame::GOAWAY)
            .map(|(_, p)| Reason(u32::from_be_bytes([p[4], p[5], p[6], p[7]])))
    }

    fn rst(&self, stream: u32) -> Option<Reason> {
        self.0
            .iter()
            .find(|(h, _)| h.kind == frame::RST_STREAM && h.stream == stream)
            .map(|(_, p)| Reason(u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
    }

    fn status(&self, stream: u32) -> Option<String> {
        let (_, block) = self
            .0
            .iter()
            .find(|(h, _)| h.kind == frame::HEADERS && h.stream == stream)?;
        let mut status = None;
        loona_hpack::Decoder::new()
            .decode_with_cb(block, |n, v| {
                if &*n == b":status" {
                    status = Some(String::from_utf8_lossy(&v).into_owned());
                }
            })
            .ok()?;
        status
    }
}

/// Sends the preface (or `preface` instead of it), a SETTINGS frame and
/// `frames` over TLS, then collects what comes back until the server closes
/// the connection or goes quiet.
async fn exchange(
    mesh: &Mesh,
    server: &TestServer,
    preface: Option<&[u8]>,
    frames: &[u8],
) -> Reply {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(mesh.client_tls(&[SERVER]))
        .connect(zs_tls::hbone_server_name(), tcp)
        .await
        .unwrap();
    let mut out = preface.unwrap_or(frame::PREFACE).to_vec();
    frame::put_settings(&mut out, &[]);
    out.extend_from_slice(frames);
    tls.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), tls.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
        while buf.len() >= frame::HEADER_LEN {
            let head = Head::parse(buf[..frame::HEADER_LEN].try_into().unwrap());
            let total = frame::HEADER_LEN + head.len as usize;
            if buf.len() < total {
                break;
            }
            buf.advance(frame::HEADER_LEN);
            frames.push((head, buf.split_to(head.len as usize).to_vec()));
        }
    }
    Reply(frames)
}

fn connect_block(authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    frame::encode_headers(
        &mut block,
        [
            Field::Indexed(frame::NAME_METHOD, b"CONNECT"),
            Field::Indexed(frame::NAME_AUTHORITY, authority.as_bytes()),
        ],
    );
    block
}

fn headers_frame(stream: u32, block: &[u8], flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, block.len(), frame::HEADERS, flags, stream);
    out.extend_from_slice(block);
    out
}

fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// The server still serves a well-behaved client.
async fn still_serving(mesh: &Mesh, server: &TestServer) {
    let (pool, _) = new_pool(H2Config::default());
    let (mut stream, _) = mesh
        .send(&pool, server.addr, "10.0.0.1:8080")
        .await
        .unwrap();
    stream.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    within(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"still here");
}

async fn server() -> (Mesh, TestServer) {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, H2Config::default(), echo_handler()).await;
    (mesh, server)
}

#[tokio::test]
async fn connection_errors_get_goaway_with_their_code() {
    let (mesh, server) = server().await;
    let ok = headers_frame(1, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS);
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "DATA on an idle stream",
            raw_frame(frame::DATA, 0, 7, b"x"),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "even stream id from a client",
            headers_frame(2, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "stream ids going backwards",
            [
                headers_frame(5, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS),
                ok.clone(),
            ]
            .concat(),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "undecodable HPACK",
            headers_frame(
                1,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                frame::FLAG_END_HEADERS,
            ),
            Reason::COMPRESSION_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            raw_frame(frame::CONTINUATION, frame::FLAG_END_HEADERS, 1, &[0x82]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a frame between HEADERS and CONTINUATION",
            [
                headers_frame(1, &connect_block("10.0.0.1:8080")[..3], 0),
                raw_frame(frame::PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "PUSH_PROMISE from a client",
            raw_frame(
                frame::PUSH_PROMISE,
                frame::FLAG_END_HEADERS,
                1,
                &[0, 0, 0, 2, 0x82],
            ),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "connection window overflow",
            raw_frame(frame::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "frame above the max frame size",
            {
                let mut f = Vec::new();
                frame::put_head(&mut f, 2 * 1024 * 1024, frame::DATA, 0, 1);
                [ok.clone(), f].concat()
            },
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "PING of the wrong size",
            raw_frame(frame::PING, 0, 0, &[0; 7]),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS on a stream",
            raw_frame(frame::SETTINGS, 0, 1, &[]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "invalid SETTINGS value",
            raw_frame(frame::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 9]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "WINDOW_UPDATE of zero on the connection",
            raw_frame(frame::WINDOW_UPDATE, 0, 0, &[0; 4]),
            Reason::PROTOCOL_ERROR,
        ),
    ];
    for (what, frames, want) in cases {
        let reply = exchange(&mesh, &server, None, &frames).await;
        assert_eq!(reply.goaway(), Some(want), "{what}");
    }
    still_serving(&mesh, &server).await;
}

#[tokio::test]
async fn a_bad_preface_ends_only_that_connection() {
    let (mesh, server) = server().await;
    let reply = exchange(
        &mesh,
        &server,
        Some(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        &[],
    )
    .await;
    assert_eq!(reply.goaway(), Some(Reason::PROTOCOL_ERROR));
    let results = server.wait_finished(1).await;
    assert!(
        results[0].as_ref().is_err_and(|e| e.contains("preface")),
        "{results:?}"
    );
    still_serving(&mesh, &server).await;
}

#[tokio::test]
async fn stream_errors_reset_only_the_stream() {
    let (mesh, server) = server().await;
    let open = |id| headers_frame(id, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS);
    // Stream 1: a stream WINDOW_UPDATE that overflows. Stream 3: DATA after END_STREAM.
    let frames = [
        open(1),
        raw_frame(frame::WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes()),
        open(3),
        raw_frame(frame::DATA, frame::FLAG_END_STREAM, 3, b"a"),
        raw_frame(frame::DATA, 0, 3, b"b"),
        open(5),
        raw_frame(frame::DATA, frame::FLAG_END_STREAM, 5, b"ping"),
    ]
    .concat();
    let reply = exchange(&mesh, &server, None, &frames).await;
    assert_eq!(reply.rst(1), Some(Reason::FLOW_CONTROL_ERROR));
    assert_eq!(reply.rst(3), Some(Reason::STREAM_CLOSED));
    assert_eq!(
        reply.goaway(),
        None,
        "stream errors must not end the connection"
    );
    // Stream 5 on the same connection was served: 200 and its echo.
    assert_eq!(reply.status(5).as_deref(), Some("200"));
    let echoed: Vec<u8> = reply
        .0
        .iter()
        .filter(|(h, _)| h.kind == frame::DATA && h.stream == 5)
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert_eq!(echoed, b"ping");
}

#[tokio::test]
async fn malformed_connects_are_answered_without_the_handler() {
    let (mesh, server) = server().await;
    let mut no_authority = Vec::new();
    frame::encode_headers(
        &mut no_authority,
        [Field::Indexed(frame::NAME_METHOD, b"CONNECT")],
    );
    let mut with_path = connect_block("10.0.0.1:8080");
    frame::encode_headers(&mut with_path, [Field::Named(b":path", b"/")]);
    let mut uppercase = connect_block("10.0.0.1:8080");
    frame::encode_headers(&mut uppercase, [Field::Named(b"Baggage", b"x")]);
    let frames = [
        headers_frame(1, &no_authority, frame::FLAG_END_HEADERS),
        headers_frame(3, &with_path, frame::FLAG_END_HEADERS),
        headers_frame(5, &uppercase, frame::FLAG_END_HEADERS),
    ]
    .concat();
    let reply = exchange(&mesh, &server, None, &frames).await;
    assert_eq!(reply.status(1).as_deref(), Some("400"));
    assert_eq!(reply.rst(3), Some(Reason::PROTOCOL_ERROR));
    assert_eq!(reply.rst(5), Some(Reason::PROTOCOL_ERROR));
    assert_eq!(reply.goaway(), None);
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let mesh = Mesh::new();
    let cfg = H2Config {
        server_max_concurrent_streams: 2,
        ..H2Config::default()
    };
    let server = TestServer::start(&mesh, cfg, echo_handler()).await;
    let frames: Vec<u8> = [1, 3, 5]
        .into_iter()
        .flat_map(|id| headers_frame(id, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS))
        .collect();
    let reply = exchange(&mesh, &server, None, &frames).await;
    assert_eq!(reply.status(1).as_deref(), Some("200"));
    assert_eq!(reply.status(3).as_deref(), Some("200"));
    assert_eq!(reply.rst(5), Some(Reason::REFUSED_STREAM));
}

#[tokio::test]
async fn data_beyond_the_stream_window_is_a_flow_control_error() {
    let mesh = Mesh::new();
    // A handler that accepts and never reads: the window is never given back.
    let handler = std::sync::Arc::new(FnHandler(|req: zs_hbone::IncomingConnect| async move {
        let _stream = req.accept(http::HeaderMap::new()).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let cfg = H2Config {
        stream_window: 64 * 1024,
        ..H2Config::default()
    };
    let server = TestServer::start(&mesh, cfg, handler).await;
    let chunk = vec![0u8; 16 * 1024];
    let mut frames = headers_frame(1, &connect_block("10.0.0.1:8080"), frame::FLAG_END_HEADERS);
    for _ in 0..5 {
        frames.extend(raw_frame(frame::DATA, 0, 1, &chunk));
    }
    let reply = exchange(&mesh, &server, None, &frames).await;
    assert_eq!(reply.rst(1), Some(Reason::FLOW_CONTROL_ERROR));
    assert_eq!(reply.goaway(), None);
}
