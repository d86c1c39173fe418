//! `loadgen`: the project's load tool. Measures, through a SOCKS5 proxy or
//! direct:
//!
//! * `throughput` — bulk bytes per second over N connections (the sink
//!   reports what it actually received, so buffered bytes are not counted);
//! * `rr` — request/response latency (p50/p90/p99) on one kept connection;
//! * `crr` — connect → request → response → close rate with C workers;
//! * `idle` — open N connections and hold them, for memory measurements;
//! * `server` — the echo and sink servers the others talk to;
//! * `relay` — a minimal TCP forwarder, optionally with mutual TLS between two
//!   relays (no HTTP/2): run in place of the two proxies, the plain one gives
//!   the floor of two extra user-space hops on this topology, and the TLS one
//!   what a straightforward TLS tunnel reaches, so proxy overhead can be read
//!   as what is inherent and what is not;
//! * `pki` — certificate directories (`cert-chain.pem`, `key.pem`,
//!   `root-cert.pem`) from a throwaway CA, for sidecars under test.
//!
//! Results are printed as one JSON object per run, for scripts to collect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "\
usage:
  loadgen server --echo ADDR --sink ADDR
  loadgen relay --route LISTEN=TO [--route ...] [--tls-connect CERTDIR --peer NS/SA | --tls-accept CERTDIR]
  loadgen throughput --target HOST:PORT [--socks5 ADDR] [--connections N] [--duration SECS]
  loadgen rr --target HOST:PORT [--socks5 ADDR] [--size BYTES] [--count N]
  loadgen crr --target HOST:PORT [--socks5 ADDR] [--concurrency C] [--duration SECS] [--size BYTES]
  loadgen idle --target HOST:PORT [--socks5 ADDR] [--connections N] [--hold SECS]
  loadgen pki --dir DIR --identity NAMESPACE/SERVICEACCOUNT [--identity ...]
";

struct Args(Vec<String>);

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn all(&self, flag: &str) -> Vec<&str> {
        self.0
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }
    fn num<T: std::str::FromStr>(&self, flag: &str, default: T) -> anyhow::Result<T> {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("{flag}: bad value {v:?}")),
        }
    }
    fn required(&self, flag: &str) -> anyhow::Result<&str> {
        self.get(flag)
            .with_context(|| format!("{flag} is required\n{USAGE}"))
    }
}

/// Where to connect: a host:port, optionally through a SOCKS5 proxy.
#[derive(Clone)]
struct Dialer {
    target: String,
    socks5: Option<SocketAddr>,
}

impl Dialer {
    fn from(args: &Args) -> anyhow::Result<Dialer> {
        Ok(Dialer {
            target: args.required("--target")?.to_string(),
            socks5: args.get("--socks5").map(str::parse).transpose()?,
        })
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let s = match self.socks5 {
            None => TcpStream::connect(&self.target).await?,
            Some(proxy) => {
                let mut s = TcpStream::connect(proxy).await?;
                s.set_nodelay(true)?;
                let (host, port) = self.target.rsplit_once(':').context("target host:port")?;
                let port: u16 = port.parse()?;
                let mut req = vec![5, 1, 0, 5, 1, 0];
                match host.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(ip)) => {
                        req.push(1);
                        req.extend_from_slice(&ip.octets());
                    }
                    Ok(std::net::IpAddr::V6(ip)) => {
                        req.push(4);
                        req.extend_from_slice(&ip.octets());
                    }
                    Err(_) => {
                        req.push(3);
                        req.push(host.len() as u8);
                        req.extend_from_slice(host.as_bytes());
                    }
                }
                req.extend_from_slice(&port.to_be_bytes());
                // Greeting and request in one write (clients such as curl pipeline them too).
                s.write_all(&req).await?;
                let mut reply = [0u8; 12];
                s.read_exact(&mut reply).await?;
                if reply[0..2] != [5, 0] || reply[3] != 0 {
                    bail!(
                        "SOCKS5 connect to {} failed: reply {:?}",
                        self.target,
                        &reply[2..4]
                    );
                }
                s
            }
        };
        s.set_nodelay(true)?;
        Ok(s)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn server(args: &Args) -> anyhow::Result<()> {
    let echo = TcpListener::bind(args.required("--echo")?).await?;
    let sink = TcpListener::bind(args.required("--sink")?).await?;
    eprintln!(
        "echo on {}, sink on {}",
        echo.local_addr()?,
        sink.local_addr()?
    );
    let echo_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    let sink_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sink.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total: u64 = 0;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    let _ = tokio::join!(echo_task, sink_task);
    Ok(())
}

async fn throughput(args: &Args) -> anyhow::Result<()> {
    let dialer = Dialer::from(args)?;
    let conns: usize = args.num("--connections", 1)?;
    let duration = Duration::from_secs_f64(args.num("--duration", 10.0)?);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let d = dialer.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = d.connect().await?;
            let buf = vec![0x5au8; 256 * 1024];
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline {
                s.write_all(&buf).await?;
            }
            s.shutdown().await?;
            let mut got = [0u8; 8];
            s.read_exact(&mut got).await?;
            anyhow::Ok(u64::from_be_bytes(got))
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "test": "throughput", "connections": conns, "bytes": total, "seconds": secs,
            "mbit_per_s": total as f64 * 8.0 / secs / 1e6,
        })
    );
    Ok(())
}

async fn rr(args: &Args) -> anyhow::Result<()> {
    let dialer = Dialer::from(args)?;
    let size: usize = args.num("--size", 1024)?;
    let count: usize = args.num("--count", 10_000)?;
    let mut s = dialer.connect().await?;
    let req = vec![0x42u8; size];
    let mut resp = vec![0u8; size];
    for _ in 0..200 {
        s.write_all(&req).await?;
        s.read_exact(&mut resp).await?;
    }
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&req).await?;
        s.read_exact(&mut resp).await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "test": "rr", "size": size, "count": count, "seconds": secs,
            "p50_us": percentile(&lat, 0.50) as f64 / 1e3,
            "p90_us": percentile(&lat, 0.90) as f64 / 1e3,
            "p99_us": percentile(&lat, 0.99) as f64 / 1e3,
        })
    );
    Ok(())
}

async fn crr(args: &Args) -> anyhow::Result<()> {
    let dialer = Dialer::from(args)?;
    let workers: usize = args.num("--concurrency", 4)?;
    let size: usize = args.num("--size", 64)?;
    let duration = Duration::from_secs_f64(args.num("--duration", 10.0)?);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (d, done, failed, stop) = (dialer.clone(), done.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let req = vec![0x43u8; size];
            let mut resp = vec![0u8; size];
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = async {
                    let mut s = d.connect().await?;
                    s.write_all(&req).await?;
                    s.read_exact(&mut resp).await?;
                    anyhow::Ok(())
                }
                .await;
                match ok {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "test": "crr", "concurrency": workers, "connections": done.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed), "seconds": secs,
            "per_s": done.load(Ordering::Relaxed) as f64 / secs,
            "p50_us": percentile(&lat, 0.50) as f64 / 1e3,
            "p99_us": percentile(&lat, 0.99) as f64 / 1e3,
        })
    );
    Ok(())
}

async fn idle(args: &Args) -> anyhow::Result<()> {
    let dialer = Dialer::from(args)?;
    let n: usize = args.num("--connections", 1000)?;
    let hold = Duration::from_secs_f64(args.num("--hold", 10.0)?);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = dialer.connect().await?;
        // One byte each way so the connection is fully established end to end.
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        conns.push(s);
    }
    println!(
        "{}",
        serde_json::json!({"test": "idle", "connections": n, "state": "holding"})
    );
    tokio::time::sleep(hold).await;
    drop(conns);
    Ok(())
}

/// The TLS end of a relay, if any: connect with TLS to the next relay, or
/// accept TLS from the previous one. The same rustls settings as the sidecar's
/// HBONE (zs-tls configurations, mutual authentication, SPIFFE identity check)
/// and the same read-ahead under TLS, minus HTTP/2.
enum RelayTls {
    None,
    Connect(Arc<tokio_rustls::rustls::ClientConfig>),
    Accept(Arc<tokio_rustls::rustls::ServerConfig>),
}

fn load_cert(dir: &str) -> anyhow::Result<zs_tls::WorkloadCertificate> {
    let dir = std::path::Path::new(dir);
    let read =
        |f: &str| std::fs::read(dir.join(f)).with_context(|| format!("{}/{f}", dir.display()));
    Ok(zs_tls::WorkloadCertificate::from_pem(
        &read("cert-chain.pem")?,
        &read("key.pem")?,
        &read("root-cert.pem")?,
    )?)
}

async fn relay(args: &Args) -> anyhow::Result<()> {
    let opts = zs_tls::TlsOptions::default();
    let tls = match (args.get("--tls-connect"), args.get("--tls-accept")) {
        (Some(_), Some(_)) => bail!("--tls-connect and --tls-accept are exclusive"),
        (Some(dir), None) => {
            let (ns, sa) = args
                .required("--peer")?
                .split_once('/')
                .context("--peer NAMESPACE/SERVICEACCOUNT")?;
            let peer = zs_identity::Identity::new("cluster.local", ns, sa)?;
            RelayTls::Connect(zs_tls::client_config(&load_cert(dir)?, vec![peer], &opts)?)
        }
        (None, Some(dir)) => RelayTls::Accept(zs_tls::server_config(&load_cert(dir)?, &opts)?),
        (None, None) => RelayTls::None,
    };
    let tls = Arc::new(tls);
    let routes = args.all("--route");
    if routes.is_empty() {
        bail!("at least one --route is required\n{USAGE}");
    }
    for route in &routes {
        let (listen, to) = route.split_once('=').context("--route LISTEN=TO")?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        let to: SocketAddr = to.parse().with_context(|| format!("--route target {to}"))?;
        let tls = tls.clone();
        tokio::spawn(async move {
            loop {
                let (inbound, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("relay accept: {e}");
                        continue;
                    }
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay_one(inbound, to, &tls).await {
                        eprintln!("relay to {to}: {e:#}");
                    }
                });
            }
        });
    }
    eprintln!("relaying {} route(s) until killed", routes.len());
    std::future::pending().await
}

async fn relay_one(inbound: TcpStream, to: SocketAddr, tls: &RelayTls) -> anyhow::Result<()> {
    use tokio::io::copy_bidirectional_with_sizes as copy;
    const BUF: usize = 256 * 1024;
    inbound.set_nodelay(true)?;
    let outbound = TcpStream::connect(to).await?;
    outbound.set_nodelay(true)?;
    match tls {
        RelayTls::None => {
            let (mut a, mut b) = (inbound, outbound);
            copy(&mut a, &mut b, BUF, BUF).await?;
        }
        RelayTls::Connect(config) => {
            let mut b = tokio_rustls::TlsConnector::from(config.clone())
                .connect(
                    zs_tls::hbone_server_name(),
                    zs_hbone::ReadBuffered::new(outbound),
                )
                .await?;
            let mut a = inbound;
            copy(&mut a, &mut b, BUF, BUF).await?;
        }
        RelayTls::Accept(config) => {
            let mut a = tokio_rustls::TlsAcceptor::from(config.clone())
                .accept(zs_hbone::ReadBuffered::new(inbound))
                .await?;
            let mut b = outbound;
            copy(&mut a, &mut b, BUF, BUF).await?;
        }
    }
    Ok(())
}

fn pki(args: &Args) -> anyhow::Result<()> {
    use zs_tls::ca::CertificateAuthority;
    let dir = std::path::PathBuf::from(args.required("--dir")?);
    std::fs::create_dir_all(&dir)?;
    let ca_cert = dir.join("ca-cert.pem");
    let ca_key = dir.join("ca-key.pem");
    if !ca_cert.exists() {
        let ca = CertificateAuthority::new_root("loadgen test root")?;
        std::fs::write(&ca_cert, ca.cert_pem())?;
        std::fs::write(&ca_key, ca.key_pem())?;
    }
    let cert = std::fs::read_to_string(&ca_cert)?;
    let key = std::fs::read_to_string(&ca_key)?;
    let ca = CertificateAuthority::from_pem(&cert, &key, Vec::new(), &cert)?;
    for id in args.all("--identity") {
        let (ns, sa) = id
            .split_once('/')
            .context("--identity NAMESPACE/SERVICEACCOUNT")?;
        let identity = zs_identity::Identity::new("cluster.local", ns, sa)?;
        let now = std::time::SystemTime::now();
        let (issued, key) = ca.issue(
            &identity,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(7 * 86400),
        )?;
        let out = dir.join(format!("{ns}-{sa}"));
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("cert-chain.pem"), issued.cert_chain_pem())?;
        std::fs::write(out.join("key.pem"), key)?;
        std::fs::write(out.join("root-cert.pem"), ca.roots_pem())?;
        println!("{}", out.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    let args = Args(argv);
    match cmd.as_str() {
        "server" => server(&args).await,
        "throughput" => throughput(&args).await,
        "rr" => rr(&args).await,
        "crr" => crr(&args).await,
        "idle" => idle(&args).await,
        "relay" => relay(&args).await,
        "pki" => pki(&args),
        _ => {
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    }
}
