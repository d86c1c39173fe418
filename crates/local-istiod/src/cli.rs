//! The command line, parsed once into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::ServiceAccount;
use crate::pki::CaSource;
use crate::server::Config;

/// `--help`.
pub const USAGE: &str = "\
local-istiod: a local control plane for tests and demos.

THIS IS NOT ISTIOD AND NOT A REPLACEMENT FOR IT. It serves what a
ztunnel-compatible proxy asks istiod for (delta ADS for istio.workload.Address
and istio.security.Authorization, and CreateCertificate) from one YAML file in
ztunnel's local-config format, on one TLS port, so that proxies can be tested
and demonstrated without a Kubernetes cluster. It has no Kubernetes, no
multi-cluster, no persistence beyond its CA, and trusts its file completely.

usage: local-istiod --config FILE [options]
       local-istiod bootstrap-token --namespace NS --service-account SA [options]

options:
  --config FILE             mesh file (workloads, services, policies); polled for
                            changes, reloaded on SIGHUP; changes are pushed as deltas
  --listen ADDR             TLS gRPC address (default 127.0.0.1:15012)
  --state-dir DIR           where the generated CA, root-cert.pem and the serving
                            certificate are kept (default ./local-istiod)
  --ca-cert FILE            sign with this CA certificate (PEM) ...
  --ca-key FILE             ... and this key, instead of a generated CA
  --ca-root FILE            trust anchors when --ca-cert is an intermediate
  --trust-domain TD         trust domain of issued certificates (default cluster.local)
  --san NAME                extra DNS name or IP for the serving certificate (repeatable);
                            it always has istiod.istio-system.svc[.cluster.local], istiod,
                            localhost, 127.0.0.1 and the --listen IP
  --token TOKEN[=NS/SA]     accept `authorization: Bearer TOKEN` (repeatable); bound to the
                            service account NS/SA when given, else any identity may be asked for
  --sts-url URL             accept `authorization: AWS ...` (ECS task roles), verified by
                            replaying the presigned request to this STS endpoint
  --iam-role ARN=NS/SA      map an IAM role to a service account (repeatable)
  --secret-ttl-max DUR      longest certificate lifetime issued (default 24h)
  --admin ADDR              HTTP admin endpoint: POST /pause, POST /resume, POST /reload,
                            GET /status, GET /root-cert.pem (no authentication: use loopback)
  --poll-interval DUR       how often the mesh file is checked (default 300ms)
  --log-format text|json    (default text); the level comes from RUST_LOG (default info)
  -h, --help                this text
  --version                 the version

With no --token and no --sts-url every caller is accepted. With them, a CSR
must ask for the caller's own service account (PERMISSION_DENIED otherwise).

bootstrap-token prints a BOOTSTRAP_TOKEN (as `istioctl ecs add-service` writes
one) that points a sidecar at this server:
  --url URL                 where the workload reaches the server (default https://127.0.0.1:15012)
  --state-dir DIR           whose root-cert.pem goes into the token (default ./local-istiod)
  --namespace NS, --service-account SA
                            the workload's identity (required)
  --token TOKEN             bearer token for the generic platform
  --platform ecs|ecs-ec2    authenticate with the AWS task role instead
  --network NAME, --remote  the control plane's network; the workload is outside it

test only (to exercise clients' error handling; never in a demo):
  --test-corrupt-resource NAME
                            serve the workload or service named NAME (a UID or
                            <ns>/<hostname>), whenever the mesh file has it, as a
                            malformed resource: its IP addresses cut to 3 bytes (repeatable)
  --test-expired-certs      issue certificates that expired an hour ago
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve.
    Serve {
        /// The server configuration.
        config: Box<Config>,
        /// Log as JSON lines.
        json_logs: bool,
    },
    /// Print a bootstrap token.
    BootstrapToken(Box<crate::bootstrap::TokenSpec>),
    /// Print [`USAGE`].
    Help,
    /// Print the version.
    Version,
}

/// A command-line mistake, with the option it concerns.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {reason}")]
pub struct CliError {
    /// The option.
    pub option: String,
    /// What is wrong.
    pub reason: String,
}

fn error(option: &str, reason: impl Into<String>) -> CliError {
    CliError {
        option: option.to_string(),
        reason: reason.into(),
    }
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("bootstrap-token") {
        args.next();
        return parse_bootstrap_token(args);
    }
    let mut config = Config::new(PathBuf::new());
    let mut mesh_file = None;
    let (mut ca_cert, mut ca_key, mut ca_root) = (None, None, None);
    let mut json_logs = false;
    while let Some(arg) = args.next() {
        // Both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, CliError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(error(name, "needs a value")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            "--config" => mesh_file = Some(PathBuf::from(value(&name)?)),
            "--listen" => config.listen = addr(&name, &value(&name)?)?,
            "--state-dir" => config.state_dir = PathBuf::from(value(&name)?),
            "--ca-cert" => ca_cert = Some(PathBuf::from(value(&name)?)),
            "--ca-key" => ca_key = Some(PathBuf::from(value(&name)?)),
            "--ca-root" => ca_root = Some(PathBuf::from(value(&name)?)),
            "--trust-domain" => {
                let td = value(&name)?;
                if td.is_empty() || td.contains('/') {
                    return Err(error(&name, format!("{td:?} is not a trust domain")));
                }
                config.trust_domain = td;
            }
            "--san" => config.extra_sans.push(value(&name)?),
            "--token" => {
                let v = value(&name)?;
                let (token, account) = match v.split_once('=') {
                    Some((t, a)) => (t.to_string(), Some(account(&name, a)?)),
                    None => (v, None),
                };
                if token.is_empty() {
                    return Err(error(&name, "the token is empty"));
                }
                config.tokens.push((token, account));
            }
            "--sts-url" => {
                let url = value(&name)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(error(&name, format!("{url:?} is not an http(s) URL")));
                }
                config.sts_url = Some(url);
            }
            "--iam-role" => {
                let v = value(&name)?;
                let (arn, a) = v
                    .split_once('=')
                    .ok_or_else(|| error(&name, format!("{v:?} is not <role ARN>=<ns>/<sa>")))?;
                if !arn.starts_with("arn:") || !arn.contains(":role/") {
                    return Err(error(&name, format!("{arn:?} is not an IAM role ARN")));
                }
                config.iam_roles.push((arn.to_string(), account(&name, a)?));
            }
            "--secret-ttl-max" => config.secret_ttl_max = duration(&name, &value(&name)?)?,
            "--admin" => config.admin = Some(addr(&name, &value(&name)?)?),
            "--poll-interval" => config.poll_interval = duration(&name, &value(&name)?)?,
            "--log-format" => match value(&name)?.as_str() {
                "text" => json_logs = false,
                "json" => json_logs = true,
                other => return Err(error(&name, format!("{other:?} is not text or json"))),
            },
            "--test-corrupt-resource" => config.test.corrupt_resources.push(value(&name)?),
            "--test-expired-certs" => config.test.expired_certs = true,
            other => return Err(error(other, "unknown option (see --help)")),
        }
    }
    config.mesh_file = mesh_file.ok_or_else(|| error("--config", "is required"))?;
    config.ca = match (ca_cert, ca_key) {
        (Some(cert), Some(key)) => CaSource::Files {
            cert,
            key,
            root: ca_root,
        },
        (None, None) if ca_root.is_none() => CaSource::Generate,
        (None, None) => return Err(error("--ca-root", "needs --ca-cert and --ca-key")),
        _ => return Err(error("--ca-cert", "--ca-cert and --ca-key go together")),
    };
    if !config.iam_roles.is_empty() && config.sts_url.is_none() {
        return Err(error("--iam-role", "needs --sts-url"));
    }
    config.reload_on_sighup = true;
    Ok(Command::Serve {
        config: Box::new(config),
        json_logs,
    })
}

/// Splits `--opt=value` / `--opt value`; `None` for a flag without a value.
fn next_option(args: &mut impl Iterator<Item = String>) -> Option<(String, Option<String>)> {
    let arg = args.next()?;
    Some(match arg.split_once('=') {
        Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
        _ => (arg, None),
    })
}

fn parse_bootstrap_token(mut args: impl Iterator<Item = String>) -> Result<Command, CliError> {
    let mut spec = crate::bootstrap::TokenSpec {
        url: "https://127.0.0.1:15012".into(),
        ..Default::default()
    };
    let mut state_dir = PathBuf::from("local-istiod");
    while let Some((name, inline)) = next_option(&mut args) {
        let mut value = || -> Result<String, CliError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| error(&name, "needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--url" => spec.url = value()?,
            "--state-dir" => state_dir = PathBuf::from(value()?),
            "--namespace" => spec.namespace = value()?,
            "--service-account" => spec.service_account = value()?,
            "--token" => spec.token = Some(value()?),
            "--platform" => {
                spec.platform = value()?;
                if !matches!(spec.platform.as_str(), "" | "ecs" | "ecs-ec2") {
                    return Err(error(&name, "must be ecs, ecs-ec2 or empty"));
                }
            }
            "--network" => spec.network = Some(value()?),
            "--remote" => spec.remote = true,
            other => return Err(error(other, "unknown option (see --help)")),
        }
    }
    if spec.namespace.is_empty() || spec.service_account.is_empty() {
        return Err(error(
            "--namespace",
            "--namespace and --service-account are required",
        ));
    }
    let root = state_dir.join(crate::pki::files::ROOT_CERT);
    spec.ca_cert = std::fs::read_to_string(&root).map_err(|e| {
        error(
            "--state-dir",
            format!(
                "{}: {e} (start the server once to create it)",
                root.display()
            ),
        )
    })?;
    Ok(Command::BootstrapToken(Box::new(spec)))
}

fn addr(option: &str, v: &str) -> Result<SocketAddr, CliError> {
    v.parse().map_err(|_| {
        error(
            option,
            format!("{v:?} is not an address like 127.0.0.1:15012"),
        )
    })
}

fn duration(option: &str, v: &str) -> Result<Duration, CliError> {
    match humantime::parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(error(
            option,
            format!("{v:?} is not a positive duration like 24h or 300ms"),
        )),
    }
}

fn account(option: &str, v: &str) -> Result<ServiceAccount, CliError> {
    v.parse().map_err(|reason| error(option, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Config {
        match parse(args.iter().map(|s| s.to_string())).unwrap() {
            Command::Serve { config, .. } => *config,
            other => panic!("{other:?}"),
        }
    }

    fn fails(args: &[&str]) -> String {
        parse(args.iter().map(|s| s.to_string()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_around_the_mesh_file() {
        let c = serve(&["--config", "mesh.yaml"]);
        assert_eq!(c.mesh_file, PathBuf::from("mesh.yaml"));
        assert_eq!(c.listen, "127.0.0.1:15012".parse().unwrap());
        assert_eq!(c.ca, CaSource::Generate);
        assert_eq!(c.secret_ttl_max, Duration::from_secs(86400));
        assert!(c.tokens.is_empty() && c.sts_url.is_none());
        assert!(c.reload_on_sighup);
    }

    #[test]
    fn every_option_is_read() {
        let c = serve(&[
            "--config=m.yaml",
            "--listen",
            "127.0.0.5:15012",
            "--state-dir",
            "/tmp/s",
            "--token",
            "secret=ns/sa",
            "--token",
            "admin",
            "--sts-url",
            "http://127.0.0.1:9",
            "--iam-role",
            "arn:aws:iam::1:role/echo=ns/echo",
            "--secret-ttl-max",
            "1h",
            "--admin",
            "127.0.0.5:15010",
            "--san",
            "istiod.example",
            "--test-corrupt-resource",
            "broken",
            "--test-expired-certs",
        ]);
        assert_eq!(
            c.tokens,
            [
                ("secret".to_string(), Some("ns/sa".parse().unwrap())),
                ("admin".to_string(), None)
            ]
        );
        assert_eq!(c.iam_roles[0].0, "arn:aws:iam::1:role/echo");
        assert_eq!(c.secret_ttl_max, Duration::from_secs(3600));
        assert_eq!(c.admin, Some("127.0.0.5:15010".parse().unwrap()));
        assert_eq!(c.extra_sans, ["istiod.example"]);
        assert_eq!(c.test.corrupt_resources, ["broken"]);
        assert!(c.test.expired_certs);
    }

    #[test]
    fn bootstrap_token_reads_the_root_from_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), "PEM").unwrap();
        let args = [
            "bootstrap-token",
            "--state-dir",
            dir.path().to_str().unwrap(),
            "--namespace=ns",
            "--service-account",
            "sa",
            "--token",
            "t",
        ];
        let Command::BootstrapToken(spec) = parse(args.iter().map(|s| s.to_string())).unwrap()
        else {
            panic!("not a bootstrap-token command")
        };
        assert_eq!(spec.ca_cert, "PEM");
        assert_eq!(spec.url, "https://127.0.0.1:15012");
        assert_eq!(
            (spec.namespace.as_str(), spec.service_account.as_str()),
            ("ns", "sa")
        );
        assert_eq!(spec.token.as_deref(), Some("t"));
        assert_eq!(
            fails(&["bootstrap-token", "--namespace", "ns"]),
            "--namespace: --namespace and --service-account are required"
        );
    }

    #[test]
    fn mistakes_name_the_option() {
        assert_eq!(fails(&[]), "--config: is required");
        assert_eq!(
            fails(&["--config", "m", "--bogus"]),
            "--bogus: unknown option (see --help)"
        );
        assert_eq!(
            fails(&["--config", "m", "--ca-cert", "c"]),
            "--ca-cert: --ca-cert and --ca-key go together"
        );
        assert_eq!(
            fails(&["--config", "m", "--iam-role", "arn:aws:iam::1:role/r=ns/sa"]),
            "--iam-role: needs --sts-url"
        );
        assert_eq!(
            fails(&["--config", "m", "--token", "t=nobody"]),
            "--token: \"nobody\" is not <namespace>/<service account>"
        );
        assert_eq!(
            fails(&["--config", "m", "--secret-ttl-max", "0s"]),
            "--secret-ttl-max: \"0s\" is not a positive duration like 24h or 300ms"
        );
        assert_eq!(fails(&["--config"]), "--config: needs a value");
    }
}
