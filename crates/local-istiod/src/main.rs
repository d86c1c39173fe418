//! `local-istiod`: a local control plane for tests and demos (not istiod).
//! See the library documentation and `local-istiod --help`.

use std::process::ExitCode;

use local_istiod::LocalIstiod;
use local_istiod::cli::{self, Command};

fn main() -> ExitCode {
    let (config, json_logs) = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Serve { config, json_logs }) => (config, json_logs),
        Ok(Command::BootstrapToken(spec)) => {
            println!("{}", spec.encode());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("local-istiod {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("local-istiod: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json_logs {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("local-istiod: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match LocalIstiod::start(*config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let reason = stop_signal().await;
        tracing::info!(reason, "stopping");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
