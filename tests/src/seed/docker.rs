//! The seed scenarios on Docker: the containers of `docker/compose.yaml`,
//! brought up by `scripts/scenarios.sh`, checked from outside.
//!
//! Each task is two Compose services: `<task>-sidecar` (the `ztunnel-sidecar`
//! image, which owns the task's network namespace and address) and `<task>`
//! (the application, `network_mode: service:<task>-sidecar`, as `awsvpc`
//! shares one namespace between a task's containers). The checks run
//! `mesh-curl` in the application containers with `docker exec`, read logs
//! with `docker logs`, stop tasks with `docker stop`, and change the mesh by
//! rewriting the file local-istiod reads from a bind-mounted directory.

use std::collections::HashMap;

use super::{CurlOutput, Harness, Prepared, Task};
use crate::MeshConfig;
use crate::docker::{Run, docker_async};

/// The last octet of local-istiod's address on both networks.
pub const ISTIOD_OCTET: u8 = 2;
/// The last octet of the task metadata stand-in's address on both networks.
pub const METADATA_OCTET: u8 = 3;

/// `ECS_CONTAINER_METADATA_URI_V4` of an ECS task's containers.
pub fn metadata_uri(task: Task) -> String {
    format!("http://{}/v4/{}", task.net().ip(METADATA_OCTET), task.key())
}

/// The Compose service of a task's sidecar.
pub fn sidecar_service(task: Task) -> String {
    format!("{}-sidecar", task.key())
}

/// The Compose service of the east-west gateway.
pub const GATEWAY_SERVICE: &str = "ew-gateway";

/// A running Compose project.
pub struct DockerHarness {
    prepared: Prepared,
    /// Compose service name → container id.
    containers: HashMap<String, String>,
}

impl DockerHarness {
    /// Finds the containers of Compose project `project`, whose mesh file is
    /// in `prepared`.
    pub async fn attach(project: &str, prepared: Prepared) -> Result<DockerHarness, String> {
        let label = format!("label=com.docker.compose.project={project}");
        let run = docker_async(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.ID}} {{.Label \"com.docker.compose.service\"}}",
        ])
        .await;
        if !run.ok() {
            return Err(format!("docker ps: {}", run.stderr.trim()));
        }
        let containers: HashMap<String, String> = run
            .stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, service)| (service.to_string(), id.to_string()))
            .collect();
        let mut missing: Vec<String> = Task::ALL
            .iter()
            .flat_map(|t| [t.key().to_string(), sidecar_service(*t)])
            .chain([GATEWAY_SERVICE.to_string()])
            .filter(|s| !containers.contains_key(s))
            .collect();
        missing.sort();
        if !missing.is_empty() {
            return Err(format!(
                "Compose project {project:?} has no container for {}",
                missing.join(", ")
            ));
        }
        Ok(DockerHarness {
            prepared,
            containers,
        })
    }

    fn id<'a>(&'a self, service: &'a str) -> &'a str {
        self.containers.get(service).map_or(service, String::as_str)
    }

    async fn logs(&self, service: &str) -> String {
        let run = docker_async(&["logs", self.id(service)]).await;
        format!("{}{}", run.stdout, run.stderr)
    }
}

impl Harness for DockerHarness {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn curl(&self, task: Task, args: &[&str]) -> CurlOutput {
        // ALL_PROXY and NO_PROXY are in the application container's
        // environment (compose.yaml), as a task definition sets them.
        let mut all = vec!["exec", self.id(task.key()), "mesh-curl"];
        all.extend_from_slice(args);
        let Run {
            code,
            stdout,
            stderr,
        } = docker_async(&all).await;
        CurlOutput {
            code,
            stdout,
            stderr,
        }
    }

    fn push(&self, mesh: &MeshConfig) {
        self.prepared.write_mesh(mesh);
    }

    async fn stop(&self, task: Task) {
        // The application first: its network namespace belongs to the sidecar.
        let sidecar = sidecar_service(task);
        let run = docker_async(&["stop", "-t", "10", self.id(task.key()), self.id(&sidecar)]).await;
        if !run.ok() {
            println!("docker stop {}: {}", task.key(), run.stderr.trim());
        }
    }

    async fn sidecar_log(&self, task: Task) -> String {
        self.logs(&sidecar_service(task)).await
    }

    async fn gateway_log(&self) -> String {
        self.logs(GATEWAY_SERVICE).await
    }
}
