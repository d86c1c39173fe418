//! An ECS (Fargate) task joining the mesh the way `istioctl ecs add-service`
//! enrols it: a `BOOTSTRAP_TOKEN` of platform `ecs` (no secret inside), the
//! task role's credentials from the ECS credentials endpoint, and the task's
//! identity from task metadata v4. The sidecar proves its role to istiod with
//! a presigned STS `GetCallerIdentity`; local-istiod replays it to an STS
//! stand-in that verifies the SigV4 signature, and maps the role to a service
//! account.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use zs_e2e::istiod::{LocalIstiod, readiness};
use zs_e2e::*;
use zs_xds::aws::Credentials;
use zs_xds::testing::aws::{EcsCredentialsServer, KnownKey, StsCaller, StsStandIn};

const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-2";
const CLUSTER: &str = "ecs-demo-1";
const TASK_ID: &str = "0f2a3b4c5d6e7f8091a2b3c4d5e6f708";
const ROLE: &str = "arn:aws:iam::111122223333:role/echo-task-role";
const CREDENTIALS_PATH: &str = "/v2/credentials/6f1c2a9e-0c1d-4b8e-9a55-2f4e3c1b7d10";

/// The name istiod gives the task's WorkloadEntry.
fn task_workload_name() -> String {
    format!("ecs-task-{ACCOUNT}-{REGION}-{CLUSTER}-{TASK_ID}")
}

/// `GET <base>/task` as a Fargate task (platform 1.4) answers it: the app
/// container and the sidecar, both on the task's ENI.
fn task_metadata(ip: std::net::IpAddr) -> String {
    let container = |name: &str, image: &str| {
        serde_json::json!({
            "DockerId": format!("{TASK_ID}-{name}"),
            "Name": name,
            "DockerName": name,
            "Image": image,
            "ImageID": "sha256:7e4d58f0e5f1e2b7a3f1c1d2b4a5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3",
            "Labels": {
                "com.amazonaws.ecs.cluster": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"),
                "com.amazonaws.ecs.container-name": name,
                "com.amazonaws.ecs.task-arn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{TASK_ID}"),
                "com.amazonaws.ecs.task-definition-family": "echo",
                "com.amazonaws.ecs.task-definition-version": "7"
            },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": {"CPU": 2},
            "CreatedAt": "2026-11-20T09:14:02.512Z",
            "StartedAt": "2026-11-20T09:14:05.071Z",
            "Type": "NORMAL",
            "LogDriver": "awslogs",
            "LogOptions": {
                "awslogs-group": "/ecs/echo",
                "awslogs-region": REGION,
                "awslogs-stream": format!("{name}/{name}/{TASK_ID}")
            },
            "ContainerARN": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container/{CLUSTER}/{TASK_ID}/{name}"),
            "Networks": [{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [ip.to_string()],
                "AttachmentIndex": 0,
                "MACAddress": "0a:1b:2c:3d:4e:5f",
                "IPv4SubnetCIDRBlock": "10.0.16.0/20",
                "DomainNameServers": ["10.0.0.2"],
                "DomainNameSearchList": [format!("{REGION}.compute.internal")],
                "PrivateDNSName": format!("ip-10-0-17-42.{REGION}.compute.internal"),
                "SubnetGatewayIpv4Address": "10.0.16.1/20"
            }],
            "Snapshotter": "overlayfs"
        })
    };
    serde_json::json!({
        "Cluster": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"),
        "TaskARN": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{TASK_ID}"),
        "Family": "echo",
        "Revision": "7",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 512},
        "PullStartedAt": "2026-11-20T09:13:51.308Z",
        "PullStoppedAt": "2026-11-20T09:14:01.772Z",
        "AvailabilityZone": "us-east-2a",
        "LaunchType": "FARGATE",
        "Containers": [
            container("echo", "public.ecr.aws/example/echo:1.4"),
            container("ztunnel", "public.ecr.aws/example/ztunnel-sidecar:0.1.0")
        ],
        "ClockDrift": {
            "ClockErrorBound": 0.4,
            "ReferenceTimestamp": "2026-11-20T09:14:00Z",
            "ClockSynchronizationStatus": "SYNCHRONIZED"
        },
        "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496},
        "VPCID": "vpc-0a1b2c3d4e5f60718"
    })
    .to_string()
}

/// The task metadata endpoint: `GET /v4/<id>/task` → the document above.
struct TaskMetadataServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TaskMetadataServer {
    async fn start(document: String) -> TaskMetadataServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let document = document.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let (status, body) = if line.starts_with("GET /v4/c0ffee/task ") {
                        ("200 OK", document)
                    } else {
                        ("404 Not Found", "404 page not found".to_string())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(response.as_bytes()).await;
                });
            }
        });
        TaskMetadataServer { addr, task }
    }

    /// What ECS puts in `ECS_CONTAINER_METADATA_URI_V4`.
    fn uri(&self) -> String {
        format!("http://{}/v4/c0ffee", self.addr)
    }
}

impl Drop for TaskMetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// AWS's side: the credentials endpoint handing out the task role's keys, and
/// STS knowing those keys as an assumed session of `role_name`.
struct Aws {
    credentials: EcsCredentialsServer,
    sts: StsStandIn,
}

impl Aws {
    async fn start(role_name: &str) -> Aws {
        let credentials = Credentials {
            access_key_id: "ASIAQEXAMPLE7TASKROLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY".into(),
            session_token: Some(
                "IQoJb3JpZ2luX2VjEXAMPLEsessiontoken//////////wEaCXVzLWVhc3QtMiJHMEUCIQ".into(),
            ),
            expiration: Some(SystemTime::now() + Duration::from_secs(6 * 3600)),
        };
        let server = EcsCredentialsServer::start(CREDENTIALS_PATH, &credentials, None)
            .await
            .unwrap();
        let sts = StsStandIn::start(REGION).await.unwrap();
        sts.add_caller(
            &credentials.access_key_id,
            StsCaller {
                key: KnownKey {
                    secret_access_key: credentials.secret_access_key.clone(),
                    session_token: credentials.session_token.clone(),
                },
                arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{TASK_ID}"),
            },
        );
        Aws {
            credentials: server,
            sts,
        }
    }
}

/// The shell task (bearer token), local-istiod mapping [`ROLE`] to
/// `ecs-demo-1/echo`, and the echo task enrolled by bootstrap token, using
/// the task role `role_name`. Returns once the shell sidecar is ready.
struct Enrolled {
    block: AddrBlock,
    aws: Aws,
    _metadata: TaskMetadataServer,
    istiod: LocalIstiod,
    _app: EchoServer,
    client: Sidecar,
    echo: Sidecar,
}

async fn enrol(role_name: &str) -> Enrolled {
    let block = AddrBlock::new();
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), Some("echo")).await;
    let aws = Aws::start(role_name).await;
    let metadata = TaskMetadataServer::start(task_metadata(block.ip(2))).await;
    // istiod's view of the task: the WorkloadEntry it derives from the ECS API.
    let mut mesh = Pair::mesh(&block, app.port());
    for w in &mut mesh.workloads {
        if w.name == "echo" {
            w.name = task_workload_name();
            w.uid = format!(
                "cluster1//networking.istio.io/WorkloadEntry/{NS}/{}",
                w.name
            );
        }
    }
    let sts_url = aws.sts.url();
    let role_mapping = format!("{ROLE}={NS}/echo");
    let istiod = LocalIstiod::start(
        block.ip(10),
        &mesh,
        &[
            "--token",
            "t-shell=ecs-demo-1/shell",
            "--sts-url",
            &sts_url,
            "--iam-role",
            &role_mapping,
        ],
    )
    .await;
    let client =
        Sidecar::start(istiod.sidecar(block.ip(1), &format!("{NS}/shell/shell"), Some("t-shell")))
            .await;
    let token = istiod.bootstrap_token(NS, "echo", serde_json::json!({"platform": "ecs"}));
    // Only what Fargate and the task definition provide (plus the listener
    // addresses the harness sets). An empty PROXY_WORKLOAD_INFO counts as
    // unset, so the identity comes from task metadata.
    let spec = SidecarSpec::new(block.ip(2), "")
        .env("BOOTSTRAP_TOKEN", token)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", CREDENTIALS_PATH)
        .env("ECS_CREDENTIALS_ENDPOINT", aws.credentials.base_url())
        .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri());
    let echo = Sidecar::spawn(spec);
    Enrolled {
        block,
        aws,
        _metadata: metadata,
        istiod,
        _app: app,
        client,
        echo,
    }
}

#[tokio::test]
async fn ecs_task_role_gets_its_certificate_and_configuration_from_istiod() {
    let mut e = enrol("echo-task-role").await;
    e.echo.wait_ready(Duration::from_secs(20)).await;

    let dump: serde_json::Value =
        serde_json::from_str(&http_get(e.echo.admin(), "/config_dump").await.unwrap().1).unwrap();
    assert_eq!(
        dump["certificates"][0]["identity"],
        "spiffe://cluster.local/ns/ecs-demo-1/sa/echo"
    );
    assert_eq!(dump["certificates"][0]["state"], "Available");
    // The mesh reaches the task through its sidecar.
    let mut s = socks5_connect(e.client.socks5(), to(e.block.ip(100), SERVICE_PORT))
        .await
        .expect_connected();
    assert_eq!(read_line(&mut s).await, "echo");
    assert_eq!(
        echo_roundtrip(&mut s, b"hello fargate").await,
        b"hello fargate"
    );

    let status = e.istiod.status().await;
    let callers: Vec<&str> = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["caller"].as_str())
        .collect();
    assert!(
        callers
            .contains(&"IAM role arn:aws:iam::111122223333:role/echo-task-role as ecs-demo-1/echo"),
        "{callers:?}"
    );
    let node = format!(
        "ztunnel~{}~{}.{NS}~{NS}.svc.cluster.local",
        e.block.ip(2),
        task_workload_name()
    );
    assert!(status["nodes"].get(&node).is_some(), "{status}");
    // Every replay to STS verified.
    let log = e.aws.sts.log();
    assert!(log.len() >= 2, "{log:?}");
    assert!(
        log.iter().all(|r| r.as_deref()
            == Ok("arn:aws:sts::111122223333:assumed-role/echo-task-role/0f2a3b4c5d6e7f8091a2b3c4d5e6f708")),
        "{log:?}"
    );
    assert!(e.aws.credentials.requests() >= 1);
}

#[tokio::test]
async fn unmapped_task_role_is_denied_and_the_sidecar_never_becomes_ready() {
    let e = enrol("some-other-role").await;
    let error = "IAM role arn:aws:iam::111122223333:role/some-other-role is not mapped to a service account";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !e.echo.logs().contains(error) {
        assert!(
            std::time::Instant::now() < deadline,
            "{error:?} not in the log:\n{}",
            e.echo.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        readiness(e.echo.readiness()).await,
        (
            500,
            "not ready, pending: certificates, state manager\n".to_string()
        )
    );
    let status = e.istiod.status().await;
    assert_eq!(
        status["ca"]["issued"], 1,
        "only the shell task got a certificate"
    );
    assert_eq!(
        status["ca"]["lastRefusal"],
        "IAM role arn:aws:iam::111122223333:role/some-other-role is not mapped to a service account (--iam-role)"
    );
}
