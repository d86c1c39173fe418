//! Two sidecars in one process: a client (`ecs-demo-1/shell`) whose listeners
//! are under test, and a server (`ecs-demo-1/echo`) serving real HBONE on
//! `<its ip>:15008` in front of real applications on loopback. Certificates
//! come from a throwaway CA; every test gets its own `127.A.B.0/24` block so
//! tests run in parallel.

#![allow(dead_code)] // each test file uses a different part

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zs_proxy::drain::{self, DrainTrigger, DrainWatch};
use zs_proxy::metrics::TrafficMetrics;
use zs_proxy::{ProxyConfig, ProxyContext, SelfWorkload};
use zs_state::local::LocalConfig;
use zs_state::{MeshState, SharedMesh, Workload};
use zs_tls::testing::TestCa;
use zs_tls::{CertificateHandle, Identity};

pub const NS: &str = "ecs-demo-1";
pub const HOST: &str = "echo-service.ecs-demo-1.ecs.local";
/// The service port of the TCP echo application.
pub const ECHO_PORT: u16 = 8080;
/// The service port of the HTTP application.
pub const HTTP_PORT: u16 = 80;
/// A service with no endpoints.
pub const EMPTY_HOST: &str = "empty-service.ecs-demo-1.ecs.local";

/// A random `127.A.B.0/24` block.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    a: u8,
    b: u8,
}

impl Block {
    pub fn new() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        Block {
            a: rng.random_range(20..=250),
            b: rng.random_range(1..=250),
        }
    }

    pub fn ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, n))
    }
}

/// One sidecar's context plus the registry its metrics are in.
pub struct Side {
    pub ctx: Arc<ProxyContext>,
    pub registry: Registry,
}

impl Side {
    /// The Prometheus text of this side's metrics.
    pub fn scrape(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// The value of the first sample whose line starts with `prefix` and
    /// contains every one of `labels`, or 0 if there is none.
    pub fn sample(&self, prefix: &str, labels: &[&str]) -> u64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

/// The two-sidecar topology with its applications.
pub struct Mesh {
    pub block: Block,
    pub client: Side,
    pub server: Side,
    pub echo: EchoApp,
    pub http: HttpApp,
    pub drain: Option<DrainTrigger>,
    pub watch: DrainWatch,
}

impl Mesh {
    pub fn client_ip(&self) -> IpAddr {
        self.block.ip(1)
    }
    pub fn server_ip(&self) -> IpAddr {
        self.block.ip(2)
    }
    pub fn vip(&self) -> IpAddr {
        self.block.ip(100)
    }

    /// Starts the applications, both contexts, and the server's HBONE listener.
    pub async fn start() -> Mesh {
        Mesh::start_with_policies("[]").await
    }

    /// As [`Mesh::start`], with a local-config `policies:` value (YAML).
    pub async fn start_with_policies(policies: &str) -> Mesh {
        let block = Block::new();
        let echo = EchoApp::start().await;
        let http = HttpApp::start().await;
        let yaml = mesh_yaml(&block, echo.port(), http.port(), policies);
        let ca = TestCa::new();
        let (trigger, watch) = drain::channel();
        let client = side(&ca, &yaml, "shell", Vec::new());
        let server = side(&ca, &yaml, "echo", Vec::new());
        let hbone = TcpListener::bind(SocketAddr::new(block.ip(2), 15008))
            .await
            .expect("bind HBONE");
        tokio::spawn(zs_proxy::inbound::serve(
            server.ctx.clone(),
            hbone,
            watch.clone(),
        ));
        Mesh {
            block,
            client,
            server,
            echo,
            http,
            drain: Some(trigger),
            watch,
        }
    }

    /// Applies a change to both sides' mesh state (e.g. a new policy).
    pub fn update(&self, f: impl Fn(&mut MeshState)) {
        f(&mut self.client.ctx.mesh.write());
        f(&mut self.server.ctx.mesh.write());
    }
}

fn side(ca: &TestCa, yaml: &str, sa: &str, own_listeners: Vec<SocketAddr>) -> Side {
    let mesh = SharedMesh::new(MeshState::new());
    let parsed = LocalConfig::from_yaml(yaml).expect("mesh yaml");
    parsed.apply(&mut mesh.write());
    let me = SelfWorkload::new(Workload::new("", NS, sa, sa));
    assert!(me.refresh(&mesh.read()), "{sa} is in the mesh file");
    let certs = CertificateHandle::new_empty();
    certs.set(ca.issue(&Identity::new("cluster.local", NS, sa).unwrap()));
    let mut registry = Registry::default();
    let metrics = TrafficMetrics::register(&mut registry);
    let config = ProxyConfig {
        own_listeners,
        ..ProxyConfig::default()
    };
    let ctx = ProxyContext::new(
        config,
        mesh,
        me,
        certs,
        metrics,
        zs_proxy::dns::Resolver::from_system(),
    );
    Side { ctx, registry }
}

/// Builds a client context whose `own_listeners` are `own`, sharing nothing
/// with `mesh`'s client but the mesh file.
pub fn client_side(mesh: &Mesh, policies: &str, own: Vec<SocketAddr>) -> Side {
    let yaml = mesh_yaml(&mesh.block, mesh.echo.port(), mesh.http.port(), policies);
    let ca = TestCa::new();
    side(&ca, &yaml, "shell", own)
}

/// The local config: `shell` (.1) and `echo` (.2) speak HBONE, `legacy` (.3)
/// is a plain TCP workload; `echo-service` (VIP .100) maps 8080 to the echo
/// app and 80 to the HTTP app; `empty-service` (VIP .101) has no endpoints.
fn mesh_yaml(block: &Block, echo_port: u16, http_port: u16, policies: &str) -> String {
    let (c, s, l, v, e) = (
        block.ip(1),
        block.ip(2),
        block.ip(3),
        block.ip(100),
        block.ip(101),
    );
    format!(
        r#"
workloads:
- uid: cluster1//Pod/{NS}/shell
  name: shell
  namespace: {NS}
  serviceAccount: shell
  trustDomain: cluster.local
  workloadIps: ["{c}"]
  protocol: HBONE
  services: {{}}
- uid: cluster1//Pod/{NS}/echo
  name: echo
  namespace: {NS}
  serviceAccount: echo
  trustDomain: cluster.local
  workloadIps: ["{s}"]
  protocol: HBONE
  services:
    "{NS}/{HOST}":
      {ECHO_PORT}: {echo_port}
      {HTTP_PORT}: {http_port}
- uid: cluster1//Pod/{NS}/legacy
  name: legacy
  namespace: {NS}
  serviceAccount: legacy
  trustDomain: cluster.local
  workloadIps: ["{l}"]
  protocol: TCP
  services: {{}}
services:
- name: echo-service
  namespace: {NS}
  hostname: {HOST}
  vips: ["/{v}"]
  ports:
    {ECHO_PORT}: {echo_port}
    {HTTP_PORT}: {http_port}
  subjectAltNames: ["spiffe://cluster.local/ns/{NS}/sa/echo"]
- name: empty-service
  namespace: {NS}
  hostname: {EMPTY_HOST}
  vips: ["/{e}"]
  ports:
    {ECHO_PORT}: {echo_port}
policies: {policies}
"#
    )
}

/// A TCP echo application on `127.0.0.1`, counting accepted connections.
pub struct EchoApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApp {
    pub async fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoApp {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 application on `127.0.0.1` that describes each request it
/// gets: `/echo` streams the request body back as it arrives; `/head` answers
/// with a fixed 11-byte body (so a HEAD shows its length); every other path
/// answers `<METHOD> <target>\n` followed by the request headers, one
/// `name: value` line each, in arrival order. Counts accepted connections.
pub struct HttpApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

type AppBody = Either<Incoming, Full<Bytes>>;

async fn describe(req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    if req.uri().path() == "/echo" {
        return Ok(Response::new(Either::Left(req.into_body())));
    }
    if req.uri().path() == "/head" {
        return Ok(Response::new(Either::Right(Full::new(Bytes::from_static(
            b"eleven byte",
        )))));
    }
    let mut text = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "{}: {}\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    if let Ok(body) = body
        && !body.is_empty()
    {
        text.push_str(&format!("body: {} bytes\n", body.len()));
    }
    Ok(Response::new(Either::Right(Full::new(Bytes::from(text)))))
}

impl HttpApp {
    pub async fn start() -> HttpApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), hyper::service::service_fn(describe))
                        .await;
                });
            }
        });
        HttpApp {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects from a chosen local address (to appear as a given workload).
pub async fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(dst).await.unwrap()
}

/// Writes `msg`, half-closes, reads everything back.
pub async fn roundtrip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    out
}

/// Reads until the peer closes; what was read.
pub async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = within(stream.read_to_end(&mut out)).await;
    out
}

/// Fails the test instead of hanging (not a timing assertion: generous).
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the operation did not finish")
}
