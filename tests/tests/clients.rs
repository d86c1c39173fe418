//! Real clients through the sidecar's listeners: curl (HTTP proxy, HTTPS over
//! CONNECT, SOCKS5), Python requests with `HTTP_PROXY`/`HTTPS_PROXY`, a tonic
//! gRPC client tunnelling through HTTP CONNECT, and a raw TCP client on a
//! `LOCAL_UPSTREAMS` port, each reaching an application behind the remote
//! sidecar over HBONE.
//!
//! curl and python3 (with `requests`) are external programs: when one is
//! missing the test says "skipped: …" and passes, unless `CI` is set, where it
//! fails (CI installs them).

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs_e2e::*;
use zs_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use zs_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use zs_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};

const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;
const GRPC_PORT: u16 = 9090;
const UPSTREAM_PORT: u16 = 9000;

/// The remote task's applications, all behind `echo-service`.
struct Apps {
    http: HttpApp,
    https: HttpApp,
    web: WebCert,
    _grpc: tokio::task::JoinHandle<()>,
}

/// A trivial gRPC service: answers the request's `csr` and who answered.
struct EchoCa;

#[tonic::async_trait]
impl IstioCertificateService for EchoCa {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain: vec![request.into_inner().csr, "answered by grpc-app".into()],
        }))
    }
}

/// The pair with echo (8080), HTTP (80), HTTPS (443) and gRPC (9090) behind
/// the service, the client sidecar with a `LOCAL_UPSTREAMS` port to the echo
/// service, and `policies` on the server side.
async fn start(policies: &[&str]) -> (Pair, Apps) {
    let block = AddrBlock::new();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let echo = EchoServer::start(loopback, None).await;
    let http = HttpApp::start(loopback, "plain").await;
    let web = WebCert::for_host(HOST);
    let https = HttpApp::start_tls(loopback, "secure", &web).await;
    let grpc_listener = TcpListener::bind(loopback).await.unwrap();
    let grpc_port = grpc_listener.local_addr().unwrap().port();
    let grpc = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(EchoCa))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                grpc_listener,
            ))
            .await;
    });
    let ports = [
        (SERVICE_PORT, echo.port()),
        (HTTP_PORT, http.port()),
        (HTTPS_PORT, https.port()),
        (GRPC_PORT, grpc_port),
    ];
    let mut svc = ServiceSpec::new(NS, "echo-service", HOST)
        .vip(&format!("/{}", block.ip(100)))
        .san(NS, "echo");
    let mut server = WorkloadSpec::new(NS, "echo", "echo", block.ip(2));
    for (service_port, target_port) in ports {
        svc = svc.port(service_port, target_port);
        server = server.in_service(&svc.key(), service_port, target_port);
    }
    let mut mesh = MeshConfig::default()
        .workload(WorkloadSpec::new(NS, "shell", "shell", block.ip(1)))
        .workload(server)
        .service(svc);
    for p in policies {
        mesh = mesh.policy(p);
    }
    let upstreams = format!(
        "{}={HOST}:{SERVICE_PORT}",
        SocketAddr::new(block.ip(1), UPSTREAM_PORT)
    );
    let pair = Pair::start_with(block, echo, mesh, &[("LOCAL_UPSTREAMS", &upstreams)], &[]).await;
    (
        pair,
        Apps {
            http,
            https,
            web,
            _grpc: grpc,
        },
    )
}

/// Whether an external program runs; otherwise says why the test is skipped
/// (or fails in CI, which must have it).
async fn available(program: &str, args: &[&str], what: &str) -> bool {
    let ok = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is required in CI but is not available"
        );
        println!("skipped: {what} is not available");
    }
    ok
}

/// Runs a program with a clean environment (no inherited proxy variables)
/// plus `env`; returns (exit code, stdout, stderr).
async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear();
    for keep in ["PATH", "HOME", "LANG"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.envs(env.iter().copied()).args(args);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("the client finished")
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl with `args`, printing the status code on a last line of its own.
async fn curl(args: &[&str]) -> (String, String) {
    let mut all = vec!["-sS", "--max-time", "20", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (code, out, err) = run("curl", &all, &[]).await;
    assert_eq!(code, 0, "curl failed: {err}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.to_string(), body.to_string())
}

fn proxy_url(pair: &Pair) -> String {
    format!("http://{}", pair.client.http_proxy())
}

#[tokio::test]
async fn curl_through_the_http_proxy_reaches_an_http_app_by_mesh_name() {
    if !available("curl", &["--version"], "curl").await {
        return;
    }
    let (pair, apps) = start(&[]).await;
    let (status, body) = curl(&["-x", &proxy_url(&pair), &format!("http://{HOST}/hello")]).await;
    assert_eq!(status, "200");
    assert_eq!(body, "plain GET /hello\n");
    assert_eq!(apps.http.accepted(), 1);
}

#[tokio::test]
async fn curl_https_through_the_http_proxy_tunnels_with_connect() {
    if !available("curl", &["--version"], "curl").await {
        return;
    }
    let (pair, apps) = start(&[]).await;
    let ca = apps.web.write_ca(pair.pki.path());
    let (status, body) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-x",
        &proxy_url(&pair),
        &format!("https://{HOST}/secret"),
    ])
    .await;
    assert_eq!(status, "200");
    assert_eq!(body, "secure GET /secret\n");
    assert_eq!(apps.https.accepted(), 1);
}

#[tokio::test]
async fn curl_through_socks5h_reaches_an_http_app_by_mesh_name() {
    if !available("curl", &["--version"], "curl").await {
        return;
    }
    let (pair, _apps) = start(&[]).await;
    let socks = format!("socks5h://{}", pair.client.socks5());
    let (status, body) = curl(&["--proxy", &socks, &format!("http://{HOST}/socks")]).await;
    assert_eq!(status, "200");
    assert_eq!(body, "plain GET /socks\n");
}

const PYTHON_GET: &str = "import sys, requests\n\
r = requests.get(sys.argv[1], verify=sys.argv[2] if len(sys.argv) > 2 else True, timeout=20)\n\
sys.stdout.write(f'{r.status_code} {r.text}')\n";

#[tokio::test]
async fn python_requests_uses_http_proxy_and_https_proxy() {
    if !available(
        "python3",
        &["-c", "import requests"],
        "python3 with requests",
    )
    .await
    {
        return;
    }
    let (pair, apps) = start(&[]).await;
    let proxy = proxy_url(&pair);
    let env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
    ];
    let (code, out, err) = run(
        "python3",
        &["-c", PYTHON_GET, &format!("http://{HOST}/py")],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "200 plain GET /py\n");

    let ca = apps.web.write_ca(pair.pki.path());
    let (code, out, err) = run(
        "python3",
        &[
            "-c",
            PYTHON_GET,
            &format!("https://{HOST}/py"),
            ca.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "200 secure GET /py\n");
}

/// Opens a tunnel through the HTTP proxy with CONNECT, as gRPC clients do
/// with `grpc_proxy`/`https_proxy` (tonic has no proxy support of its own).
async fn connect_via(
    proxy: SocketAddr,
    uri: http::Uri,
) -> std::io::Result<hyper_util::rt::TokioIo<TcpStream>> {
    let authority = uri.authority().expect("authority").to_string();
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // Byte by byte: whatever follows the head belongs to the tunnel.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(hyper_util::rt::TokioIo::new(s))
}

#[tokio::test]
async fn grpc_call_tunnels_through_http_connect_to_a_server_behind_the_remote_sidecar() {
    let (pair, _apps) = start(&[]).await;
    let proxy = pair.client.http_proxy();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{HOST}:{GRPC_PORT}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |uri| connect_via(proxy, uri)))
        .await
        .expect("gRPC channel through the HTTP proxy");
    let mut client = IstioCertificateServiceClient::new(channel);
    let response = client
        .create_certificate(IstioCertificateRequest {
            csr: "over CONNECT".into(),
            ..Default::default()
        })
        .await
        .expect("gRPC call");
    assert_eq!(
        response.into_inner().cert_chain,
        ["over CONNECT", "answered by grpc-app"]
    );
}

#[tokio::test]
async fn a_raw_tcp_client_reaches_the_service_through_a_local_upstream_port() {
    let (pair, _apps) = start(&[]).await;
    let port = SocketAddr::new(pair.client_ip(), UPSTREAM_PORT);
    let mut s = TcpStream::connect(port).await.unwrap();
    assert_eq!(
        echo_roundtrip(&mut s, b"no proxy support").await,
        b"no proxy support"
    );
    assert_eq!(pair.app.accepted(), 1);
}

#[tokio::test]
async fn a_malformed_proxy_request_is_answered_400_while_another_connection_keeps_working() {
    let (pair, _apps) = start(&[]).await;
    let proxy = pair.client.http_proxy();
    let mut tunnel = connect_via(
        proxy,
        format!("http://{HOST}:{SERVICE_PORT}").parse().unwrap(),
    )
    .await
    .expect("tunnel")
    .into_inner();

    let mut bad = TcpStream::connect(proxy).await.unwrap();
    bad.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        bad.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    assert_eq!(
        echo_roundtrip(&mut tunnel, b"unaffected").await,
        b"unaffected"
    );
}

#[tokio::test]
async fn a_target_denied_by_policy_is_answered_403_through_the_http_proxy() {
    if !available("curl", &["--version"], "curl").await {
        return;
    }
    let deny = "name: deny-shell\nnamespace: ecs-demo-1\nscope: Namespace\naction: Deny\ndryRun: false\nrules:\n- - - principals: [!Exact cluster.local/ns/ecs-demo-1/sa/shell]";
    let (pair, apps) = start(&[deny]).await;
    let (status, body) = curl(&["-x", &proxy_url(&pair), &format!("http://{HOST}/denied")]).await;
    assert_eq!(status, "403");
    assert!(
        body.contains("denied by the destination's authorization policy"),
        "{body}"
    );
    assert_eq!(apps.http.accepted(), 0);
}

#[tokio::test]
async fn an_unknown_host_is_answered_502_through_the_http_proxy() {
    if !available("curl", &["--version"], "curl").await {
        return;
    }
    let (pair, _apps) = start(&[]).await;
    // `.invalid` never resolves (RFC 6761), and no query leaves the machine for it.
    let (status, body) = curl(&["-x", &proxy_url(&pair), "http://nowhere.invalid/"]).await;
    assert_eq!(status, "502");
    assert!(
        body.starts_with("502 Bad Gateway: cannot resolve nowhere.invalid"),
        "{body}"
    );
}
