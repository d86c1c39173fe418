//! Wiring: configuration in, a running sidecar out.
//!
//! Threading follows ztunnel: the data plane (proxy listeners and every proxied
//! connection) runs on a multi-threaded runtime sized by
//! `ZTUNNEL_WORKER_THREADS`; the control plane (xDS, the CA, admin, metrics and
//! readiness servers) runs on a single-threaded runtime of its own, so a slow
//! scrape or a large xDS push never stalls proxied traffic.
//!
//! Startup order: identity (task metadata on ECS) → mesh state (local file) →
//! certificate (files or the CA) → xDS → listeners bound → accept loops start
//! once the first xDS sync and a certificate are in (readiness says so too).
//! Shutdown: SIGTERM (or `/quitquitquit`) makes readiness fail, stops accepting,
//! sends GOAWAY to HBONE peers and lets open connections finish until the
//! termination deadline; a second signal exits at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use zs_admin::{Admin, ConfigDump, Readiness};
use zs_proxy::drain::{self, DrainOutcome};
use zs_proxy::{ProxyConfig, ProxyContext, SelfWorkload};
use zs_state::local::LocalConfig;
use zs_state::xds::ResourceRef;
use zs_state::{MeshState, NameConfig, SharedMesh, Workload};
use zs_tls::{CertificateHandle, Identity, TlsOptions, WorkloadCertificate};
use zs_xds::ads::{AdsClient, AdsConfig, Node, Rejection, XdsHandler, XdsResource, XdsStatus};
use zs_xds::auth::{BearerToken, CallCredentials, TokenSource};
use zs_xds::ca::{CaClient, CertManager, CertState};
use zs_xds::channel::{ChannelConfig, Purpose, RootSource};

use crate::config::{
    AuthSource, CaptureMode, CertSource, Config, IdentitySource, InboundDelivery, IstiodEndpoint,
    LocalXds, OutboundPolicy, RootCa, TokenValue, WorkloadInfo,
};
use crate::metrics::SidecarCollector;

/// Runs the sidecar until it is told to stop. Returns the process exit code.
pub fn run(config: Config, log: zs_admin::LogControl) -> anyhow::Result<()> {
    let data = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("ztunnel-sidecar-proxy")
        .enable_all()
        .build()
        .context("starting the data-plane runtime")?;
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control-plane runtime")?;
    let control_handle = control.handle().clone();
    // The control runtime is driven by its own thread for the life of the process.
    let (stop_control, control_done) = tokio::sync::oneshot::channel::<()>();
    let control_thread = std::thread::Builder::new()
        .name("ztunnel-sidecar-control".into())
        .spawn(move || {
            control.block_on(async {
                let _ = control_done.await;
            })
        })
        .context("starting the control-plane thread")?;
    let result = data.block_on(run_async(config, log, control_handle));
    let _ = stop_control.send(());
    let _ = control_thread.join();
    // Open connections past the deadline are dropped with the runtime.
    data.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run_async(
    config: Config,
    log: zs_admin::LogControl,
    control: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let state_block = readiness.register("state manager");
    let cert_block = readiness.register("certificates");
    let proxy_block = readiness.register("proxy");
    let mut registry = Registry::default();

    // The readiness server comes up first so that health checks get a precise
    // "pending" answer during startup instead of a refused connection.
    let readiness_listener = bind(config.readiness_addr, "READINESS_ADDR").await?;
    let (server_stop_tx, server_stop) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    control.spawn(zs_admin::readiness::serve(
        readiness_listener,
        readiness.clone(),
        stopped(server_stop.clone()),
    ));

    // --- who am I ---
    let (info, task) = resolve_identity(&config).await?;
    let identity = Identity::new(&config.trust_domain, &info.namespace, &info.service_account)
        .map_err(|e| anyhow::anyhow!("workload identity: {e}"))?;
    info!(%identity, workload = %info.name, "starting ztunnel-sidecar");
    let fallback = self_description(&config, &info, task.as_ref());

    // --- mesh state ---
    let mesh = SharedMesh::new(MeshState::new());
    let policy_warnings = Arc::new(PolicyWarnings::default());
    let mut local_config = None;
    if let Some(local) = &config.local_xds {
        let text = match local {
            LocalXds::Path(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading LOCAL_XDS_PATH {}", p.display()))?,
            LocalXds::Inline(y) => y.clone(),
        };
        let parsed = LocalConfig::from_yaml(&text).context("LOCAL_XDS_PATH")?;
        policy_warnings.log(parsed.apply(&mut mesh.write()));
        local_config = Some(parsed);
    }
    let me = SelfWorkload::new(fallback);
    me.refresh(&mesh.read());

    // --- credentials for istiod: one token source, per-endpoint headers ---
    let token = token_source(&config)?;
    let xds_headers = config.xds.as_ref().map(|x| x.headers.as_slice());
    let credentials = call_credentials(&config, token.clone(), xds_headers.unwrap_or_default())
        .context("XDS_HEADER_*")?;

    // --- certificates ---
    let certs = CertificateHandle::new_empty();
    let cert_manager = match &config.certs {
        CertSource::Dir(dir) => {
            let cert = load_cert_dir(dir)?;
            // An expired (or not yet valid) certificate is never put in force:
            // readiness stays pending until valid files appear.
            if usable_cert(&cert, &identity) {
                certs.set(cert);
            }
            control.spawn(watch_cert_dir(dir.clone(), certs.clone(), identity.clone()));
            None
        }
        CertSource::Ca { endpoint, ttl } => {
            let channel = zs_xds::channel::connect(&channel_config(endpoint, Purpose::Ca))
                .context("CA_ADDRESS")?;
            let ca_credentials = call_credentials(&config, token.clone(), &endpoint.headers)
                .context("CA_HEADER_*")?;
            let ca = CaClient::new(channel, ca_credentials, *ttl);
            let certs2 = certs.clone();
            let id2 = identity.clone();
            let manager = control
                .spawn(async move { CertManager::start(ca, id2, certs2) })
                .await?;
            Some(Arc::new(manager))
        }
    };

    // --- metrics ---
    zs_admin::metrics_server::register_build_info(&mut registry, &config.istio_version);
    zs_admin::metrics_server::register_process_metrics(&mut registry);
    let traffic = zs_proxy::metrics::TrafficMetrics::register(&mut registry);

    // --- the proxy ---
    let proxy_config = ProxyConfig {
        names: NameConfig {
            cluster_domain: config.cluster_domain.clone(),
            search_domains: Vec::new(),
        },
        tls: TlsOptions {
            tls12: config.tls12,
        },
        h2: zs_hbone::H2Config {
            stream_window: config.http2.stream_window,
            connection_window: config.http2.connection_window,
            max_frame_size: config.http2.frame_size,
            max_streams_per_connection: config
                .http2
                .pool_max_streams_per_connection
                .min(u32::from(u16::MAX)) as u16,
            ..Default::default()
        },
        outbound_policy: match config.outbound_policy {
            OutboundPolicy::AllowAny => zs_proxy::OutboundPolicy::AllowAny,
            OutboundPolicy::RegistryOnly => zs_proxy::OutboundPolicy::RegistryOnly,
        },
        inbound_delivery: match config.inbound_delivery {
            InboundDelivery::Loopback => zs_proxy::InboundDelivery::Loopback,
            InboundDelivery::TaskIp => zs_proxy::InboundDelivery::TaskIp,
        },
        illegal_ports: config.illegal_ports(),
        response_baggage: config.response_baggage,
        authz_info_logging: config.authz_info_logging,
        pool: zs_hbone::PoolConfig {
            idle_timeout: config.http2.pool_unused_release_timeout,
            // One connection per data-plane thread before any is shared, so
            // concurrent transfers to one peer are encrypted in parallel.
            parallel_connections: config.worker_threads,
            ..Default::default()
        },
        own_listeners: [config.socks5_addr, config.http_proxy_addr]
            .into_iter()
            .flatten()
            .chain(config.local_upstreams.iter().map(|u| u.listen))
            .collect(),
        ..ProxyConfig::default()
    };
    let dns = zs_proxy::dns::Resolver::from_system();
    let mut proxy_config = proxy_config;
    proxy_config.names.search_domains = dns.search_domains().to_vec();
    let ctx = ProxyContext::new(proxy_config, mesh.clone(), me, certs.clone(), traffic, dns);

    // Unlike upstream ztunnel (which reads it once), a LOCAL_XDS_PATH file is
    // watched: edits take effect without a restart.
    if let (Some(LocalXds::Path(path)), Some(loaded)) = (&config.local_xds, local_config) {
        control.spawn(watch_local_config(
            path.clone(),
            loaded,
            ctx.clone(),
            policy_warnings.clone(),
        ));
    }

    // --- xDS ---
    let xds_status: Option<XdsStatus> = match &config.xds {
        Some(endpoint) => {
            let channel = zs_xds::channel::connect(&channel_config(endpoint, Purpose::Xds))
                .context("XDS_ADDRESS")?;
            let node = Node::ztunnel(node_env(&config, &info, task.as_ref()));
            let handler = Arc::new(MeshUpdater {
                ctx: ctx.clone(),
                warnings: policy_warnings.clone(),
            });
            let client = AdsClient::new(
                channel,
                AdsConfig::new(node),
                credentials.clone(),
                handler,
                &mut registry,
            );
            let status = client.status();
            control.spawn(client.run());
            Some(status)
        }
        None => None,
    };
    registry.register_collector(Box::new(SidecarCollector {
        ctx: ctx.clone(),
        xds: xds_status.clone(),
        certs: certs.clone(),
    }));

    // --- admin and metrics servers (control runtime) ---
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let registry = Arc::new(registry);
    let stats_listener = bind(config.stats_addr, "STATS_ADDR").await?;
    control.spawn(zs_admin::metrics_server::serve(
        stats_listener,
        registry,
        stopped(server_stop.clone()),
    ));
    let admin_listener = bind(config.admin_addr, "ADMIN_ADDR").await?;
    let dump = ConfigDump::new(
        mesh.clone(),
        build_info(&config),
        serde_json::to_value(&config)?,
    )
    .with_static_config(match &config.local_xds {
        Some(LocalXds::Path(p)) => zs_admin::config_dump::StaticConfig::File(p.clone()),
        Some(LocalXds::Inline(y)) => zs_admin::config_dump::StaticConfig::Inline(y.clone()),
        None => zs_admin::config_dump::StaticConfig::None,
    })
    .with_certificates(certificate_dump(
        certs.clone(),
        identity.clone(),
        cert_manager.clone(),
    ));
    let quit = shutdown_tx.clone();
    let admin = Admin::new(dump, move || {
        let _ = quit.send("/quitquitquit");
    })
    .with_logging(log);
    control.spawn(zs_admin::admin_server::serve(
        admin_listener,
        admin,
        stopped(server_stop.clone()),
    ));

    // --- listeners: bound now, accepting once ready ---
    let hbone_listener = bind(config.hbone_addr, "HBONE_ADDR").await?;
    let socks5_listener = match config.socks5_addr {
        Some(a) => Some(bind(a, "SOCKS5_ADDR").await?),
        None => None,
    };
    let http_proxy_listener = match config.http_proxy_addr {
        Some(a) => Some(bind(a, "HTTP_PROXY_ADDR").await?),
        None => None,
    };
    let mut upstream_listeners = Vec::with_capacity(config.local_upstreams.len());
    for u in &config.local_upstreams {
        let target = zs_proxy::outbound::Target::Host {
            name: u.host.clone(),
            port: u.port,
        };
        upstream_listeners.push((bind(u.listen, "LOCAL_UPSTREAMS").await?, target));
    }
    let capture_listeners = match config.capture {
        CaptureMode::None => None,
        CaptureMode::ProxyConfiguration { egress, ingress } => Some((
            bind(egress, "CAPTURE_EGRESS_PORT").await?,
            bind(ingress, "CAPTURE_INGRESS_PORT").await?,
        )),
    };
    drop(proxy_block);

    let (drain_trigger, drain_watch) = drain::channel();
    let startup = {
        let ctx = ctx.clone();
        let drain_watch = drain_watch.clone();
        let certs = certs.clone();
        let mut xds_status = xds_status.clone();
        async move {
            if let Some(s) = xds_status.as_mut() {
                s.wait_ready().await;
            }
            // The first sync may have described this workload.
            ctx.me.refresh(&ctx.mesh.read());
            drop(state_block);
            certs.wait_available().await;
            drop(cert_block);
            info!("ready: accepting traffic");
            tokio::spawn(zs_proxy::inbound::serve(
                ctx.clone(),
                hbone_listener,
                drain_watch.clone(),
            ));
            if let Some(l) = socks5_listener {
                tokio::spawn(zs_proxy::socks5::serve(ctx.clone(), l, drain_watch.clone()));
            }
            if let Some(l) = http_proxy_listener {
                tokio::spawn(zs_proxy::http_proxy::serve(
                    ctx.clone(),
                    l,
                    drain_watch.clone(),
                ));
            }
            for (l, target) in upstream_listeners {
                tokio::spawn(zs_proxy::upstreams::serve(
                    ctx.clone(),
                    l,
                    target,
                    drain_watch.clone(),
                ));
            }
            if let Some((egress, ingress)) = capture_listeners {
                tokio::spawn(zs_proxy::capture::serve_egress(
                    ctx.clone(),
                    egress,
                    drain_watch.clone(),
                ));
                tokio::spawn(zs_proxy::capture::serve_ingress(
                    ctx.clone(),
                    ingress,
                    drain_watch.clone(),
                ));
            }
        }
    };
    let startup = tokio::spawn(startup);
    drop(drain_watch);

    // --- wait for a stop request ---
    let reason = tokio::select! {
        r = shutdown_signal() => r,
        Some(r) = shutdown_rx.recv() => r,
    };
    info!(reason, deadline = ?config.termination_deadline, "draining");
    readiness.set_not_ready("draining");
    startup.abort();
    let outcome = tokio::select! {
        o = drain_trigger.start_drain(config.termination_deadline) => o,
        r = shutdown_signal() => {
            warn!(reason = r, "second stop signal: exiting now");
            DrainOutcome::DeadlineExceeded
        }
    };
    match outcome {
        DrainOutcome::Complete => info!("drained: all connections finished"),
        DrainOutcome::DeadlineExceeded => {
            warn!("termination deadline reached: closing the remaining connections")
        }
    }
    let _ = server_stop_tx.send(true);
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handling the process can still be stopped via /quitquitquit.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn bind(addr: SocketAddr, var: &str) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("{var}: creating a socket for {addr}"))?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("{var}: cannot bind {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("{var}: cannot listen on {addr}"))
}

/// On ECS, the workload name comes from task metadata, as istiod derives it.
async fn resolve_identity(
    config: &Config,
) -> anyhow::Result<(WorkloadInfo, Option<zs_ecs::TaskMetadata>)> {
    match &config.identity {
        IdentitySource::Explicit(w) => Ok((w.clone(), None)),
        IdentitySource::EcsTask {
            namespace,
            service_account,
            metadata_uri,
        } => {
            let task = zs_ecs::fetch_task_metadata(metadata_uri)
                .await
                .with_context(|| format!("reading ECS task metadata from {metadata_uri}"))?;
            let w = zs_ecs::workload_info(namespace, service_account, &task);
            Ok((
                WorkloadInfo {
                    namespace: w.namespace,
                    name: w.name,
                    service_account: w.service_account,
                },
                Some(task),
            ))
        }
    }
}

/// How this workload describes itself until istiod's record for it arrives.
fn self_description(
    config: &Config,
    info: &WorkloadInfo,
    task: Option<&zs_ecs::TaskMetadata>,
) -> Workload {
    let mut w = Workload::new(
        "",
        info.namespace.as_str(),
        info.name.as_str(),
        info.service_account.as_str(),
    );
    w.trust_domain = config.trust_domain.as_str().into();
    w.network = config.network.as_str().into();
    w.cluster_id = config.cluster_id.as_str().into();
    if let Some(t) = task {
        w.workload_ips = t.task_ips().to_vec();
        let (region, zone) = t.locality();
        w.locality.region = region.into();
        w.locality.zone = zone.into();
    }
    w
}

fn node_env(
    config: &Config,
    info: &WorkloadInfo,
    task: Option<&zs_ecs::TaskMetadata>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), info.name.clone()),
        ("POD_NAMESPACE".to_string(), info.namespace.clone()),
    ];
    if let Some(ip) = task.and_then(|t| t.task_ips().first()) {
        env.push(("INSTANCE_IP".into(), ip.to_string()));
    }
    // Explicit variables come last so they win.
    env.extend(config.node_env.iter().cloned());
    env
}

fn root_source(root: &RootCa) -> RootSource {
    match root {
        RootCa::File(p) => RootSource::File(p.clone()),
        RootCa::Pem(pem) => RootSource::InlinePem(pem.clone()),
        RootCa::System => RootSource::System,
    }
}

fn channel_config(endpoint: &IstiodEndpoint, purpose: Purpose) -> ChannelConfig {
    ChannelConfig {
        address: endpoint.url.clone(),
        roots: root_source(&endpoint.root),
        alt_hostname: endpoint.alt_hostname.clone(),
        istiod_server_name: endpoint.server_name.clone(),
        purpose,
    }
}

/// How the sidecar proves who it is to istiod, shared by the xDS and CA
/// clients (one AWS credentials cache, one token file).
fn token_source(config: &Config) -> anyhow::Result<Option<TokenSource>> {
    Ok(match &config.auth {
        AuthSource::None => None,
        AuthSource::Token(TokenValue::File(p)) => {
            Some(TokenSource::Bearer(BearerToken::File(p.clone())))
        }
        AuthSource::Token(TokenValue::Literal(t)) => {
            Some(TokenSource::Bearer(BearerToken::Literal(t.clone())))
        }
        AuthSource::AwsIam {
            region,
            credentials,
        } => {
            let endpoint = zs_xds::aws::CredentialsEndpoint::from_settings(
                &credentials.base,
                credentials.relative_uri.as_deref(),
                credentials.full_uri.as_deref(),
                credentials.authorization_token.as_deref(),
            )
            .context("ECS task role credentials endpoint")?;
            let provider = Arc::new(zs_xds::aws::EcsCredentialsProvider::new(endpoint));
            Some(TokenSource::Aws(zs_xds::aws::AwsIamAuth::new(
                provider,
                zs_xds::aws::StsPresigner::new(region.clone()),
            )))
        }
    })
}

/// The call metadata for one endpoint: the token, `clusterid`, and that
/// endpoint's static headers (`XDS_HEADER_*` or `CA_HEADER_*`).
fn call_credentials(
    config: &Config,
    token: Option<TokenSource>,
    headers: &[(String, String)],
) -> anyhow::Result<CallCredentials> {
    Ok(CallCredentials::new(
        token,
        &config.cluster_id,
        headers.iter().map(|(k, v)| (k, v)),
    )?)
}

fn load_cert_dir(dir: &std::path::Path) -> anyhow::Result<WorkloadCertificate> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .with_context(|| format!("CERT_DIR: reading {}", dir.join(name).display()))
    };
    let chain = read("cert-chain.pem")?;
    let key = read("key.pem")?;
    let roots = read("root-cert.pem")?;
    WorkloadCertificate::from_pem(&chain, &key, &roots)
        .with_context(|| format!("CERT_DIR {}: invalid certificate files", dir.display()))
}

/// Whether a certificate from files may be put in force: inside its validity
/// period. A different identity than configured is allowed (it is the user's
/// PKI) but called out, since peers expecting the configured one will refuse it.
fn usable_cert(cert: &WorkloadCertificate, expected: &Identity) -> bool {
    match cert.identity() {
        Some(id) if id == expected => {}
        Some(id) => {
            warn!(certificate = %id, configured = %expected, "the certificate's identity differs from the configured workload")
        }
        None => warn!("the certificate carries no SPIFFE identity; peers will reject it"),
    }
    let now = SystemTime::now();
    if cert.is_expired(now) {
        warn!(not_after = %zs_admin::config_dump::rfc3339(cert.not_after()), "CERT_DIR: the workload certificate has expired; not ready until it is replaced");
        return false;
    }
    if cert.not_before() > now {
        warn!(not_before = %zs_admin::config_dump::rfc3339(cert.not_before()), "CERT_DIR: the workload certificate is not valid yet; not ready until it is");
        return false;
    }
    true
}

/// Files mounted by the user's PKI may be rotated in place: pick up changes.
async fn watch_cert_dir(dir: std::path::PathBuf, certs: CertificateHandle, identity: Identity) {
    let modified = |dir: &std::path::Path| {
        ["cert-chain.pem", "key.pem", "root-cert.pem"]
            .iter()
            .filter_map(|f| {
                std::fs::metadata(dir.join(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .max()
    };
    let mut last = modified(&dir);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = modified(&dir);
        if now == last {
            continue;
        }
        last = now;
        match load_cert_dir(&dir) {
            Ok(cert) => {
                if usable_cert(&cert, &identity) {
                    certs.set(cert);
                    info!(dir = %dir.display(), "reloaded the workload certificate");
                }
            }
            Err(e) => warn!(error = %e, "keeping the previous certificate"),
        }
    }
}

/// Re-applies the local config file when it changes; a broken edit is logged
/// and the previous content stays in force.
async fn watch_local_config(
    path: std::path::PathBuf,
    mut current: LocalConfig,
    ctx: Arc<ProxyContext>,
    warnings: Arc<PolicyWarnings>,
) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = modified(&path);
        if now == last {
            continue;
        }
        last = now;
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| LocalConfig::from_yaml(&t).map_err(|e| e.to_string()));
        let next = match parsed {
            Ok(next) => next,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring the changed LOCAL_XDS_PATH file; the previous content stays in force");
                continue;
            }
        };
        let update = {
            let mut mesh = ctx.mesh.write();
            let update = next.replace(&current, &mut mesh);
            ctx.me.refresh(&mesh);
            update
        };
        warnings.log(update.warnings);
        if update.policies_changed {
            reevaluate_connections(&ctx);
        }
        info!(path = %path.display(), "applied the changed LOCAL_XDS_PATH file");
        current = next;
    }
}

/// Re-checks open inbound connections after a policy change, closing denied ones.
fn reevaluate_connections(ctx: &ProxyContext) {
    let closed = {
        let mesh = ctx.mesh.read();
        ctx.tracker.reevaluate(&mesh, &ctx.me.get())
    };
    for c in closed {
        info!(
            src.addr = %c.conn.src_ip,
            src.identity = ?c.conn.src_identity,
            dst = %c.conn.dst,
            reason = %c.reason,
            "connection closed due to policy change"
        );
    }
}

fn build_info(config: &Config) -> zs_admin::config_dump::BuildInfo {
    zs_admin::config_dump::BuildInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: option_env!("ZS_GIT_REVISION").unwrap_or("unknown").into(),
        rust_version: option_env!("ZS_RUSTC_VERSION").unwrap_or("unknown").into(),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        build_status: "Clean".into(),
        istio_version: config.istio_version.clone(),
        crypto_provider: "ring".into(),
    }
}

fn certificate_dump(
    certs: CertificateHandle,
    identity: Identity,
    manager: Option<Arc<CertManager>>,
) -> impl Fn() -> Vec<zs_admin::config_dump::CertificateDump> + Send + Sync + 'static {
    use zs_admin::config_dump::{CertInfo, CertState as DumpState, CertificateDump};
    move || {
        let info = |c: &zs_tls::CertInfo| CertInfo {
            pem: c.pem(),
            serial_number: c.serial_number().to_string(),
            valid_from: c.not_before(),
            expiration_time: c.not_after(),
        };
        let current = certs.current();
        let state = match (&manager, &current) {
            (Some(m), _) => match m.state() {
                CertState::Initializing => DumpState::Initializing,
                CertState::Available => DumpState::Available,
                CertState::Unavailable(e) => DumpState::Unavailable(e),
            },
            (None, Some(_)) => DumpState::Available,
            (None, None) => DumpState::Initializing,
        };
        vec![CertificateDump {
            identity: identity.clone(),
            state,
            chain: current
                .iter()
                .flat_map(|c| c.chain_info().iter().map(info))
                .collect(),
            roots: current
                .iter()
                .flat_map(|c| c.roots_info().iter().map(info))
                .collect(),
        }]
    }
}

/// Policies already warned about as not enforceable at L4. The operator
/// hears about each policy once, whichever source brought it (the local file
/// at startup, an edit of it, or istiod) and however often it is re-applied:
/// every edit of the local file re-applies all of its policies.
#[derive(Default)]
struct PolicyWarnings(Mutex<HashSet<String>>);

impl PolicyWarnings {
    /// Logs each `(policy, warning)` whose policy was not warned about yet;
    /// returns how many it logged.
    fn log(&self, warnings: Vec<(String, String)>) -> usize {
        let mut logged = 0;
        for (policy, warning) in warnings {
            if self.0.lock().insert(policy.clone()) {
                warn!(%policy, "{warning}");
                logged += 1;
            }
        }
        logged
    }
}

/// Applies xDS responses to the mesh state, then refreshes what depends on it.
struct MeshUpdater {
    ctx: Arc<ProxyContext>,
    warnings: Arc<PolicyWarnings>,
}

impl XdsHandler for MeshUpdater {
    fn apply(
        &self,
        type_url: &str,
        resources: &[XdsResource],
        removed: &[String],
    ) -> Vec<Rejection> {
        let refs: Vec<ResourceRef<'_>> = resources
            .iter()
            .map(|r| ResourceRef {
                name: &r.name,
                type_url: &r.body.type_url,
                value: &r.body.value,
            })
            .collect();
        let ctx = &self.ctx;
        let (rejected, policy_changed, warnings) = {
            let mut mesh = ctx.mesh.write();
            match type_url {
                zs_proto_urls::ADDRESS => {
                    let rejected = mesh.apply_addresses(&refs, removed);
                    ctx.me.refresh(&mesh);
                    (rejected, false, Vec::new())
                }
                zs_proto_urls::AUTHORIZATION => {
                    let update = mesh.apply_authorizations(&refs, removed);
                    (update.rejected, update.changed, update.warnings)
                }
                other => {
                    warn!(type_url = other, "ignoring resources of an unknown type");
                    return Vec::new();
                }
            }
        };
        self.warnings.log(warnings);
        if policy_changed {
            reevaluate_connections(ctx);
        }
        for r in &rejected {
            warn!(resource = %r.name, reason = %r.reason, "rejected xDS resource");
        }
        rejected
            .into_iter()
            .map(|r| Rejection {
                name: r.name,
                reason: r.reason,
            })
            .collect()
    }
}

/// Type URLs as match patterns.
mod zs_proto_urls {
    pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
    pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_match_the_proto_crate() {
        assert_eq!(zs_proto_urls::ADDRESS, zs_proto::ADDRESS_TYPE_URL);
        assert_eq!(
            zs_proto_urls::AUTHORIZATION,
            zs_proto::AUTHORIZATION_TYPE_URL
        );
    }

    #[test]
    fn a_policy_is_warned_about_once_however_often_it_is_applied() {
        let warnings = PolicyWarnings::default();
        let w = |p: &str| (p.to_string(), "can never match at L4".to_string());
        assert_eq!(warnings.log(vec![w("ns/http-only")]), 1);
        // A file edit re-applies every policy of the file.
        assert_eq!(warnings.log(vec![w("ns/http-only"), w("ns/other")]), 1);
        assert_eq!(warnings.log(vec![w("ns/http-only"), w("ns/other")]), 0);
    }
}
