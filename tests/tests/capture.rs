//! Transparent capture (`CAPTURE_MODE=proxy-configuration`) under the NAT
//! rules ECS installs for a task definition's `proxyConfiguration` of type
//! `APPMESH`, reproduced with iptables in two network namespaces joined by a
//! veth pair: the client task (`10.10.0.1`, `fd00:10::1`) and the server task
//! (`10.10.0.2`, `fd00:10::2`), each with a sidecar running as UID 1337.
//! Unmodified clients (`curl` with no proxy settings) run inside the client
//! namespace; the application runs inside the server namespace on loopback.
//!
//! Needs root, `ip`, `iptables`, `ip6tables`, `setpriv` and `curl`; without
//! them each test prints "skipped: …" and passes. The namespaces are removed
//! when a test ends, also when it fails.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zs_e2e::bins::bin;
use zs_e2e::*;

const CLIENT_V4: &str = "10.10.0.1";
const SERVER_V4: &str = "10.10.0.2";
const VIP_V4: &str = "10.10.0.100";
const CLIENT_V6: &str = "fd00:10::1";
const SERVER_V6: &str = "fd00:10::2";
/// The application port (`AppPorts`) and the service port in front of it.
const APP_PORT: u16 = 8080;
/// `IgnoredUID`: the sidecar's own user, exempt from the redirect.
const PROXY_UID: &str = "1337";

/// What the platform installs in the task's namespace for `APPMESH`
/// (`ProxyEgressPort` 15001, `ProxyIngressPort` 15006, `EgressIgnoredIPs`
/// the ECS metadata and credentials endpoints), per iptables binary.
fn appmesh_rules(v6: bool) -> Vec<Vec<String>> {
    let mut rules = vec![
        "-t nat -N APPMESH_INGRESS".to_string(),
        "-t nat -N APPMESH_EGRESS".to_string(),
        format!("-t nat -A APPMESH_EGRESS -m owner --uid-owner {PROXY_UID} -j RETURN"),
    ];
    if !v6 {
        rules.push(
            "-t nat -A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN".into(),
        );
    }
    rules.extend([
        "-t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001".to_string(),
        "-t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS".to_string(),
        format!(
            "-t nat -A APPMESH_INGRESS -p tcp -m multiport --dports {APP_PORT} -j REDIRECT --to-ports 15006"
        ),
        "-t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS".to_string(),
    ]);
    rules
        .into_iter()
        .map(|r| r.split(' ').map(str::to_string).collect())
        .collect()
}

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and iptables)".into());
    }
    for (program, arg) in [
        ("ip", "-V"),
        ("iptables", "-V"),
        ("ip6tables", "-V"),
        ("setpriv", "--version"),
        ("curl", "--version"),
    ] {
        let ok = Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("{program} is not installed"));
        }
    }
    None
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Netns {
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// Binds a TCP listener inside this namespace (sockets belong to the
    /// namespace of the thread that creates them).
    fn bind(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            // SAFETY: setns(2) on a namespace file descriptor this thread owns;
            // it moves only this short-lived thread, and no memory is shared.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .expect("bind thread")
        .expect("bind inside the namespace");
        tokio::net::TcpListener::from_std(listener).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A sidecar process inside a namespace, as UID 1337; killed when dropped.
struct NsSidecar {
    child: Child,
    log: PathBuf,
}

impl NsSidecar {
    fn spawn(ns: &Netns, dir: &Path, workload: &str, certs: &Path, mesh: &Path) -> NsSidecar {
        let log = dir.join(format!("{}.log", ns.name));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "setpriv"])
            .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
            .arg(bin("ztunnel-sidecar"))
            .env_clear()
            .env("PROXY_WORKLOAD_INFO", workload)
            .env("CERT_DIR", certs)
            .env("LOCAL_XDS_PATH", mesh)
            .env("CAPTURE_MODE", "proxy-configuration")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the sidecar");
        NsSidecar { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `curl` inside `ns` (as `uid`, if given) with no proxy settings:
/// (exit code, body, HTTP status).
async fn curl_in(ns: &Netns, uid: Option<&str>, url: &str) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]);
    if let Some(uid) = uid {
        cmd.args(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    cmd.args([
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        url,
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let out = cmd.output().await.expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        body.to_string(),
        status.to_string(),
    )
}

/// Both tasks with their sidecars and the server's application.
struct Tasks {
    // Field order is drop order: processes first, then the namespaces.
    client_sidecar: NsSidecar,
    server_sidecar: NsSidecar,
    app: HttpApp,
    _app_v6: HttpApp,
    client: Netns,
    server: Netns,
    _pki: Pki,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Tasks {
    /// `None` (after saying why) when the machine cannot run these tests.
    async fn start(policies: &[&str]) -> Option<Tasks> {
        if let Some(why) = missing_prerequisite() {
            println!("skipped: {why}");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let client = Netns::new(format!("zs-task-c-{id}"));
        let server = Netns::new(format!("zs-task-s-{id}"));
        // Interface names live in each namespace, so every pair can use eth0.
        sh(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &server.name,
            ],
        );
        for (ns, v4, v6) in [
            (&client, CLIENT_V4, CLIENT_V6),
            (&server, SERVER_V4, SERVER_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            // Service VIPs are routed out of the task, like any other address.
            ns.ip(&["route", "add", "default", "dev", "eth0"]);
            ns.ip(&["-6", "route", "add", "default", "dev", "eth0"]);
            for (binary, v6) in [("iptables", false), ("ip6tables", true)] {
                for rule in appmesh_rules(v6) {
                    let args: Vec<&str> = rule.iter().map(String::as_str).collect();
                    ns.exec(binary, &args);
                }
            }
        }

        let pki = Pki::new();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let svc = ServiceSpec::new(NS, "echo-service", HOST)
            .port(APP_PORT, APP_PORT)
            .vip(&format!("/{VIP_V4}"))
            .san(NS, "echo");
        let mut shell = WorkloadSpec::new(NS, "shell", "shell", ip(CLIENT_V4));
        shell.ips.push(ip(CLIENT_V6));
        let mut echo = WorkloadSpec::new(NS, "echo", "echo", ip(SERVER_V4)).in_service(
            &svc.key(),
            APP_PORT,
            APP_PORT,
        );
        echo.ips.push(ip(SERVER_V6));
        let mut mesh = MeshConfig::default()
            .workload(shell)
            .workload(echo)
            .service(svc);
        for p in policies {
            mesh = mesh.policy(p);
        }
        let mesh_file = mesh.write(pki.path(), "mesh.yaml");
        let client_certs = pki.cert_dir(NS, "shell");
        let server_certs = pki.cert_dir(NS, "echo");
        readable_by_everyone(pki.path());

        let app = HttpApp::serve(
            server.bind(SocketAddr::new(ip("127.0.0.1"), APP_PORT)),
            "captured-app",
            None,
        );
        let app_v6 = HttpApp::serve(
            server.bind(SocketAddr::new(ip("::1"), APP_PORT)),
            "captured-app",
            None,
        );
        let client_sidecar = NsSidecar::spawn(
            &client,
            pki.path(),
            &format!("{NS}/shell/shell"),
            &client_certs,
            &mesh_file,
        );
        let server_sidecar = NsSidecar::spawn(
            &server,
            pki.path(),
            &format!("{NS}/echo/echo"),
            &server_certs,
            &mesh_file,
        );
        let tasks = Tasks {
            client_sidecar,
            server_sidecar,
            app,
            _app_v6: app_v6,
            client,
            server,
            _pki: pki,
        };
        tasks.wait_ready(&tasks.client, &tasks.client_sidecar).await;
        tasks.wait_ready(&tasks.server, &tasks.server_sidecar).await;
        Some(tasks)
    }

    async fn wait_ready(&self, ns: &Netns, sidecar: &NsSidecar) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, _, status) = curl_in(ns, None, "http://127.0.0.1:15021/healthz/ready").await;
            if status == "200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar in {} not ready:\n{}",
                ns.name,
                sidecar.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server sidecar's Prometheus text.
    async fn server_metrics(&self) -> String {
        curl_in(&self.server, None, "http://127.0.0.1:15020/metrics")
            .await
            .1
    }
}

/// The sidecars run as UID 1337 and must read the certificates and mesh file.
fn readable_by_everyone(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            readable_by_everyone(&path);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The value of the sample starting with `prefix` that contains all `labels`.
fn sample(metrics: &str, prefix: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_unmodified_client_reaches_a_mesh_workload_through_the_egress_redirect() {
    let Some(tasks) = Tasks::start(&[]).await else {
        return;
    };
    let url = format!("http://{SERVER_V4}:{APP_PORT}/direct");
    let (code, body, status) = curl_in(&tasks.client, None, &url).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(body, "captured-app GET /direct\n");
    let metrics = tasks.server_metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"destination\"",
                "source_principal=\"spiffe://cluster.local/ns/ecs-demo-1/sa/shell\"",
                "connection_security_policy=\"mutual_tls\"",
            ]
        ),
        1,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_vip_is_reached_through_the_egress_redirect() {
    let Some(tasks) = Tasks::start(&[]).await else {
        return;
    };
    let url = format!("http://{VIP_V4}:{APP_PORT}/vip");
    let (code, body, status) = curl_in(&tasks.client, None, &url).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(body, "captured-app GET /vip\n");
}

#[tokio::test]
async fn an_ipv6_destination_is_read_back_and_reached_through_the_egress_redirect() {
    let Some(tasks) = Tasks::start(&[]).await else {
        return;
    };
    let url = format!("http://[{SERVER_V6}]:{APP_PORT}/six");
    let (code, body, status) = curl_in(&tasks.client, None, &url).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(body, "captured-app GET /six\n");
}

#[tokio::test]
async fn a_client_bypassing_its_sidecar_is_counted_and_named_by_the_destination() {
    let Some(tasks) = Tasks::start(&[]).await else {
        return;
    };
    let url = format!("http://{SERVER_V4}:{APP_PORT}/plain");
    let bypass = "ztunnel_sidecar_mesh_bypass_connections_total";

    // Captured: through the sidecars, not a bypass.
    let (code, _, status) = curl_in(&tasks.client, None, &url).await;
    assert_eq!((code, status.as_str()), (0, "200"));
    assert_eq!(sample(&tasks.server_metrics().await, bypass, &[]), 0);

    // The sidecar's own UID is exempt from the redirect, like a client that
    // ignores its proxy settings in a task without capture: it arrives in
    // plaintext on the application port, is captured there, still delivered.
    let (code, body, status) = curl_in(&tasks.client, Some(PROXY_UID), &url).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(body, "captured-app GET /plain\n");
    let metrics = tasks.server_metrics().await;
    assert_eq!(sample(&metrics, bypass, &[]), 1, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "istio_tcp_connections_opened_total{",
            &[
                "reporter=\"destination\"",
                "source_workload=\"shell\"",
                "connection_security_policy=\"unknown\"",
            ]
        ),
        1,
        "{metrics}"
    );
    let logs = tasks.server_sidecar.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("bypassing its sidecar"))
        .unwrap_or_else(|| panic!("no bypass warning in:\n{logs}"));
    assert!(warning.contains("\twarn\t"), "{warning}");
    assert!(
        warning.contains(&format!("src.addr={CLIENT_V4}:")),
        "{warning}"
    );
    assert!(warning.contains("src.workload=shell"), "{warning}");
    assert!(warning.contains("src.namespace=ecs-demo-1"), "{warning}");
}

#[tokio::test]
async fn a_policy_requiring_an_identity_admits_the_captured_client_and_refuses_its_bypass() {
    let allow_shell = "name: allow-shell\nnamespace: ecs-demo-1\nscope: Namespace\naction: Allow\ndryRun: false\nrules:\n- - - principals: [!Exact cluster.local/ns/ecs-demo-1/sa/shell]";
    let Some(tasks) = Tasks::start(&[allow_shell]).await else {
        return;
    };
    let url = format!("http://{SERVER_V4}:{APP_PORT}/policy");
    let (code, body, status) = curl_in(&tasks.client, None, &url).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(tasks.app.accepted(), 1);

    let (code, _, status) = curl_in(&tasks.client, Some(PROXY_UID), &url).await;
    assert_ne!(code, 0, "the plaintext request must fail");
    assert_eq!(status, "000");
    assert_eq!(tasks.app.accepted(), 1);
    let metrics = tasks.server_metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "istio_tcp_connections_failed_total{",
            &["reporter=\"destination\"", "response_flags=\"DENY\""]
        ),
        1,
        "{metrics}"
    );
}
