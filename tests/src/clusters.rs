//! The workshop's two-cluster topology, for authorization tests.
//!
//! Three client tasks (one per source namespace: `default` stands for the EKS
//! cluster, `ecs-demo-1` and `ecs-demo-2` for the two ECS clusters) and two
//! `echo-service` tasks, one per ECS cluster. Each task is a real sidecar with
//! its own loopback address and its own certificate from one test CA; the
//! echo applications listen on the task address at port 8080 (and the
//! cluster-1 task also on 9090), delivered to by address as on Fargate.
//!
//! Every sidecar reads the same `LOCAL_XDS_PATH` file, as every ztunnel gets
//! the same pushes from istiod. [`TwoClusters::push`] rewrites it with new
//! policies and waits until both echo sidecars have applied them, so a test
//! changes policies between probes without restarting anything.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    AddrBlock, EchoServer, MeshConfig, Pki, ServiceSpec, Sidecar, SidecarSpec, SocksResult,
    SocksTarget, WorkloadSpec, http_get, socks5_connect,
};

/// Namespace of the EKS cluster's client.
pub const EKS_NS: &str = "default";
/// Namespace of ECS cluster 1.
pub const C1_NS: &str = "ecs-demo-1";
/// Namespace of ECS cluster 2.
pub const C2_NS: &str = "ecs-demo-2";
/// `echo-service` of cluster 1.
pub const C1_HOST: &str = "echo-service.ecs-demo-1.ecs.local";
/// `echo-service` of cluster 2.
pub const C2_HOST: &str = "echo-service.ecs-demo-2.ecs.local";
/// The echo application's port (service port = target port, as in the workshop).
pub const ECHO_PORT: u16 = 8080;
/// A second application port on the cluster-1 echo task, outside the service.
pub const ALT_PORT: u16 = 9090;

/// A client task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `default/sleep`: the EKS cluster's client pod.
    Eks,
    /// `ecs-demo-1/shell-task`: the client task of ECS cluster 1.
    C1,
    /// `ecs-demo-2/shell-task`: the client task of ECS cluster 2.
    C2,
}

impl Client {
    /// Every client, in the order the workshop lists sources.
    pub const ALL: [Client; 3] = [Client::Eks, Client::C1, Client::C2];

    pub fn namespace(self) -> &'static str {
        match self {
            Client::Eks => EKS_NS,
            Client::C1 => C1_NS,
            Client::C2 => C2_NS,
        }
    }

    pub fn service_account(self) -> &'static str {
        match self {
            Client::Eks => "sleep",
            Client::C1 | Client::C2 => "shell-task",
        }
    }

    /// The SPIFFE identity in its certificate.
    pub fn identity(self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace(),
            self.service_account()
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Client::Eks => "EKS",
            Client::C1 => "C1",
            Client::C2 => "C2",
        }
    }

    fn host(self) -> u8 {
        match self {
            Client::Eks => 1,
            Client::C1 => 2,
            Client::C2 => 3,
        }
    }
}

/// What a client saw when it asked for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SOCKS5 success, the bytes came back, and the application accepted
    /// exactly one connection.
    Allowed,
    /// SOCKS5 reply 2 ("connection not allowed by ruleset") and the
    /// application saw nothing.
    Denied,
    /// Anything else, described.
    Broken(String),
}

/// The five tasks, their applications and the shared mesh file.
pub struct TwoClusters {
    pub block: AddrBlock,
    pub pki: Pki,
    pub mesh_file: PathBuf,
    pub eks: Sidecar,
    pub c1: Sidecar,
    pub c2: Sidecar,
    pub c1_echo: Sidecar,
    pub c2_echo: Sidecar,
    /// Cluster 1's echo application on port 8080.
    pub c1_app: EchoServer,
    /// Cluster 1's echo task's second application, on port 9090.
    pub c1_alt: EchoServer,
    /// Cluster 2's echo application on port 8080.
    pub c2_app: EchoServer,
}

const C1_ECHO: u8 = 11;
const C2_ECHO: u8 = 12;

impl TwoClusters {
    /// Starts the five sidecars with no policies, ready.
    pub async fn start() -> TwoClusters {
        let block = AddrBlock::new();
        let pki = Pki::new();
        let c1_app = EchoServer::start(block.addr(C1_ECHO, ECHO_PORT), None).await;
        let c1_alt = EchoServer::start(block.addr(C1_ECHO, ALT_PORT), None).await;
        let c2_app = EchoServer::start(block.addr(C2_ECHO, ECHO_PORT), None).await;
        let mesh_file = pki.path().join("mesh.yaml");
        write_atomically(&mesh_file, &Self::mesh(&block, &[], &[]).render());

        let spec = |host: u8, ns: &str, name: &str, sa: &str| {
            SidecarSpec::new(block.ip(host), &format!("{ns}/{name}/{sa}"))
                .certs(pki.cert_dir(ns, sa))
                .mesh(mesh_file.clone())
        };
        let client = |c: Client| spec(c.host(), c.namespace(), "shell", c.service_account());
        let echo = |host: u8, ns: &str| {
            spec(host, ns, "echo-service", "echo-service").env("INBOUND_DELIVERY", "task-ip")
        };
        let (eks, c1, c2, c1_echo, c2_echo) = tokio::join!(
            Sidecar::start(client(Client::Eks)),
            Sidecar::start(client(Client::C1)),
            Sidecar::start(client(Client::C2)),
            Sidecar::start(echo(C1_ECHO, C1_NS)),
            Sidecar::start(echo(C2_ECHO, C2_NS)),
        );
        TwoClusters {
            block,
            pki,
            mesh_file,
            eks,
            c1,
            c2,
            c1_echo,
            c2_echo,
            c1_app,
            c1_alt,
            c2_app,
        }
    }

    /// The mesh with `policies` (local-config YAML items) and the cluster-1
    /// echo workload naming `selected` in its `authorizationPolicies`.
    fn mesh(block: &AddrBlock, policies: &[String], selected: &[&str]) -> MeshConfig {
        let mut mesh = MeshConfig::default();
        for c in Client::ALL {
            mesh = mesh.workload(WorkloadSpec::new(
                c.namespace(),
                "shell",
                c.service_account(),
                block.ip(c.host()),
            ));
        }
        for (host, ns, hostname, vip) in [
            (C1_ECHO, C1_NS, C1_HOST, 101),
            (C2_ECHO, C2_NS, C2_HOST, 102),
        ] {
            let svc = ServiceSpec::new(ns, "echo-service", hostname)
                .port(ECHO_PORT, ECHO_PORT)
                .vip(&format!("/{}", block.ip(vip)))
                .san(ns, "echo-service");
            let mut w = WorkloadSpec::new(ns, "echo-service", "echo-service", block.ip(host))
                .in_service(&svc.key(), ECHO_PORT, ECHO_PORT);
            if host == C1_ECHO {
                w.extra = json!({ "authorizationPolicies": selected });
            }
            mesh = mesh.workload(w).service(svc);
        }
        for p in policies {
            mesh = mesh.policy(p);
        }
        mesh
    }

    pub fn client(&self, c: Client) -> &Sidecar {
        match c {
            Client::Eks => &self.eks,
            Client::C1 => &self.c1,
            Client::C2 => &self.c2,
        }
    }

    /// The client task's own address (which its sidecar listens on).
    pub fn client_ip(&self, c: Client) -> IpAddr {
        self.block.ip(c.host())
    }

    /// The cluster-1 echo task's address.
    pub fn c1_echo_ip(&self) -> IpAddr {
        self.block.ip(C1_ECHO)
    }

    /// The cluster-2 echo task's address.
    pub fn c2_echo_ip(&self) -> IpAddr {
        self.block.ip(C2_ECHO)
    }

    /// Rewrites the mesh file with `policies` (cluster-1 echo naming
    /// `selected`) and waits until both echo sidecars hold exactly these
    /// policies. Policy names must differ from one push to the next for the
    /// wait to mean anything, unless the set is unchanged.
    pub async fn push(&self, policies: &[String], selected: &[&str]) {
        let mesh = Self::mesh(&self.block, policies, selected);
        write_atomically(&self.mesh_file, &mesh.render());
        let mut want: Vec<String> = policies.iter().map(|p| policy_key(p)).collect();
        want.sort();
        let want_selected: Vec<String> = selected.iter().map(|s| s.to_string()).collect();
        for sidecar in [&self.c1_echo, &self.c2_echo] {
            wait_applied(sidecar, &want, &want_selected).await;
        }
    }

    /// Connects from `from` through its SOCKS5 listener to `target`, which
    /// `app` serves, and says what happened.
    pub async fn probe(&self, from: Client, target: SocksTarget, app: &EchoServer) -> Outcome {
        let before = app.accepted();
        let proxy = self.client(from).socks5();
        let result =
            tokio::time::timeout(Duration::from_secs(5), socks5_connect(proxy, target)).await;
        match result {
            Err(_) => Outcome::Broken("no SOCKS5 reply within 5 s".into()),
            Ok(SocksResult::Refused(2)) => match app.accepted() - before {
                0 => Outcome::Denied,
                n => Outcome::Broken(format!("denied, but the app accepted {n} connection(s)")),
            },
            Ok(SocksResult::Refused(code)) => Outcome::Broken(format!("SOCKS5 reply {code}")),
            Ok(SocksResult::Closed) => Outcome::Broken("closed without a SOCKS5 reply".into()),
            Ok(SocksResult::Connected(mut s)) => {
                let msg = format!("hello from {}", from.label());
                let echoed = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::echo_roundtrip(&mut s, msg.as_bytes()),
                )
                .await;
                match echoed {
                    Err(_) => Outcome::Broken("connected, but no echo within 5 s".into()),
                    Ok(back) if back != msg.as_bytes() => Outcome::Broken(format!(
                        "connected, but the echo was {:?}",
                        String::from_utf8_lossy(&back)
                    )),
                    Ok(_) => match app.accepted() - before {
                        1 => Outcome::Allowed,
                        n => Outcome::Broken(format!("echoed, but the app accepted {n}")),
                    },
                }
            }
        }
    }
}

/// `<namespace>/<name>` of a local-config policy item.
pub fn policy_key(yaml: &str) -> String {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("policy YAML");
    let field = |k: &str| value[k].as_str().unwrap_or_default().to_string();
    format!("{}/{}", field("namespace"), field("name"))
}

/// Replaces the file in one step, so a watcher never reads half of it.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write mesh config");
    std::fs::rename(&tmp, path).expect("replace mesh config");
}

/// Waits until `sidecar`'s `/config_dump` shows exactly the policies `want`
/// (sorted keys) and the cluster-1 echo workload naming `selected`.
async fn wait_applied(sidecar: &Sidecar, want: &[String], selected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok((200, body)) = http_get(sidecar.admin(), "/config_dump").await
            && let Ok(dump) = serde_json::from_str::<serde_json::Value>(&body)
        {
            let mut have: Vec<String> = dump["policies"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                p["namespace"].as_str().unwrap_or(""),
                                p["name"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            have.sort();
            let named: Vec<String> = dump["workloads"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|w| w["namespace"] == C1_NS && w["name"] == "echo-service")
                .and_then(|w| w["authorizationPolicies"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if have == want && named == selected {
                return;
            }
            last = format!("policies {have:?}, selected {named:?}");
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not apply policies {want:?} (selected {selected:?}) within 10 s; last seen: {last}\n{}",
                sidecar.spec.workload,
                sidecar.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `timeout` for `sidecar`'s log, from byte `from` on, to hold a
/// line containing every one of `needles`; returns that line.
pub async fn wait_for_log(
    sidecar: &Sidecar,
    from: usize,
    needles: &[&str],
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = sidecar.logs();
        if let Some(line) = logs
            .get(from..)
            .unwrap_or_default()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(line.to_string());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one unlabelled Prometheus sample from `sidecar`'s stats port.
pub async fn metric(sidecar: &Sidecar, name: &str) -> Option<f64> {
    let (_, body) = http_get(sidecar.stats(), "/stats/prometheus").await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A SOCKS5 target by address.
pub fn addr(ip: IpAddr, port: u16) -> SocksTarget {
    SocksTarget::Addr(SocketAddr::new(ip, port))
}
