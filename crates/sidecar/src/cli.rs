//! The small commands: `healthcheck` and `inject`.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

pub const USAGE: &str = "\
usage: ztunnel-sidecar [command]

commands:
  proxy         run the sidecar (default); configured by environment variables
  healthcheck   exit 0 when the local sidecar is ready (READINESS_ADDR), else 1
  inject        add the sidecar to an ECS task definition (see inject --help)
  version       print the version
";

const INJECT_USAGE: &str = "\
usage: ztunnel-sidecar inject [options] [FILE|-]

Reads an ECS task definition (as `aws ecs describe-task-definition` prints it,
or the bare taskDefinition object) and prints the mesh-enabled one, ready for
`aws ecs register-task-definition --cli-input-json`.

options:
  --image IMAGE                    sidecar image
  --bootstrap-token TOKEN          BOOTSTRAP_TOKEN value (from istioctl)
  --bootstrap-token-secret ARN     take BOOTSTRAP_TOKEN from Secrets Manager / SSM
  --proxy-env all|none|C1,C2       app containers that get ALL_PROXY/HTTP(S)_PROXY/NO_PROXY
  --capture none|proxy-configuration
                                   also capture traffic transparently (App Mesh-style)
  --auth iam|token                 how the sidecar authenticates to istiod
  --dry-run                        print a diff instead of the result
  -o, --output FILE                write the result to FILE instead of stdout
";

/// `healthcheck`: asks the local readiness endpoint, in well under a second.
pub fn healthcheck() -> ExitCode {
    let addr = std::env::var("READINESS_ADDR")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 15021));
    // A wildcard listener is reached on loopback (IPv4 works for [::] too).
    let target = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("not ready: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(zs_admin::healthcheck::check(
        target,
        Duration::from_millis(800),
    )) {
        Ok(()) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("ztunnel-sidecar inject: {msg}");
    ExitCode::from(2)
}

/// `inject`: a thin shim over `zs_ecs::inject`.
pub fn inject(args: &[String]) -> ExitCode {
    let mut opts = zs_ecs::InjectOptions::default();
    let mut input: Option<String> = None;
    let mut output: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, ExitCode> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| fail(format!("{name} needs a value")))
        };
        let parsed = match flag {
            "-h" | "--help" => {
                print!("{INJECT_USAGE}");
                return ExitCode::SUCCESS;
            }
            "--image" => value(flag).map(|v| opts.image = v),
            "--bootstrap-token" => value(flag).map(|v| opts.bootstrap_token = Some(v)),
            "--bootstrap-token-secret" => {
                value(flag).map(|v| opts.bootstrap_token_secret = Some(v))
            }
            "--proxy-env" => {
                value(flag).and_then(|v| v.parse().map(|p| opts.proxy_env = p).map_err(fail))
            }
            "--capture" => {
                value(flag).and_then(|v| v.parse().map(|c| opts.capture = c).map_err(fail))
            }
            "--auth" => value(flag).and_then(|v| v.parse().map(|a| opts.auth = a).map_err(fail)),
            "--dry-run" => {
                opts.dry_run = true;
                Ok(())
            }
            "-o" | "--output" => value(flag).map(|v| output = Some(v)),
            f if f.starts_with('-') && f != "-" => {
                return fail(format!("unknown option {f}\n\n{INJECT_USAGE}"));
            }
            path => {
                if input.replace(path.to_string()).is_some() {
                    return fail("more than one input file");
                }
                Ok(())
            }
        };
        if let Err(code) = parsed {
            return code;
        }
    }
    let text = match input.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            match std::io::stdin().read_to_string(&mut s) {
                Ok(_) => s,
                Err(e) => return fail(format!("reading standard input: {e}")),
            }
        }
        Some(path) => match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => return fail(format!("reading {path}: {e}")),
        },
    };
    let out = match zs_ecs::inject(&text, &opts) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    for change in &out.changes {
        eprintln!("- {change}");
    }
    let result = if opts.dry_run {
        zs_ecs::diff(&out.before, &out.json)
    } else {
        out.json
    };
    match output {
        Some(path) if !opts.dry_run => match std::fs::write(&path, result) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("writing {path}: {e}")),
        },
        _ => {
            print!("{result}");
            ExitCode::SUCCESS
        }
    }
}
