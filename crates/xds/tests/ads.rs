//! Delta ADS client against a scripted istiod over real gRPC and TLS.

mod common;

use common::*;
use prost_types::value::Kind;
use zs_xds::auth::CallCredentials;
use zs_xds::channel::Purpose;
use zs_xds::testing::ads::{resource, response};

/// Reads the two initial requests of a stream.
async fn initial_requests(
    istiod: &Istiod,
) -> (
    zs_xds::testing::ads::ReceivedRequest,
    zs_xds::testing::ads::ReceivedRequest,
) {
    let first = istiod.ads.next_request().await;
    let second = istiod.ads.next_request().await;
    (first, second)
}

/// Serves the first response of both types and reads their ACKs.
async fn sync_both(istiod: &Istiod) {
    istiod
        .ads
        .push(response(
            ADDRESS,
            "a1",
            vec![resource("wl-1", "v1", ADDRESS, b"w1".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    istiod
        .ads
        .push(response(
            AUTHZ,
            "p1",
            vec![resource("ns/allow", "v1", AUTHZ, b"p".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
}

#[tokio::test]
async fn initial_requests_subscribe_to_addresses_then_authorization() {
    let istiod = Istiod::start().await;
    let _client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );

    let (first, second) = initial_requests(&istiod).await;
    assert_eq!(first.request.type_url, ADDRESS);
    assert_eq!(second.request.type_url, AUTHZ);
    for r in [&first.request, &second.request] {
        assert!(
            r.resource_names_subscribe.is_empty(),
            "wildcard subscription"
        );
        assert!(r.resource_names_unsubscribe.is_empty());
        assert!(r.initial_resource_versions.is_empty());
        assert_eq!(r.response_nonce, "");
        let node = r.node.as_ref().expect("node in initial request");
        assert_eq!(
            node.id,
            "ztunnel~10.0.0.5~echo.ecs-demo~ecs-demo.svc.cluster.local"
        );
        let meta = node.metadata.as_ref().unwrap();
        assert_eq!(
            meta.fields["CLUSTER_ID"].kind,
            Some(Kind::StringValue("ecs".into()))
        );
        assert_eq!(
            meta.fields["NAMESPACE"].kind,
            Some(Kind::StringValue("ecs-demo".into()))
        );
    }
}

#[tokio::test]
async fn ack_carries_the_response_nonce_and_no_node() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    istiod
        .ads
        .push(response(
            ADDRESS,
            "nonce-17",
            vec![resource("wl-1", "v1", ADDRESS, b"w1".to_vec())],
            &[],
        ))
        .await;
    let ack = istiod.ads.next_request().await.request;
    assert_eq!(ack.type_url, ADDRESS);
    assert_eq!(ack.response_nonce, "nonce-17");
    assert_eq!(ack.error_detail, None);
    assert_eq!(ack.node, None);
    assert!(ack.resource_names_subscribe.is_empty());
    assert_eq!(client.handler.names(ADDRESS), ["wl-1"]);
}

#[tokio::test]
async fn nack_names_each_rejected_resource_while_valid_ones_apply() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    istiod
        .ads
        .push(response(
            ADDRESS,
            "n1",
            vec![
                resource("good-1", "v1", ADDRESS, b"ok".to_vec()),
                resource("bad-1", "v1", ADDRESS, b"bad".to_vec()),
                resource("good-2", "v1", ADDRESS, b"ok".to_vec()),
                resource("bad-2", "v1", ADDRESS, b"bad".to_vec()),
            ],
            &[],
        ))
        .await;
    let nack = istiod.ads.next_request().await.request;
    assert_eq!(nack.response_nonce, "n1");
    let detail = nack.error_detail.expect("NACK carries error_detail");
    assert_eq!(detail.code, 0);
    assert_eq!(detail.message, "bad-1: malformed; bad-2: malformed");
    assert!(detail.details.is_empty());
    assert_eq!(client.handler.names(ADDRESS), ["good-1", "good-2"]);
}

#[tokio::test]
async fn resource_without_body_is_rejected_by_the_client() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    let mut empty = resource("empty", "v1", ADDRESS, Vec::new());
    empty.resource = None;
    istiod
        .ads
        .push(response(
            ADDRESS,
            "n1",
            vec![empty, resource("ok", "v1", ADDRESS, b"x".to_vec())],
            &[],
        ))
        .await;
    let nack = istiod.ads.next_request().await.request;
    assert_eq!(
        nack.error_detail.unwrap().message,
        "empty: resource has no body"
    );
    assert_eq!(client.handler.names(ADDRESS), ["ok"]);
}

#[tokio::test]
async fn removals_are_delivered_to_the_handler() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    istiod
        .ads
        .push(response(
            ADDRESS,
            "n1",
            vec![
                resource("wl-1", "v1", ADDRESS, b"a".to_vec()),
                resource("ns/svc.example", "v1", ADDRESS, b"s".to_vec()),
            ],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    istiod
        .ads
        .push(response(ADDRESS, "n2", vec![], &["wl-1"]))
        .await;
    let ack = istiod.ads.next_request().await.request;
    assert_eq!(ack.response_nonce, "n2");
    assert_eq!(ack.error_detail, None);
    assert_eq!(client.handler.names(ADDRESS), ["ns/svc.example"]);
    let calls = client.handler.calls.lock().unwrap().clone();
    assert_eq!(calls.last().unwrap().2, ["wl-1"]);
}

#[tokio::test]
async fn response_of_an_unsubscribed_type_is_acked_without_calling_the_handler() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    let other = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    istiod
        .ads
        .push(response(
            other,
            "x1",
            vec![resource("c", "1", other, b"bad".to_vec())],
            &[],
        ))
        .await;
    let ack = istiod.ads.next_request().await.request;
    assert_eq!(ack.type_url, other);
    assert_eq!(ack.response_nonce, "x1");
    assert_eq!(ack.error_detail, None);
    assert_eq!(client.handler.call_count(), 0);
}

#[tokio::test]
async fn readiness_waits_for_the_first_response_of_both_types() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;
    assert!(!client.status.is_ready());

    istiod
        .ads
        .push(response(
            ADDRESS,
            "a1",
            vec![resource("wl-1", "v1", ADDRESS, b"w".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    assert!(!client.status.is_ready(), "Authorization not received yet");

    istiod.ads.push(response(AUTHZ, "p1", vec![], &[])).await;
    istiod.ads.next_request().await;
    let mut status = client.status.clone();
    within("readiness", status.wait_ready()).await;
    assert!(client.status.is_ready());
}

#[tokio::test]
async fn a_nacked_first_response_does_not_make_the_type_ready() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    istiod
        .ads
        .push(response(
            ADDRESS,
            "a1",
            vec![resource("wl-bad", "v1", ADDRESS, b"bad".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    istiod.ads.push(response(AUTHZ, "p1", vec![], &[])).await;
    istiod.ads.next_request().await;
    assert!(!client.status.is_ready());

    istiod
        .ads
        .push(response(
            ADDRESS,
            "a2",
            vec![resource("wl-bad", "v2", ADDRESS, b"fixed".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    let mut status = client.status.clone();
    within("readiness", status.wait_ready()).await;
}

#[tokio::test]
async fn reconnect_after_istiod_restart_sends_initial_resource_versions() {
    let mut istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;

    istiod
        .ads
        .push(response(
            ADDRESS,
            "a1",
            vec![
                resource("wl-1", "v1", ADDRESS, b"a".to_vec()),
                resource("wl-2", "v3", ADDRESS, b"a".to_vec()),
                resource("wl-bad", "v1", ADDRESS, b"bad".to_vec()),
                resource("wl-gone", "v1", ADDRESS, b"a".to_vec()),
            ],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;
    istiod
        .ads
        .push(response(ADDRESS, "a2", vec![], &["wl-gone"]))
        .await;
    istiod.ads.next_request().await;
    istiod
        .ads
        .push(response(
            AUTHZ,
            "p1",
            vec![resource("ns/allow", "v7", AUTHZ, b"p".to_vec())],
            &[],
        ))
        .await;
    istiod.ads.next_request().await;

    istiod.restart().await;

    let (first, second) = initial_requests(&istiod).await;
    assert_eq!(first.stream, 2);
    assert_eq!(first.request.type_url, ADDRESS);
    assert!(first.request.node.is_some());
    let versions: std::collections::BTreeMap<_, _> = first
        .request
        .initial_resource_versions
        .into_iter()
        .collect();
    assert_eq!(
        versions,
        [
            ("wl-1".to_string(), "v1".to_string()),
            ("wl-2".to_string(), "v3".to_string())
        ]
        .into()
    );
    assert_eq!(second.request.type_url, AUTHZ);
    assert_eq!(
        second.request.initial_resource_versions,
        [("ns/allow".to_string(), "v7".to_string())].into()
    );
    // The state held while istiod was away is untouched.
    assert_eq!(client.handler.names(ADDRESS), ["wl-1", "wl-2"]);
}

#[tokio::test]
async fn stream_ended_by_istiod_is_reopened() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;
    sync_both(&istiod).await;

    istiod
        .ads
        .end_stream(tonic::Status::unavailable("istiod shutting down"))
        .await;
    let (first, _) = initial_requests(&istiod).await;
    assert_eq!(first.stream, 2);
    assert_eq!(
        first.request.initial_resource_versions,
        [("wl-1".to_string(), "v1".to_string())].into()
    );
    assert!(client.status.is_ready(), "readiness survives reconnects");
}

#[tokio::test]
async fn last_state_keeps_serving_while_istiod_is_down() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;
    sync_both(&istiod).await;
    eventually("connected", || client.status.is_connected()).await;
    let calls_before = client.handler.call_count();

    istiod.server.kill();
    eventually("disconnected", || !client.status.is_connected()).await;
    eventually("an error recorded", || client.status.last_error().is_some()).await;

    assert_eq!(client.handler.call_count(), calls_before);
    assert_eq!(client.handler.names(ADDRESS), ["wl-1"]);
    assert_eq!(client.handler.names(AUTHZ), ["ns/allow"]);
    assert!(client.status.is_ready());
    assert!(client.status.last_ack().is_some());
}

#[tokio::test]
async fn metrics_count_messages_connection_and_terminations() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;
    sync_both(&istiod).await;
    eventually("connected", || client.status.is_connected()).await;

    let text = metrics_text(&client.registry);
    assert!(
        text.contains(
            "istio_xds_message_total{url=\"type.googleapis.com/istio.workload.Address\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "istio_xds_message_total{url=\"type.googleapis.com/istio.security.Authorization\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "istio_xds_message_bytes_total{url=\"type.googleapis.com/istio.workload.Address\"}"
    ));
    assert!(text.contains("ztunnel_sidecar_xds_connected 1"), "{text}");
    assert!(
        !text.contains("ztunnel_sidecar_xds_last_ack_timestamp_seconds 0.0"),
        "{text}"
    );

    istiod.ads.end_stream(tonic::Status::internal("boom")).await;
    initial_requests(&istiod).await;
    let text = metrics_text(&client.registry);
    assert!(
        text.contains("istio_xds_connection_terminations_total{reason=\"Error\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn cancelled_stream_counts_as_a_reconnect() {
    let istiod = Istiod::start().await;
    let client = start_client(
        &istiod.channel_config(Purpose::Xds),
        CallCredentials::none(),
    );
    initial_requests(&istiod).await;
    istiod
        .ads
        .end_stream(tonic::Status::cancelled("max connection age"))
        .await;
    initial_requests(&istiod).await;
    let text = metrics_text(&client.registry);
    assert!(
        text.contains("istio_xds_connection_terminations_total{reason=\"Reconnect\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_istiod_counts_connection_errors_and_reports_why() {
    // A port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let pki = zs_xds::testing::pki::TestPki::new("unused root");
    let config = zs_xds::channel::ChannelConfig::new(
        format!("https://{addr}"),
        zs_xds::channel::RootSource::InlinePem(pki.root_pem().to_string()),
        Purpose::Xds,
    );
    let client = start_client(&config, CallCredentials::none());
    eventually("an error recorded", || client.status.last_error().is_some()).await;
    let error = client.status.last_error().unwrap();
    assert!(
        error.contains("cannot connect to istiod at https://127.0.0.1"),
        "{error}"
    );
    let text = metrics_text(&client.registry);
    assert!(
        text.contains("istio_xds_connection_terminations_total{reason=\"ConnectionError\"}"),
        "{text}"
    );
    assert!(text.contains("ztunnel_sidecar_xds_connected 0"), "{text}");
    assert!(!client.status.is_ready());
}
