//! The seed scenarios on network namespaces: the same world as the Docker
//! harness, without Docker (root and `ip(8)` only).
//!
//! Two switches (`networks.rs`) carry net1 and net2. Each task is a namespace
//! on its network holding its sidecar (a real process, started with `ip netns
//! exec`), its application (an HTTP echo on `127.0.0.1:8080`), a DNS server
//! on `127.0.0.1:53` (standing in for the VPC resolver) and, at Fargate's own
//! address `169.254.170.2`, its task metadata endpoint. The
//! gateway host has a leg in each network and runs the east-west gateway on
//! 15008 and local-istiod on 15012, as the east-west gateway exposes istiod
//! to ECS tasks. Checks run the `mesh-curl` binary inside a task's namespace.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    CurlOutput, EXTERNAL_NAME, GATEWAY_OCTET, Harness, MeshSpec, NO_PROXY, Prepared, SOCKS5_URL,
    Task, external_ip, gateway_routes, mesh, prepare,
};
use crate::dns::DnsServer;
use crate::gateway::Gateway;
use crate::istiod::{ISTIOD_PORT, LocalIstiod};
use crate::networks::{Host, Net, Networks};
use crate::task_metadata::{FARGATE_METADATA_IP, TaskMetadataServer};
use crate::{HttpApp, MeshConfig, Sidecar, SidecarSpec};

/// Paths of the test crate's binaries (integration tests know them from
/// `env!("CARGO_BIN_EXE_…")`).
#[derive(Clone, Debug)]
pub struct NetnsBins {
    pub mesh_curl: PathBuf,
    pub ew_gateway: PathBuf,
}

/// One task's processes and servers; stopped when dropped.
struct Running {
    sidecar: Sidecar,
    _app: Option<HttpApp>,
    _metadata: Option<TaskMetadataServer>,
    _dns: DnsServer,
}

/// Everything of the seed world that runs. Fields drop in order: processes
/// first, then namespaces, then the switches.
pub struct NetnsHarness {
    tasks: Mutex<HashMap<Task, Running>>,
    gateway: Gateway,
    istiod: LocalIstiod,
    _external: HttpApp,
    hosts: HashMap<Task, Host>,
    _external_host: Host,
    _gateway_host: Host,
    _nets: Networks,
    _dir: tempfile::TempDir,
    mesh_curl: PathBuf,
}

/// How long a sidecar may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl NetnsHarness {
    /// Builds the world and waits until every sidecar is ready.
    pub async fn start(bins: NetnsBins) -> NetnsHarness {
        let dir = tempfile::tempdir().expect("tempdir");
        let local_istiod = crate::bins::bin("local-istiod");
        let prepared = prepare(dir.path(), &local_istiod, |net| {
            format!("https://{}:{ISTIOD_PORT}", net.ip(GATEWAY_OCTET))
        })
        .expect("prepare the CA, the gateway certificate and the bootstrap tokens");

        let nets = Networks::new();
        let gateway_host = nets.gateway_host();
        let istiod = start_istiod(&gateway_host, &prepared).await;
        let routes = gateway_routes();
        let routes: Vec<(&str, &[IpAddr])> = routes
            .iter()
            .map(|(a, ips)| (a.as_str(), ips.as_slice()))
            .collect();
        let gateway = Gateway::start(
            &bins.ew_gateway,
            &gateway_host.ns,
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 15008),
            &prepared.gateway_dir,
            &routes,
        )
        .await;

        let external_host = nets.host(EXTERNAL_NAME, Net::One, super::EXTERNAL_OCTET);
        let external = HttpApp::serve(
            external_host
                .ns
                .listen(SocketAddr::new(external_ip(), super::ECHO_PORT))
                .expect("bind the external server"),
            EXTERNAL_NAME,
            None,
        );

        let mut hosts = HashMap::new();
        let mut tasks = HashMap::new();
        for task in Task::ALL {
            let host = nets.host(task.key(), task.net(), task.octet());
            tasks.insert(task, start_task(task, &host, &prepared));
            hosts.insert(task, host);
        }
        for task in Task::ALL {
            wait_ready(task, &hosts[&task], &tasks[&task].sidecar).await;
        }
        NetnsHarness {
            tasks: Mutex::new(tasks),
            gateway,
            istiod,
            _external: external,
            hosts,
            _external_host: external_host,
            _gateway_host: gateway_host,
            _nets: nets,
            _dir: dir,
            mesh_curl: bins.mesh_curl,
        }
    }
}

/// local-istiod on the gateway host, on every address, with the prepared CA.
async fn start_istiod(host: &Host, prepared: &Prepared) -> LocalIstiod {
    let ca_dir = prepared.ca_dir.display().to_string();
    let args = prepared.istiod_args(&ca_dir);
    let initial = mesh(&MeshSpec::default());
    // Started from a thread inside the namespace, so the process lives there.
    host.ns
        .run(move || async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            LocalIstiod::start(Ipv4Addr::UNSPECIFIED.into(), &initial, &args).await
        })
        .await
}

/// Starts one task's application, DNS server, metadata endpoint and sidecar (without
/// waiting for the sidecar).
fn start_task(task: Task, host: &Host, prepared: &Prepared) -> Running {
    // The task's resolver (the VPC's, or Docker's embedded one) knows the
    // external server by name and nothing else.
    host.ns
        .set_etc_file("resolv.conf", "nameserver 127.0.0.1\n");
    let IpAddr::V4(external) = external_ip() else {
        unreachable!("the seed layout is IPv4")
    };
    let dns = DnsServer::start(
        host.ns
            .udp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53))
            .expect("bind the task's DNS server"),
        &[(EXTERNAL_NAME, external)],
    );

    let app = task.app_name().map(|name| {
        let listener = host
            .ns
            .listen(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                super::ECHO_PORT,
            ))
            .expect("bind the task's application");
        HttpApp::serve(listener, name, None)
    });
    let metadata = task.task_doc().map(|doc| {
        host.ns.ip(&[
            "addr",
            "add",
            &format!("{FARGATE_METADATA_IP}/32"),
            "dev",
            "lo",
        ]);
        let listener = host
            .ns
            .listen(SocketAddr::new(FARGATE_METADATA_IP.into(), 80))
            .expect("bind the task metadata endpoint");
        TaskMetadataServer::serve(listener, vec![doc])
    });

    // The sidecar: BOOTSTRAP_TOKEN, and what Fargate sets (the metadata URI),
    // or PROXY_WORKLOAD_INFO for an EKS pod's stand-in. Listener addresses are
    // the defaults, spelled out because the e2e runner sets its own.
    let mut spec = SidecarSpec::new(task.ip(), "")
        .netns(host.ns.name())
        .env("BOOTSTRAP_TOKEN", prepared.token(task))
        .env("HBONE_ADDR", "0.0.0.0:15008")
        .env("SOCKS5_ADDR", "127.0.0.1:15080")
        .env("HTTP_PROXY_ADDR", "127.0.0.1:15081")
        .env("ADMIN_ADDR", "127.0.0.1:15000")
        .env("STATS_ADDR", "0.0.0.0:15020")
        .env("READINESS_ADDR", "0.0.0.0:15021");
    match task.proxy_workload_info() {
        Some(info) => spec = spec.env("PROXY_WORKLOAD_INFO", info),
        None => {
            spec = spec.env(
                "ECS_CONTAINER_METADATA_URI_V4",
                format!("http://{FARGATE_METADATA_IP}/v4/{}", task.key()),
            )
        }
    }
    Running {
        sidecar: Sidecar::spawn(spec),
        _app: app,
        _metadata: metadata,
        _dns: dns,
    }
}

/// Polls `ztunnel-sidecar healthcheck` inside the task, as ECS runs the
/// container health check, until it passes.
async fn wait_ready(task: Task, host: &Host, sidecar: &Sidecar) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut cmd = host.ns.command(crate::bins::bin("ztunnel-sidecar"));
        cmd.arg("healthcheck")
            .env_clear()
            .env("READINESS_ADDR", "0.0.0.0:15021");
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("run the healthcheck");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready after {READY_TIMEOUT:?}: {}\n{}",
            task.key(),
            String::from_utf8_lossy(&out.stderr).trim(),
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Harness for NetnsHarness {
    fn kind(&self) -> &'static str {
        "netns"
    }

    async fn curl(&self, task: Task, args: &[&str]) -> CurlOutput {
        let mut cmd = self.hosts[&task].ns.command(&self.mesh_curl);
        cmd.env_clear()
            .env("ALL_PROXY", SOCKS5_URL)
            .env("NO_PROXY", NO_PROXY)
            .args(args);
        match tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
        {
            Ok(out) => CurlOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => CurlOutput {
                code: None,
                stdout: String::new(),
                stderr: format!("cannot run mesh-curl: {e}"),
            },
        }
    }

    fn push(&self, mesh: &MeshConfig) {
        self.istiod.update_mesh(mesh);
    }

    async fn stop(&self, task: Task) {
        let running = self.tasks.lock().expect("tasks").remove(&task);
        if let Some(mut running) = running {
            running.sidecar.signal(libc::SIGTERM);
            if running
                .sidecar
                .wait_exit(Duration::from_secs(10))
                .await
                .is_none()
            {
                running.sidecar.signal(libc::SIGKILL);
            }
        }
    }

    async fn sidecar_log(&self, task: Task) -> String {
        self.tasks
            .lock()
            .expect("tasks")
            .get(&task)
            .map(|r| r.sidecar.logs())
            .unwrap_or_default()
    }

    async fn gateway_log(&self) -> String {
        self.gateway.logs()
    }
}
