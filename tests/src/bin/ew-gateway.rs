//! A minimal east-west gateway for tests: what an Istio east-west gateway does
//! for double HBONE, and nothing more.
//!
//! It accepts HBONE (mutual TLS with its own gateway identity, HTTP/2) and, for
//! each CONNECT whose `:authority` is a routed `<service hostname>:<port>`,
//! opens TCP to one of that service's endpoints at its HBONE port and relays
//! the stream's bytes both ways. It never terminates what is inside: the
//! client's inner TLS session runs end to end with the destination's proxy.
//!
//! ```text
//! ew-gateway --listen 0.0.0.0:15008 --cert-dir DIR \
//!     --route echo-service.ecs.local:8080=10.2.0.21,10.2.0.22 [--route ...]
//! ```
//!
//! `DIR` holds `cert-chain.pem`, `key.pem` and `root-cert.pem`. Endpoints are
//! dialed at port 15008 (`--upstream-port` to change), round-robin, skipping one
//! that refuses. Each CONNECT is logged on stdout as one line that tests parse:
//!
//! ```text
//! connect authority=<a> peer=<ip:port> identity=<spiffe id or -> upstream=<ip:port or -> status=<code>
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use zs_hbone::{ConnectHandler, H2Config, IncomingConnect, serve_connection};
use zs_tls::{TlsOptions, WorkloadCertificate};

const USAGE: &str = "usage: ew-gateway --listen ADDR --cert-dir DIR \
                     [--route HOST:PORT=IP[,IP...]]... [--upstream-port PORT]";

/// How long to wait for an endpoint to accept before trying the next one.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    listen: SocketAddr,
    cert_dir: PathBuf,
    routes: HashMap<String, Vec<IpAddr>>,
    upstream_port: u16,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut cert_dir = None;
    let mut routes = HashMap::new();
    let mut upstream_port = 15008;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|_| format!("bad --listen {v}"))?);
            }
            "--cert-dir" => cert_dir = Some(PathBuf::from(value()?)),
            "--upstream-port" => {
                let v = value()?;
                upstream_port = v.parse().map_err(|_| format!("bad --upstream-port {v}"))?;
            }
            "--route" => {
                let v = value()?;
                let (authority, ips) = v
                    .split_once('=')
                    .ok_or(format!("bad --route {v}: want HOST:PORT=IP[,IP...]"))?;
                let ips = ips
                    .split(',')
                    .map(|ip| ip.parse().map_err(|_| format!("bad endpoint {ip} in {v}")))
                    .collect::<Result<Vec<IpAddr>, String>>()?;
                routes.insert(authority.to_ascii_lowercase(), ips);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        cert_dir: cert_dir.ok_or("--cert-dir is required")?,
        routes,
        upstream_port,
    })
}

fn load_cert(dir: &std::path::Path) -> Result<WorkloadCertificate, String> {
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    WorkloadCertificate::from_pem(
        &read("cert-chain.pem")?,
        &read("key.pem")?,
        &read("root-cert.pem")?,
    )
    .map_err(|e| e.to_string())
}

/// Relays each routed CONNECT to an endpoint's HBONE port.
struct Relay {
    routes: HashMap<String, Vec<IpAddr>>,
    upstream_port: u16,
    next: AtomicUsize,
}

impl Relay {
    /// The first endpoint that accepts, starting at the round-robin position.
    async fn dial(&self, endpoints: &[IpAddr]) -> Option<(TcpStream, SocketAddr)> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..endpoints.len() {
            let addr =
                SocketAddr::new(endpoints[(start + i) % endpoints.len()], self.upstream_port);
            if let Ok(Ok(s)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                let _ = s.set_nodelay(true);
                return Some((s, addr));
            }
        }
        None
    }
}

impl ConnectHandler for Relay {
    async fn handle(self: Arc<Self>, req: IncomingConnect) {
        let authority = req.authority().unwrap_or("-").to_string();
        let identity = req
            .peer_identity()
            .map_or_else(|| "-".to_string(), ToString::to_string);
        let peer = req.peer_addr();
        let log = |upstream: Option<SocketAddr>, status: StatusCode| {
            let upstream = upstream.map_or_else(|| "-".to_string(), |u| u.to_string());
            println!(
                "connect authority={authority} peer={peer} identity={identity} upstream={upstream} status={}",
                status.as_u16()
            );
        };
        let Some(endpoints) = self.routes.get(&authority.to_ascii_lowercase()) else {
            log(None, StatusCode::SERVICE_UNAVAILABLE);
            req.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        };
        let Some((mut upstream, addr)) = self.dial(endpoints).await else {
            log(None, StatusCode::SERVICE_UNAVAILABLE);
            req.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        };
        let Ok(mut stream) = req.accept(HeaderMap::new()) else {
            return;
        };
        log(Some(addr), StatusCode::OK);
        let _ = zs_hbone::copy::copy_bidirectional(&mut stream, &mut upstream, &()).await;
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ew-gateway: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let cert = load_cert(&args.cert_dir).unwrap_or_else(|e| {
        eprintln!(
            "ew-gateway: certificate in {}: {e}",
            args.cert_dir.display()
        );
        std::process::exit(1);
    });
    let tls = zs_tls::server_config(&cert, &TlsOptions::default()).unwrap_or_else(|e| {
        eprintln!("ew-gateway: TLS configuration: {e}");
        std::process::exit(1);
    });
    let listener = TcpListener::bind(args.listen).await.unwrap_or_else(|e| {
        eprintln!("ew-gateway: bind {}: {e}", args.listen);
        std::process::exit(1);
    });
    let relay = Arc::new(Relay {
        routes: args.routes,
        upstream_port: args.upstream_port,
        next: AtomicUsize::new(0),
    });
    let h2 = H2Config::default();
    println!("listening {}", args.listen);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, relay, h2) = (tls.clone(), relay.clone(), h2.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_connection(tcp, tls, &h2, relay, std::future::pending()).await {
                println!("error peer={peer} {e}");
            }
        });
    }
}
