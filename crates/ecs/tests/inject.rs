//! The injector's rules, one per test, on small task definitions; and every
//! way a task definition is refused, with the message the user sees.

use serde_json::{Value, json};
use zs_ecs::{Auth, Capture, InjectError, InjectOptions, ProxyEnv, diff, inject};

fn options() -> InjectOptions {
    InjectOptions {
        image: "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:0.1.0".into(),
        bootstrap_token: Some("dG9rZW4=".into()),
        ..InjectOptions::default()
    }
}

/// A task definition with `containers`, awsvpc and a task role.
fn task(containers: Value) -> String {
    json!({
        "family": "demo",
        "taskRoleArn": "arn:aws:iam::111122223333:role/demo-task",
        "executionRoleArn": "arn:aws:iam::111122223333:role/demo-execution",
        "networkMode": "awsvpc",
        "containerDefinitions": containers,
    })
    .to_string()
}

fn inject_json(input: &str, options: &InjectOptions) -> Value {
    let output = inject(input, options).expect("injection succeeds");
    serde_json::from_str(&output.json).expect("output is JSON")
}

fn container<'a>(td: &'a Value, name: &str) -> &'a Value {
    td["containerDefinitions"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["environment"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

fn error(input: &str, options: &InjectOptions) -> String {
    inject(input, options)
        .expect_err("injection must fail")
        .to_string()
}

// ---- what the injector writes ------------------------------------------------

#[test]
fn sidecar_container_is_appended_with_istioctl_fields() {
    let td = inject_json(
        &task(
            json!([{"name": "app", "image": "app:1", "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": "/ecs/demo", "awslogs-region": "eu-west-1", "awslogs-stream-prefix": "app"}
            }}]),
        ),
        &options(),
    );
    assert_eq!(
        td["containerDefinitions"][1],
        json!({
            "name": "ztunnel",
            "image": "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:0.1.0",
            "cpu": 0,
            "memoryReservation": 64,
            "essential": true,
            "user": "1337",
            "environment": [{"name": "BOOTSTRAP_TOKEN", "value": "dG9rZW4="}],
            "healthCheck": {
                "command": ["ztunnel", "healthcheck"],
                "interval": 5, "timeout": 5, "retries": 3, "startPeriod": 10
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": "/ecs/demo",
                    "awslogs-region": "eu-west-1",
                    "awslogs-stream-prefix": "ztunnel"
                }
            }
        })
    );
}

#[test]
fn every_app_container_waits_for_a_healthy_sidecar_after_its_own_dependencies() {
    let td = inject_json(
        &task(json!([
            {"name": "web", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            {"name": "init", "essential": false}
        ])),
        &options(),
    );
    assert_eq!(
        container(&td, "web")["dependsOn"],
        json!([
            {"containerName": "init", "condition": "SUCCESS"},
            {"containerName": "ztunnel", "condition": "HEALTHY"}
        ])
    );
    assert_eq!(
        container(&td, "init")["dependsOn"],
        json!([{"containerName": "ztunnel", "condition": "HEALTHY"}])
    );
}

#[test]
fn old_dependencies_on_the_sidecar_are_replaced_not_duplicated() {
    let td = inject_json(
        &task(json!([
            {"name": "app", "dependsOn": [
                {"containerName": "ztunnel", "condition": "START"},
                {"containerName": "db", "condition": "HEALTHY"}
            ]},
            {"name": "db"},
            {"name": "ztunnel", "image": "old:1"}
        ])),
        &options(),
    );
    assert_eq!(
        container(&td, "app")["dependsOn"],
        json!([
            {"containerName": "db", "condition": "HEALTHY"},
            {"containerName": "ztunnel", "condition": "HEALTHY"}
        ])
    );
    let names: Vec<&str> = td["containerDefinitions"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "db", "ztunnel"]);
}

#[test]
fn null_depends_on_and_environment_are_treated_as_absent() {
    let td = inject_json(
        &task(json!([{"name": "app", "dependsOn": null, "environment": null}])),
        &options(),
    );
    let app = container(&td, "app");
    assert_eq!(
        app["dependsOn"],
        json!([{"containerName": "ztunnel", "condition": "HEALTHY"}])
    );
    assert_eq!(env(app, "ALL_PROXY"), Some("socks5h://127.0.0.1:15080"));
}

#[test]
fn proxy_variables_point_at_the_sidecar_in_both_cases() {
    let td = inject_json(&task(json!([{"name": "app"}])), &options());
    assert_eq!(
        container(&td, "app")["environment"],
        json!([
            {"name": "ALL_PROXY", "value": "socks5h://127.0.0.1:15080"},
            {"name": "all_proxy", "value": "socks5h://127.0.0.1:15080"},
            {"name": "HTTPS_PROXY", "value": "http://127.0.0.1:15081"},
            {"name": "https_proxy", "value": "http://127.0.0.1:15081"},
            {"name": "HTTP_PROXY", "value": "http://127.0.0.1:15081"},
            {"name": "http_proxy", "value": "http://127.0.0.1:15081"},
            {"name": "NO_PROXY", "value": "169.254.170.2,169.254.169.254,localhost,127.0.0.1,::1"},
            {"name": "no_proxy", "value": "169.254.170.2,169.254.169.254,localhost,127.0.0.1,::1"}
        ])
    );
}

#[test]
fn existing_proxy_variables_are_replaced_in_place_and_others_untouched() {
    let td = inject_json(
        &task(json!([{"name": "app", "environment": [
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "https_proxy", "value": "http://corp-proxy:3128"},
            {"name": "PORT", "value": "8080"},
            {"name": "https_proxy", "value": "http://duplicate:3128"}
        ]}])),
        &InjectOptions {
            proxy_env: ProxyEnv::All,
            ..options()
        },
    );
    let names: Vec<&str> = container(&td, "app")["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "LOG_LEVEL",
            "https_proxy",
            "PORT",
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy"
        ]
    );
    let app = container(&td, "app");
    assert_eq!(env(app, "https_proxy"), Some("http://127.0.0.1:15081"));
    assert_eq!(env(app, "LOG_LEVEL"), Some("debug"));
}

#[test]
fn existing_no_proxy_entries_are_kept_after_the_required_ones() {
    let td = inject_json(
        &task(json!([{"name": "app", "environment": [
            {"name": "NO_PROXY", "value": ".internal, localhost,db.local"},
            {"name": "no_proxy", "value": "cache.local,.internal"}
        ]}])),
        &options(),
    );
    let expected =
        "169.254.170.2,169.254.169.254,localhost,127.0.0.1,::1,.internal,db.local,cache.local";
    let app = container(&td, "app");
    assert_eq!(env(app, "NO_PROXY"), Some(expected));
    assert_eq!(env(app, "no_proxy"), Some(expected));
}

#[test]
fn proxy_env_none_leaves_environments_alone() {
    let td = inject_json(
        &task(json!([{"name": "app", "environment": [{"name": "A", "value": "1"}]}])),
        &InjectOptions {
            proxy_env: ProxyEnv::None,
            ..options()
        },
    );
    assert_eq!(
        container(&td, "app")["environment"],
        json!([{"name": "A", "value": "1"}])
    );
}

#[test]
fn proxy_env_list_selects_only_the_named_containers() {
    let td = inject_json(
        &task(json!([{"name": "client"}, {"name": "worker"}])),
        &InjectOptions {
            proxy_env: ProxyEnv::Containers(vec!["client".into()]),
            ..options()
        },
    );
    assert_eq!(
        env(container(&td, "client"), "ALL_PROXY"),
        Some("socks5h://127.0.0.1:15080")
    );
    assert_eq!(container(&td, "worker").get("environment"), None);
}

#[test]
fn token_secret_is_referenced_not_written() {
    let arn = "arn:aws:ssm:us-east-2:111122223333:parameter/ecs-demo/bootstrap-token";
    let td = inject_json(
        &task(json!([{"name": "app"}])),
        &InjectOptions {
            bootstrap_token: None,
            bootstrap_token_secret: Some(arn.into()),
            ..options()
        },
    );
    let sidecar = container(&td, "ztunnel");
    assert_eq!(sidecar.get("environment"), None);
    assert_eq!(
        sidecar["secrets"],
        json!([{"name": "BOOTSTRAP_TOKEN", "valueFrom": arn}])
    );
}

#[test]
fn sidecar_logs_into_the_first_app_container_that_uses_awslogs() {
    let td = inject_json(
        &task(json!([
            {"name": "router", "logConfiguration": {"logDriver": "awsfirelens", "options": {"Name": "cloudwatch"}}},
            {"name": "app", "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/app"}}}
        ])),
        &options(),
    );
    assert_eq!(
        container(&td, "ztunnel")["logConfiguration"],
        json!({"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/app", "awslogs-stream-prefix": "ztunnel"}})
    );
}

#[test]
fn sidecar_has_no_log_configuration_when_no_app_uses_awslogs() {
    let output = inject(&task(json!([{"name": "app"}])), &options()).expect("inject");
    let td: Value = serde_json::from_str(&output.json).expect("JSON");
    assert_eq!(container(&td, "ztunnel").get("logConfiguration"), None);
    assert!(
        output.changes.contains(
            &"\"ztunnel\" has no logConfiguration: no application container logs with awslogs"
                .to_owned()
        )
    );
}

#[test]
fn read_only_fields_are_removed_and_reported() {
    let input = json!({
        "taskDefinitionArn": "arn:aws:ecs:us-east-2:111122223333:task-definition/demo:3",
        "family": "demo",
        "taskRoleArn": "arn:aws:iam::111122223333:role/demo-task",
        "networkMode": "awsvpc",
        "revision": 3,
        "status": "ACTIVE",
        "containerDefinitions": [{"name": "app"}],
        "registeredAt": "2025-11-14T09:21:37.118000+01:00"
    })
    .to_string();
    let output = inject(&input, &options()).expect("inject");
    let td: Value = serde_json::from_str(&output.json).expect("JSON");
    let mut keys: Vec<&String> = td.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "containerDefinitions",
            "family",
            "networkMode",
            "taskRoleArn"
        ]
    );
    assert_eq!(
        output.changes[0],
        "removed read-only fields: taskDefinitionArn, revision, status, registeredAt"
    );
}

#[test]
fn untouched_keys_keep_their_order() {
    let input = r#"{"zeta": 1, "networkMode": "awsvpc", "alpha": {"y": 1, "b": 2},
        "taskRoleArn": "arn:aws:iam::111122223333:role/r",
        "containerDefinitions": [{"name": "app", "z": true, "a": false}]}"#;
    let output = inject(input, &options()).expect("inject");
    let positions: Vec<usize> = [
        "\"zeta\"",
        "\"networkMode\"",
        "\"alpha\"",
        "\"y\"",
        "\"b\"",
        "\"taskRoleArn\"",
        "\"z\"",
        "\"a\"",
    ]
    .iter()
    .map(|key| output.json.find(key).expect("key present"))
    .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(positions, sorted);
}

#[test]
fn output_is_two_space_indented_with_a_trailing_newline() {
    let input = r#"{"family": "demo", "networkMode": "awsvpc",
        "taskRoleArn": "arn:aws:iam::111122223333:role/r", "containerDefinitions": [{"name": "app"}]}"#;
    let output = inject(input, &options()).expect("inject");
    assert!(
        output
            .json
            .starts_with("{\n  \"family\": \"demo\",\n  \"networkMode\"")
    );
    assert!(output.json.ends_with("}\n"));
}

#[test]
fn bare_task_definition_keeps_its_own_tags_in_place() {
    let input = r#"{"family": "demo", "tags": [{"key": "team", "value": "a"}],
        "networkMode": "awsvpc", "taskRoleArn": "arn:aws:iam::111122223333:role/r",
        "containerDefinitions": [{"name": "app"}]}"#;
    let output = inject(input, &options()).expect("inject");
    assert!(
        output
            .json
            .starts_with("{\n  \"family\": \"demo\",\n  \"tags\": [\n")
    );
}

#[test]
fn kept_proxy_configuration_for_the_sidecar_keeps_capture_on() {
    // Output of an earlier `--capture proxy-configuration`, injected again
    // without the flag: the redirect stays, so the sidecar must keep capturing.
    let input = json!({
        "family": "demo",
        "taskRoleArn": "arn:aws:iam::111122223333:role/demo-task",
        "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "app", "portMappings": [{"containerPort": 8080}]}],
        "proxyConfiguration": {"type": "APPMESH", "containerName": "ztunnel", "properties": []}
    })
    .to_string();
    let td = inject_json(&input, &options());
    assert_eq!(
        env(container(&td, "ztunnel"), "CAPTURE_MODE"),
        Some("proxy-configuration")
    );
    assert_eq!(
        td["proxyConfiguration"],
        json!({"type": "APPMESH", "containerName": "ztunnel", "properties": []})
    );
}

#[test]
fn capture_lists_each_app_port_once() {
    let td = inject_json(
        &task(json!([
            {"name": "web", "portMappings": [{"containerPort": 8080}, {"containerPort": 8443}]},
            {"name": "admin", "portMappings": [{"containerPort": 8080, "protocol": "tcp"}, {"containerPort": 9000}]}
        ])),
        &InjectOptions {
            capture: Capture::ProxyConfiguration,
            ..options()
        },
    );
    assert_eq!(
        td["proxyConfiguration"]["properties"][3],
        json!({"name": "AppPorts", "value": "8080,8443,9000"})
    );
}

#[test]
fn token_auth_needs_no_task_role() {
    let input = json!({
        "family": "demo",
        "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "app"}]
    })
    .to_string();
    let options = InjectOptions {
        auth: Auth::Token,
        ..options()
    };
    assert!(inject(&input, &options).is_ok());
}

#[test]
fn changes_summarise_the_injection() {
    let output = inject(
        &task(json!([{"name": "app", "image": "app:1"}, {"name": "ztunnel", "image": "old:1"}])),
        &options(),
    )
    .expect("inject");
    assert_eq!(
        output.changes,
        [
            "container \"app\": dependsOn \"ztunnel\" HEALTHY",
            "container \"app\": ALL_PROXY=socks5h://127.0.0.1:15080, HTTPS_PROXY/HTTP_PROXY=http://127.0.0.1:15081, NO_PROXY=169.254.170.2,169.254.169.254,localhost,127.0.0.1,::1 (also lowercase)",
            "replaced container \"ztunnel\" (image old:1 -> ghcr.io/ztunnel-sidecar/ztunnel-sidecar:0.1.0)",
            "\"ztunnel\" has no logConfiguration: no application container logs with awslogs",
        ]
    );
}

#[test]
fn dry_run_diff_shows_only_what_injection_changed() {
    // Input in the AWS CLI's four-space style: `before` is re-printed in the
    // output style so that indentation does not show up in the diff.
    let input = "{\n    \"family\": \"demo\",\n    \"revision\": 2,\n    \"networkMode\": \"awsvpc\",\n    \"taskRoleArn\": \"arn:aws:iam::111122223333:role/r\",\n    \"containerDefinitions\": [\n        {\n            \"name\": \"app\",\n            \"essential\": true\n        }\n    ]\n}\n";
    let output = inject(
        input,
        &InjectOptions {
            proxy_env: ProxyEnv::None,
            ..options()
        },
    )
    .expect("inject");
    assert_eq!(
        diff(&output.before, &output.json),
        r#"--- input
+++ injected
@@ -1,12 +1,41 @@
 {
   "family": "demo",
-  "revision": 2,
   "networkMode": "awsvpc",
   "taskRoleArn": "arn:aws:iam::111122223333:role/r",
   "containerDefinitions": [
     {
       "name": "app",
-      "essential": true
+      "essential": true,
+      "dependsOn": [
+        {
+          "containerName": "ztunnel",
+          "condition": "HEALTHY"
+        }
+      ]
+    },
+    {
+      "name": "ztunnel",
+      "image": "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:0.1.0",
+      "cpu": 0,
+      "memoryReservation": 64,
+      "essential": true,
+      "user": "1337",
+      "environment": [
+        {
+          "name": "BOOTSTRAP_TOKEN",
+          "value": "dG9rZW4="
+        }
+      ],
+      "healthCheck": {
+        "command": [
+          "ztunnel",
+          "healthcheck"
+        ],
+        "interval": 5,
+        "timeout": 5,
+        "retries": 3,
+        "startPeriod": 10
+      }
     }
   ]
 }
"#
    );
}

// ---- options from the command line --------------------------------------------

#[test]
fn options_parse_from_their_flag_values() {
    assert_eq!("all".parse(), Ok(ProxyEnv::All));
    assert_eq!("none".parse(), Ok(ProxyEnv::None));
    assert_eq!(
        "web, api".parse(),
        Ok(ProxyEnv::Containers(vec!["web".into(), "api".into()]))
    );
    assert_eq!(
        "proxy-configuration".parse(),
        Ok(Capture::ProxyConfiguration)
    );
    assert_eq!("iam".parse(), Ok(Auth::Iam));
    assert_eq!("token".parse(), Ok(Auth::Token));
}

#[test]
fn bad_option_values_name_the_flag() {
    assert_eq!(
        "iptables".parse::<Capture>().expect_err("bad").to_string(),
        "invalid value \"iptables\" for --capture: expected proxy-configuration"
    );
    assert_eq!(
        "sigv4".parse::<Auth>().expect_err("bad").to_string(),
        "invalid value \"sigv4\" for --auth: expected iam or token"
    );
    assert_eq!(
        "web,,api".parse::<ProxyEnv>().expect_err("bad").to_string(),
        "invalid value \"web,,api\" for --proxy-env: expected all, none, or a comma-separated list of container names"
    );
}

#[test]
fn default_options_use_this_release_and_iam() {
    let options = InjectOptions::default();
    assert_eq!(
        options.image,
        concat!(
            "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(options.auth, Auth::Iam);
    assert_eq!(options.proxy_env, ProxyEnv::All);
    assert_eq!(options.capture, Capture::Keep);
    assert!(!options.dry_run);
}

// ---- refusals ------------------------------------------------------------------

#[test]
fn bad_json_is_reported_with_line_and_column() {
    let input = "{\n  \"family\": \"demo\",\n  \"containerDefinitions\": [\n}\n";
    assert_eq!(
        inject(input, &options()),
        Err(InjectError::Json {
            line: 4,
            column: 1,
            message: "expected value".into()
        })
    );
    assert_eq!(
        error(input, &options()),
        "task definition is not valid JSON (line 4, column 1): expected value"
    );
}

#[test]
fn trailing_garbage_is_bad_json() {
    assert_eq!(
        error("{} {}", &options()),
        "task definition is not valid JSON (line 1, column 4): trailing characters"
    );
}

#[test]
fn non_object_input_is_refused() {
    assert_eq!(
        error("[{\"family\": \"demo\"}]", &options()),
        "task definition must be a JSON object, found an array"
    );
}

#[test]
fn wrapper_with_non_object_task_definition_is_refused() {
    assert_eq!(
        error(r#"{"taskDefinition": "demo:3"}"#, &options()),
        "taskDefinition must be an object"
    );
}

#[test]
fn missing_container_definitions_is_refused() {
    let input =
        json!({"family": "demo", "networkMode": "awsvpc", "taskRoleArn": "arn:aws:iam::1:role/r"});
    assert_eq!(
        error(&input.to_string(), &options()),
        "task definition has no containerDefinitions"
    );
}

#[test]
fn bridge_network_mode_is_refused() {
    let input = json!({"family": "demo", "networkMode": "bridge", "taskRoleArn": "arn:aws:iam::1:role/r",
        "containerDefinitions": [{"name": "app"}]});
    assert_eq!(
        error(&input.to_string(), &options()),
        "network mode is \"bridge\"; Fargate and the mesh need awsvpc network mode: tasks share one network namespace so 127.0.0.1 reaches the sidecar"
    );
}

#[test]
fn unset_network_mode_is_refused() {
    let input = json!({"family": "demo", "taskRoleArn": "arn:aws:iam::1:role/r",
        "containerDefinitions": [{"name": "app"}]});
    assert_eq!(
        error(&input.to_string(), &options()),
        "network mode is not set; Fargate and the mesh need awsvpc network mode: tasks share one network namespace so 127.0.0.1 reaches the sidecar"
    );
}

#[test]
fn iam_auth_without_task_role_is_refused() {
    let input = json!({"family": "demo", "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "app"}]});
    assert_eq!(
        error(&input.to_string(), &options()),
        "task definition has no taskRoleArn: with --auth iam the sidecar proves its identity to istiod with the task role; add a task role or use --auth token"
    );
}

#[test]
fn token_secret_without_execution_role_is_refused() {
    let input = json!({"family": "demo", "networkMode": "awsvpc", "taskRoleArn": "arn:aws:iam::1:role/r",
        "containerDefinitions": [{"name": "app"}]});
    let options = InjectOptions {
        bootstrap_token: None,
        bootstrap_token_secret: Some("arn:aws:ssm:us-east-2:1:parameter/t".into()),
        ..options()
    };
    assert_eq!(
        error(&input.to_string(), &options),
        "task definition has no executionRoleArn: ECS fetches --bootstrap-token-secret with the task execution role"
    );
}

#[test]
fn task_with_only_a_sidecar_is_refused() {
    assert_eq!(
        error(&task(json!([{"name": "ztunnel"}])), &options()),
        "task definition has no application container besides \"ztunnel\""
    );
}

#[test]
fn container_without_name_is_refused() {
    assert_eq!(
        error(
            &task(json!([{"name": "app"}, {"image": "x:1"}])),
            &options()
        ),
        "containerDefinitions[1] has no name"
    );
}

#[test]
fn wrongly_typed_depends_on_is_refused() {
    assert_eq!(
        error(
            &task(json!([{"name": "app", "dependsOn": {"containerName": "db"}}])),
            &options()
        ),
        "container \"app\" dependsOn must be an array"
    );
}

#[test]
fn unknown_proxy_env_container_is_refused() {
    let options = InjectOptions {
        proxy_env: ProxyEnv::Containers(vec!["api".into()]),
        ..options()
    };
    assert_eq!(
        error(&task(json!([{"name": "app"}])), &options),
        "--proxy-env names \"api\", which is not an application container of this task definition"
    );
}

#[test]
fn missing_token_is_refused() {
    let options = InjectOptions {
        bootstrap_token: None,
        ..options()
    };
    assert_eq!(
        error(&task(json!([{"name": "app"}])), &options),
        "a bootstrap token is required: pass --bootstrap-token or --bootstrap-token-secret"
    );
}

#[test]
fn both_token_options_are_refused() {
    let options = InjectOptions {
        bootstrap_token_secret: Some("arn:aws:ssm:us-east-2:1:parameter/t".into()),
        ..options()
    };
    assert_eq!(
        error(&task(json!([{"name": "app"}])), &options),
        "--bootstrap-token and --bootstrap-token-secret are mutually exclusive"
    );
}

#[test]
fn empty_image_is_refused() {
    let options = InjectOptions {
        image: " ".into(),
        ..options()
    };
    assert_eq!(
        error(&task(json!([{"name": "app"}])), &options),
        "--image must not be empty"
    );
}

#[test]
fn capture_without_app_ports_is_refused() {
    let options = InjectOptions {
        capture: Capture::ProxyConfiguration,
        ..options()
    };
    assert_eq!(
        error(&task(json!([{"name": "client"}])), &options),
        "--capture proxy-configuration needs at least one containerPort in the application containers' portMappings (ECS requires AppPorts)"
    );
}

#[test]
fn app_port_used_by_the_sidecar_is_refused() {
    assert_eq!(
        error(
            &task(json!([{"name": "app", "portMappings": [{"containerPort": 15008}]}])),
            &options()
        ),
        "container \"app\" maps port 15008, which the sidecar listens on in the same network namespace"
    );
}

#[test]
fn capture_port_is_refused_only_with_capture() {
    let input = task(json!([{"name": "app", "portMappings": [{"containerPort": 15001}]}]));
    assert!(inject(&input, &options()).is_ok());
    let options = InjectOptions {
        capture: Capture::ProxyConfiguration,
        ..options()
    };
    assert_eq!(
        error(&input, &options),
        "container \"app\" maps port 15001, which the sidecar listens on in the same network namespace"
    );
}

#[test]
fn non_numeric_container_port_is_refused() {
    assert_eq!(
        error(
            &task(json!([{"name": "app", "portMappings": [{"containerPort": "8080"}]}])),
            &options()
        ),
        "container \"app\" portMappings[0].containerPort must be a port number"
    );
}
