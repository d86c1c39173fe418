//! ECS tasks on two networks: real sidecars in their own network namespaces,
//! one mesh file for all of them, and the helpers routing tests share.
//!
//! A [`Task`] is what Fargate gives a task: a namespace of its own (one
//! address on one network), the sidecar in it with SOCKS5 and admin on
//! loopback, and optionally the application (an echo server with a banner on
//! `127.0.0.1:8080`, where the sidecar delivers inbound traffic). Every sidecar
//! watches the same `LOCAL_XDS_PATH` file, so [`Topology::push`] changes the
//! mesh for all of them, as an istiod push would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs_identity::Identity;

use crate::networks::{Host, Net, Networks};
use crate::{
    EchoServer, MeshConfig, Pki, Sidecar, SidecarSpec, SocksResult, SocksTarget, WorkloadSpec,
    http_get, socks5_handshake,
};

/// The application port of every echo task (service port = target port, as in
/// the workshop).
pub const ECHO_PORT: u16 = 8080;
/// Where a task's sidecar serves SOCKS5: loopback inside the task.
pub const SOCKS5: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15080);
/// Where a task's sidecar serves admin: loopback inside the task.
pub const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);

/// The trust domain every identity here is in.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>` as a string.
pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

/// A workload on `net`, with the fields routing and telemetry look at.
pub fn workload(
    ns: &str,
    name: &str,
    sa: &str,
    net: Net,
    ip: IpAddr,
    cluster: &str,
) -> WorkloadSpec {
    let mut w = WorkloadSpec::new(ns, name, sa, ip);
    w.uid = format!("{cluster}//Pod/{ns}/{name}");
    w.network = net.name().into();
    w.extra = json!({ "clusterId": cluster });
    w
}

/// A running task; the sidecar stops first, the namespace goes last.
pub struct Task {
    pub sidecar: Sidecar,
    pub app: Option<EchoServer>,
    pub host: Host,
}

impl Task {
    pub fn ip(&self) -> IpAddr {
        self.host.ip
    }

    /// A SOCKS5 CONNECT through this task's sidecar, as the task's app makes it.
    pub async fn socks5(&self, target: SocksTarget) -> SocksResult {
        let stream = self
            .host
            .ns
            .connect(SOCKS5)
            .await
            .expect("connect to the task's SOCKS5 listener");
        socks5_handshake(stream, target).await
    }

    /// One request as the workshop's client makes it: connect through SOCKS5,
    /// read the backend's banner, send a line, half-close, read the echo, close.
    /// Returns the banner, or what went wrong.
    pub async fn request(&self, target: SocksTarget) -> Result<String, String> {
        let mut s = match self.socks5(target).await {
            SocksResult::Connected(s) => s,
            SocksResult::Refused(code) => return Err(format!("SOCKS5 reply {code}")),
            SocksResult::Closed => return Err("SOCKS5 connection closed".into()),
        };
        let exchange = async {
            s.write_all(b"ping\n").await?;
            s.shutdown().await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let out = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out);
        match text.strip_suffix("ping\n") {
            Some(head) => Ok(head.trim_end_matches('\n').to_string()),
            None => Err(format!("unexpected answer {text:?}")),
        }
    }

    /// GET on the sidecar's admin server (from inside the task).
    pub async fn admin(&self, path: &str) -> String {
        let path = path.to_string();
        let (status, body) = self
            .host
            .ns
            .run(move || async move { http_get(ADMIN, &path).await })
            .await
            .expect("admin request");
        assert_eq!(status, 200, "admin {body}");
        body
    }

    /// The sidecar's `/config_dump`.
    pub async fn config_dump(&self) -> Value {
        serde_json::from_str(&self.admin("/config_dump").await).expect("config dump JSON")
    }

    /// The sidecar's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        let addr = self.sidecar.stats();
        let (status, body) = self
            .host
            .ns
            .run(move || async move { http_get(addr, "/metrics").await })
            .await
            .expect("metrics request");
        assert_eq!(status, 200, "metrics {body}");
        body
    }
}

/// The sum of a counter's samples whose labels include every `label="value"`.
pub fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The switches, the PKI and the mesh file; tasks are started on demand.
pub struct Topology {
    pub nets: Networks,
    pub pki: Pki,
    mesh_file: PathBuf,
}

impl Topology {
    pub fn new(mesh: &MeshConfig) -> Topology {
        let pki = Pki::new();
        let mesh_file = mesh.write(pki.path(), "mesh.yaml");
        Topology {
            nets: Networks::new(),
            pki,
            mesh_file,
        }
    }

    /// Rewrites the mesh file every sidecar watches.
    pub fn push(&self, mesh: &MeshConfig) {
        // Write-then-rename, so a sidecar never reads half a file.
        let tmp = mesh.write(self.pki.path(), "mesh.yaml.new");
        std::fs::rename(tmp, &self.mesh_file).expect("replace the mesh file");
    }

    /// A workload certificate for `ns/sa` from the mesh's CA.
    pub fn cert(&self, ns: &str, sa: &str) -> zs_tls::WorkloadCertificate {
        self.pki
            .ca
            .issue(&Identity::new(TRUST_DOMAIN, ns, sa).expect("identity"))
    }

    /// Starts a task on `host`: the app (when `banner` is given) and the sidecar
    /// for `ns/name/sa`, waiting until it is ready.
    pub async fn start_task(
        &self,
        host: Host,
        workload: &str,
        banner: Option<&str>,
        env: &[(&str, &str)],
    ) -> Task {
        let (ns, sa) = {
            let mut parts = workload.split('/');
            let ns = parts.next().expect("namespace");
            let _name = parts.next().expect("name");
            (ns, parts.next().expect("service account"))
        };
        let app = banner.map(|b| {
            let listener = host
                .ns
                .listen(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), ECHO_PORT))
                .expect("bind the task's app");
            EchoServer::serve(listener, Some(b))
        });
        let mut spec = SidecarSpec::new(host.ip, workload)
            .netns(host.ns.name())
            .certs(self.pki.cert_dir(ns, sa))
            .mesh(self.mesh_file.clone())
            .env("SOCKS5_ADDR", SOCKS5)
            .env("ADMIN_ADDR", ADMIN)
            .env("HTTP_PROXY_ADDR", "127.0.0.1:15081")
            .env("NETWORK", host.net.name());
        for (k, v) in env {
            spec = spec.env(k, v);
        }
        let sidecar = host.ns.run(move || Sidecar::start(spec)).await;
        Task { sidecar, app, host }
    }

    /// Polls `task`'s `/config_dump` until `applied` holds for it; returns when
    /// it first did. Panics after 10 s.
    pub async fn wait_applied(&self, task: &Task, applied: impl Fn(&Value) -> bool) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let dump = task.config_dump().await;
            if applied(&dump) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "mesh change not applied after 10 s; workloads: {}",
                dump["workloads"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `/config_dump` workload with `uid`, if present.
pub fn dumped_workload<'a>(dump: &'a Value, uid: &str) -> Option<&'a Value> {
    dump["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["uid"] == uid)
}
