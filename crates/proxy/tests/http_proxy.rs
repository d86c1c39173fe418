//! The HTTP proxy listener against a real HBONE server and real applications.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_proxy::drain;
use zs_proxy::http_proxy::{self, Dialer};
use zs_proxy::outbound::{Established, OutboundError, OutboundRequest};

async fn start_proxy(mesh: &Mesh) -> SocketAddr {
    start_proxy_for(mesh, &mesh.client).await
}

async fn start_proxy_for(mesh: &Mesh, side: &Side) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(mesh.client_ip(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http_proxy::serve(
        side.ctx.clone(),
        listener,
        mesh.watch.clone(),
    ));
    addr
}

/// Reads one response head (through the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(s.read(&mut byte)).await.unwrap();
        assert_ne!(
            n,
            0,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads one response with a `content-length` body: (status, head, body).
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let head = read_head(s).await;
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    within(s.read_exact(&mut body)).await.unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// `CONNECT target`: the response head and the connection.
async fn connect(proxy: SocketAddr, target: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    (head, s)
}

/// `CONNECT target` that must fail: (status, body).
async fn connect_error(proxy: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut s).await;
    (status, body)
}

async fn client(proxy: SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    within(sender.ready()).await.unwrap();
    let response = within(sender.send_request(req)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = within(body.collect()).await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    let host = uri.parse::<http::Uri>().unwrap();
    Request::get(uri)
        .header("host", host.authority().unwrap().as_str())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The header lines the HTTP application reported, sorted.
fn reported_headers(body: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = body.lines().skip(1).collect();
    lines.sort_unstable();
    lines
}

#[tokio::test]
async fn connect_answers_200_connection_established_then_tunnels_to_the_mesh_service() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let (head, mut s) = connect(proxy, &format!("{HOST}:{ECHO_PORT}")).await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    assert_eq!(
        roundtrip(&mut s, b"through the tunnel").await,
        b"through the tunnel"
    );
    assert_eq!(mesh.echo.accepted(), 1);
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

#[tokio::test]
async fn connect_to_a_workload_address_is_carried_over_hbone() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let target = SocketAddr::new(mesh.server_ip(), mesh.echo.port());
    let (head, mut s) = connect(proxy, &target.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(roundtrip(&mut s, b"by address").await, b"by address");
    assert_eq!(
        mesh.server.sample(
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"destination\"",
                &format!("source_principal=\"spiffe://cluster.local/ns/{NS}/sa/shell\""),
            ]
        ),
        1
    );
}

#[tokio::test]
async fn connect_denied_by_the_destination_policy_is_answered_403() {
    let deny = "\n- name: deny-own-namespace\n  namespace: ecs-demo-1\n  scope: Namespace\n  action: Deny\n  dryRun: false\n  rules:\n  - - - namespaces: [!Exact ecs-demo-1]\n";
    let mesh = Mesh::start_with_policies(deny).await;
    let proxy = start_proxy(&mesh).await;
    let (status, body) = connect_error(proxy, &format!("{HOST}:{ECHO_PORT}")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        format!(
            "403 Forbidden: connection to {}:{} denied by the destination's authorization policy\n",
            mesh.server_ip(),
            mesh.echo.port()
        )
    );
    assert_eq!(mesh.echo.accepted(), 0);
}

#[tokio::test]
async fn connect_to_an_unknown_host_is_answered_502() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    // `.invalid` never resolves (RFC 6761); the resolver answers it locally.
    let (status, body) = connect_error(proxy, "nowhere.invalid:80").await;
    assert_eq!(status, 502);
    assert!(
        body.starts_with("502 Bad Gateway: cannot resolve nowhere.invalid"),
        "{body}"
    );
}

#[tokio::test]
async fn connect_to_a_service_without_endpoints_is_answered_503() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let (status, body) = connect_error(proxy, &format!("{EMPTY_HOST}:{ECHO_PORT}")).await;
    assert_eq!(status, 503);
    assert!(body.starts_with("503 Service Unavailable: "), "{body}");
}

#[tokio::test]
async fn connect_to_a_closed_port_is_answered_502() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let closed = SocketAddr::new(mesh.block.ip(50), 1);
    let (status, body) = connect_error(proxy, &closed.to_string()).await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        format!("502 Bad Gateway: connection to {closed} refused\n")
    );
}

#[tokio::test]
async fn connect_back_into_the_proxy_itself_is_answered_403() {
    let mesh = Mesh::start().await;
    let listener = TcpListener::bind(SocketAddr::new(mesh.client_ip(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let side = client_side(&mesh, "[]", vec![addr]);
    tokio::spawn(http_proxy::serve(
        side.ctx.clone(),
        listener,
        mesh.watch.clone(),
    ));
    let (status, body) = connect_error(addr, &addr.to_string()).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        format!("403 Forbidden: {addr} is one of this proxy's own ports\n")
    );
}

#[tokio::test]
async fn connect_without_a_port_is_answered_400() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let (status, body) = connect_error(proxy, HOST).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        format!("400 Bad Request: CONNECT needs host:port (authority form), got \"{HOST}\"\n")
    );
}

#[tokio::test]
async fn absolute_form_request_is_forwarded_in_origin_form_with_host_from_the_url() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let (status, _, body) = send(&mut c, get(&format!("http://{HOST}/hello?x=1"))).await;
    assert_eq!(status, 200);
    assert_eq!(body.lines().next(), Some("GET /hello?x=1"));
    assert_eq!(reported_headers(&body), [format!("host: {HOST}")]);
}

#[tokio::test]
async fn hop_by_hop_headers_and_proxy_credentials_are_not_forwarded() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let req = Request::get(format!("http://{HOST}/headers"))
        .header("host", "not-the-url.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic c2VjcmV0OnNlY3JldA==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert_eq!(
        reported_headers(&body),
        [format!("host: {HOST}"), "x-end-to-end: kept".to_string()]
    );
}

#[tokio::test]
async fn keep_alive_requests_to_one_host_share_one_upstream_connection() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    for path in ["/one", "/two", "/three"] {
        let (status, _, body) = send(&mut c, get(&format!("http://{HOST}{path}"))).await;
        assert_eq!(status, 200);
        assert_eq!(body.lines().next(), Some(format!("GET {path}").as_str()));
    }
    assert_eq!(mesh.http.accepted(), 1);
    assert_eq!(
        mesh.client.sample(
            "istio_tcp_connections_opened_total{",
            &["reporter=\"source\""]
        ),
        1
    );
}

#[tokio::test]
async fn a_request_to_another_host_opens_another_upstream_connection() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let (s1, _, _) = send(&mut c, get(&format!("http://{HOST}/by-name"))).await;
    let (s2, _, body) = send(&mut c, get(&format!("http://{}/by-vip", mesh.vip()))).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(body.lines().next(), Some("GET /by-vip"));
    assert_eq!(mesh.http.accepted(), 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut batch = String::new();
    for path in ["/first", "/second", "/third"] {
        batch.push_str(&format!(
            "GET http://{HOST}{path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        ));
    }
    s.write_all(batch.as_bytes()).await.unwrap();
    for path in ["/first", "/second", "/third"] {
        let (status, _, body) = read_response(&mut s).await;
        assert_eq!(status, 200);
        assert_eq!(body.lines().next(), Some(format!("GET {path}").as_str()));
    }
}

#[tokio::test]
async fn request_and_response_bodies_stream_through_without_buffering() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!(
            "POST http://{HOST}/echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The application echoes as it reads: "first" can only come back if the
    // proxy passed the first chunk on before the request body ended.
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = within(s.read(&mut buf)).await.unwrap();
        assert_ne!(n, 0, "closed before the first chunk came back");
        seen.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    while !seen.ends_with(b"0\r\n\r\n") {
        let n = within(s.read(&mut buf)).await.unwrap();
        assert_ne!(n, 0, "closed before the body ended");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(seen).unwrap();
    assert!(text.contains("second"), "{text}");
}

#[tokio::test]
async fn a_large_request_body_arrives_whole() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let req = Request::post(format!("http://{HOST}/upload"))
        .header("host", HOST)
        .header("content-length", "1048576")
        .body(Full::new(Bytes::from(vec![7u8; 1 << 20])))
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("body: 1048576 bytes\n"), "{body}");
}

#[tokio::test]
async fn a_head_response_keeps_its_content_length() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let req = Request::head(format!("http://{HOST}/head"))
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], "11");
    assert_eq!(body, "");
}

#[tokio::test]
async fn an_absolute_form_request_to_an_unknown_host_is_answered_502() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let (status, headers, body) = send(&mut c, get("http://nowhere.invalid/")).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        body.starts_with("502 Bad Gateway: cannot resolve nowhere.invalid"),
        "{body}"
    );
}

#[tokio::test]
async fn an_origin_form_request_is_answered_400_saying_this_is_a_proxy() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "400 Bad Request: this is an HTTP proxy: send absolute-form requests (GET http://host:port/path) or CONNECT host:port\n"
    );
}

#[tokio::test]
async fn an_https_absolute_uri_is_answered_400_pointing_to_connect() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut c = client(proxy).await;
    let (status, _, body) = send(&mut c, get(&format!("https://{HOST}/"))).await;
    assert_eq!(status, 400);
    assert!(body.contains("https:// URLs go through CONNECT"), "{body}");
    assert_eq!(mesh.http.accepted(), 0);
}

#[tokio::test]
async fn a_malformed_request_is_answered_400_while_other_connections_keep_working() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let (head, mut tunnel) = connect(proxy, &format!("{HOST}:{ECHO_PORT}")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

    let mut bad = TcpStream::connect(proxy).await.unwrap();
    bad.write_all(b"GET http://x/ HTTP/1.1\r\nBad Header Line\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_all(&mut bad).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    assert_eq!(roundtrip(&mut tunnel, b"still here").await, b"still here");
    let mut c = client(proxy).await;
    let (status, _, _) = send(&mut c, get(&format!("http://{HOST}/after"))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_headers_are_answered_431() {
    let mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let huge = "a".repeat(http_proxy::MAX_HEADER_BYTES);
    let request = format!("GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {huge}\r\n\r\n");
    // The proxy may close before reading everything; only its answer matters.
    let _ = s.write_all(request.as_bytes()).await;
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert_eq!(mesh.http.accepted(), 0);
}

#[tokio::test]
async fn a_drain_closes_idle_connections_and_lets_tunnels_finish() {
    let mut mesh = Mesh::start().await;
    let proxy = start_proxy(&mesh).await;
    let (head, mut tunnel) = connect(proxy, &format!("{HOST}:{ECHO_PORT}")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut idle = TcpStream::connect(proxy).await.unwrap();
    idle.write_all(format!("GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut idle).await;
    assert_eq!(status, 200);

    let trigger = mesh.drain.take().unwrap();
    tokio::spawn(trigger.start_drain(Duration::from_secs(60)));
    assert_eq!(read_all(&mut idle).await, b"");
    assert_eq!(roundtrip(&mut tunnel, b"after drain").await, b"after drain");
}

/// Refuses every destination: the listener's own behaviour without a mesh.
struct Refuse;

impl Dialer for Refuse {
    async fn dial(&self, req: &OutboundRequest) -> Result<Established, OutboundError> {
        Err(OutboundError::Refused {
            addr: req.target.to_string(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (mut client, server) = tokio::io::duplex(4096);
    let (_trigger, watch) = drain::channel();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let conn = tokio::spawn(http_proxy::serve_connection(
        Arc::new(Refuse),
        server,
        peer,
        watch,
    ));
    client
        .write_all(b"GET http://echo.example/ HTTP/1.1\r\nHost: echo")
        .await
        .unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "");
    conn.await.unwrap();
}
