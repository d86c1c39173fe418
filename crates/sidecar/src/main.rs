//! `ztunnel-sidecar`: a ztunnel-compatible data-plane sidecar for AWS ECS.
//!
//! Commands:
//! * `ztunnel-sidecar [proxy]` — run the sidecar (configured by environment
//!   variables; see `docs/operations.md`);
//! * `ztunnel-sidecar healthcheck` — exit 0 if the local sidecar is ready (what
//!   ECS task-definition health checks run; also answers as `ztunnel healthcheck`);
//! * `ztunnel-sidecar inject` — add the sidecar to an ECS task definition;
//! * `ztunnel-sidecar version`.

mod app;
mod cli;
mod config;
mod metrics;

use std::process::ExitCode;

/// HTTP/2 frame buffers on the data path are large and short-lived; glibc's
/// malloc maps and unmaps a fresh region for each (page faults and zeroing were
/// ~9 % of a receiving sidecar's CPU in profiles). mimalloc reuses them.
/// It is built without transparent huge pages (`no_thp`): with them, its first
/// arenas were backed by 2 MiB pages and an idle sidecar held 8 MiB more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None | Some("proxy") => run_proxy(),
        Some("healthcheck") => cli::healthcheck(),
        Some("inject") => cli::inject(&args[2..]),
        Some("version") | Some("--version") | Some("-V") => {
            println!("ztunnel-sidecar {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("help") | Some("--help") | Some("-h") => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "ztunnel-sidecar: unknown command {other:?}\n\n{}",
                cli::USAGE
            );
            ExitCode::from(2)
        }
    }
}

fn run_proxy() -> ExitCode {
    let env: config::Env = std::env::vars().collect();
    let bootstrap = match env.get("BOOTSTRAP_TOKEN").filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => match zs_xds::bootstrap::BootstrapToken::decode(token) {
            Ok(t) => Some(config::Bootstrap {
                url: t.url,
                ca_cert: t.ca_cert,
                namespace: t.namespace,
                service_account: t.service_account,
                platform: match t.platform {
                    zs_xds::bootstrap::Platform::Ecs => Some("ecs".into()),
                    zs_xds::bootstrap::Platform::EcsEc2 => Some("ecs-ec2".into()),
                    zs_xds::bootstrap::Platform::Generic => None,
                },
                token: t.token,
                network: t.network,
                remote: t.remote,
            }),
            Err(e) => {
                eprintln!("ztunnel-sidecar: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let config = match config::Config::from_env(&env, bootstrap.as_ref(), ipv6) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ztunnel-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match config.log_format {
        config::LogFormat::Text => zs_admin::LogFormat::Text,
        config::LogFormat::Json => zs_admin::LogFormat::Json,
    };
    let log = match zs_admin::telemetry::init(format, &config.log_filter) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ztunnel-sidecar: invalid RUST_LOG={:?}: {e}",
                config.log_filter
            );
            return ExitCode::from(2);
        }
    };
    match app::run(config, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ztunnel-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}
