//! The workshop's Scenario 2 authorization exercises, end to end.
//!
//! Two ECS clusters (`ecs-demo-1`, `ecs-demo-2`), each with an
//! `echo-service` task and a client task, plus a client in the EKS cluster's
//! `default` namespace; every task a real sidecar with its own certificate.
//! Clients reach the services by name through SOCKS5, as `curl` does with
//! `ALL_PROXY=socks5h://127.0.0.1:15080`. Policies are added in namespace
//! `ecs-demo-1`, each exercise on top of the previous one, and every exercise
//! checks the workshop's whole pass/fail row: `[PASS]` = connected and
//! echoed, `[FAIL]` = refused by policy (and the application saw nothing).

use std::time::Duration;

use zs_e2e::SocksTarget;
use zs_e2e::clusters::*;

/// One cell of the matrix: a source task and a destination service.
struct Call {
    label: &'static str,
    from: Client,
    host: &'static str,
}

const CALLS: [Call; 5] = [
    Call {
        label: "EKS->C1",
        from: Client::Eks,
        host: C1_HOST,
    },
    Call {
        label: "EKS->C2",
        from: Client::Eks,
        host: C2_HOST,
    },
    Call {
        label: "C1->C2",
        from: Client::C1,
        host: C2_HOST,
    },
    Call {
        label: "C2->C1",
        from: Client::C2,
        host: C1_HOST,
    },
    Call {
        label: "C1 internal",
        from: Client::C1,
        host: C1_HOST,
    },
];

/// A NAMESPACE-scoped policy in `ecs-demo-1`, as istiod sends it.
fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "name: {name}\nnamespace: ecs-demo-1\nscope: Namespace\naction: {action}\ndryRun: false\nrules: {rules}"
    )
}

/// `spec: {}`: an ALLOW policy with no rules.
fn deny_all() -> String {
    policy("deny-all", "Allow", "[]")
}

/// `from: [{source: {namespaces: [ns]}}]`, `to: [{operation: {ports: ["8080"]}}]`:
/// istiod makes `from` and `to` two clauses of one rule.
fn allow_from(ns: &str) -> String {
    policy(
        &format!("allow-{ns}"),
        "Allow",
        &format!("[[[{{namespaces: [!Exact {ns}]}}], [{{destinationPorts: [8080]}}]]]"),
    )
}

fn deny_from(ns: &str) -> String {
    policy(
        &format!("deny-{ns}"),
        "Deny",
        &format!("[[[{{namespaces: [!Exact {ns}]}}]]]"),
    )
}

#[tokio::test]
async fn scenario_2_authorization_exercises_give_the_workshop_matrix() {
    const P: bool = true;
    const F: bool = false;
    let exercises: [(&str, Vec<String>, [bool; 5]); 6] = [
        ("1 baseline", vec![], [P, P, P, P, P]),
        ("2 deny-all", vec![deny_all()], [F, P, P, F, F]),
        (
            "3 +allow EKS",
            vec![deny_all(), allow_from("default")],
            [P, P, P, F, F],
        ),
        (
            "4 +allow C2",
            vec![deny_all(), allow_from("default"), allow_from("ecs-demo-2")],
            [P, P, P, P, F],
        ),
        (
            "5 +allow internal",
            vec![
                deny_all(),
                allow_from("default"),
                allow_from("ecs-demo-2"),
                allow_from("ecs-demo-1"),
            ],
            [P, P, P, P, P],
        ),
        (
            "6 reset; deny-all, allow EKS, DENY C2",
            vec![deny_all(), allow_from("default"), deny_from("ecs-demo-2")],
            [P, P, P, F, F],
        ),
    ];

    let t = TwoClusters::start().await;
    let mark = |pass: bool| if pass { "[PASS]" } else { "[FAIL]" };
    let mut table = format!("{:<40}", "exercise");
    for c in &CALLS {
        table.push_str(&format!(" {:<12}", c.label));
    }
    table.push('\n');
    let mut wrong = Vec::new();
    for (name, policies, expected) in &exercises {
        t.push(policies, &[]).await;
        table.push_str(&format!("{name:<40}"));
        for (call, want) in CALLS.iter().zip(expected) {
            let app = if call.host == C1_HOST {
                &t.c1_app
            } else {
                &t.c2_app
            };
            let target = SocksTarget::Domain(call.host.into(), ECHO_PORT);
            let outcome = t.probe(call.from, target, app).await;
            let cell = match &outcome {
                Outcome::Allowed => mark(true),
                Outcome::Denied => mark(false),
                Outcome::Broken(_) => "[BROKEN]",
            };
            let right = match outcome {
                Outcome::Allowed => *want,
                Outcome::Denied => !*want,
                Outcome::Broken(why) => {
                    wrong.push(format!("{name} {}: {why}", call.label));
                    true
                }
            };
            if !right {
                wrong.push(format!("{name} {}: expected {}", call.label, mark(*want)));
            }
            table.push_str(&format!(
                " {:<12}",
                if right {
                    cell.to_string()
                } else {
                    format!("{cell}!")
                }
            ));
        }
        table.push('\n');
    }
    let table: String = table
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    println!("{table}");
    assert!(wrong.is_empty(), "{}\n{table}", wrong.join("\n"));

    // The last denial of C2 came from the explicit DENY, not from the
    // missing ALLOW.
    let line = wait_for_log(
        &t.c1_echo,
        0,
        &[
            "connection denied by authorization policy",
            "explicitly denied by: ecs-demo-1/deny-ecs-demo-2",
            "ns/ecs-demo-2/sa/shell-task",
        ],
        Duration::from_secs(2),
    )
    .await;
    assert!(line.is_some(), "{}", t.c1_echo.logs());
}
