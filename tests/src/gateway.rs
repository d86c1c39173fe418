//! Running the test east-west gateway (`ew-gateway`) and reading what it saw.
//!
//! The binary belongs to this test crate, so integration tests pass its path
//! (`env!("CARGO_BIN_EXE_ew-gateway")`); cargo builds it before them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// One CONNECT the gateway handled, parsed from its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConnect {
    /// The outer `:authority` (`<service hostname>:<port>`).
    pub authority: String,
    /// The client's SPIFFE identity from its certificate.
    pub identity: String,
    /// The endpoint it relayed to (`<ip>:15008`), `None` when refused.
    pub upstream: Option<SocketAddr>,
    pub status: u16,
}

/// A running gateway process; killed when dropped.
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `binary` inside `ns`, listening on `listen` with the certificates in
    /// `cert_dir`, relaying each `(authority, endpoint IPs)` route; waits until
    /// it listens.
    pub async fn start(
        binary: &Path,
        ns: &Netns,
        listen: SocketAddr,
        cert_dir: &Path,
        routes: &[(&str, &[IpAddr])],
    ) -> Gateway {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("gateway.log");
        let file = std::fs::File::create(&log).expect("gateway log");
        let mut cmd = ns.command(binary);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--cert-dir")
            .arg(cert_dir);
        for (authority, ips) in routes {
            let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
            cmd.arg("--route")
                .arg(format!("{authority}={}", ips.join(",")));
        }
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd.spawn().expect("spawn ew-gateway");
        let mut gw = Gateway {
            child: Some(child),
            log,
            _logdir: logdir,
        };
        gw.wait_listening(Duration::from_secs(10)).await;
        gw
    }

    async fn wait_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().lines().any(|l| l.starts_with("listening ")) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ew-gateway exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "ew-gateway not listening after {timeout:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every CONNECT handled so far, in order.
    pub fn connects(&self) -> Vec<GatewayConnect> {
        self.logs().lines().filter_map(parse_connect).collect()
    }
}

fn parse_connect(line: &str) -> Option<GatewayConnect> {
    let rest = line.strip_prefix("connect ")?;
    let field = |name: &str| {
        rest.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Some(GatewayConnect {
        authority: field("authority")?.to_string(),
        identity: field("identity")?.to_string(),
        upstream: field("upstream")?.parse().ok(),
        status: field("status")?.parse().ok()?,
    })
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
