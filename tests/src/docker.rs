//! Driving the Docker CLI from tests: whether a daemon is there, building the
//! images with `docker/build-local.sh`, and running and inspecting containers.
//!
//! Tests that need Docker call [`unavailable`] first and skip, saying why,
//! when it returns a reason (no `docker` binary, no daemon, no permission).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Why Docker cannot be used here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => Some(format!("no docker command ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "the Docker daemon is not reachable: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Returns from the calling test with a message when Docker is unavailable.
#[macro_export]
macro_rules! require_docker {
    () => {
        if let Some(reason) = $crate::docker::unavailable() {
            println!("skipped: {reason}");
            return;
        }
    };
}

/// A finished command: exit code and both outputs as text.
#[derive(Clone, Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `docker <args>` and waits for it.
pub fn docker(args: &[&str]) -> Run {
    match Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => Run::from_output(out),
        Err(e) => Run {
            code: None,
            stdout: String::new(),
            stderr: format!("cannot run docker: {e}"),
        },
    }
}

/// [`docker`] without blocking the runtime.
pub async fn docker_async(args: &[&str]) -> Run {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(out) => Run::from_output(out),
        Err(e) => Run {
            code: None,
            stdout: String::new(),
            stderr: format!("cannot run docker: {e}"),
        },
    }
}

/// Runs `docker <args>` and panics with its output unless it succeeds;
/// returns its standard output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let run = docker(args);
    assert!(
        run.ok(),
        "docker {} failed ({:?}):\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run.stdout.trim().to_string()
}

/// The size of an image in bytes.
pub fn image_size(image: &str) -> u64 {
    docker_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .parse()
        .expect("image size")
}

/// Builds the images with `docker/build-local.sh --profile <profile>` and the
/// tag `tag`; panics with the script's output if it fails.
pub fn build_images(profile: &str, tag: &str, images: &[&str]) {
    let script = repo_root().join("docker/build-local.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--profile", profile, "--tag", tag])
        .args(images)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run docker/build-local.sh");
    assert!(
        out.status.success(),
        "docker/build-local.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Docker network, removed (with whatever is still attached) on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    /// Creates an internal network (no route off the machine); Docker picks
    /// the subnet.
    pub fn internal(name: &str) -> Network {
        docker_ok(&["network", "create", "--internal", name]);
        Network { name: name.into() }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A container started by a test, removed (forcibly) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <args>`; panics if it cannot start.
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        docker_ok(&all);
        Container { name: name.into() }
    }

    /// `docker exec <name> <cmd>`.
    pub fn exec(&self, cmd: &[&str]) -> Run {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(cmd);
        docker(&all)
    }

    /// Standard output and error of the container so far.
    pub fn logs(&self) -> String {
        let run = docker(&["logs", &self.name]);
        format!("{}{}", run.stdout, run.stderr)
    }

    /// `docker inspect --format <format>`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "--format", format, &self.name])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
