//! Running `local-istiod`, the test control plane, as a real process: sidecars
//! get their mesh configuration (delta xDS) and certificates (the CA) from it
//! over TLS, as they would from istiod.
//!
//! Each instance listens on a private loopback address (gRPC on 15012, admin
//! on 15010), keeps its CA in a temporary state directory (so a restart keeps
//! issued certificates valid) and serves a mesh file the test can rewrite.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::bins::bin;
use crate::{MeshConfig, SidecarSpec, http_request};

/// gRPC (xDS and CA) port.
pub const ISTIOD_PORT: u16 = 15012;
/// Admin (pause, resume, status) port.
pub const ISTIOD_ADMIN_PORT: u16 = 15010;

/// A running `local-istiod`; killed when dropped.
pub struct LocalIstiod {
    pub ip: IpAddr,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl LocalIstiod {
    /// Starts it on `ip` serving `mesh`, with extra command-line `args`
    /// (`--token`, `--sts-url`, test knobs…), and waits until it answers.
    pub async fn start(ip: IpAddr, mesh: &MeshConfig, args: &[&str]) -> LocalIstiod {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut istiod = LocalIstiod {
            ip,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir,
        };
        istiod.update_mesh(mesh);
        istiod.spawn();
        istiod.wait_serving().await;
        istiod
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(bin("local-istiod"))
            .env_clear()
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.mesh_path())
            .arg("--listen")
            .arg(self.addr().to_string())
            .arg("--admin")
            .arg(self.admin().to_string())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--poll-interval")
            .arg("100ms")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn local-istiod");
        self.child = Some(child);
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("local-istiod exited with {status}:\n{}", self.logs());
            }
            if let Ok((200, _)) = http_request(self.admin(), "GET", "/status", &[]).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "local-istiod not serving after 20 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, ISTIOD_PORT)
    }

    /// `https://<ip>:15012`: what `XDS_ADDRESS` and `CA_ADDRESS` point at.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.ip, ISTIOD_ADMIN_PORT)
    }

    /// The root certificate file clients verify it (and its certificates) with.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.path().join("state/root-cert.pem")
    }

    /// The root certificate's PEM text.
    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.root_cert()).expect("root-cert.pem")
    }

    /// The mesh file it serves.
    pub fn mesh_path(&self) -> PathBuf {
        self.dir.path().join("mesh.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("local-istiod.log")
    }

    /// Its log so far (across restarts).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Replaces the mesh file (atomically: a reader never sees half of it).
    /// The server notices within its poll interval and pushes the difference.
    pub fn update_mesh(&self, mesh: &MeshConfig) {
        let tmp = self.dir.path().join("mesh.yaml.tmp");
        std::fs::write(&tmp, mesh.render()).expect("write mesh");
        std::fs::rename(&tmp, self.mesh_path()).expect("replace mesh");
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        let (code, body) = http_request(self.admin(), "GET", "/status", &[])
            .await
            .expect("local-istiod status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Waits until the served mesh is at least `generation` (1 = the initial file).
    pub async fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.status().await["generation"].as_u64() < Some(generation) {
            assert!(
                Instant::now() < deadline,
                "mesh generation {generation} not reached:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops every stream and refuses calls with UNAVAILABLE.
    pub async fn pause(&self) {
        self.post("/pause").await;
    }

    /// Serves again.
    pub async fn resume(&self) {
        self.post("/resume").await;
    }

    async fn post(&self, path: &str) {
        let (code, body) = http_request(self.admin(), "POST", path, &[])
            .await
            .expect("local-istiod admin");
        assert_eq!(code, 200, "POST {path}: {body}");
    }

    /// Kills the process (SIGKILL): connections break, nothing is said.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again with the same arguments and state directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_serving().await;
    }

    /// A sidecar configured the way an operator points one at istiod:
    /// `XDS_ADDRESS`, `CA_ADDRESS` and their roots, plus `AUTH_TOKEN` when given.
    /// No certificate directory and no local mesh file.
    pub fn sidecar(&self, ip: IpAddr, workload: &str, token: Option<&str>) -> SidecarSpec {
        let root = self.root_cert();
        let mut spec = SidecarSpec::new(ip, workload)
            .env("XDS_ADDRESS", self.url())
            .env("XDS_ROOT_CA", root.display())
            .env("CA_ADDRESS", self.url())
            .env("CA_ROOT_CA", root.display());
        if let Some(t) = token {
            spec = spec.env("AUTH_TOKEN", t);
        }
        spec
    }

    /// A `BOOTSTRAP_TOKEN` pointing at this server (`url`, `caCert`), for
    /// `namespace`/`service_account`, with the other fields of `extra`
    /// (`platform`, `token`, `network`, `remote`).
    pub fn bootstrap_token(&self, namespace: &str, service_account: &str, extra: Value) -> String {
        let mut json = serde_json::json!({
            "url": self.url(),
            "caCert": self.root_pem(),
            "namespace": namespace,
            "serviceAccount": service_account,
        });
        if let (Some(obj), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        encode_bootstrap_token(&json)
    }
}

impl Drop for LocalIstiod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `base64(base64(JSON))`, as `istioctl ecs add-service` writes it.
pub fn encode_bootstrap_token(json: &Value) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    b64.encode(b64.encode(json.to_string()))
}

/// Polls `GET /healthz/ready` of a sidecar: the status and body.
pub async fn readiness(addr: SocketAddr) -> (u16, String) {
    http_request(addr, "GET", "/healthz/ready", &[])
        .await
        .unwrap_or((0, String::new()))
}

/// Waits until `f` holds, polling every 50 ms; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
