//! The container image, built here by `docker/build-local.sh` and run the way
//! ECS runs the `ztunnel` container that `istioctl ecs add-service` writes
//! into a task definition: the image's own entrypoint and command,
//! `BOOTSTRAP_TOKEN` in the environment, and the health check
//! `["ztunnel", "healthcheck"]` exec'd inside the running container.
//!
//! local-istiod runs as a container too, on the same (internal) Docker
//! network, and the token names it by its container name: the sidecar, a
//! static binary in an image FROM scratch, resolves it through the
//! container's resolv.conf (Docker's DNS) without any libc NSS module.
//!
//! The images are built with the cargo profile in `ZS_IMAGE_PROFILE`
//! (default `ci-release`, the quick one). The size target, 15 MB, is for the
//! size-tuned `release` profile (fat LTO); `ci-release` skips LTO and makes
//! a larger binary, so it is held to 20 MB. The tests skip, saying why, when
//! no Docker daemon is reachable.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zs_e2e::docker::{Container, Network, Run, build_images, docker, docker_ok, image_size};
use zs_e2e::netns::unique_tag;
use zs_e2e::require_docker;

/// The tag of the images these tests build (not `dev`, which people use).
const TAG: &str = "e2e";
const MB: u64 = 1_000_000;

fn profile() -> String {
    std::env::var("ZS_IMAGE_PROFILE").unwrap_or_else(|_| "ci-release".into())
}

/// The largest image allowed for a profile.
fn size_bound(profile: &str) -> u64 {
    match profile {
        "release" => 15 * MB,
        _ => 20 * MB,
    }
}

/// Builds the sidecar and local-istiod images once per test process.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_images(&profile(), TAG, &["sidecar", "local-istiod"]));
}

fn sidecar_image() -> String {
    format!("ztunnel-sidecar:{TAG}")
}

fn istiod_image() -> String {
    format!("local-istiod:{TAG}")
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with
/// `what` and the last value it saw after `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A sidecar container and, once started, the local-istiod its bootstrap
/// token points at, on a network of their own. Containers go first.
struct Task {
    sidecar: Container,
    istiod: Option<Container>,
    istiod_name: String,
    net: Network,
    dir: tempfile::TempDir,
}

impl Task {
    /// Starts the sidecar, configured by `BOOTSTRAP_TOKEN` (and the workload
    /// name, which ECS task metadata would give), while local-istiod is not
    /// running yet.
    fn start() -> Task {
        images();
        let tag = unique_tag();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        std::fs::create_dir_all(&ca_dir).expect("ca dir");
        let ca = zs_tls::ca::CertificateAuthority::new_root("image test CA").expect("CA");
        std::fs::write(ca_dir.join("ca-cert.pem"), ca.cert_pem()).expect("write CA");
        std::fs::write(ca_dir.join("ca-key.pem"), ca.key_pem()).expect("write CA key");
        std::fs::write(ca_dir.join("root-cert.pem"), ca.roots_pem()).expect("write root");
        let mesh_dir = dir.path().join("mesh");
        std::fs::create_dir_all(&mesh_dir).expect("mesh dir");
        zs_e2e::MeshConfig::default().write(&mesh_dir, "mesh.yaml");

        let istiod_name = format!("zs-e2e-{tag}-istiod");
        // The token, as the image's own tool prints it.
        let token = docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount(&ca_dir, "/ca"),
            &istiod_image(),
            "local-istiod",
            "bootstrap-token",
            "--url",
            &format!("https://{istiod_name}:15012"),
            "--state-dir",
            "/ca",
            "--namespace",
            "ecs-demo-1",
            "--service-account",
            "shell-task",
            "--token",
            "t-shell",
        ]);
        let net = Network::internal(&format!("zs-e2e-{tag}"));
        let sidecar = Container::run(
            &format!("zs-e2e-{tag}-ztunnel"),
            &[
                "--network",
                &net.name,
                "-e",
                &format!("BOOTSTRAP_TOKEN={token}"),
                "-e",
                "PROXY_WORKLOAD_INFO=ecs-demo-1/shell-task-1/shell-task",
                &sidecar_image(),
            ],
        );
        Task {
            sidecar,
            istiod: None,
            istiod_name,
            net,
            dir,
        }
    }

    /// Starts local-istiod under the name the token gives.
    fn start_istiod(&mut self) {
        let ca = mount(&self.dir.path().join("ca"), "/etc/local-istiod/ca");
        let mesh = mount(&self.dir.path().join("mesh"), "/etc/local-istiod/mesh");
        self.istiod = Some(Container::run(
            &self.istiod_name,
            &[
                "--network",
                &self.net.name,
                "-v",
                &ca,
                "-v",
                &mesh,
                &istiod_image(),
                "local-istiod",
                "--config",
                "/etc/local-istiod/mesh/mesh.yaml",
                "--listen",
                "0.0.0.0:15012",
                "--state-dir",
                "/var/lib/local-istiod",
                "--ca-cert",
                "/etc/local-istiod/ca/ca-cert.pem",
                "--ca-key",
                "/etc/local-istiod/ca/ca-key.pem",
                "--token",
                "t-shell=ecs-demo-1/shell-task",
            ],
        ));
    }

    /// What ECS runs as the container health check.
    fn healthcheck(&self) -> Run {
        self.sidecar.exec(&["ztunnel", "healthcheck"])
    }

    fn wait_ready(&self) {
        poll(
            "ztunnel healthcheck exits 0",
            Duration::from_secs(60),
            || {
                let run = self.healthcheck();
                match run.ok() {
                    true => Ok(run),
                    false => Err(format!(
                        "{:?} {}\n{}",
                        run.code,
                        run.stderr.trim(),
                        self.sidecar.logs()
                    )),
                }
            },
        );
    }

    /// `/proc/<pid>/<file>` of the sidecar process, seen from the host.
    fn proc_file(&self, file: &str) -> String {
        let pid = self.sidecar.inspect("{{.State.Pid}}");
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("read the process's /proc")
    }
}

fn mount(host: &Path, container: &str) -> String {
    format!("{}:{container}:ro", host.display())
}

#[test]
fn image_is_under_the_size_bound_for_its_profile() {
    require_docker!();
    images();
    let (profile, size) = (profile(), image_size(&sidecar_image()));
    println!(
        "{} ({profile}): {:.1} MB",
        sidecar_image(),
        size as f64 / MB as f64
    );
    assert!(
        size < size_bound(&profile),
        "{size} bytes with profile {profile}, bound {}",
        size_bound(&profile)
    );
}

#[test]
fn image_passes_its_health_check_only_once_istiod_is_reachable_by_name() {
    require_docker!();
    let mut task = Task::start();
    // Before the control plane exists the check fails, with one line saying why.
    let pending = poll(
        "ztunnel healthcheck says what is pending",
        Duration::from_secs(30),
        || {
            let run = task.healthcheck();
            match run.stderr.contains("not ready") {
                true => Ok(run),
                false => Err(format!("{:?} {}", run.code, run.stderr.trim())),
            }
        },
    );
    assert_eq!(pending.code, Some(1));
    assert_eq!(pending.stdout, "");
    assert_eq!(
        pending.stderr.trim().lines().count(),
        1,
        "{:?}",
        pending.stderr
    );
    assert!(pending.stderr.contains("pending"), "{:?}", pending.stderr);

    task.start_istiod();
    task.wait_ready();
    assert_eq!(task.healthcheck().stdout.trim(), "ready");
    // Docker's own health check is the image's HEALTHCHECK: the same command,
    // found on PATH as `ztunnel`.
    poll(
        "Docker reports the container healthy",
        Duration::from_secs(60),
        || match task.sidecar.inspect("{{.State.Health.Status}}").as_str() {
            "healthy" => Ok(()),
            other => Err(other.to_string()),
        },
    );
}

#[test]
fn image_runs_the_sidecar_as_uid_1337_with_its_entrypoint_and_environment() {
    require_docker!();
    let mut task = Task::start();
    task.start_istiod();
    task.wait_ready();
    let status = task.proc_file("status");
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(ids("Uid:"), Some(vec!["1337"; 4]));
    assert_eq!(ids("Gid:"), Some(vec!["1337"; 4]));
    // No command in the task definition: the image's entrypoint and command.
    assert_eq!(task.proc_file("cmdline"), "/usr/local/bin/ztunnel\0proxy\0");
    // The image's glibc setting reaches the process (ARCHITECTURE.md: without it
    // rustls's record copies run 13x slower on AMD EPYC).
    let environ = task.proc_file("environ");
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == "GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=18446744073709551615"),
        "{environ:?}"
    );
}

#[test]
fn image_answers_ztunnel_healthcheck_with_one_line_when_no_sidecar_runs() {
    require_docker!();
    images();
    let run = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "ztunnel",
        &sidecar_image(),
        "healthcheck",
    ]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.trim(),
        "connection refused at 127.0.0.1:15021 — is the sidecar running?"
    );
}
