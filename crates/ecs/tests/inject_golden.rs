//! Golden tests of the injector on realistic task definitions.
//!
//! Each case injects `tests/fixtures/<input>.json` (as `aws ecs
//! describe-task-definition` prints it) with the case's options and compares
//! the result byte for byte with `tests/fixtures/<case>.expected.json`.
//!
//! After an intended change to the output, regenerate the expected files with
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p zs-ecs --test inject_golden
//! ```
//!
//! and review the diff of `tests/fixtures/` before committing it.

use std::path::PathBuf;

use zs_ecs::{Capture, InjectOptions, ProxyEnv, inject};

/// A bootstrap token as `istioctl` generates it for platform `ecs`:
/// base64(base64(JSON)) with url, namespace, service account, network.
const TOKEN: &str = "ZXlKMWNtd2lPaUpvZEhSd2N6b3ZMMlZqY3kxa1pXMXZMV1YzTFRBeE1qTTBOVFkzT0RrdVpXeGlMblZ6TFdWaGMzUXRNaTVoYldGNmIyNWhkM011WTI5dE9qRTFNREV5SWl3aWJtRnRaWE53WVdObElqb2laV056TFdSbGJXOHRNU0lzSW5ObGNuWnBZMlZCWTJOdmRXNTBJam9pWldOekxXUmxiVzh0YzJFaUxDSndiR0YwWm05eWJTSTZJbVZqY3lJc0ltNWxkSGR2Y21zaU9pSmxhM01pTENKeVpXMXZkR1VpT25SeWRXVjk=";

const IMAGE: &str = "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:0.1.0";

fn options() -> InjectOptions {
    InjectOptions {
        image: IMAGE.into(),
        bootstrap_token: Some(TOKEN.into()),
        ..InjectOptions::default()
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name))
        .unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"))
}

/// Injects `<input>.json` and compares with `<case>.expected.json`; also checks
/// that injecting the result again changes nothing. Returns the output.
fn check_golden(input: &str, case: &str, options: &InjectOptions) -> String {
    let output = inject(&read_fixture(&format!("{input}.json")), options)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let expected_name = format!("{case}.expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(fixture_path(&expected_name), &output.json).expect("write golden file");
    }
    let expected = read_fixture(&expected_name);
    assert!(
        output.json == expected,
        "{case}: output differs from {expected_name}:\n{}",
        zs_ecs::diff(&expected, &output.json)
    );

    let again = inject(&output.json, options).unwrap_or_else(|e| panic!("{case} again: {e}"));
    assert!(
        again.json == output.json,
        "{case}: injecting twice changed the output:\n{}",
        zs_ecs::diff(&output.json, &again.json)
    );
    output.json
}

#[test]
fn single_container() {
    check_golden("single-container", "single-container", &options());
}

#[test]
fn multi_container_with_dependencies() {
    check_golden("multi-container", "multi-container", &options());
}

#[test]
fn already_injected_by_istioctl() {
    check_golden("already-injected", "already-injected", &options());
}

#[test]
fn reinjection_equals_a_fresh_injection() {
    // The same task definition before enrolment and after an earlier
    // enrolment by `istioctl` (older image and token): re-injecting the latter
    // gives the same task definition as injecting the former. Key order may
    // differ where ECS placed `dependsOn`, so compare as JSON values.
    let fresh = inject(&read_fixture("multi-container.json"), &options()).expect("fresh");
    let again = inject(&read_fixture("already-injected.json"), &options()).expect("again");
    let fresh: serde_json::Value = serde_json::from_str(&fresh.json).expect("JSON");
    let again: serde_json::Value = serde_json::from_str(&again.json).expect("JSON");
    assert_eq!(fresh, again);
}

#[test]
fn existing_proxy_configuration_is_kept() {
    check_golden("proxy-configuration", "proxy-configuration", &options());
}

#[test]
fn describe_output_with_tags_and_token_secret() {
    let options = InjectOptions {
        bootstrap_token: None,
        bootstrap_token_secret: Some(
            "arn:aws:secretsmanager:us-east-2:111122223333:secret:ecs-demo/bootstrap-token-Ab12Cd"
                .into(),
        ),
        proxy_env: ProxyEnv::Containers(vec!["shell-task".into()]),
        ..options()
    };
    check_golden("describe-output", "describe-output", &options);
}

#[test]
fn capture_with_proxy_configuration() {
    let options = InjectOptions {
        capture: Capture::ProxyConfiguration,
        ..options()
    };
    check_golden("single-container", "capture", &options);
}

#[test]
fn capture_replaces_an_app_mesh_proxy_configuration() {
    let options = InjectOptions {
        capture: Capture::ProxyConfiguration,
        ..options()
    };
    check_golden(
        "proxy-configuration",
        "proxy-configuration-capture",
        &options,
    );
}

#[test]
fn every_truncated_task_definition_is_an_error_not_a_panic() {
    for name in ["multi-container.json", "describe-output.json"] {
        let input = read_fixture(name);
        let input = input.trim_end();
        assert!(inject(input, &options()).is_ok(), "{name}");
        for end in 0..input.len() {
            if input.is_char_boundary(end) {
                assert!(
                    inject(&input[..end], &options()).is_err(),
                    "{name}: a prefix of {end} bytes was accepted"
                );
            }
        }
    }
}
