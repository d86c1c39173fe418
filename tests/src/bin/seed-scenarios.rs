//! The seed scenarios' driver for the Docker harness (`scripts/scenarios.sh`,
//! `scripts/demo.sh`); the network-namespace harness runs the same checks
//! from `tests/tests/scenarios.rs`.
//!
//! ```text
//! seed-scenarios prepare --dir DIR --local-istiod PATH [--istiod-url URL]
//!     # the mesh CA, the gateway certificate, mesh/mesh.yaml, and compose.env
//!     # (a shell file: ZS_RUN_DIR, ZS_TOKEN_<TASK> bootstrap tokens, ZS_ISTIOD_ARGS)
//! seed-scenarios check --project NAME --dir DIR [--scenarios 1,2,3]
//!     # runs the checks against Compose project NAME; exit 1 if any fails
//! seed-scenarios dump-excerpt < config_dump.json
//!     # the parts of a sidecar's /config_dump a reader looks at first
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use zs_e2e::seed::docker::DockerHarness;
use zs_e2e::seed::{Prepared, Task, prepare, run};

const USAGE: &str = "usage:
  seed-scenarios prepare --dir DIR --local-istiod PATH [--istiod-url URL]
  seed-scenarios check --project NAME --dir DIR [--scenarios 1,2,3]
  seed-scenarios dump-excerpt < config_dump.json";

/// Where the Docker harness's tasks reach local-istiod: its Compose service
/// name, resolved by Docker's DNS (the sidecar's pure-Rust resolver reads
/// the container's resolv.conf).
const DOCKER_ISTIOD_URL: &str = "https://local-istiod:15012";

/// Options as `--name value` pairs.
fn options(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {flag}"));
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        out.push((flag.clone(), value.clone()));
    }
    Ok(out)
}

fn option<'a>(opts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    opts.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(opts: &'a [(String, String)], name: &str) -> Result<&'a str, String> {
    option(opts, name).ok_or(format!("{name} is required"))
}

/// The variable name of a task's bootstrap token in `compose.env`.
fn token_var(task: Task) -> String {
    format!(
        "ZS_TOKEN_{}",
        task.key().replace('-', "_").to_ascii_uppercase()
    )
}

/// Single-quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn cmd_prepare(opts: &[(String, String)]) -> Result<(), String> {
    let dir = PathBuf::from(required(opts, "--dir")?);
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let local_istiod = Path::new(required(opts, "--local-istiod")?);
    let url = option(opts, "--istiod-url").unwrap_or(DOCKER_ISTIOD_URL);
    let prepared = prepare(&dir, local_istiod, |_| url.to_string()).map_err(|e| e.to_string())?;
    // Paths as the containers see them (compose.yaml mounts the CA there).
    let istiod_args = prepared.istiod_args("/etc/local-istiod/ca").join(" ");
    let mut env = format!(
        "# Written by seed-scenarios prepare; sourced by scripts/scenarios.sh and scripts/demo.sh.\n\
         ZS_RUN_DIR={}\nZS_ISTIOD_ARGS={}\n",
        shell_quote(&dir.display().to_string()),
        shell_quote(&istiod_args)
    );
    for task in Task::ALL {
        env.push_str(&format!(
            "{}={}\n",
            token_var(task),
            shell_quote(prepared.token(task))
        ));
    }
    let path = dir.join("compose.env");
    std::fs::write(&path, env).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("prepared {}", dir.display());
    Ok(())
}

async fn cmd_check(opts: &[(String, String)]) -> Result<bool, String> {
    let project = required(opts, "--project")?;
    let dir = Path::new(required(opts, "--dir")?);
    let scenarios: Vec<u8> = option(opts, "--scenarios")
        .unwrap_or("1,2,3")
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad scenario {s}")))
        .collect::<Result<_, _>>()?;
    let harness = DockerHarness::attach(project, Prepared::at(dir)).await?;
    let report = run(&harness, &scenarios).await;
    Ok(report.ok())
}

/// Identity, certificate, and the mesh as this sidecar sees it, in a few lines.
fn dump_excerpt(dump: &Value) -> String {
    let mut out = String::new();
    let list = |v: &Value, f: &dyn Fn(&Value) -> String| -> Vec<String> {
        v.as_array().into_iter().flatten().map(f).collect()
    };
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for cert in dump["certificates"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "certificate: {} (state {})\n",
            s(&cert["identity"]),
            s(&cert["state"])
        ));
        for c in cert["certChain"].as_array().into_iter().flatten().take(1) {
            out.push_str(&format!(
                "  valid {} .. {}\n",
                s(&c["validFrom"]),
                s(&c["expirationTime"])
            ));
        }
    }
    let workloads = list(&dump["workloads"], &|w| {
        format!(
            "  {}/{} {} network={} status={}",
            s(&w["namespace"]),
            s(&w["name"]),
            w["workloadIps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect::<Vec<_>>()
                .join(","),
            s(&w["network"]),
            s(&w["status"])
        )
    });
    out.push_str(&format!("workloads ({}):\n", workloads.len()));
    for w in workloads {
        out.push_str(&w);
        out.push('\n');
    }
    let services = list(&dump["services"], &|v| format!("  {}", s(&v["hostname"])));
    out.push_str(&format!("services ({}):\n", services.len()));
    for v in services {
        out.push_str(&v);
        out.push('\n');
    }
    let policies = list(&dump["policies"], &|p| {
        format!(
            "  {}/{} action={} scope={}",
            s(&p["namespace"]),
            s(&p["name"]),
            s(&p["action"]),
            s(&p["scope"])
        )
    });
    out.push_str(&format!("policies ({}):\n", policies.len()));
    for p in policies {
        out.push_str(&p);
        out.push('\n');
    }
    out
}

fn cmd_dump_excerpt() -> Result<(), String> {
    let dump: Value =
        serde_json::from_reader(std::io::stdin()).map_err(|e| format!("not a config dump: {e}"))?;
    print!("{}", dump_excerpt(&dump));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("", &[][..]),
    };
    let result = match command {
        "prepare" => options(rest).and_then(|o| cmd_prepare(&o)),
        "check" => match options(rest) {
            Ok(o) => match cmd_check(&o).await {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        "dump-excerpt" => cmd_dump_excerpt(),
        _ => Err("unknown command".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed-scenarios: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
