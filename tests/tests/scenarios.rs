//! The workshop's seed scenarios on network namespaces: the checks
//! `scripts/scenarios.sh` runs against Docker containers, run here without
//! Docker (`scripts/scenarios.sh --netns`). Each scenario builds the whole
//! seed world (`zs_e2e::seed`): eight tasks on two networks, every sidecar
//! configured by a bootstrap token from local-istiod, an east-west gateway,
//! an external server. The checks print `[PASS]`/`[FAIL]` lines as they go
//! (`--nocapture` shows them).
//!
//! One more test keeps `docker/compose.yaml` in step with the seed layout,
//! so both harnesses describe the same world.

use std::path::PathBuf;

use serde_yaml::Value;
use zs_e2e::require_netns;
use zs_e2e::seed::docker::{GATEWAY_SERVICE, ISTIOD_OCTET, METADATA_OCTET, metadata_uri};
use zs_e2e::seed::netns::{NetnsBins, NetnsHarness};
use zs_e2e::seed::{self, EXTERNAL_NAME, GATEWAY_OCTET, Task};

fn bins() -> NetnsBins {
    NetnsBins {
        mesh_curl: PathBuf::from(env!("CARGO_BIN_EXE_mesh-curl")),
        ew_gateway: PathBuf::from(env!("CARGO_BIN_EXE_ew-gateway")),
    }
}

async fn passes(scenario: u8) {
    let harness = NetnsHarness::start(bins()).await;
    let report = seed::run(&harness, &[scenario]).await;
    assert!(
        report.ok(),
        "scenario {scenario}: {}\n{}",
        report.summary(),
        report.failed.join("\n")
    );
}

#[tokio::test]
async fn scenario_1_one_cluster_calls_in_every_direction_and_out_of_the_mesh() {
    require_netns!();
    passes(1).await;
}

#[tokio::test]
async fn scenario_2_cross_cluster_calls_and_the_six_authorization_exercises() {
    require_netns!();
    passes(2).await;
}

#[tokio::test]
async fn scenario_3_cross_network_calls_through_the_gateway_and_failover() {
    require_netns!();
    passes(3).await;
}

// --- docker/compose.yaml describes the same world ---

fn compose() -> Value {
    let path = zs_e2e::docker::repo_root().join("docker/compose.yaml");
    let text = std::fs::read_to_string(&path).expect("read docker/compose.yaml");
    serde_yaml::from_str(&text).expect("docker/compose.yaml is YAML")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The values following each `flag` in a command list.
fn flag_values(command: &[String], flag: &str) -> Vec<String> {
    command
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn address(service: &Value, net: &str) -> Option<String> {
    service["networks"][net]["ipv4_address"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn compose_file_places_every_task_where_the_seed_mesh_says() {
    let c = compose();
    let services = &c["services"];
    for task in Task::ALL {
        let sidecar = &services[format!("{}-sidecar", task.key()).as_str()];
        let app = &services[task.key()];
        assert_eq!(
            address(sidecar, task.net().name()),
            Some(task.ip().to_string()),
            "{} address",
            task.key()
        );
        assert_eq!(
            app["network_mode"].as_str(),
            Some(format!("service:{}-sidecar", task.key()).as_str()),
            "{} shares its sidecar's network namespace",
            task.key()
        );
        let env = &sidecar["environment"];
        match task.proxy_workload_info() {
            Some(info) => assert_eq!(env["PROXY_WORKLOAD_INFO"].as_str(), Some(info.as_str())),
            None => {
                assert_eq!(
                    env["ECS_CONTAINER_METADATA_URI_V4"].as_str(),
                    Some(metadata_uri(task).as_str())
                );
                assert!(env["PROXY_WORKLOAD_INFO"].is_null());
            }
        }
        let command = strings(&app["command"]);
        match task.app_name() {
            Some(name) => assert_eq!(command, ["echo-app", "--name", name]),
            None => assert_eq!(command, ["mesh-curl", "--idle"]),
        }
    }
}

#[test]
fn compose_file_serves_the_seed_task_metadata_and_gateway_routes() {
    let c = compose();
    let services = &c["services"];
    let metadata = strings(&services["task-metadata"]["command"]);
    let mut served = flag_values(&metadata, "--task");
    let mut want: Vec<String> = Task::ALL
        .iter()
        .filter_map(|t| t.task_doc())
        .map(|d| d.spec())
        .collect();
    served.sort();
    want.sort();
    assert_eq!(served, want);

    let gateway = strings(&services[GATEWAY_SERVICE]["command"]);
    let mut routes = flag_values(&gateway, "--route");
    let mut want: Vec<String> = seed::gateway_routes()
        .iter()
        .map(|(authority, ips)| {
            let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
            format!("{authority}={}", ips.join(","))
        })
        .collect();
    routes.sort();
    want.sort();
    assert_eq!(routes, want);

    for net in [zs_e2e::networks::Net::One, zs_e2e::networks::Net::Two] {
        for (service, octet) in [
            (GATEWAY_SERVICE, GATEWAY_OCTET),
            ("local-istiod", ISTIOD_OCTET),
            ("task-metadata", METADATA_OCTET),
        ] {
            assert_eq!(
                address(&services[service], net.name()),
                Some(net.ip(octet).to_string()),
                "{service} on {}",
                net.name()
            );
        }
    }
    assert_eq!(
        address(&services[EXTERNAL_NAME], "net1"),
        Some(seed::external_ip().to_string())
    );
}
