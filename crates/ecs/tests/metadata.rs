//! Task metadata v4 over real HTTP: a local endpoint on 127.0.0.1 serves
//! documents shaped like Fargate's (`tests/fixtures/fargate-task-metadata.json`
//! follows AWS's documented v4 `/task` response for a Fargate task with two
//! containers) and misbehaves in the ways a starting task's endpoint can.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use zs_ecs::{
    FetchOptions, MetadataError, TaskMetadata, fetch_task_metadata, fetch_task_metadata_with,
    parse_task_metadata, workload_info,
};

const FARGATE_TASK: &str = include_str!("fixtures/fargate-task-metadata.json");

/// What the endpoint does with one request.
#[derive(Clone)]
enum Reply {
    Ok(&'static str),
    Status(u16),
    Body(Vec<u8>),
    /// Accept the request and never answer.
    Hang,
}

/// A metadata endpoint on loopback answering the n-th request with
/// `replies[n]` (the last reply repeats), recording request paths.
struct Endpoint {
    base_uri: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    async fn start(replies: Vec<Reply>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let replies = replies.clone();
                        async move {
                            let index = {
                                let mut paths = seen.lock().expect("lock");
                                paths.push(request.uri().path().to_owned());
                                paths.len() - 1
                            };
                            let reply = replies[index.min(replies.len() - 1)].clone();
                            let (status, body) = match reply {
                                Reply::Ok(body) => (200, body.as_bytes().to_vec()),
                                Reply::Status(status) => (status, b"unavailable".to_vec()),
                                Reply::Body(body) => (200, body),
                                Reply::Hang => std::future::pending().await,
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() =
                                StatusCode::from_u16(status).expect("valid status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Endpoint {
            base_uri: format!("http://{addr}/v4/5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a-1486753810"),
            paths,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.paths.lock().expect("lock").clone()
    }
}

/// Short waits between attempts; a generous deadline so that a loaded test
/// machine never turns an answered request into a timeout.
fn quick(attempts: u32) -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(10),
        attempts,
        backoff: Duration::from_millis(10),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

#[tokio::test]
async fn fargate_task_metadata_gives_the_task_identity() {
    let endpoint = Endpoint::start(vec![Reply::Ok(FARGATE_TASK)]).await;
    let task = fetch_task_metadata(&endpoint.base_uri)
        .await
        .expect("metadata");
    assert_eq!(
        task,
        TaskMetadata {
            task_arn: "arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a"
                .into(),
            account: "111122223333".into(),
            region: "us-east-2".into(),
            cluster: "ecs-demo-1".into(),
            task_id: "5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a".into(),
            family: "echo-service".into(),
            revision: "4".into(),
            availability_zone: "us-east-2b".into(),
            ips: vec![ip("10.20.1.147"), ip("2600:1f16:d2c:3a01:8c41:27f5:9a2b:61e0")],
        }
    );
    assert_eq!(
        endpoint.requests(),
        ["/v4/5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a-1486753810/task"]
    );
}

#[tokio::test]
async fn workload_name_follows_istiod_naming() {
    let endpoint = Endpoint::start(vec![Reply::Ok(FARGATE_TASK)]).await;
    let task = fetch_task_metadata(&endpoint.base_uri)
        .await
        .expect("metadata");
    assert_eq!(
        task.workload_name(),
        "ecs-task-111122223333-us-east-2-ecs-demo-1-5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a"
    );
    assert_eq!(task.locality(), ("us-east-2", "us-east-2b"));
}

#[tokio::test]
async fn server_errors_at_task_start_are_retried() {
    let endpoint = Endpoint::start(vec![
        Reply::Status(503),
        Reply::Status(500),
        Reply::Ok(FARGATE_TASK),
    ])
    .await;
    let task = fetch_task_metadata_with(&endpoint.base_uri, &quick(5))
        .await
        .expect("metadata after retries");
    assert_eq!(task.cluster, "ecs-demo-1");
    assert_eq!(endpoint.requests().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_attempts() {
    let endpoint = Endpoint::start(vec![Reply::Status(503)]).await;
    let err = fetch_task_metadata_with(&endpoint.base_uri, &quick(3))
        .await
        .expect_err("always 503");
    assert_eq!(
        err.to_string(),
        format!(
            "task metadata unavailable after 3 attempts: the task metadata endpoint {}/task answered HTTP 503",
            endpoint.base_uri
        )
    );
    assert_eq!(endpoint.requests().len(), 3);
}

#[tokio::test]
async fn not_found_is_reported_without_retrying() {
    let endpoint = Endpoint::start(vec![Reply::Status(404)]).await;
    let err = fetch_task_metadata_with(&endpoint.base_uri, &quick(5))
        .await
        .expect_err("404");
    assert!(
        matches!(err, MetadataError::Status { status: 404, .. }),
        "{err}"
    );
    assert_eq!(endpoint.requests().len(), 1);
}

#[tokio::test]
async fn bad_json_is_rejected() {
    let endpoint = Endpoint::start(vec![Reply::Ok("{\"TaskARN\": ")]).await;
    let err = fetch_task_metadata_with(&endpoint.base_uri, &quick(5))
        .await
        .expect_err("truncated JSON");
    assert_eq!(
        err.to_string(),
        "task metadata is not valid JSON: EOF while parsing a value at line 1 column 12"
    );
    assert_eq!(endpoint.requests().len(), 1);
}

#[tokio::test]
async fn missing_task_arn_is_rejected() {
    let endpoint = Endpoint::start(vec![Reply::Ok(
        r#"{"Cluster": "ecs-demo-1", "Family": "echo-service", "Containers": []}"#,
    )])
    .await;
    let err = fetch_task_metadata_with(&endpoint.base_uri, &quick(1))
        .await
        .expect_err("no TaskARN");
    assert_eq!(err.to_string(), "task metadata has no TaskARN field");
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    let endpoint = Endpoint::start(vec![Reply::Hang]).await;
    let options = FetchOptions {
        timeout: Duration::from_millis(300),
        ..quick(1)
    };
    let err = fetch_task_metadata_with(&endpoint.base_uri, &options)
        .await
        .expect_err("no answer");
    assert_eq!(
        err.to_string(),
        format!(
            "the task metadata endpoint {}/task did not answer within 300ms",
            endpoint.base_uri
        )
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    // A port that was just free: nothing listens on it any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = fetch_task_metadata_with(&format!("http://{addr}/v4/abc"), &quick(1))
        .await
        .expect_err("refused");
    assert!(matches!(err, MetadataError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn oversized_response_is_rejected() {
    let endpoint = Endpoint::start(vec![Reply::Body(vec![b' '; 2 * 1024 * 1024])]).await;
    let err = fetch_task_metadata_with(&endpoint.base_uri, &quick(1))
        .await
        .expect_err("too large");
    assert!(matches!(err, MetadataError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn https_base_uri_is_rejected_before_any_request() {
    let err = fetch_task_metadata("https://169.254.170.2/v4/abc")
        .await
        .expect_err("https");
    assert_eq!(
        err.to_string(),
        "invalid task metadata URI \"https://169.254.170.2/v4/abc\": expected http://host[:port]/path"
    );
}

#[test]
fn old_task_arn_takes_the_cluster_name_from_the_cluster_arn() {
    let task = parse_task_metadata(
        br#"{
            "Cluster": "arn:aws:ecs:eu-west-1:444455556666:cluster/payments",
            "TaskARN": "arn:aws:ecs:eu-west-1:444455556666:task/8f1e2c3d-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "Family": "payments",
            "Revision": "7",
            "AvailabilityZone": "eu-west-1c",
            "Containers": [{"Name": "payments", "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["172.31.9.40"]}]}]
        }"#,
    )
    .expect("metadata");
    assert_eq!(
        task.workload_name(),
        "ecs-task-444455556666-eu-west-1-payments-8f1e2c3d-4b5a-6978-8a9b-0c1d2e3f4a5b"
    );
}

#[test]
fn old_task_arn_accepts_a_plain_cluster_name() {
    let task = parse_task_metadata(
        br#"{
            "Cluster": "default",
            "TaskARN": "arn:aws:ecs:eu-west-1:444455556666:task/8f1e2c3d-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "Containers": [{"Name": "app", "Networks": [{"IPv4Addresses": ["172.31.9.40"]}]}]
        }"#,
    )
    .expect("metadata");
    assert_eq!(task.cluster, "default");
    assert_eq!(task.family, "");
    assert_eq!(task.availability_zone, "");
}

#[test]
fn old_task_arn_without_cluster_field_is_rejected() {
    let err = parse_task_metadata(
        br#"{"TaskARN": "arn:aws:ecs:eu-west-1:444455556666:task/8f1e2c3d", "Containers": []}"#,
    )
    .expect_err("no cluster");
    assert_eq!(err.to_string(), "task metadata has no Cluster field");
}

#[test]
fn numeric_revision_is_accepted() {
    let task = parse_task_metadata(
        br#"{"TaskARN": "arn:aws:ecs:us-east-2:111122223333:task/c/t", "Revision": 12,
             "Containers": [{"Networks": [{"IPv4Addresses": ["10.0.0.5"]}]}]}"#,
    )
    .expect("metadata");
    assert_eq!(task.revision, "12");
}

#[test]
fn addresses_are_listed_once_ipv4_first() {
    let task = parse_task_metadata(
        br#"{"TaskARN": "arn:aws:ecs:us-east-2:111122223333:task/c/t", "Containers": [
            {"Name": "a", "Networks": [{"IPv6Addresses": ["2600:1f16::7"], "IPv4Addresses": ["10.0.0.5"]}]},
            {"Name": "b", "Networks": [{"IPv4Addresses": ["10.0.0.5", "10.0.0.6"], "IPv6Addresses": ["2600:1f16::7"]}]},
            {"Name": "c", "Networks": null}
        ]}"#,
    )
    .expect("metadata");
    assert_eq!(
        task.task_ips(),
        [ip("10.0.0.5"), ip("10.0.0.6"), ip("2600:1f16::7")]
    );
}

#[test]
fn malformed_address_is_rejected_with_its_container() {
    let err = parse_task_metadata(
        br#"{"TaskARN": "arn:aws:ecs:us-east-2:111122223333:task/c/t", "Containers": [
            {"Name": "app", "Networks": [{"IPv4Addresses": ["10.0.0.300"]}]}]}"#,
    )
    .expect_err("bad IP");
    assert_eq!(
        err.to_string(),
        "container \"app\" lists \"10.0.0.300\" as an address, which is not an IP address"
    );
}

#[test]
fn task_without_addresses_is_rejected() {
    let err = parse_task_metadata(
        br#"{"TaskARN": "arn:aws:ecs:us-east-2:111122223333:task/c/t", "Containers": [
            {"Name": "app", "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": []}]}]}"#,
    )
    .expect_err("no IPs");
    assert!(matches!(err, MetadataError::NoAddresses), "{err}");
}

#[test]
fn wrongly_typed_field_is_a_json_error() {
    let err = parse_task_metadata(br#"{"TaskARN": 42}"#).expect_err("number ARN");
    assert!(matches!(err, MetadataError::Json(_)), "{err}");
}

#[test]
fn workload_info_uses_the_token_identity() {
    let task = parse_task_metadata(FARGATE_TASK.as_bytes()).expect("metadata");
    let info = workload_info("ecs-demo-1", "echo-sa", &task);
    assert_eq!(
        info.to_string(),
        "ecs-demo-1/ecs-task-111122223333-us-east-2-ecs-demo-1-5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a/echo-sa"
    );
}

#[test]
fn workload_info_defaults_match_istiod_for_untagged_tasks() {
    let task = parse_task_metadata(FARGATE_TASK.as_bytes()).expect("metadata");
    let info = workload_info("", "", &task);
    assert_eq!(info.namespace, "istio-system");
    assert_eq!(info.service_account, "default");
}

#[test]
fn every_truncated_document_is_an_error_not_a_panic() {
    let document = FARGATE_TASK.trim_end().as_bytes();
    assert!(parse_task_metadata(document).is_ok());
    for end in 0..document.len() {
        assert!(
            parse_task_metadata(&document[..end]).is_err(),
            "a prefix of {end} bytes was accepted"
        );
    }
}
