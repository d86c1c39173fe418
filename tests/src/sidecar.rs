//! Running a real `ztunnel-sidecar` process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bins::bin;

/// How to start one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    /// The sidecar's address: HBONE, SOCKS5 and the admin ports all bind here.
    pub ip: IpAddr,
    /// `namespace/name/serviceAccount`
    pub workload: String,
    pub cert_dir: Option<PathBuf>,
    pub local_xds: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// A network namespace to run in (through `ip netns exec`, so per-namespace
    /// `/etc/netns/<name>/resolv.conf` applies).
    pub netns: Option<String>,
}

impl SidecarSpec {
    pub fn new(ip: IpAddr, workload: &str) -> Self {
        SidecarSpec {
            ip,
            workload: workload.into(),
            cert_dir: None,
            local_xds: None,
            env: Vec::new(),
            netns: None,
        }
    }

    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.into());
        self
    }

    pub fn certs(mut self, dir: PathBuf) -> Self {
        self.cert_dir = Some(dir);
        self
    }

    pub fn mesh(mut self, file: PathBuf) -> Self {
        self.local_xds = Some(file);
        self
    }

    pub fn env(mut self, k: &str, v: impl ToString) -> Self {
        self.env.push((k.into(), v.to_string()));
        self
    }
}

/// A running sidecar process; killed when dropped.
pub struct Sidecar {
    pub spec: SidecarSpec,
    child: Option<Child>,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Sidecar {
    pub fn socks5(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15080)
    }
    pub fn http_proxy(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15081)
    }
    pub fn hbone(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15008)
    }
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15000)
    }
    pub fn stats(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15020)
    }
    pub fn readiness(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, 15021)
    }

    /// Starts the process (without waiting for readiness).
    pub fn spawn(spec: SidecarSpec) -> Sidecar {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("sidecar.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let ip = spec.ip;
        let addr = |port: u16| SocketAddr::new(ip, port).to_string();
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("ztunnel-sidecar"));
                c
            }
            None => Command::new(bin("ztunnel-sidecar")),
        };
        cmd.env_clear()
            .env("PROXY_WORKLOAD_INFO", &spec.workload)
            .env("HBONE_ADDR", addr(15008))
            .env("SOCKS5_ADDR", addr(15080))
            .env("HTTP_PROXY_ADDR", addr(15081))
            .env("ADMIN_ADDR", addr(15000))
            .env("STATS_ADDR", addr(15020))
            .env("READINESS_ADDR", addr(15021))
            .env("RUST_LOG", "info,access=debug")
            .env("TERMINATION_GRACE_PERIOD_SECONDS", "5")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile);
        if let Some(d) = &spec.cert_dir {
            cmd.env("CERT_DIR", d);
        }
        if let Some(f) = &spec.local_xds {
            cmd.env("LOCAL_XDS_PATH", f);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ztunnel-sidecar");
        Sidecar {
            spec,
            child: Some(child),
            log,
            _logdir: logdir,
        }
    }

    /// Starts the process and waits until `/healthz/ready` says 200.
    pub async fn start(spec: SidecarSpec) -> Sidecar {
        let mut s = Sidecar::spawn(spec);
        s.wait_ready(Duration::from_secs(20)).await;
        s
    }

    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sidecar exited early with {status}:\n{}", self.logs());
            }
            if let Ok((200, _)) = http_get(self.readiness(), "/healthz/ready").await {
                return;
            }
            if Instant::now() > deadline {
                panic!("sidecar not ready after {timeout:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of a child we own; no memory is involved.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// Waits for the process to exit (up to `timeout`); returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[]).await
}

/// A minimal HTTP/1.1 request with `Connection: close`: (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read"))??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
