//! The common two-task topology: a client task and a server task, each with
//! its sidecar, the server's app behind loopback, one mesh service.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::{
    AddrBlock, EchoServer, MeshConfig, Pki, ServiceSpec, Sidecar, SidecarSpec, WorkloadSpec,
};

pub const NS: &str = "ecs-demo-1";
pub const HOST: &str = "echo-service.ecs-demo-1.ecs.local";
pub const SERVICE_PORT: u16 = 8080;

/// Two tasks joined by the mesh.
pub struct Pair {
    pub block: AddrBlock,
    pub pki: Pki,
    pub app: EchoServer,
    pub client: Sidecar,
    pub server: Sidecar,
    pub mesh_file: PathBuf,
}

impl Pair {
    pub fn client_ip(&self) -> IpAddr {
        self.block.ip(1)
    }
    pub fn server_ip(&self) -> IpAddr {
        self.block.ip(2)
    }

    /// The default mesh: client `shell` and server `echo` in `ecs-demo-1`, the
    /// service `echo-service.ecs-demo-1.ecs.local:8080` → the app's port.
    pub fn mesh(block: &AddrBlock, app_port: u16) -> MeshConfig {
        let svc = ServiceSpec::new(NS, "echo-service", HOST)
            .port(SERVICE_PORT, app_port)
            .vip(&format!("/{}", block.ip(100)))
            .san(NS, "echo");
        MeshConfig::default()
            .workload(WorkloadSpec::new(NS, "shell", "shell", block.ip(1)))
            .workload(
                WorkloadSpec::new(NS, "echo", "echo", block.ip(2)).in_service(
                    &svc.key(),
                    SERVICE_PORT,
                    app_port,
                ),
            )
            .service(svc)
    }

    /// Starts both sidecars with `mesh` (built from [`Pair::mesh`] or customised).
    pub async fn start_with(
        block: AddrBlock,
        app: EchoServer,
        mesh: MeshConfig,
        client_env: &[(&str, &str)],
        server_env: &[(&str, &str)],
    ) -> Pair {
        let pki = Pki::new();
        let mesh_file = mesh.write(pki.path(), "mesh.yaml");
        let mut cspec = SidecarSpec::new(block.ip(1), &format!("{NS}/shell/shell"))
            .certs(pki.cert_dir(NS, "shell"))
            .mesh(mesh_file.clone());
        for (k, v) in client_env {
            cspec = cspec.env(k, v);
        }
        let mut sspec = SidecarSpec::new(block.ip(2), &format!("{NS}/echo/echo"))
            .certs(pki.cert_dir(NS, "echo"))
            .mesh(mesh_file.clone());
        for (k, v) in server_env {
            sspec = sspec.env(k, v);
        }
        let (client, server) = tokio::join!(Sidecar::start(cspec), Sidecar::start(sspec));
        Pair {
            block,
            pki,
            app,
            client,
            server,
            mesh_file,
        }
    }

    /// The default pair: an echo app on loopback with a banner.
    pub async fn start() -> Pair {
        let block = AddrBlock::new();
        let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), None).await;
        let mesh = Pair::mesh(&block, app.port());
        Pair::start_with(block, app, mesh, &[], &[]).await
    }
}
