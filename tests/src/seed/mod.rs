//! The workshop's seed scenarios (1: one cluster, 2: two clusters and the
//! authorization exercises, 3: two networks and failover) as one topology and
//! one list of checks, run by two harnesses: Docker containers
//! ([`docker::DockerHarness`], driven by `scripts/scenarios.sh`) and network
//! namespaces ([`netns::NetnsHarness`], `tests/tests/scenarios.rs`).
//!
//! Both harnesses build the same world, with the same addresses:
//!
//! | task | network | address | namespace / service account | what |
//! |---|---|---|---|---|
//! | `eks-echo` | net1 | 10.1.0.10 | `default/echo` | EKS pod, `echo.default.svc.cluster.local` |
//! | `eks-sleep` | net1 | 10.1.0.11 | `default/sleep` | EKS pod, the client |
//! | `c1-echo`, `c1-shell` | net1 | 10.1.0.21-22 | `ecs-demo-1/echo-service`, `/shell-task` | ECS cluster `ecs-demo-1`, account 1 |
//! | `c2-echo`, `c2-shell` | net1 | 10.1.0.31-32 | `ecs-demo-2/…` | ECS cluster `ecs-demo-2`, account 1 |
//! | `c3-echo`, `c3-shell` | net2 | 10.2.0.41-42 | `ecs-demo-3/…` | ECS cluster `ecs-demo-3`, account 2 |
//! | external | net1 | 10.1.0.50 | — | an HTTP server outside the mesh |
//! | east-west gateway | both | 10.1.0.254, 10.2.0.254 | `istio-system/istio-eastwestgateway` | the only way between the networks |
//!
//! Every task is a network namespace shared by its application and its
//! sidecar, as `awsvpc` gives a Fargate task. ECS sidecars are configured
//! with `BOOTSTRAP_TOKEN` alone (plus the task metadata endpoint, which
//! Fargate provides: here a stand-in, see [`crate::task_metadata`]), from
//! which they learn their workload name as istiod derives it. The EKS pods'
//! sidecars stand in for ztunnel and are named with `PROXY_WORKLOAD_INFO`.
//! Echo applications listen on `127.0.0.1:8080` and answer
//! `<name> <METHOD> <path>`; clients are `mesh-curl`, a curl-like client that
//! honours `ALL_PROXY=socks5h://127.0.0.1:15080`.
//!
//! The control plane is `local-istiod` serving [`mesh`]; a check changes the
//! mesh by rewriting its file (policies, a stopped task), as istiod would push.

pub mod docker;
pub mod netns;

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::networks::Net;
use crate::task_metadata::TaskDoc;
use crate::{MeshConfig, ServiceSpec, WorkloadSpec};

/// The echo applications' port (service port = target port, as in the workshop).
pub const ECHO_PORT: u16 = 8080;
/// Where every sidecar serves SOCKS5, inside its task.
pub const SOCKS5_URL: &str = "socks5h://127.0.0.1:15080";
/// What tasks do not send through their sidecar (the sidecar's own admin
/// and metrics ports, for the checks).
pub const NO_PROXY: &str = "localhost,127.0.0.1";
/// Where every sidecar serves admin (`/config_dump`), inside its task.
pub const ADMIN_URL: &str = "http://127.0.0.1:15000";
/// Where every sidecar serves metrics, inside its task.
pub const STATS_URL: &str = "http://127.0.0.1:15020";
/// The last octet of the gateway on both networks.
pub const GATEWAY_OCTET: u8 = crate::networks::GATEWAY_OCTET;
/// The HTTP server outside the mesh.
pub const EXTERNAL_OCTET: u8 = 50;
/// What the external server calls itself, and its name in DNS / hosts.
pub const EXTERNAL_NAME: &str = "external";
/// The trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The east-west gateway's identity.
pub const GATEWAY_NS: &str = "istio-system";
/// The east-west gateway's service account.
pub const GATEWAY_SA: &str = "istio-eastwestgateway";
/// The Kubernetes cluster istiod runs in (and registers ECS tasks from).
pub const CLUSTER_ID: &str = "eks";

/// `echo-service` with endpoints in clusters 1 and 3 (the two networks).
pub const GLOBAL_HOST: &str = "echo-service.ecs.local";
/// The EKS service.
pub const EKS_HOST: &str = "echo.default.svc.cluster.local";
/// Cluster 1's own service.
pub const C1_HOST: &str = "echo-service.ecs-demo-1.ecs.local";
/// Cluster 2's own service.
pub const C2_HOST: &str = "echo-service.ecs-demo-2.ecs.local";
/// Cluster 3's own service (the other account's domain).
pub const C3_HOST: &str = "echo-service.ecs-demo-3.ecs.external";

/// A task (an application plus its sidecar, one network namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    EksEcho,
    EksSleep,
    C1Echo,
    C1Shell,
    C2Echo,
    C2Shell,
    C3Echo,
    C3Shell,
}

/// Where an ECS task runs, as its task ARN says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcsPlacement {
    pub account: &'static str,
    pub region: &'static str,
    pub zone: &'static str,
    pub cluster: &'static str,
}

impl Task {
    /// Every task, EKS first.
    pub const ALL: [Task; 8] = [
        Task::EksEcho,
        Task::EksSleep,
        Task::C1Echo,
        Task::C1Shell,
        Task::C2Echo,
        Task::C2Shell,
        Task::C3Echo,
        Task::C3Shell,
    ];

    /// The short name: the Docker Compose service of the application (its
    /// sidecar is `<key>-sidecar`) and the task metadata id.
    pub fn key(self) -> &'static str {
        match self {
            Task::EksEcho => "eks-echo",
            Task::EksSleep => "eks-sleep",
            Task::C1Echo => "c1-echo",
            Task::C1Shell => "c1-shell",
            Task::C2Echo => "c2-echo",
            Task::C2Shell => "c2-shell",
            Task::C3Echo => "c3-echo",
            Task::C3Shell => "c3-shell",
        }
    }

    /// How the workshop's tables name the task's side.
    pub fn label(self) -> &'static str {
        match self {
            Task::EksEcho | Task::EksSleep => "EKS",
            Task::C1Echo | Task::C1Shell => "C1",
            Task::C2Echo | Task::C2Shell => "C2",
            Task::C3Echo | Task::C3Shell => "C3",
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            Task::EksEcho | Task::EksSleep => "default",
            Task::C1Echo | Task::C1Shell => "ecs-demo-1",
            Task::C2Echo | Task::C2Shell => "ecs-demo-2",
            Task::C3Echo | Task::C3Shell => "ecs-demo-3",
        }
    }

    pub fn service_account(self) -> &'static str {
        match self {
            Task::EksEcho => "echo",
            Task::EksSleep => "sleep",
            Task::C1Echo | Task::C2Echo | Task::C3Echo => "echo-service",
            Task::C1Shell | Task::C2Shell | Task::C3Shell => "shell-task",
        }
    }

    /// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn identity(self) -> String {
        spiffe(self.namespace(), self.service_account())
    }

    pub fn net(self) -> Net {
        match self {
            Task::C3Echo | Task::C3Shell => Net::Two,
            _ => Net::One,
        }
    }

    /// The host part of the task's address on its network.
    pub fn octet(self) -> u8 {
        match self {
            Task::EksEcho => 10,
            Task::EksSleep => 11,
            Task::C1Echo => 21,
            Task::C1Shell => 22,
            Task::C2Echo => 31,
            Task::C2Shell => 32,
            Task::C3Echo => 41,
            Task::C3Shell => 42,
        }
    }

    pub fn ip(self) -> IpAddr {
        self.net().ip(self.octet())
    }

    /// What the echo application answers with; `None` for client tasks.
    pub fn app_name(self) -> Option<&'static str> {
        match self {
            Task::EksEcho => Some("echo-eks"),
            Task::C1Echo => Some("echo-c1"),
            Task::C2Echo => Some("echo-c2"),
            Task::C3Echo => Some("echo-c3"),
            _ => None,
        }
    }

    /// Where an ECS task runs; `None` for EKS pods.
    pub fn ecs(self) -> Option<EcsPlacement> {
        let (account, region, zone) = match self.net() {
            Net::One => ("111122223333", "us-east-2", "us-east-2a"),
            Net::Two => ("444455556666", "us-west-2", "us-west-2b"),
        };
        match self {
            Task::EksEcho | Task::EksSleep => None,
            _ => Some(EcsPlacement {
                account,
                region,
                zone,
                cluster: self.namespace(),
            }),
        }
    }

    /// The task id in the task's ARN.
    fn task_id(self) -> String {
        format!("{}-0001", self.key())
    }

    /// The workload name: for an ECS task the one istiod gives its
    /// WorkloadEntry (`ecs-task-<account>-<region>-<cluster>-<task id>`), for
    /// an EKS pod the pod's name.
    pub fn workload_name(self) -> String {
        match self.ecs() {
            Some(p) => format!(
                "ecs-task-{}-{}-{}-{}",
                p.account,
                p.region,
                p.cluster,
                self.task_id()
            ),
            None => match self {
                Task::EksEcho => "echo-7f9d8c6b5-x2x7q".into(),
                _ => "sleep-6c8b9d7f4-k4l9m".into(),
            },
        }
    }

    /// The workload's UID as istiod sends it.
    pub fn uid(self) -> String {
        match self.ecs() {
            Some(_) => format!(
                "{CLUSTER_ID}/networking.istio.io/WorkloadEntry/{}/{}",
                self.namespace(),
                self.workload_name()
            ),
            None => format!(
                "{CLUSTER_ID}//Pod/{}/{}",
                self.namespace(),
                self.workload_name()
            ),
        }
    }

    /// `PROXY_WORKLOAD_INFO` for an EKS pod's stand-in proxy (ECS tasks
    /// learn it from task metadata).
    pub fn proxy_workload_info(self) -> Option<String> {
        self.ecs().is_none().then(|| {
            format!(
                "{}/{}/{}",
                self.namespace(),
                self.workload_name(),
                self.service_account()
            )
        })
    }

    /// What the task metadata endpoint says about an ECS task.
    pub fn task_doc(self) -> Option<TaskDoc> {
        let p = self.ecs()?;
        let IpAddr::V4(ip) = self.ip() else {
            return None;
        };
        Some(TaskDoc {
            id: self.key().into(),
            arn: format!(
                "arn:aws:ecs:{}:{}:task/{}/{}",
                p.region,
                p.account,
                p.cluster,
                self.task_id()
            ),
            availability_zone: p.zone.into(),
            ip,
        })
    }

    /// The bearer token local-istiod accepts for this task's service account.
    pub fn bearer_token(self) -> String {
        format!("token-{}-{}", self.namespace(), self.service_account())
    }
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

/// The network that is not `net`.
pub fn other(net: Net) -> Net {
    match net {
        Net::One => Net::Two,
        Net::Two => Net::One,
    }
}

/// The external server's address.
pub fn external_ip() -> IpAddr {
    Net::One.ip(EXTERNAL_OCTET)
}

/// What the mesh looks like at one moment.
#[derive(Clone, Debug, Default)]
pub struct MeshSpec {
    /// Authorization policies (local-config YAML items).
    pub policies: Vec<String>,
    /// Tasks whose workloads istiod has removed (the task was stopped).
    pub stopped: Vec<Task>,
}

/// The mesh file local-istiod serves for `spec`.
pub fn mesh(spec: &MeshSpec) -> MeshConfig {
    let global = {
        let mut s = ServiceSpec::new("ecs-demo-1", "echo-service", GLOBAL_HOST)
            .port(ECHO_PORT, ECHO_PORT)
            .san("ecs-demo-1", "echo-service")
            .san("ecs-demo-3", "echo-service");
        // Stay on the client's network while it has healthy endpoints; fail
        // over to the other network when it has none.
        s.extra = json!({
            "loadBalancer": {
                "routingPreferences": ["Network"],
                "mode": "Failover",
                "healthPolicy": "OnlyHealthy",
            }
        });
        s
    };
    let own = |task: Task, host: &str| {
        ServiceSpec::new(task.namespace(), "echo-service", host)
            .port(ECHO_PORT, ECHO_PORT)
            .san(task.namespace(), task.service_account())
    };
    let eks = ServiceSpec::new("default", "echo", EKS_HOST)
        .port(ECHO_PORT, ECHO_PORT)
        .san("default", "echo");
    let c1 = own(Task::C1Echo, C1_HOST);
    let c2 = own(Task::C2Echo, C2_HOST);
    let c3 = own(Task::C3Echo, C3_HOST);

    let mut m = MeshConfig::default();
    for task in Task::ALL {
        if spec.stopped.contains(&task) {
            continue;
        }
        let mut w = WorkloadSpec::new(
            task.namespace(),
            &task.workload_name(),
            task.service_account(),
            task.ip(),
        );
        w.uid = task.uid();
        w.network = task.net().name().into();
        w.extra = json!({ "clusterId": CLUSTER_ID, "canonicalName": task.key() });
        if let Some(p) = task.ecs() {
            w.extra["locality"] = json!({ "region": p.region, "zone": p.zone });
        }
        let services: Vec<&ServiceSpec> = match task {
            Task::EksEcho => vec![&eks],
            Task::C1Echo => vec![&global, &c1],
            Task::C2Echo => vec![&c2],
            Task::C3Echo => vec![&global, &c3],
            _ => vec![],
        };
        for s in services {
            w = w.in_service(&s.key(), ECHO_PORT, ECHO_PORT);
        }
        // From the other network, this task is reached through its
        // network's gateway, at the address that network dials.
        let gw_addr = other(task.net()).ip(GATEWAY_OCTET);
        w.extra["networkGateway"] = json!({
            "destination": format!("{}/{}", task.net().name(), gw_addr),
            "hboneMtlsPort": 15008,
        });
        m = m.workload(w);
    }
    // One gateway per network, as each cluster has its own east-west gateway;
    // here both are the same relay with a leg in each network. A network's
    // gateway is listed at the address the other network dials, plus its own.
    for net in [Net::One, Net::Two] {
        let mut gw = WorkloadSpec::new(
            GATEWAY_NS,
            &format!("{GATEWAY_SA}-{}", net.name()),
            GATEWAY_SA,
            other(net).ip(GATEWAY_OCTET),
        );
        gw.ips.push(net.ip(GATEWAY_OCTET));
        gw.uid = format!("{CLUSTER_ID}//Pod/{GATEWAY_NS}/{GATEWAY_SA}-{}", net.name());
        gw.network = net.name().into();
        gw.hbone = false;
        gw.extra = json!({ "clusterId": CLUSTER_ID });
        m = m.workload(gw);
    }
    m = m
        .service(global)
        .service(eks)
        .service(c1)
        .service(c2)
        .service(c3);
    for p in &spec.policies {
        m = m.policy(p);
    }
    m
}

/// What the east-west gateway relays: `(authority, endpoint addresses)`.
pub fn gateway_routes() -> Vec<(String, Vec<IpAddr>)> {
    let at = |host: &str, tasks: &[Task]| {
        (
            format!("{host}:{ECHO_PORT}"),
            tasks.iter().map(|t| t.ip()).collect(),
        )
    };
    vec![
        // From network one: cluster 3's services.
        at(C3_HOST, &[Task::C3Echo]),
        at(GLOBAL_HOST, &[Task::C3Echo]),
        // From network two: cluster 1's.
        at(C1_HOST, &[Task::C1Echo]),
    ]
}

/// A NAMESPACE-scoped policy in `ecs-demo-1`, as istiod sends it.
fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "name: {name}\nnamespace: ecs-demo-1\nscope: Namespace\naction: {action}\ndryRun: false\nrules: {rules}"
    )
}

/// `spec: {}`: an ALLOW policy without rules, which allows nothing.
pub fn deny_all() -> String {
    policy("deny-all", "Allow", "[]")
}

/// ALLOW from namespace `ns` to port 8080.
pub fn allow_from(ns: &str) -> String {
    policy(
        &format!("allow-{ns}"),
        "Allow",
        &format!("[[[{{namespaces: [!Exact {ns}]}}], [{{destinationPorts: [8080]}}]]]"),
    )
}

/// DENY from namespace `ns`.
pub fn deny_from(ns: &str) -> String {
    policy(
        &format!("deny-{ns}"),
        "Deny",
        &format!("[[[{{namespaces: [!Exact {ns}]}}]]]"),
    )
}

/// One cell of Scenario 2's matrix: a client task and a service.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub label: &'static str,
    pub from: Task,
    pub host: &'static str,
    /// The task that answers.
    pub to: Task,
}

/// The matrix's columns, in the workshop's order.
pub const CALLS: [Call; 5] = [
    Call {
        label: "EKS->C1",
        from: Task::EksSleep,
        host: C1_HOST,
        to: Task::C1Echo,
    },
    Call {
        label: "EKS->C2",
        from: Task::EksSleep,
        host: C2_HOST,
        to: Task::C2Echo,
    },
    Call {
        label: "C1->C2",
        from: Task::C1Shell,
        host: C2_HOST,
        to: Task::C2Echo,
    },
    Call {
        label: "C2->C1",
        from: Task::C2Shell,
        host: C1_HOST,
        to: Task::C1Echo,
    },
    Call {
        label: "C1 internal",
        from: Task::C1Shell,
        host: C1_HOST,
        to: Task::C1Echo,
    },
];

/// One authorization exercise: the policies in `ecs-demo-1` and whether each
/// of [`CALLS`] connects.
pub struct Exercise {
    pub name: &'static str,
    pub policies: Vec<String>,
    pub expected: [bool; 5],
}

/// The six exercises, each on top of the previous one (the sixth resets).
pub fn exercises() -> Vec<Exercise> {
    const P: bool = true;
    const F: bool = false;
    vec![
        Exercise {
            name: "1 baseline",
            policies: vec![],
            expected: [P, P, P, P, P],
        },
        Exercise {
            name: "2 deny-all",
            policies: vec![deny_all()],
            expected: [F, P, P, F, F],
        },
        Exercise {
            name: "3 +allow EKS",
            policies: vec![deny_all(), allow_from("default")],
            expected: [P, P, P, F, F],
        },
        Exercise {
            name: "4 +allow C2",
            policies: vec![deny_all(), allow_from("default"), allow_from("ecs-demo-2")],
            expected: [P, P, P, P, F],
        },
        Exercise {
            name: "5 +allow internal",
            policies: vec![
                deny_all(),
                allow_from("default"),
                allow_from("ecs-demo-2"),
                allow_from("ecs-demo-1"),
            ],
            expected: [P, P, P, P, P],
        },
        Exercise {
            name: "6 reset; deny-all, allow EKS, DENY C2",
            policies: vec![deny_all(), allow_from("default"), deny_from("ecs-demo-2")],
            expected: [P, P, P, F, F],
        },
    ]
}

/// What `mesh-curl` printed and how it exited.
#[derive(Clone, Debug, Default)]
pub struct CurlOutput {
    /// The exit code (`None`: killed or not started).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What a harness must do for the checks.
pub trait Harness {
    /// `docker` or `netns`.
    fn kind(&self) -> &'static str;

    /// Runs `mesh-curl <args>` inside `task`, as its application would, with
    /// `ALL_PROXY=socks5h://127.0.0.1:15080` and `NO_PROXY=localhost,127.0.0.1`.
    fn curl(&self, task: Task, args: &[&str]) -> impl Future<Output = CurlOutput>;

    /// Replaces local-istiod's mesh file (it pushes the difference).
    fn push(&self, mesh: &MeshConfig);

    /// Stops a task (its application and its sidecar), as ECS does.
    fn stop(&self, task: Task) -> impl Future<Output = ()>;

    /// The sidecar's log so far.
    fn sidecar_log(&self, task: Task) -> impl Future<Output = String>;

    /// The east-west gateway's log so far.
    fn gateway_log(&self) -> impl Future<Output = String>;
}

/// What a request through the mesh came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer from the application that names itself so.
    Answered(String),
    /// The sidecar refused the connection (SOCKS5 reply 2: denied by policy).
    Denied(String),
    /// Anything else, described.
    Broken(String),
}

impl Outcome {
    /// In the workshop's notation: `[PASS]` connected, `[FAIL]` refused.
    pub fn workshop_mark(&self) -> &'static str {
        match self {
            Outcome::Answered(_) => "[PASS]",
            Outcome::Denied(_) => "[FAIL]",
            Outcome::Broken(_) => "[BROKEN]",
        }
    }
}

/// `GET http://<host>:<port>/` from `from` through its sidecar.
pub async fn get<H: Harness>(h: &H, from: Task, host: &str, port: u16) -> Outcome {
    let url = format!("http://{host}:{port}/");
    let out = h.curl(from, &["-s", "-S", "-m", "10", &url]).await;
    match out.code {
        Some(0) => match out.stdout.split_whitespace().next() {
            Some(name) => Outcome::Answered(name.to_string()),
            None => Outcome::Broken(format!("empty answer: {:?}", out.stdout)),
        },
        // The exit code curl uses for a proxy handshake that failed.
        Some(97) if out.stderr.contains("reply 2") => Outcome::Denied(one_line(&out.stderr)),
        code => Outcome::Broken(format!("exit {code:?}: {}", one_line(&out.stderr))),
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `/config_dump` of `task`'s sidecar, from inside the task.
pub async fn config_dump<H: Harness>(h: &H, task: Task) -> Option<Value> {
    let url = format!("{ADMIN_URL}/config_dump");
    let out = h.curl(task, &["-s", "-m", "5", &url]).await;
    if out.code != Some(0) {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

/// Polls `task`'s `/config_dump` until `applied` holds, up to `timeout`.
pub async fn wait_applied<H: Harness>(
    h: &H,
    task: Task,
    timeout: Duration,
    applied: impl Fn(&Value) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if config_dump(h, task).await.is_some_and(|d| applied(&d)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<namespace>/<name>` of every policy in a config dump, sorted.
pub fn dumped_policies(dump: &Value) -> Vec<String> {
    let mut names: Vec<String> = dump["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["namespace"].as_str().unwrap_or_default(),
                p["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    names
}

/// Whether a config dump lists the workload with `uid`.
pub fn dump_has_workload(dump: &Value, uid: &str) -> bool {
    dump["workloads"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["uid"] == uid))
}

/// `<namespace>/<name>` of a local-config policy item.
fn policy_key(yaml: &str) -> String {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap_or_default();
    let field = |k: &str| value[k].as_str().unwrap_or_default().to_string();
    format!("{}/{}", field("namespace"), field("name"))
}

/// The checks' results, printed as they come.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: Vec<String>,
}

impl Report {
    /// Records and prints one check.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if ok {
            println!("[PASS] {what}");
            self.passed += 1;
        } else {
            println!("[FAIL] {what}");
            self.failed.push(what);
        }
    }

    /// A heading line.
    pub fn section(&self, title: &str) {
        println!("\n== {title}");
    }

    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// The closing line.
    pub fn summary(&self) -> String {
        format!(
            "{} checks, {} passed, {} failed",
            self.passed + self.failed.len(),
            self.passed,
            self.failed.len()
        )
    }
}

/// One request that must be answered by `to`'s application.
async fn expect_answer<H: Harness>(
    h: &H,
    r: &mut Report,
    what: &str,
    from: Task,
    host: &str,
    to: &str,
) {
    let outcome = get(h, from, host, ECHO_PORT).await;
    let ok = outcome == Outcome::Answered(to.to_string());
    let seen = match &outcome {
        Outcome::Answered(n) => format!("answered by {n}"),
        Outcome::Denied(e) => format!("refused: {e}"),
        Outcome::Broken(e) => format!("broken: {e}"),
    };
    r.check(
        ok,
        format!(
            "{what}: {} ({}) -> {host}:{ECHO_PORT} {seen}",
            from.key(),
            from.namespace()
        ),
    );
}

/// Whether the gateway relayed a CONNECT for `authority` from `identity`.
fn gateway_relayed(log: &str, authority: &str, identity: &str) -> bool {
    log.lines().any(|l| {
        l.starts_with("connect ")
            && l.contains(&format!(" authority={authority} "))
            && l.contains(&format!(" identity={identity} "))
            && l.ends_with(" status=200")
    })
}

/// Scenario 1: one ECS cluster and the EKS cluster.
pub async fn scenario_1<H: Harness>(h: &H, r: &mut Report) {
    r.section("Scenario 1: one ECS cluster (ecs-demo-1) and EKS");
    h.push(&mesh(&MeshSpec::default()));
    let c1 = Task::C1Echo.app_name().unwrap_or_default();
    let eks = Task::EksEcho.app_name().unwrap_or_default();
    expect_answer(h, r, "EKS -> ECS", Task::EksSleep, GLOBAL_HOST, c1).await;
    expect_answer(h, r, "ECS -> EKS", Task::C1Shell, EKS_HOST, eks).await;
    expect_answer(
        h,
        r,
        "ECS -> ECS by hostname",
        Task::C1Shell,
        GLOBAL_HOST,
        c1,
    )
    .await;
    expect_answer(
        h,
        r,
        "ECS -> external passthrough",
        Task::C1Shell,
        EXTERNAL_NAME,
        EXTERNAL_NAME,
    )
    .await;
    // Text access logs print addresses bare, JSON ones as strings.
    let addr = format!("{}:{ECHO_PORT}", external_ip());
    let external = format!("dst.addr={addr}");
    let external_json = format!("\"dst.addr\":\"{addr}\"");
    let passthrough = h.sidecar_log(Task::C1Shell).await.lines().any(|l| {
        (l.contains("direction=\"outbound\"") || l.contains("\"direction\":\"outbound\""))
            && (l.contains(&format!("{external} ")) || l.contains(&external_json))
            && !l.contains("dst.hbone_addr")
    });
    r.check(
        passthrough,
        format!("c1-shell's sidecar passed {EXTERNAL_NAME} through as plain TCP ({external})"),
    );
    // The calls above were mutual TLS: the destination's sidecar names the
    // verified identity of each caller.
    let log = h.sidecar_log(Task::C1Echo).await;
    for caller in [Task::EksSleep, Task::C1Shell] {
        let seen = log.lines().any(|l| {
            l.contains("direction=\"inbound\"")
                && l.contains(&format!("src.identity=\"{}\"", caller.identity()))
        });
        r.check(
            seen,
            format!(
                "c1-echo's sidecar authenticated {} over HBONE (mTLS)",
                caller.identity()
            ),
        );
    }
}

/// Scenario 2: two ECS clusters, and the six authorization exercises.
pub async fn scenario_2<H: Harness>(h: &H, r: &mut Report) {
    r.section("Scenario 2: two ECS clusters (ecs-demo-1, ecs-demo-2)");
    h.push(&mesh(&MeshSpec::default()));
    let c1 = Task::C1Echo.app_name().unwrap_or_default();
    let c2 = Task::C2Echo.app_name().unwrap_or_default();
    expect_answer(h, r, "C1 -> C2", Task::C1Shell, C2_HOST, c2).await;
    expect_answer(h, r, "C2 -> C1", Task::C2Shell, C1_HOST, c1).await;
    expect_answer(h, r, "EKS -> C2", Task::EksSleep, C2_HOST, c2).await;

    let mut table = vec![format!(
        "{:<40}{}",
        "exercise",
        CALLS
            .iter()
            .map(|c| format!("{:<13}", c.label))
            .collect::<String>()
    )];
    for ex in exercises() {
        h.push(&mesh(&MeshSpec {
            policies: ex.policies.clone(),
            stopped: vec![],
        }));
        let mut want: Vec<String> = ex.policies.iter().map(|p| policy_key(p)).collect();
        want.sort();
        let applied = wait_applied(h, Task::C1Echo, Duration::from_secs(30), |d| {
            dumped_policies(d) == want
        })
        .await;
        r.check(
            applied,
            format!(
                "exercise {}: c1-echo's sidecar holds policies {want:?}",
                ex.name
            ),
        );
        let mut row = format!("{:<40}", ex.name);
        for (call, expected) in CALLS.iter().zip(ex.expected) {
            let outcome = get(h, call.from, call.host, ECHO_PORT).await;
            let ok = match &outcome {
                Outcome::Answered(n) => expected && Some(n.as_str()) == call.to.app_name(),
                Outcome::Denied(_) => !expected,
                Outcome::Broken(_) => false,
            };
            let wanted = if expected { "connects" } else { "is refused" };
            let seen = match &outcome {
                Outcome::Answered(n) => format!("answered by {n}"),
                Outcome::Denied(e) => format!("refused ({e})"),
                Outcome::Broken(e) => format!("broken: {e}"),
            };
            r.check(
                ok,
                format!("exercise {}: {} {wanted}: {seen}", ex.name, call.label),
            );
            row.push_str(&format!(
                "{:<13}",
                format!("{}{}", outcome.workshop_mark(), if ok { "" } else { "!" })
            ));
        }
        table.push(row);
    }
    // The last denials of C2 came from the explicit DENY, by name.
    let log = h.sidecar_log(Task::C1Echo).await;
    r.check(
        log.lines().any(|l| {
            l.contains("connection denied by authorization policy")
                && l.contains("explicitly denied by: ecs-demo-1/deny-ecs-demo-2")
                && l.contains(&Task::C2Shell.identity())
        }),
        "c1-echo's sidecar logged the denial of C2 by ecs-demo-1/deny-ecs-demo-2",
    );
    println!(
        "\nScenario 2 matrix ([PASS] = connected, [FAIL] = refused, as the workshop prints; ! = unexpected):"
    );
    for line in table {
        println!("  {}", line.trim_end());
    }
}

/// Scenario 3: two networks (accounts) joined by the east-west gateway, and
/// failover of a service with endpoints in both.
pub async fn scenario_3<H: Harness>(h: &H, r: &mut Report) {
    r.section("Scenario 3: two networks (accounts) through the east-west gateway");
    h.push(&mesh(&MeshSpec::default()));
    let applied = wait_applied(h, Task::C1Echo, Duration::from_secs(30), |d| {
        dumped_policies(d).is_empty()
    })
    .await;
    r.check(applied, "policies of scenario 2 removed");
    let c1 = Task::C1Echo.app_name().unwrap_or_default();
    let c3 = Task::C3Echo.app_name().unwrap_or_default();
    let gw = || async { h.gateway_log().await };

    expect_answer(h, r, "net1 -> net2", Task::C1Shell, C3_HOST, c3).await;
    r.check(
        gateway_relayed(
            &gw().await,
            &format!("{C3_HOST}:{ECHO_PORT}"),
            &Task::C1Shell.identity(),
        ),
        "the gateway relayed c1-shell's double-HBONE CONNECT to cluster 3",
    );
    expect_answer(h, r, "net2 -> net1", Task::C3Shell, C1_HOST, c1).await;
    r.check(
        gateway_relayed(
            &gw().await,
            &format!("{C1_HOST}:{ECHO_PORT}"),
            &Task::C3Shell.identity(),
        ),
        "the gateway relayed c3-shell's double-HBONE CONNECT to cluster 1",
    );
    expect_answer(h, r, "EKS -> net2", Task::EksSleep, C3_HOST, c3).await;

    // Failover: the same name in both clusters, cluster 1's task stops.
    expect_answer(h, r, "before failover", Task::C1Shell, GLOBAL_HOST, c1).await;
    h.stop(Task::C1Echo).await;
    h.push(&mesh(&MeshSpec {
        policies: vec![],
        stopped: vec![Task::C1Echo],
    }));
    let uid = Task::C1Echo.uid();
    let removed = wait_applied(h, Task::C1Shell, Duration::from_secs(30), |d| {
        !dump_has_workload(d, &uid)
    })
    .await;
    r.check(
        removed,
        "c1-echo stopped and removed from the mesh (as istiod does when ECS reports it stopped)",
    );
    for i in 1..=3 {
        expect_answer(
            h,
            r,
            &format!("after failover ({i}/3)"),
            Task::C1Shell,
            GLOBAL_HOST,
            c3,
        )
        .await;
    }
    expect_answer(
        h,
        r,
        "after failover, from EKS",
        Task::EksSleep,
        GLOBAL_HOST,
        c3,
    )
    .await;
    r.check(
        gateway_relayed(
            &gw().await,
            &format!("{GLOBAL_HOST}:{ECHO_PORT}"),
            &Task::C1Shell.identity(),
        ),
        "failover traffic crossed to network two through the gateway",
    );
}

/// Runs the scenarios `which` (1, 2, 3) in order.
pub async fn run<H: Harness>(h: &H, which: &[u8]) -> Report {
    let mut r = Report::default();
    for s in which {
        match s {
            1 => scenario_1(h, &mut r).await,
            2 => scenario_2(h, &mut r).await,
            3 => scenario_3(h, &mut r).await,
            other => r.check(false, format!("no scenario {other}")),
        }
    }
    println!("\n{}", r.summary());
    r
}

/// What a harness needs before it starts, written by [`prepare`].
#[derive(Clone, Debug)]
pub struct Prepared {
    pub dir: PathBuf,
    /// The mesh CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`).
    pub ca_dir: PathBuf,
    /// The east-west gateway's certificate (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
    pub gateway_dir: PathBuf,
    /// The directory holding `mesh.yaml`, which local-istiod serves.
    pub mesh_dir: PathBuf,
    /// `BOOTSTRAP_TOKEN` per task.
    pub tokens: Vec<(Task, String)>,
}

impl Prepared {
    /// The layout [`prepare`] writes in `dir` (without the tokens).
    pub fn at(dir: &Path) -> Prepared {
        Prepared {
            dir: dir.to_path_buf(),
            ca_dir: dir.join("ca"),
            gateway_dir: dir.join("gateway"),
            mesh_dir: dir.join("mesh"),
            tokens: Vec::new(),
        }
    }

    pub fn mesh_file(&self) -> PathBuf {
        self.mesh_dir.join("mesh.yaml")
    }

    pub fn token(&self, task: Task) -> &str {
        self.tokens
            .iter()
            .find(|(t, _)| *t == task)
            .map_or("", |(_, tok)| tok.as_str())
    }

    /// local-istiod's `--ca-cert`/`--ca-key`/`--token` arguments, with the CA
    /// at `ca_dir` (its path as the server sees it).
    pub fn istiod_args(&self, ca_dir: &str) -> Vec<String> {
        let mut args = vec![
            "--ca-cert".to_string(),
            format!("{ca_dir}/ca-cert.pem"),
            "--ca-key".to_string(),
            format!("{ca_dir}/ca-key.pem"),
        ];
        let mut seen = Vec::new();
        for task in Task::ALL {
            let token = task.bearer_token();
            if !seen.contains(&token) {
                args.push("--token".into());
                args.push(format!(
                    "{token}={}/{}",
                    task.namespace(),
                    task.service_account()
                ));
                seen.push(token);
            }
        }
        args
    }

    /// Writes the mesh atomically, so local-istiod never reads half a file.
    pub fn write_mesh(&self, mesh: &MeshConfig) {
        let tmp = self.mesh_dir.join(".mesh.yaml.new");
        std::fs::write(&tmp, mesh.render()).expect("write the mesh file");
        std::fs::rename(&tmp, self.mesh_file()).expect("replace the mesh file");
    }
}

/// Why preparing failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating the mesh CA: {0}")]
    Ca(#[from] zs_tls::TlsError),
    #[error("the gateway identity: {0}")]
    Identity(String),
    #[error("`local-istiod bootstrap-token` for {task}: {reason}")]
    Token { task: &'static str, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |source| PrepareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes into `dir`: a mesh CA, the east-west gateway's certificate from
/// it, the initial mesh file, and a bootstrap token per task made by
/// `local_istiod bootstrap-token` with `istiod_url(net)` as the URL tasks of
/// that network reach the control plane at.
pub fn prepare(
    dir: &Path,
    local_istiod: &Path,
    istiod_url: impl Fn(Net) -> String,
) -> Result<Prepared, PrepareError> {
    use zs_tls::ca::CertificateAuthority;
    let mut prepared = Prepared::at(dir);
    let (ca_dir, gateway_dir) = (prepared.ca_dir.clone(), prepared.gateway_dir.clone());
    for d in [&ca_dir, &gateway_dir, &prepared.mesh_dir] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let write = |path: PathBuf, text: &str| std::fs::write(&path, text).map_err(io(&path));

    let ca = CertificateAuthority::new_root("ztunnel-sidecar seed scenarios CA")?;
    write(ca_dir.join("ca-cert.pem"), ca.cert_pem())?;
    write(ca_dir.join("ca-key.pem"), &ca.key_pem())?;
    write(ca_dir.join("root-cert.pem"), ca.roots_pem())?;

    let gateway = zs_tls::Identity::new(TRUST_DOMAIN, GATEWAY_NS, GATEWAY_SA)
        .map_err(|e| PrepareError::Identity(e.to_string()))?;
    let now = std::time::SystemTime::now();
    let (issued, key) = ca.issue(
        &gateway,
        now - Duration::from_secs(3600),
        now + Duration::from_secs(30 * 24 * 3600),
    )?;
    write(gateway_dir.join("cert-chain.pem"), &issued.cert_chain_pem())?;
    write(gateway_dir.join("key.pem"), &key)?;
    write(gateway_dir.join("root-cert.pem"), ca.roots_pem())?;

    for task in Task::ALL {
        let out = std::process::Command::new(local_istiod)
            .arg("bootstrap-token")
            .arg("--url")
            .arg(istiod_url(task.net()))
            .arg("--state-dir")
            .arg(&ca_dir)
            .args(["--namespace", task.namespace()])
            .args(["--service-account", task.service_account()])
            .args(["--token", &task.bearer_token()])
            .output()
            .map_err(|e| PrepareError::Token {
                task: task.key(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PrepareError::Token {
                task: task.key(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        prepared.tokens.push((task, token));
    }
    prepared.write_mesh(&mesh(&MeshSpec::default()));
    Ok(prepared)
}
