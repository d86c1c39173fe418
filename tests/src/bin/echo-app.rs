//! The seed scenarios' echo application: an HTTP server that answers every
//! request with `<name> <METHOD> <path>`, so a client can tell which task
//! answered (the workshop's echo service does the same with its hostname).
//!
//! ```text
//! echo-app --listen 127.0.0.1:8080 --name echo-c1
//! ```
//!
//! It binds loopback by default: inside a task, only the sidecar (which
//! delivers inbound mesh traffic to `127.0.0.1`) can reach it. It exits on
//! SIGTERM or SIGINT, as `docker stop` and ECS expect.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use zs_e2e::HttpApp;

const USAGE: &str = "usage: echo-app [--listen ADDR] --name NAME";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<(SocketAddr, String), String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
    let mut name = None;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v.parse().map_err(|_| format!("bad --listen {v}"))?;
            }
            "--name" => name = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((listen, name.ok_or("--name is required")?))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (listen, name) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo-app: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-app: bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("echo-app: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let _app = HttpApp::serve(listener, &name, None);
    println!("echo-app {name} listening on {listen}");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    ExitCode::SUCCESS
}
