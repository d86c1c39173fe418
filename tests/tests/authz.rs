//! L4 authorization end to end, one row per semantic rule of ztunnel's
//! `AuthorizationPolicy` evaluation.
//!
//! Every row is decided by real processes: a client sidecar takes a SOCKS5
//! CONNECT, opens HBONE with its own certificate to the destination sidecar,
//! which holds the row's policies in its `LOCAL_XDS_PATH` file and either
//! dials the application or answers 401. A row passes only when the client
//! sees what the row expects:
//! - allowed: SOCKS5 success, the bytes echo back, the application accepted
//!   exactly one connection;
//! - denied: SOCKS5 reply 2 ("connection not allowed by ruleset"), the
//!   application accepted nothing, and the destination logged the denial with
//!   its reason (the deciding policy, or "allow policies exist, but none
//!   allowed").
//!
//! Each test starts the two-cluster topology once and rewrites the policies
//! between rows, waiting until the destination's `/config_dump` shows them.
//!
//! The source IP a destination sees is the TCP peer of the HBONE connection.
//! On loopback the client sidecars do not bind their outgoing connections, so
//! that peer is `127.0.0.1` for every client (on Fargate it is the task's
//! address); the `sourceIps` rows are written for that.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs_e2e::clusters::*;
use zs_e2e::{SocksResult, socks5_connect};

/// Where a row connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    /// Cluster 1's echo task (namespace `ecs-demo-1`) at this port.
    C1(u16),
    /// Cluster 2's echo task (namespace `ecs-demo-2`) at 8080.
    C2,
}

const C1_ECHO: Dest = Dest::C1(ECHO_PORT);
const C1_ALT: Dest = Dest::C1(ALT_PORT);

/// What a row expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Allow,
    /// Denied because ALLOW policies apply and none matched.
    NoneAllowed,
    /// Denied by this DENY policy (`<namespace>/<name>`).
    DeniedBy(&'static str),
}

const ALLOWED: Expect = Expect::Allow;
const NONE_ALLOWED: Expect = Expect::NoneAllowed;

const fn denied_by(policy: &'static str) -> Expect {
    Expect::DeniedBy(policy)
}

impl Expect {
    /// The reason the destination logs for the denial, in ztunnel's words.
    fn reason(self) -> Option<String> {
        match self {
            Expect::Allow => None,
            Expect::NoneAllowed => Some("allow policies exist, but none allowed".into()),
            Expect::DeniedBy(policy) => Some(format!("explicitly denied by: {policy}")),
        }
    }
}

struct Row {
    name: &'static str,
    /// Local-config policy items; `{eks}`, `{c1_echo}`, `{c2_echo}` stand for
    /// the tasks' addresses.
    policies: Vec<String>,
    /// What cluster 1's echo workload names in `authorizationPolicies`.
    selected: &'static [&'static str],
    from: Client,
    to: Dest,
    expect: Expect,
    /// Text that one new line of the destination's log must contain.
    logged: &'static [&'static str],
}

fn row(name: &'static str, policies: &[String], from: Client, to: Dest, expect: Expect) -> Row {
    Row {
        name,
        policies: policies.to_vec(),
        selected: &[],
        from,
        to,
        expect,
        logged: &[],
    }
}

impl Row {
    fn selecting(mut self, names: &'static [&'static str]) -> Row {
        self.selected = names;
        self
    }

    fn logging(mut self, needles: &'static [&'static str]) -> Row {
        self.logged = needles;
        self
    }
}

/// One policy item. `rules` is the flow-style rules → clauses → matches list.
fn policy(
    name: &str,
    namespace: &str,
    scope: &str,
    action: &str,
    dry_run: bool,
    rules: &str,
) -> String {
    format!(
        "name: {name}\nnamespace: {namespace}\nscope: {scope}\naction: {action}\ndryRun: {dry_run}\nrules: {rules}"
    )
}

/// An enforced NAMESPACE-scoped ALLOW in `ecs-demo-1`.
fn allow(name: &str, rules: &str) -> String {
    policy(name, C1_NS, "Namespace", "Allow", false, rules)
}

/// An enforced NAMESPACE-scoped DENY in `ecs-demo-1`.
fn deny(name: &str, rules: &str) -> String {
    policy(name, C1_NS, "Namespace", "Deny", false, rules)
}

/// Runs the rows in order, printing one line each; fails with every row that
/// did not behave as expected.
async fn run(t: &TwoClusters, rows: Vec<Row>) {
    let fill = |p: &String| {
        p.replace("{eks}", &t.client_ip(Client::Eks).to_string())
            .replace("{c1_echo}", &t.c1_echo_ip().to_string())
            .replace("{c2_echo}", &t.c2_echo_ip().to_string())
    };
    // Each distinct policy text must keep its name, or waiting for the names
    // in the config dump would not tell one push from the next.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for r in &rows {
        for p in &r.policies {
            let previous = seen.insert(policy_key(p), p.clone());
            assert!(
                previous.is_none_or(|q| &q == p),
                "row {:?}: two different policies are named {}",
                r.name,
                policy_key(p)
            );
        }
    }

    let mut pushed: Option<(Vec<String>, &[&str])> = None;
    let mut failures = Vec::new();
    for r in &rows {
        let policies: Vec<String> = r.policies.iter().map(fill).collect();
        if pushed.as_ref() != Some(&(policies.clone(), r.selected)) {
            t.push(&policies, r.selected).await;
            pushed = Some((policies, r.selected));
        }
        let (sidecar, app, ip) = match r.to {
            Dest::C1(ECHO_PORT) => (&t.c1_echo, &t.c1_app, t.c1_echo_ip()),
            Dest::C1(_) => (&t.c1_echo, &t.c1_alt, t.c1_echo_ip()),
            Dest::C2 => (&t.c2_echo, &t.c2_app, t.c2_echo_ip()),
        };
        let port = match r.to {
            Dest::C1(p) => p,
            Dest::C2 => ECHO_PORT,
        };
        let log_from = sidecar.logs().len();
        let outcome = t.probe(r.from, addr(ip, port), app).await;
        let reason = r.expect.reason();
        let mut problem = match (&reason, &outcome) {
            (None, Outcome::Allowed) => None,
            (Some(reason), Outcome::Denied) => {
                let needles = ["connection denied by authorization policy", reason];
                match wait_for_log(sidecar, log_from, &needles, Duration::from_secs(2)).await {
                    Some(_) => None,
                    None => Some(format!("denied, but no log line with {needles:?}")),
                }
            }
            (_, other) => Some(format!("{other:?}")),
        };
        if problem.is_none() && !r.logged.is_empty() {
            let found = wait_for_log(sidecar, log_from, r.logged, Duration::from_secs(2)).await;
            if found.is_none() {
                problem = Some(format!("no log line with {:?}", r.logged));
            }
        }
        let expected = match &reason {
            None => "allow".to_string(),
            Some(reason) => format!("deny ({reason})"),
        };
        println!(
            "[{}] {:<58} {:>3} -> {:<9} expected {expected}{}",
            if problem.is_none() { "ok" } else { "XX" },
            r.name,
            r.from.label(),
            format!("{:?}", r.to),
            problem
                .as_ref()
                .map(|p| format!(", got {p}"))
                .unwrap_or_default()
        );
        if let Some(p) = problem {
            failures.push(format!("{}: expected {expected}, got {p}", r.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}\n--- destination log (cluster 1) ---\n{}",
        failures.len(),
        failures.join("\n"),
        t.c1_echo.logs()
    );
}

const EKS: Client = Client::Eks;
const C1: Client = Client::C1;
const C2: Client = Client::C2;

/// An enforced ALLOW in `ecs-demo-1` with one rule, one clause, one match.
fn allow_match(name: &str, m: &str) -> [String; 1] {
    [allow(name, &format!("[[[{{{m}}}]]]"))]
}

#[tokio::test]
async fn policy_actions_and_rule_structure() {
    let t = TwoClusters::start().await;
    let allow_none = [allow("allow-with-no-rules", "[]")];
    let deny_none = [deny("deny-with-no-rules", "[]")];
    let allow_any = [allow("allow-rule-without-clauses", "[[]]")];
    let deny_any = [deny("deny-rule-without-clauses", "[[]]")];
    let empty_clause = [allow("allow-clause-without-matches", "[[[]]]")];
    let deny_wins = [
        allow("allow-from-default", "[[[{namespaces: [!Exact default]}]]]"),
        deny("deny-from-default", "[[[{namespaces: [!Exact default]}]]]"),
    ];
    let only_c2 = allow_match("allow-only-c2", "namespaces: [!Exact ecs-demo-2]");
    let two_allows = [
        allow("allow-c2", "[[[{namespaces: [!Exact ecs-demo-2]}]]]"),
        allow("allow-eks", "[[[{namespaces: [!Exact default]}]]]"),
    ];
    let rules_or = [allow(
        "rules-are-ored",
        "[[[{namespaces: [!Exact ecs-demo-2]}]], [[{namespaces: [!Exact default]}]]]",
    )];
    let clauses_and = [allow(
        "clauses-are-anded",
        "[[[{namespaces: [!Exact default]}], [{destinationPorts: [9090]}]]]",
    )];
    let matches_or = [allow(
        "matches-are-ored",
        "[[[{namespaces: [!Exact ecs-demo-2]}, {destinationPorts: [9090]}]]]",
    )];
    let fields_and = allow_match(
        "fields-are-anded",
        "namespaces: [!Exact default], destinationPorts: [9090]",
    );
    #[rustfmt::skip]
    let rows = vec![
        row("no policies: allow",                          &[],            EKS, C1_ECHO, ALLOWED),
        row("ALLOW with no rules denies everyone",         &allow_none,    EKS, C1_ECHO, NONE_ALLOWED),
        row("ALLOW with no rules denies everyone",         &allow_none,    C1,  C1_ECHO, NONE_ALLOWED),
        row("DENY with no rules denies no one",            &deny_none,     EKS, C1_ECHO, ALLOWED),
        row("a rule with no clauses matches all (ALLOW)",  &allow_any,     C2,  C1_ECHO, ALLOWED),
        row("a rule with no clauses matches all (DENY)",   &deny_any,      C2,  C1_ECHO, denied_by("ecs-demo-1/deny-rule-without-clauses")),
        row("a clause with no matches matches all",        &empty_clause,  EKS, C1_ECHO, ALLOWED),
        row("DENY is decided before ALLOW",                &deny_wins,     EKS, C1_ECHO, denied_by("ecs-demo-1/deny-from-default")),
        row("ALLOW exists, none matched: deny",            &only_c2,       EKS, C1_ECHO, NONE_ALLOWED),
        row("ALLOW exists and matched: allow",             &only_c2,       C2,  C1_ECHO, ALLOWED),
        row("any matching ALLOW allows",                   &two_allows,    EKS, C1_ECHO, ALLOWED),
        row("any matching ALLOW allows",                   &two_allows,    C2,  C1_ECHO, ALLOWED),
        row("any matching ALLOW allows (none matches)",    &two_allows,    C1,  C1_ECHO, NONE_ALLOWED),
        row("rules are OR-ed (second rule)",               &rules_or,      EKS, C1_ECHO, ALLOWED),
        row("rules are OR-ed (no rule)",                   &rules_or,      C1,  C1_ECHO, NONE_ALLOWED),
        row("clauses are AND-ed (one fails)",              &clauses_and,   EKS, C1_ECHO, NONE_ALLOWED),
        row("clauses are AND-ed (both pass)",              &clauses_and,   EKS, C1_ALT,  ALLOWED),
        row("matches are OR-ed (first)",                   &matches_or,    C2,  C1_ECHO, ALLOWED),
        row("matches are OR-ed (second)",                  &matches_or,    EKS, C1_ALT,  ALLOWED),
        row("matches are OR-ed (neither)",                 &matches_or,    EKS, C1_ECHO, NONE_ALLOWED),
        row("fields of a match are AND-ed (port fails)",   &fields_and,    EKS, C1_ECHO, NONE_ALLOWED),
        row("fields of a match are AND-ed (source fails)", &fields_and,    C2,  C1_ALT,  NONE_ALLOWED),
        row("fields of a match are AND-ed (both pass)",    &fields_and,    EKS, C1_ALT,  ALLOWED),
    ];
    run(&t, rows).await;
}

#[tokio::test]
async fn dry_run_policies_are_logged_never_enforced() {
    let t = TwoClusters::start().await;
    let dry = |name: &str, action: &str, ns: &str| {
        let rules = format!("[[[{{namespaces: [!Exact {ns}]}}]]]");
        policy(name, C1_NS, "Namespace", action, true, &rules)
    };
    let dry_deny = [dry("dry-run-deny-default", "Deny", "default")];
    let dry_allow = [dry("dry-run-allow-c2", "Allow", "ecs-demo-2")];
    let dry_beside_enforced = [
        allow(
            "allow-c2-enforced",
            "[[[{namespaces: [!Exact ecs-demo-2]}]]]",
        ),
        dry("dry-run-allow-default", "Allow", "default"),
    ];
    const DRY_RUN: &str = "dry-run authorization policy result";
    #[rustfmt::skip]
    let rows = vec![
        row("a matching dry-run DENY is not enforced",      &dry_deny,            EKS, C1_ECHO, ALLOWED)
            .logging(&[DRY_RUN, "would_deny=[\"ecs-demo-1/dry-run-deny-default\"]"]),
        row("a lone dry-run ALLOW is not an ALLOW policy",  &dry_allow,           EKS, C1_ECHO, ALLOWED)
            .logging(&[DRY_RUN]),
        row("a matching dry-run ALLOW is reported",         &dry_allow,           C2,  C1_ECHO, ALLOWED)
            .logging(&[DRY_RUN, "would_allow=[\"ecs-demo-1/dry-run-allow-c2\"]"]),
        row("a matching dry-run ALLOW does not allow",      &dry_beside_enforced, EKS, C1_ECHO, NONE_ALLOWED)
            .logging(&[DRY_RUN, "would_allow=[\"ecs-demo-1/dry-run-allow-default\"]"]),
        row("the enforced ALLOW beside it still decides",   &dry_beside_enforced, C2,  C1_ECHO, ALLOWED),
    ];
    run(&t, rows).await;
}

#[tokio::test]
async fn policy_scopes_select_the_workloads_they_apply_to() {
    let t = TwoClusters::start().await;
    let from_default = "[[[{namespaces: [!Exact default]}]]]";
    let global = [policy(
        "deny-default-everywhere",
        "istio-system",
        "Global",
        "Deny",
        false,
        from_default,
    )];
    let in_c1 = [deny("deny-default-in-c1", from_default)];
    let in_c2 = [policy(
        "deny-default-in-c2",
        C2_NS,
        "Namespace",
        "Deny",
        false,
        from_default,
    )];
    let selector = [policy(
        "deny-default-selected",
        C1_NS,
        "WorkloadSelector",
        "Deny",
        false,
        from_default,
    )];
    let selector_allow = [policy(
        "allow-c2-selected",
        C1_NS,
        "WorkloadSelector",
        "Allow",
        false,
        "[[[{namespaces: [!Exact ecs-demo-2]}]]]",
    )];
    const SELECTED: &[&str] = &["ecs-demo-1/deny-default-selected"];
    const SELECTED_ALLOW: &[&str] = &["ecs-demo-1/allow-c2-selected"];
    #[rustfmt::skip]
    let rows = vec![
        row("GLOBAL applies in the policy's namespace",     &global,         EKS, C1_ECHO, denied_by("istio-system/deny-default-everywhere")),
        row("GLOBAL applies in every namespace",            &global,         EKS, Dest::C2, denied_by("istio-system/deny-default-everywhere")),
        row("GLOBAL still needs its rules to match",        &global,         C1,  C1_ECHO, ALLOWED),
        row("NAMESPACE applies in its namespace",           &in_c1,          EKS, C1_ECHO, denied_by("ecs-demo-1/deny-default-in-c1")),
        row("NAMESPACE applies only in its namespace",      &in_c1,          EKS, Dest::C2, ALLOWED),
        row("another namespace's NAMESPACE policy",         &in_c2,          EKS, C1_ECHO, ALLOWED),
        row("another namespace's NAMESPACE policy (there)", &in_c2,          EKS, Dest::C2, denied_by("ecs-demo-2/deny-default-in-c2")),
        row("WORKLOAD_SELECTOR not named: not applied",     &selector,       EKS, C1_ECHO, ALLOWED),
        row("WORKLOAD_SELECTOR named: applied",             &selector,       EKS, C1_ECHO, denied_by("ecs-demo-1/deny-default-selected"))
            .selecting(SELECTED),
        row("WORKLOAD_SELECTOR: only where named",          &selector,       EKS, Dest::C2, ALLOWED)
            .selecting(SELECTED),
        row("a selected ALLOW counts as an ALLOW policy",   &selector_allow, EKS, C1_ECHO, NONE_ALLOWED)
            .selecting(SELECTED_ALLOW),
        row("a selected ALLOW that matches",                &selector_allow, C2,  C1_ECHO, ALLOWED)
            .selecting(SELECTED_ALLOW),
        row("a named policy that does not exist is skipped", &[],            EKS, C1_ECHO, ALLOWED)
            .selecting(&["ecs-demo-1/no-such-policy"]),
    ];
    run(&t, rows).await;
}

#[tokio::test]
async fn source_identity_fields_and_their_negations() {
    let t = TwoClusters::start().await;
    let m = allow_match;
    let ns = m("ns-exact", "namespaces: [!Exact default]");
    let ns_prefix = m("ns-prefix", "namespaces: [!Prefix ecs-demo-]");
    let not_ns = m("not-ns", "notNamespaces: [!Exact default]");
    let exact = m(
        "principal-exact",
        "principals: [!Exact cluster.local/ns/default/sa/sleep]",
    );
    let scheme = m(
        "principal-with-scheme",
        "principals: [!Exact spiffe://cluster.local/ns/default/sa/sleep]",
    );
    let prefix = m(
        "principal-prefix",
        "principals: [!Prefix cluster.local/ns/ecs-demo-]",
    );
    let suffix = m("principal-suffix", "principals: [!Suffix /sa/sleep]");
    let presence = m("principal-presence", "principals: [!Presence []]");
    let not_exact = m(
        "not-principal-exact",
        "notPrincipals: [!Exact cluster.local/ns/default/sa/sleep]",
    );
    let not_prefix = m(
        "not-principal-prefix",
        "notPrincipals: [!Prefix cluster.local/ns/ecs-demo-]",
    );
    let not_suffix = m(
        "not-principal-suffix",
        "notPrincipals: [!Suffix /sa/shell-task]",
    );
    let not_presence = m("not-principal-presence", "notPrincipals: [!Presence []]");
    let sa = m(
        "sa",
        "serviceAccounts: [{namespace: default, serviceAccount: sleep}]",
    );
    let sa_ns = m(
        "sa-other-ns",
        "serviceAccounts: [{namespace: ecs-demo-1, serviceAccount: sleep}]",
    );
    let not_sa = m(
        "not-sa",
        "notServiceAccounts: [{namespace: ecs-demo-1, serviceAccount: shell-task}]",
    );
    #[rustfmt::skip]
    let rows = vec![
        row("namespaces: !Exact match",                       &ns,           EKS, C1_ECHO, ALLOWED),
        row("namespaces: !Exact mismatch",                    &ns,           C1,  C1_ECHO, NONE_ALLOWED),
        row("namespaces: !Prefix match",                      &ns_prefix,    C2,  C1_ECHO, ALLOWED),
        row("namespaces: !Prefix mismatch",                   &ns_prefix,    EKS, C1_ECHO, NONE_ALLOWED),
        row("notNamespaces: listed",                          &not_ns,       EKS, C1_ECHO, NONE_ALLOWED),
        row("notNamespaces: not listed",                      &not_ns,       C2,  C1_ECHO, ALLOWED),
        row("principals: !Exact, without spiffe://",          &exact,        EKS, C1_ECHO, ALLOWED),
        row("principals: !Exact, another identity",           &exact,        C1,  C1_ECHO, NONE_ALLOWED),
        row("principals: spiffe:// is stripped before tests", &scheme,       EKS, C1_ECHO, NONE_ALLOWED),
        row("principals: !Prefix match",                      &prefix,       C2,  C1_ECHO, ALLOWED),
        row("principals: !Prefix mismatch",                   &prefix,       EKS, C1_ECHO, NONE_ALLOWED),
        row("principals: !Suffix match",                      &suffix,       EKS, C1_ECHO, ALLOWED),
        row("principals: !Suffix mismatch",                   &suffix,       C1,  C1_ECHO, NONE_ALLOWED),
        row("principals: !Presence (any identity)",           &presence,     C2,  C1_ECHO, ALLOWED),
        row("notPrincipals: !Exact listed",                   &not_exact,    EKS, C1_ECHO, NONE_ALLOWED),
        row("notPrincipals: !Exact not listed",               &not_exact,    C1,  C1_ECHO, ALLOWED),
        row("notPrincipals: !Prefix listed",                  &not_prefix,   C2,  C1_ECHO, NONE_ALLOWED),
        row("notPrincipals: !Prefix not listed",              &not_prefix,   EKS, C1_ECHO, ALLOWED),
        row("notPrincipals: !Suffix listed",                  &not_suffix,   C1,  C1_ECHO, NONE_ALLOWED),
        row("notPrincipals: !Suffix not listed",              &not_suffix,   EKS, C1_ECHO, ALLOWED),
        row("notPrincipals: !Presence (mTLS always has one)", &not_presence, EKS, C1_ECHO, NONE_ALLOWED),
        row("serviceAccounts: namespace and name equal",      &sa,           EKS, C1_ECHO, ALLOWED),
        row("serviceAccounts: another account",               &sa,           C1,  C1_ECHO, NONE_ALLOWED),
        row("serviceAccounts: same name, other namespace",    &sa_ns,        EKS, C1_ECHO, NONE_ALLOWED),
        row("notServiceAccounts: listed",                     &not_sa,       C1,  C1_ECHO, NONE_ALLOWED),
        row("notServiceAccounts: same name, other namespace", &not_sa,       C2,  C1_ECHO, ALLOWED),
    ];
    run(&t, rows).await;
}

#[tokio::test]
async fn address_and_port_fields_and_their_negations() {
    let t = TwoClusters::start().await;
    let m = allow_match;
    let src = m("src-loopback", "sourceIps: [127.0.0.1/32]");
    let src_cidr = m("src-cidr", "sourceIps: [127.0.0.0/8]");
    let src_task = m("src-task-address", "sourceIps: ['{eks}/32']");
    let not_src = m("not-src-loopback", "notSourceIps: [127.0.0.1/32]");
    let not_src_other = m("not-src-other", "notSourceIps: [10.0.0.0/8]");
    let dst = m("dst-c1-echo", "destinationIps: ['{c1_echo}/32']");
    let dst_other = m("dst-c2-echo", "destinationIps: ['{c2_echo}/32']");
    let not_dst = m("not-dst-c1-echo", "notDestinationIps: ['{c1_echo}/32']");
    let not_dst_other = m("not-dst-c2-echo", "notDestinationIps: ['{c2_echo}/32']");
    let port = m("dst-port-8080", "destinationPorts: [8080]");
    let not_port = m("not-dst-port-8080", "notDestinationPorts: [8080]");
    #[rustfmt::skip]
    let rows = vec![
        row("sourceIps: the HBONE peer's address",           &src,           EKS, C1_ECHO, ALLOWED),
        row("sourceIps: CIDR containment",                   &src_cidr,      C2,  C1_ECHO, ALLOWED),
        row("sourceIps: not the client task's own address",  &src_task,      EKS, C1_ECHO, NONE_ALLOWED),
        row("notSourceIps: listed",                          &not_src,       EKS, C1_ECHO, NONE_ALLOWED),
        row("notSourceIps: not listed",                      &not_src_other, EKS, C1_ECHO, ALLOWED),
        row("destinationIps: the destination task",          &dst,           EKS, C1_ECHO, ALLOWED),
        row("destinationIps: another address",               &dst_other,     EKS, C1_ECHO, NONE_ALLOWED),
        row("notDestinationIps: listed",                     &not_dst,       EKS, C1_ECHO, NONE_ALLOWED),
        row("notDestinationIps: not listed",                 &not_dst_other, EKS, C1_ECHO, ALLOWED),
        row("destinationPorts: the target port",             &port,          EKS, C1_ECHO, ALLOWED),
        row("destinationPorts: another port",                &port,          EKS, C1_ALT,  NONE_ALLOWED),
        row("notDestinationPorts: listed",                   &not_port,      EKS, C1_ECHO, NONE_ALLOWED),
        row("notDestinationPorts: not listed",               &not_port,      EKS, C1_ALT,  ALLOWED),
    ];
    run(&t, rows).await;
}

/// Lines of `log` that warn that `policy` cannot be enforced at L4.
fn l4_warnings(log: &str, policy: &str) -> usize {
    let named = format!("policy {policy}:");
    log.lines()
        .filter(|l| l.contains("can never match at L4") && l.contains(&named))
        .count()
}

#[tokio::test]
async fn http_only_policy_denies_like_ztunnel_and_is_warned_about_once() {
    let t = TwoClusters::start().await;
    // An AuthorizationPolicy whose rule holds only HTTP attributes reaches
    // an L4 proxy as a rule with one clause holding one empty match.
    let http_allow = allow("http-only-allow", "[[[{}]]]");
    let http_deny = deny("http-only-deny", "[[[{}]]]");
    let only_allow = [http_allow.clone()];
    let both = [http_allow, http_deny.clone()];
    let only_deny = [http_deny];
    #[rustfmt::skip]
    let rows = vec![
        row("an ALLOW with only an empty match denies all", &only_allow, EKS, C1_ECHO, NONE_ALLOWED),
        row("an ALLOW with only an empty match denies all", &only_allow, C1,  C1_ECHO, NONE_ALLOWED),
        row("an ALLOW with only an empty match denies all", &only_allow, C2,  C1_ECHO, NONE_ALLOWED),
        row("... and after the file is edited",             &both,       EKS, C1_ECHO, NONE_ALLOWED),
        row("... and after the file is edited",             &both,       C2,  C1_ECHO, NONE_ALLOWED),
        row("a DENY with only an empty match denies none",  &only_deny,  EKS, C1_ECHO, ALLOWED),
        row("a DENY with only an empty match denies none",  &only_deny,  C1,  C1_ECHO, ALLOWED),
    ];
    run(&t, rows).await;
    // Each policy was applied several times (every edit of the file re-applies
    // all of it) and decided several connections: one warning each.
    let log = t.c1_echo.logs();
    assert_eq!(l4_warnings(&log, "ecs-demo-1/http-only-allow"), 1, "{log}");
    assert_eq!(l4_warnings(&log, "ecs-demo-1/http-only-deny"), 1, "{log}");
}

/// Echoes a short message every 100 ms on `stream` until `stop` is set or
/// the connection breaks; returns the round trips done and, if it broke,
/// when and how.
async fn keep_echoing(
    mut stream: TcpStream,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u32, Option<(Instant, String)>) {
    let mut rounds = 0;
    let mut buf = [0u8; 5];
    loop {
        if *stop.borrow() {
            return (rounds, None);
        }
        let round = async {
            stream.write_all(b"ping\n").await?;
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        match tokio::time::timeout(Duration::from_secs(5), round).await {
            Ok(Ok(b)) if &b == b"ping\n" => rounds += 1,
            Ok(Ok(b)) => return (rounds, Some((Instant::now(), format!("echo {b:?}")))),
            Ok(Err(e)) => return (rounds, Some((Instant::now(), e.to_string()))),
            Err(_) => return (rounds, Some((Instant::now(), "no echo within 5 s".into()))),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection from `from` to cluster 1's echo application.
async fn open(t: &TwoClusters, from: Client) -> TcpStream {
    match socks5_connect(t.client(from).socks5(), addr(t.c1_echo_ip(), ECHO_PORT)).await {
        SocksResult::Connected(s) => s,
        other => panic!("{} could not connect: {other:?}", from.label()),
    }
}

#[tokio::test]
async fn a_pushed_deny_closes_the_open_connection_it_denies_and_no_other() {
    let t = TwoClusters::start().await;
    let (c2_stream, eks_stream) = (open(&t, C2).await, open(&t, EKS).await);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let c2 = tokio::spawn(keep_echoing(c2_stream, stop.clone()));
    let eks = tokio::spawn(keep_echoing(eks_stream, stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !c2.is_finished() && !eks.is_finished(),
        "both connections echo before the change"
    );
    assert_eq!(
        metric(
            &t.c1_echo,
            "ztunnel_sidecar_policy_closed_connections_total"
        )
        .await,
        Some(0.0)
    );
    let log_from = t.c1_echo.logs().len();

    let pushed = Instant::now();
    t.push(
        &[deny(
            "deny-from-c2",
            "[[[{namespaces: [!Exact ecs-demo-2]}]]]",
        )],
        &[],
    )
    .await;
    let applied = pushed.elapsed();
    let (c2_rounds, broke) = tokio::time::timeout(Duration::from_secs(10), c2)
        .await
        .expect("the C2 connection is still open 10 s after the DENY")
        .unwrap();
    let (closed_at, how) = broke.expect("the C2 connection broke");
    let closed = closed_at - pushed;
    println!(
        "C2 connection closed {closed:?} after the file was rewritten (applied after {applied:?}; \
         the file is polled every 500 ms); {c2_rounds} round trips before; client saw: {how}"
    );
    // A generous bound: the point is "at once", not "at some timeout".
    assert!(
        closed < Duration::from_secs(3),
        "closed only after {closed:?}"
    );

    // The other connection keeps working.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!eks.is_finished(), "the EKS connection must stay open");
    stop_tx.send(true).unwrap();
    let (eks_rounds, eks_broke) = eks.await.unwrap();
    assert!(eks_broke.is_none(), "EKS connection broke: {eks_broke:?}");
    assert!(eks_rounds >= 20, "EKS echoed only {eks_rounds} times");

    let line = wait_for_log(
        &t.c1_echo,
        log_from,
        &[
            "connection closed due to policy change",
            "explicitly denied by: ecs-demo-1/deny-from-c2",
        ],
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_else(|| panic!("no policy-change close in the log:\n{}", t.c1_echo.logs()));
    assert!(
        line.contains("spiffe://cluster.local/ns/ecs-demo-2/sa/shell-task"),
        "{line}"
    );
    // One re-evaluation closed one connection (the access log records the
    // same close once more, as the connection's end).
    let log = t.c1_echo.logs();
    let closes: Vec<&str> = log[log_from..]
        .lines()
        .filter(|l| l.contains("connection closed due to policy change"))
        .collect();
    assert_eq!(closes.len(), 2, "{closes:#?}");
    assert!(
        closes
            .iter()
            .any(|l| l.contains("access") && l.contains("src.namespace=\"ecs-demo-2\"")),
        "{closes:#?}"
    );
    assert_eq!(
        metric(
            &t.c1_echo,
            "ztunnel_sidecar_policy_closed_connections_total"
        )
        .await,
        Some(1.0)
    );
    // And new connections follow the new policy.
    assert_eq!(
        t.probe(C2, addr(t.c1_echo_ip(), ECHO_PORT), &t.c1_app)
            .await,
        Outcome::Denied
    );
    assert_eq!(
        t.probe(EKS, addr(t.c1_echo_ip(), ECHO_PORT), &t.c1_app)
            .await,
        Outcome::Allowed
    );
}
