//! An ECS task metadata endpoint (v4) stand-in for the Docker harness, where
//! no Fargate agent serves `ECS_CONTAINER_METADATA_URI_V4` (see
//! `zs_e2e::task_metadata`).
//!
//! ```text
//! task-metadata --listen 0.0.0.0:80 \
//!     --task c1-echo=arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/c1-echo-0001,us-east-2a,10.1.0.21 ...
//! ```
//!
//! A task's containers then use `ECS_CONTAINER_METADATA_URI_V4=http://<this>/v4/c1-echo`.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use zs_e2e::task_metadata::{TaskDoc, TaskMetadataServer};

const USAGE: &str = "usage: task-metadata --listen ADDR --task ID=ARN,AZ,IP [--task ...]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<(SocketAddr, Vec<TaskDoc>), String> {
    let mut listen = None;
    let mut tasks = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|_| format!("bad --listen {v}"))?);
            }
            "--task" => tasks.push(TaskDoc::parse(&value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((listen.ok_or("--listen is required")?, tasks))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (listen, tasks) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("task-metadata: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("task-metadata: bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return ExitCode::FAILURE;
    };
    for t in &tasks {
        println!("serving /v4/{}/task for {}", t.id, t.arn);
    }
    let _server = TaskMetadataServer::serve(listener, tasks);
    let _ = term.recv().await;
    ExitCode::SUCCESS
}
