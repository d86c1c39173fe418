//! Credentials as istiod receives them on the xDS stream, over real gRPC and TLS.

mod common;

use std::sync::Arc;

use common::*;
use zs_xds::auth::{BearerToken, CallCredentials, TokenSource};
use zs_xds::aws::{
    AwsIamAuth, Credentials, CredentialsEndpoint, EcsCredentialsProvider, StsPresigner,
};
use zs_xds::channel::Purpose;
use zs_xds::testing::aws::{EcsCredentialsServer, KnownKey, StsCaller, StsStandIn, authenticate};

fn header<'a>(md: &'a tonic::metadata::MetadataMap, name: &str) -> Option<&'a str> {
    md.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn literal_bearer_token_and_cluster_id_reach_istiod() {
    let istiod = Istiod::start().await;
    let credentials = CallCredentials::new(
        Some(TokenSource::Bearer(BearerToken::from_setting(
            "eyJhbGciOiJSUzI1NiJ9.e30.sig",
        ))),
        "Kubernetes",
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let _client = start_client(&istiod.channel_config(Purpose::Xds), credentials);

    let first = istiod.ads.next_request().await;
    assert_eq!(
        header(&first.metadata, "authorization"),
        Some("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")
    );
    assert_eq!(header(&first.metadata, "clusterid"), Some("Kubernetes"));
}

#[tokio::test]
async fn token_file_is_read_again_for_the_next_stream() {
    let istiod = Istiod::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("istio-token");
    std::fs::write(&path, "token-one\n").unwrap();
    let credentials = CallCredentials::new(
        Some(TokenSource::Bearer(BearerToken::from_setting(
            path.to_str().unwrap(),
        ))),
        "cluster-a",
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let _client = start_client(&istiod.channel_config(Purpose::Xds), credentials);
    let first = istiod.ads.next_request().await;
    assert_eq!(
        header(&first.metadata, "authorization"),
        Some("Bearer token-one")
    );
    istiod.ads.next_request().await;

    std::fs::write(&path, "token-two\n").unwrap();
    istiod
        .ads
        .end_stream(tonic::Status::unavailable("token expired"))
        .await;
    let again = istiod.ads.next_request().await;
    assert_eq!(again.stream, 2);
    assert_eq!(
        header(&again.metadata, "authorization"),
        Some("Bearer token-two")
    );
    assert_eq!(header(&again.metadata, "clusterid"), Some("cluster-a"));
}

#[tokio::test]
async fn extra_headers_reach_istiod_without_a_token() {
    let istiod = Istiod::start().await;
    let credentials = CallCredentials::new(
        None,
        "Kubernetes",
        [("X-Tenant", "blue"), ("x-trace", "on")],
    )
    .unwrap();
    let _client = start_client(&istiod.channel_config(Purpose::Xds), credentials);
    let first = istiod.ads.next_request().await;
    assert_eq!(header(&first.metadata, "x-tenant"), Some("blue"));
    assert_eq!(header(&first.metadata, "x-trace"), Some("on"));
    assert_eq!(header(&first.metadata, "authorization"), None);
    assert_eq!(header(&first.metadata, "clusterid"), None);
}

#[tokio::test]
async fn aws_identity_reaches_istiod_and_maps_to_the_task_role() {
    const REGION: &str = "us-east-2";
    let credentials = Credentials {
        access_key_id: "ASIATESTKEY0001".into(),
        secret_access_key: "c2VjcmV0LWtleS1mb3ItdGVzdHM".into(),
        session_token: Some("IQoJb3JpZ2luX2VjEJr//////////session".into()),
        expiration: Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)),
    };
    let ecs = EcsCredentialsServer::start("/v2/credentials/task-1", &credentials, None)
        .await
        .unwrap();
    let sts = StsStandIn::start(REGION).await.unwrap();
    sts.add_caller(
        "ASIATESTKEY0001",
        StsCaller {
            key: KnownKey {
                secret_access_key: credentials.secret_access_key.clone(),
                session_token: credentials.session_token.clone(),
            },
            arn: "arn:aws:sts::111122223333:assumed-role/echo-task-role/4f2a9c".into(),
        },
    );
    let endpoint = CredentialsEndpoint::from_settings(
        &ecs.base_url(),
        Some("/v2/credentials/task-1"),
        None,
        None,
    )
    .unwrap();
    let aws = AwsIamAuth::new(
        Arc::new(EcsCredentialsProvider::new(endpoint)),
        StsPresigner::new(REGION),
    );
    let call_credentials = CallCredentials::new(
        Some(TokenSource::Aws(aws)),
        "ecs-cluster",
        Vec::<(String, String)>::new(),
    )
    .unwrap();

    let istiod = Istiod::start().await;
    let _client = start_client(&istiod.channel_config(Purpose::Xds), call_credentials);
    let first = istiod.ads.next_request().await;
    assert_eq!(header(&first.metadata, "clusterid"), Some("ecs-cluster"));
    let authorization = header(&first.metadata, "authorization").unwrap();
    assert!(authorization.starts_with("AWS "), "{authorization}");

    // istiod's side: replay to STS, read the caller, map the role.
    let caller = authenticate(authorization, &sts.url()).await.unwrap();
    assert_eq!(
        caller.arn,
        "arn:aws:sts::111122223333:assumed-role/echo-task-role/4f2a9c"
    );
    assert_eq!(
        caller.role_arn,
        "arn:aws:iam::111122223333:role/echo-task-role"
    );
    assert_eq!(ecs.requests(), 1);
}
