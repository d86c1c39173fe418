//! local-istiod against the sidecar's own istiod clients (`zs-xds`), in one
//! process but over real TLS, HTTP/2 and gRPC on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use local_istiod::auth::ServiceAccount;
use local_istiod::{Config, LocalIstiod};
use prometheus_client::registry::Registry;
use zs_identity::Identity;
use zs_state::MeshState;
use zs_state::xds::ResourceRef;
use zs_xds::ads::{AdsClient, AdsConfig, Node, Rejection, XdsHandler, XdsResource, XdsStatus};
use zs_xds::auth::{BearerToken, CallCredentials, TokenSource};
use zs_xds::ca::{CaClient, CaError};
use zs_xds::channel::{self, ChannelConfig, Purpose, RootSource};

const ADDRESS: &str = zs_proto::ADDRESS_TYPE_URL;
const AUTHZ: &str = zs_proto::AUTHORIZATION_TYPE_URL;

fn workload(uid: &str, ip: &str) -> String {
    format!(
        "- uid: {uid}\n  name: {uid}\n  namespace: ns\n  serviceAccount: {uid}\n  trustDomain: cluster.local\n  workloadIps: [\"{ip}\"]\n  protocol: HBONE\n  services: {{}}\n"
    )
}

fn mesh(workloads: &[(&str, &str)]) -> String {
    let mut yaml = String::from("workloads:\n");
    for (uid, ip) in workloads {
        yaml.push_str(&workload(uid, ip));
    }
    yaml.push_str(
        "policies:\n- name: allow-ns\n  namespace: ns\n  scope: Namespace\n  action: Allow\n  dryRun: false\n  rules:\n  - - - namespaces: [!Exact ns]\n",
    );
    yaml
}

/// Replaces the file atomically, as editors and the e2e harness do.
fn write_mesh(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    mesh_file: PathBuf,
    server: LocalIstiod,
}

impl Fixture {
    async fn start(yaml: &str, configure: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mesh_file = dir.path().join("mesh.yaml");
        write_mesh(&mesh_file, yaml);
        let mut config = Config::new(&mesh_file);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.state_dir = dir.path().join("state");
        config.poll_interval = Duration::from_millis(50);
        configure(&mut config);
        let server = LocalIstiod::start(config).await.unwrap();
        Fixture {
            dir,
            mesh_file,
            server,
        }
    }

    fn channel(&self, purpose: Purpose) -> ChannelConfig {
        // Read from the state directory, as a client configured with
        // XDS_ROOT_CA=<state-dir>/root-cert.pem would.
        ChannelConfig::new(
            self.server.url(),
            RootSource::File(self.dir.path().join("state/root-cert.pem")),
            purpose,
        )
    }

    fn ca_client(&self, credentials: CallCredentials, ttl: Duration) -> CaClient {
        CaClient::new(
            channel::connect(&self.channel(Purpose::Ca)).unwrap(),
            credentials,
            ttl,
        )
    }
}

fn bearer(token: &str) -> CallCredentials {
    CallCredentials::new(
        Some(TokenSource::Bearer(BearerToken::Literal(token.into()))),
        "Kubernetes",
        Vec::<(String, String)>::new(),
    )
    .unwrap()
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

/// One `apply` call: type URL, resource names, removed names.
type ApplyCall = (String, Vec<String>, Vec<String>);

/// Applies responses to a real mesh state (so NACKs are the real ones) and
/// keeps every call.
#[derive(Default)]
struct StateHandler {
    state: Mutex<MeshState>,
    calls: Mutex<Vec<ApplyCall>>,
}

impl StateHandler {
    fn workloads(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .workloads()
            .map(|w| w.uid.to_string())
            .collect();
        uids.sort();
        uids
    }

    fn address_calls(&self) -> Vec<(Vec<String>, Vec<String>)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == ADDRESS)
            .map(|(_, r, rm)| (r.clone(), rm.clone()))
            .collect()
    }
}

impl XdsHandler for StateHandler {
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
        let mut state = self.state.lock().unwrap();
        let rejected = match type_url {
            ADDRESS => state.apply_addresses(&refs, removed),
            _ => state.apply_authorizations(&refs, removed).rejected,
        };
        self.calls.lock().unwrap().push((
            type_url.to_string(),
            resources.iter().map(|r| r.name.clone()).collect(),
            removed.to_vec(),
        ));
        rejected
            .into_iter()
            .map(|r| Rejection {
                name: r.name,
                reason: r.reason,
            })
            .collect()
    }
}

struct Client {
    handler: Arc<StateHandler>,
    status: XdsStatus,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const NODE_ID: &str = "ztunnel~10.0.0.5~client.ns~ns.svc.cluster.local";

fn ads_client(f: &Fixture, credentials: CallCredentials) -> Client {
    let node = Node::ztunnel([
        ("POD_NAME", "client"),
        ("POD_NAMESPACE", "ns"),
        ("INSTANCE_IP", "10.0.0.5"),
    ]);
    let handler = Arc::new(StateHandler::default());
    let client = AdsClient::new(
        channel::connect(&f.channel(Purpose::Xds)).unwrap(),
        AdsConfig::new(node),
        credentials,
        handler.clone(),
        &mut Registry::default(),
    );
    let status = client.status();
    let task = tokio::spawn(client.run());
    Client {
        handler,
        status,
        task,
    }
}

async fn ready(c: &mut Client) {
    tokio::time::timeout(Duration::from_secs(20), c.status.wait_ready())
        .await
        .expect("the xDS client became ready");
}

#[tokio::test]
async fn xds_client_gets_every_workload_and_policy_of_the_file() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]), |_| {}).await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    assert_eq!(c.handler.workloads(), ["a", "b"]);
    assert!(
        c.handler
            .state
            .lock()
            .unwrap()
            .policies()
            .get("ns/allow-ns")
            .is_some()
    );
    eventually("both types ACKed", || {
        let s = f.server.status();
        s.nodes.get(NODE_ID).is_some_and(|n| {
            n.get(ADDRESS).is_some_and(|t| t.acks == 1) && n.get(AUTHZ).is_some_and(|t| t.acks == 1)
        })
    })
    .await;
    let s = f.server.status();
    assert_eq!(s.streams.len(), 1);
    assert_eq!(s.streams[0].node.as_deref(), Some(NODE_ID));
    assert_eq!(
        s.resources,
        BTreeMap::from([(ADDRESS.to_string(), 2), (AUTHZ.to_string(), 1)])
    );
}

#[tokio::test]
async fn file_edit_pushes_only_what_changed() {
    let f = Fixture::start(
        &mesh(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]),
        |_| {},
    )
    .await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    // b changes its address, c goes, d arrives; a is untouched.
    write_mesh(
        &f.mesh_file,
        &mesh(&[("a", "10.0.0.1"), ("b", "10.0.0.12"), ("d", "10.0.0.4")]),
    );
    eventually("the delta applied", || {
        c.handler.workloads() == ["a", "b", "d"]
    })
    .await;
    let calls = c.handler.address_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[1],
        (
            vec!["b".to_string(), "d".to_string()],
            vec!["c".to_string()]
        )
    );
    // The policy did not change, so no Authorization response followed the first.
    let authz_calls = c
        .handler
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| t == AUTHZ)
        .count();
    assert_eq!(authz_calls, 1);
}

#[tokio::test]
async fn unparsable_file_edit_keeps_the_last_good_mesh_and_reports_it() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |_| {}).await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    write_mesh(&f.mesh_file, "workloads: [\n");
    eventually("the error reported", || {
        f.server.status().config_error.is_some()
    })
    .await;
    assert_eq!(f.server.status().generation, 1);
    assert_eq!(c.handler.workloads(), ["a"]);
    // Fixing the file clears the error and pushes the change.
    write_mesh(&f.mesh_file, &mesh(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
    eventually("the fix applied", || c.handler.workloads() == ["a", "b"]).await;
    assert_eq!(f.server.status().config_error, None);
}

#[tokio::test]
async fn reconnecting_client_receives_only_what_changed_while_away() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]), |_| {}).await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    f.server.pause();
    eventually("the stream dropped", || !c.status.is_connected()).await;
    write_mesh(&f.mesh_file, &mesh(&[("a", "10.0.0.1")]));
    f.server.wait_generation(2).await;
    f.server.resume();
    eventually("b removed after the reconnect", || {
        c.handler.workloads() == ["a"]
    })
    .await;
    let calls = c.handler.address_calls();
    // First sync (a, b), then after the reconnect: nothing resent, only b removed.
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], (Vec::<String>::new(), vec!["b".to_string()]));
}

#[tokio::test]
async fn malformed_resource_is_nacked_by_name_while_the_rest_applies() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |c| {
        c.test.corrupt_resources = vec!["broken".into()];
    })
    .await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    // One edit adds a valid workload and one that is served malformed.
    write_mesh(
        &f.mesh_file,
        &mesh(&[("a", "10.0.0.1"), ("broken", "10.0.0.2"), ("c", "10.0.0.3")]),
    );
    eventually("the NACK recorded", || !f.server.status().nacks.is_empty()).await;
    assert_eq!(c.handler.workloads(), ["a", "c"]);
    let calls = c.handler.address_calls();
    assert_eq!(
        calls[1],
        (
            vec!["broken".to_string(), "c".to_string()],
            Vec::<String>::new()
        )
    );
    let s = f.server.status();
    assert_eq!(s.nacks.len(), 1);
    assert_eq!(s.nacks[0].node, NODE_ID);
    assert_eq!(s.nacks[0].type_url, ADDRESS);
    assert_eq!(
        s.nacks[0].message,
        "broken: IP address must be 4 or 16 bytes, got 3"
    );
    let node = &s.nodes[NODE_ID][ADDRESS];
    assert_eq!(node.last_nack.as_ref(), Some(&s.nacks[0]));
    assert_eq!(node.acks, 1);
}

#[tokio::test]
async fn ca_signs_a_csr_for_the_token_s_service_account() {
    let f = Fixture::start(&mesh(&[]), |c| {
        c.tokens = vec![("t-echo".into(), Some("ns/echo".parse().unwrap()))];
    })
    .await;
    let ca = f.ca_client(bearer("t-echo"), Duration::from_secs(3600));
    let cert = ca.fetch(&id("ns", "echo")).await.unwrap();
    assert_eq!(cert.identity(), Some(&id("ns", "echo")));
    // Valid for the hour asked, plus the minute of clock-skew allowance before now.
    let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600 + 60));
    // Chained to the root clients were given.
    let root = std::fs::read_to_string(f.dir.path().join("state/root-cert.pem")).unwrap();
    assert_eq!(cert.roots_info()[0].pem(), root);
    assert_eq!(f.server.status().ca.issued, 1);
}

#[tokio::test]
async fn ca_refuses_a_csr_for_another_service_account() {
    let f = Fixture::start(&mesh(&[]), |c| {
        c.tokens = vec![("t-echo".into(), Some("ns/echo".parse().unwrap()))];
    })
    .await;
    let ca = f.ca_client(bearer("t-echo"), Duration::from_secs(3600));
    let err = ca.fetch(&id("ns", "admin")).await.unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "the CSR asks for spiffe://cluster.local/ns/ns/sa/admin, but the caller is authenticated as ns/echo"
    );
    assert_eq!(f.server.status().ca.refused, 1);
}

#[tokio::test]
async fn ca_refuses_a_foreign_trust_domain() {
    let f = Fixture::start(&mesh(&[]), |_| {}).await;
    let ca = f.ca_client(CallCredentials::none(), Duration::from_secs(3600));
    let other = Identity::new("other.example", "ns", "echo").unwrap();
    let err = ca.fetch(&other).await.unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn lifetime_is_capped_at_secret_ttl_max() {
    let f = Fixture::start(&mesh(&[]), |c| {
        c.secret_ttl_max = Duration::from_secs(600);
    })
    .await;
    let ca = f.ca_client(CallCredentials::none(), Duration::from_secs(86400));
    let cert = ca.fetch(&id("ns", "echo")).await.unwrap();
    let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
    assert_eq!(lifetime, Duration::from_secs(600 + 60));
}

#[tokio::test]
async fn wrong_token_is_unauthenticated_on_both_services() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |c| {
        c.tokens = vec![("right".into(), None)];
    })
    .await;
    let ca = f.ca_client(bearer("wrong"), Duration::from_secs(3600));
    let err = ca.fetch(&id("ns", "a")).await.unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "bearer token not accepted");

    let c = ads_client(&f, bearer("wrong"));
    eventually("the stream refusal seen", || {
        c.status
            .last_error()
            .is_some_and(|e| e.contains("bearer token not accepted"))
    })
    .await;
    assert!(!c.status.is_ready());
    assert!(c.handler.workloads().is_empty());
    assert!(f.server.status().streams.is_empty());
}

#[tokio::test]
async fn unbound_token_may_ask_for_any_identity() {
    let f = Fixture::start(&mesh(&[]), |c| {
        c.tokens = vec![("demo".into(), None)];
    })
    .await;
    let ca = f.ca_client(bearer("demo"), Duration::from_secs(3600));
    ca.fetch(&id("ns", "anyone")).await.unwrap();
    ca.fetch(&id("other", "else")).await.unwrap();
}

#[tokio::test]
async fn paused_server_refuses_both_services_until_resumed() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |_| {}).await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    f.server.pause();
    eventually("the stream dropped", || !c.status.is_connected()).await;
    let ca = f.ca_client(CallCredentials::none(), Duration::from_secs(3600));
    let err = ca.fetch(&id("ns", "a")).await.unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), local_istiod::server::PAUSED);
    assert!(f.server.status().paused);
    assert!(f.server.status().streams.is_empty());
    // Still ready: the client keeps its last state while istiod is away.
    assert!(c.status.is_ready());
    assert_eq!(c.handler.workloads(), ["a"]);

    f.server.resume();
    ca.fetch(&id("ns", "a")).await.unwrap();
    eventually("the stream back", || c.status.is_connected()).await;
}

#[tokio::test]
async fn restarted_server_keeps_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mesh_file = dir.path().join("mesh.yaml");
    write_mesh(&mesh_file, &mesh(&[]));
    let config = || {
        let mut c = Config::new(&mesh_file);
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.state_dir = dir.path().join("state");
        c
    };
    let first = LocalIstiod::start(config()).await.unwrap();
    let root = first.root_pem().to_string();
    first.shutdown().await;
    let second = LocalIstiod::start(config()).await.unwrap();
    assert_eq!(second.root_pem(), root);
}

#[tokio::test]
async fn aws_iam_caller_gets_the_identity_its_role_maps_to() {
    use zs_xds::aws::{
        AwsIamAuth, Credentials, CredentialsEndpoint, EcsCredentialsProvider, StsPresigner,
    };
    use zs_xds::testing::aws::{EcsCredentialsServer, KnownKey, StsCaller, StsStandIn};

    let region = "us-east-2";
    let credentials = Credentials {
        access_key_id: "ASIAEXAMPLEKEY".into(),
        secret_access_key: "secret/key+example".into(),
        session_token: Some("session-token".into()),
        expiration: Some(SystemTime::now() + Duration::from_secs(3600)),
    };
    let sts = StsStandIn::start(region).await.unwrap();
    sts.add_caller(
        "ASIAEXAMPLEKEY",
        StsCaller {
            key: KnownKey {
                secret_access_key: "secret/key+example".into(),
                session_token: Some("session-token".into()),
            },
            arn: "arn:aws:sts::111122223333:assumed-role/echo-task-role/7f3a".into(),
        },
    );
    let ecs = EcsCredentialsServer::start("/v2/credentials/abc", &credentials, None)
        .await
        .unwrap();
    let f = Fixture::start(&mesh(&[]), |c| {
        c.sts_url = Some(sts.url());
        c.iam_roles = vec![(
            "arn:aws:iam::111122223333:role/teams/echo-task-role".into(),
            "ns/echo".parse::<ServiceAccount>().unwrap(),
        )];
    })
    .await;
    let endpoint = CredentialsEndpoint::from_settings(
        &ecs.base_url(),
        Some("/v2/credentials/abc"),
        None,
        None,
    )
    .unwrap();
    let aws = CallCredentials::new(
        Some(TokenSource::Aws(AwsIamAuth::new(
            Arc::new(EcsCredentialsProvider::new(endpoint)),
            StsPresigner::new(region),
        ))),
        "Kubernetes",
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let ca = f.ca_client(aws, Duration::from_secs(3600));
    let cert = ca.fetch(&id("ns", "echo")).await.unwrap();
    assert_eq!(cert.identity(), Some(&id("ns", "echo")));
    // The same role may not ask for another service account.
    let err = ca.fetch(&id("ns", "other")).await.unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        sts.log()[0],
        Ok("arn:aws:sts::111122223333:assumed-role/echo-task-role/7f3a".to_string())
    );
}

#[tokio::test]
async fn aws_iam_caller_with_an_unmapped_role_is_denied() {
    use zs_xds::aws::{
        AwsIamAuth, Credentials, CredentialsEndpoint, EcsCredentialsProvider, StsPresigner,
    };
    use zs_xds::testing::aws::{EcsCredentialsServer, KnownKey, StsCaller, StsStandIn};

    let credentials = Credentials {
        access_key_id: "ASIAOTHER".into(),
        secret_access_key: "s".into(),
        session_token: Some("t".into()),
        expiration: None,
    };
    let sts = StsStandIn::start("us-east-2").await.unwrap();
    sts.add_caller(
        "ASIAOTHER",
        StsCaller {
            key: KnownKey {
                secret_access_key: "s".into(),
                session_token: Some("t".into()),
            },
            arn: "arn:aws:sts::111122223333:assumed-role/intruder/1".into(),
        },
    );
    let ecs = EcsCredentialsServer::start("/creds", &credentials, None)
        .await
        .unwrap();
    let f = Fixture::start(&mesh(&[]), |c| {
        c.sts_url = Some(sts.url());
        c.iam_roles = vec![(
            "arn:aws:iam::111122223333:role/echo-task-role".into(),
            "ns/echo".parse().unwrap(),
        )];
    })
    .await;
    let endpoint =
        CredentialsEndpoint::from_settings(&ecs.base_url(), Some("/creds"), None, None).unwrap();
    let aws = CallCredentials::new(
        Some(TokenSource::Aws(AwsIamAuth::new(
            Arc::new(EcsCredentialsProvider::new(endpoint)),
            StsPresigner::new("us-east-2"),
        ))),
        "Kubernetes",
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let err = f
        .ca_client(aws, Duration::from_secs(3600))
        .fetch(&id("ns", "echo"))
        .await
        .unwrap_err();
    let CaError::Rpc { status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "IAM role arn:aws:iam::111122223333:role/intruder is not mapped to a service account (--iam-role)"
    );
}

#[tokio::test]
async fn admin_endpoint_pauses_and_reports_status() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = f.server.admin_addr().unwrap();
    let (code, body) = http(admin, "POST", "/pause").await;
    assert_eq!((code, body.as_str()), (200, "paused\n"));
    assert!(f.server.status().paused);
    let (code, body) = http(admin, "GET", "/status").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["paused"], true);
    assert_eq!(json["resources"][ADDRESS], 1);
    let (code, _) = http(admin, "POST", "/resume").await;
    assert_eq!(code, 200);
    assert!(!f.server.status().paused);
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

#[tokio::test]
async fn shutdown_ends_open_streams_instead_of_waiting_for_clients() {
    let f = Fixture::start(&mesh(&[("a", "10.0.0.1")]), |_| {}).await;
    let mut c = ads_client(&f, CallCredentials::none());
    ready(&mut c).await;
    let Fixture {
        dir: _dir, server, ..
    } = f;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown completes while a client is connected");
    eventually("the client saw the stream end", || !c.status.is_connected()).await;
}
