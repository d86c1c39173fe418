//! AWS IAM authentication: credentials from a stand-in ECS endpoint, SigV4
//! presigning verified by an independent STS stand-in, istiod's role mapping.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zs_xds::aws::{
    AwsError, Credentials, CredentialsEndpoint, EcsCredentialsProvider, PresignedRequest,
    StsPresigner,
};
use zs_xds::testing::aws::{
    AwsAuthError, EcsCredentialsServer, KnownKey, SigV4Error, StsCaller, StsStandIn, authenticate,
    decode_authorization, verify_presigned_request,
};

const REGION: &str = "us-east-2";
const PATH: &str = "/v2/credentials/0b7c5f2e";
const CALLER_ARN: &str = "arn:aws:sts::123456789012:assumed-role/echo-task-role/ecs-task-9d1";

fn credentials(key: &str, expires_in: Duration) -> Credentials {
    Credentials {
        access_key_id: key.into(),
        secret_access_key: format!("secret-of-{key}"),
        session_token: Some(format!("token-of-{key}")),
        expiration: Some(SystemTime::now() + expires_in),
    }
}

async fn sts_knowing(creds: &Credentials) -> StsStandIn {
    let sts = StsStandIn::start(REGION).await.unwrap();
    sts.add_caller(
        &creds.access_key_id,
        StsCaller {
            key: KnownKey {
                secret_access_key: creds.secret_access_key.clone(),
                session_token: creds.session_token.clone(),
            },
            arn: CALLER_ARN.into(),
        },
    );
    sts
}

fn encode(request: &PresignedRequest) -> String {
    format!(
        "AWS {}",
        STANDARD.encode(serde_json::to_vec(request).unwrap())
    )
}

fn provider(ecs: &EcsCredentialsServer) -> EcsCredentialsProvider {
    EcsCredentialsProvider::new(
        CredentialsEndpoint::from_settings(&ecs.base_url(), Some(PATH), None, None).unwrap(),
    )
}

/// Presigns now with `creds`, lets `tamper` change the request, and replays it
/// through istiod's flow to the STS stand-in.
async fn replay_tampered(
    creds: &Credentials,
    sts: &StsStandIn,
    tamper: impl FnOnce(&mut PresignedRequest),
) -> Result<String, AwsAuthError> {
    let mut request = StsPresigner::new(REGION)
        .presign_request(creds, SystemTime::now())
        .unwrap();
    tamper(&mut request);
    authenticate(&encode(&request), &sts.url())
        .await
        .map(|c| c.role_arn)
}

fn refused_with(result: Result<String, AwsAuthError>, code: &str) {
    match result {
        Err(AwsAuthError::Refused { status, body }) => {
            assert_eq!(status, http::StatusCode::FORBIDDEN);
            assert!(body.contains(code), "expected {code} in {body}");
        }
        other => panic!("expected STS to refuse with {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn credentials_come_from_the_relative_uri() {
    let creds = credentials("ASIAONE", Duration::from_secs(3600));
    let ecs = EcsCredentialsServer::start(PATH, &creds, None)
        .await
        .unwrap();
    let got = provider(&ecs).credentials().await.unwrap();
    assert_eq!(got.access_key_id, "ASIAONE");
    assert_eq!(got.secret_access_key, "secret-of-ASIAONE");
    assert_eq!(got.session_token.as_deref(), Some("token-of-ASIAONE"));
    let expected = creds.expiration.unwrap();
    let got_exp = got.expiration.unwrap();
    // The document carries whole seconds.
    assert!(
        got_exp <= expected && expected.duration_since(got_exp).unwrap() < Duration::from_secs(1)
    );
}

#[tokio::test]
async fn full_uri_sends_the_authorization_token() {
    let creds = credentials("ASIAFULL", Duration::from_secs(3600));
    let ecs = EcsCredentialsServer::start(PATH, &creds, Some("pod-identity-token"))
        .await
        .unwrap();
    let full = format!("{}{PATH}", ecs.base_url());

    let good =
        CredentialsEndpoint::from_settings("unused", None, Some(&full), Some("pod-identity-token"))
            .unwrap();
    assert_eq!(good.fetch().await.unwrap().access_key_id, "ASIAFULL");

    let bad =
        CredentialsEndpoint::from_settings("unused", None, Some(&full), Some("wrong")).unwrap();
    match bad.fetch().await.unwrap_err() {
        AwsError::FetchStatus { status, .. } => assert_eq!(status, http::StatusCode::UNAUTHORIZED),
        other => panic!("expected a 401, got {other}"),
    }
}

#[tokio::test]
async fn unknown_credentials_path_is_an_error_status() {
    let creds = credentials("ASIAX", Duration::from_secs(3600));
    let ecs = EcsCredentialsServer::start(PATH, &creds, None)
        .await
        .unwrap();
    let endpoint = CredentialsEndpoint::from_settings(
        &ecs.base_url(),
        Some("/v2/credentials/other"),
        None,
        None,
    )
    .unwrap();
    let err = EcsCredentialsProvider::new(endpoint)
        .credentials()
        .await
        .unwrap_err();
    assert!(
        matches!(err, AwsError::FetchStatus { status, .. } if status == http::StatusCode::NOT_FOUND),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_are_cached_until_shortly_before_expiry() {
    let creds = credentials("ASIACACHED", Duration::from_secs(3600));
    let ecs = EcsCredentialsServer::start(PATH, &creds, None)
        .await
        .unwrap();
    let provider = provider(&ecs);
    provider.credentials().await.unwrap();
    ecs.set_credentials(&credentials("ASIANEWER", Duration::from_secs(3600)));
    let again = provider.credentials().await.unwrap();
    assert_eq!(again.access_key_id, "ASIACACHED");
    assert_eq!(ecs.requests(), 1);
}

#[tokio::test]
async fn credentials_within_the_refresh_margin_are_fetched_again() {
    // Expires in 2 minutes, inside the 5-minute refresh margin.
    let creds = credentials("ASIAOLD", Duration::from_secs(120));
    let ecs = EcsCredentialsServer::start(PATH, &creds, None)
        .await
        .unwrap();
    let provider = provider(&ecs);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id,
        "ASIAOLD"
    );
    ecs.set_credentials(&credentials("ASIAROTATED", Duration::from_secs(3600)));
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id,
        "ASIAROTATED"
    );
    assert_eq!(ecs.requests(), 2);
}

#[tokio::test]
async fn still_valid_credentials_are_used_when_the_endpoint_fails() {
    let creds = credentials("ASIASTILL", Duration::from_secs(120));
    let ecs = EcsCredentialsServer::start(PATH, &creds, None)
        .await
        .unwrap();
    let provider = provider(&ecs);
    provider.credentials().await.unwrap();
    drop(ecs);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id,
        "ASIASTILL"
    );
}

#[tokio::test]
async fn presigned_request_is_accepted_by_sts_and_maps_to_the_role() {
    let creds = credentials("ASIASIGNED", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let role = replay_tampered(&creds, &sts, |_| {}).await.unwrap();
    assert_eq!(role, "arn:aws:iam::123456789012:role/echo-task-role");
    assert_eq!(sts.log(), [Ok(CALLER_ARN.to_string())]);
}

#[tokio::test]
async fn header_value_decodes_to_the_documented_json() {
    let creds = credentials("ASIAJSON", Duration::from_secs(3600));
    let value = StsPresigner::new(REGION)
        .presign(&creds, SystemTime::now())
        .unwrap();
    let decoded = decode_authorization(&value).unwrap();
    assert_eq!(decoded.host, "sts.us-east-2.amazonaws.com");
    assert_eq!(decoded.token, "");
    let names: Vec<&str> = decoded.headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Authorization",
            "Content-Type",
            "Host",
            "X-Amz-Date",
            "X-Amz-Security-Token"
        ]
    );
}

#[tokio::test]
async fn tampered_date_fails_verification() {
    let creds = credentials("ASIATAMPER", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let result = replay_tampered(&creds, &sts, |r| {
        let date = r.headers.get_mut("X-Amz-Date").unwrap();
        // Change the last digit of the seconds: still fresh, but not what was signed.
        let i = date.len() - 2;
        let changed = if &date[i..=i] == "0" { "1" } else { "0" };
        date.replace_range(i..=i, changed);
    })
    .await;
    refused_with(result, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn tampered_signature_fails_verification() {
    let creds = credentials("ASIASIG", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let result = replay_tampered(&creds, &sts, |r| {
        let auth = r.headers.get_mut("Authorization").unwrap();
        let flipped = if auth.ends_with('0') { '1' } else { '0' };
        auth.pop();
        auth.push(flipped);
    })
    .await;
    refused_with(result, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn signature_for_another_region_is_refused() {
    let creds = credentials("ASIAREGION", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let mut request = StsPresigner::new("eu-west-1")
        .presign_request(&creds, SystemTime::now())
        .unwrap();
    // Sent to the us-east-2 endpoint, as a confused client might.
    request.host = "sts.us-east-2.amazonaws.com".into();
    let result = authenticate(&encode(&request), &sts.url())
        .await
        .map(|c| c.role_arn);
    refused_with(result, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn wrong_secret_key_fails_verification() {
    let creds = credentials("ASIAWRONG", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let forged = Credentials {
        secret_access_key: "guessed".into(),
        ..creds.clone()
    };
    refused_with(
        replay_tampered(&forged, &sts, |_| {}).await,
        "SignatureDoesNotMatch",
    );
}

#[tokio::test]
async fn replaced_session_token_is_refused() {
    let creds = credentials("ASIATOKEN", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let result = replay_tampered(&creds, &sts, |r| {
        r.headers
            .insert("X-Amz-Security-Token".into(), "someone-elses-token".into());
    })
    .await;
    refused_with(result, "InvalidClientTokenId");
}

#[tokio::test]
async fn signature_older_than_fifteen_minutes_is_refused() {
    let creds = credentials("ASIASTALE", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let request = StsPresigner::new(REGION)
        .presign_request(&creds, SystemTime::now() - Duration::from_secs(20 * 60))
        .unwrap();
    let result = authenticate(&encode(&request), &sts.url())
        .await
        .map(|c| c.role_arn);
    refused_with(result, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn unknown_access_key_is_refused() {
    let creds = credentials("ASIAKNOWN", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let stranger = credentials("ASIASTRANGER", Duration::from_secs(3600));
    refused_with(
        replay_tampered(&stranger, &sts, |_| {}).await,
        "InvalidClientTokenId",
    );
}

#[tokio::test]
async fn istiod_refuses_to_replay_to_a_non_sts_host() {
    let creds = credentials("ASIAHOST", Duration::from_secs(3600));
    let sts = sts_knowing(&creds).await;
    let result = replay_tampered(&creds, &sts, |r| {
        r.host = "metadata.internal.example".into();
    })
    .await;
    assert!(matches!(result, Err(AwsAuthError::NotSts(_))), "{result:?}");
    assert!(sts.log().is_empty());
}

#[tokio::test]
async fn user_callers_are_not_mapped_to_roles() {
    let creds = credentials("ASIAUSER", Duration::from_secs(3600));
    let sts = StsStandIn::start(REGION).await.unwrap();
    sts.add_caller(
        "ASIAUSER",
        StsCaller {
            key: KnownKey {
                secret_access_key: creds.secret_access_key.clone(),
                session_token: creds.session_token.clone(),
            },
            arn: "arn:aws:iam::123456789012:user/alice".into(),
        },
    );
    let result = replay_tampered(&creds, &sts, |_| {}).await;
    assert!(
        matches!(result, Err(AwsAuthError::NotAssumedRole(_))),
        "{result:?}"
    );
}

#[test]
fn presigned_request_verifies_in_memory() {
    let creds = credentials("ASIAMEM", Duration::from_secs(3600));
    let now = SystemTime::now();
    let mut request = StsPresigner::new(REGION)
        .presign_request(&creds, now)
        .unwrap();
    let keys = |akid: &str| {
        (akid == "ASIAMEM").then(|| KnownKey {
            secret_access_key: creds.secret_access_key.clone(),
            session_token: creds.session_token.clone(),
        })
    };
    assert_eq!(
        verify_presigned_request(&request, keys, REGION, now).unwrap(),
        "ASIAMEM"
    );
    request
        .headers
        .insert("Content-Type".into(), "application/json".into());
    // The content type istiod replays with is fixed, so a changed one is ignored...
    assert!(verify_presigned_request(&request, keys, REGION, now).is_ok());
    // ...but a changed date is not.
    request
        .headers
        .insert("X-Amz-Date".into(), "20200101T000000Z".into());
    assert!(matches!(
        verify_presigned_request(&request, keys, REGION, now),
        Err(SigV4Error::Expired(_))
    ));
}
