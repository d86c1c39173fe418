//! How `istioctl ztunnel-config` reads a `/config_dump`, redone in Rust so
//! tests can check that istioctl pointed at this sidecar prints what it prints
//! for ztunnel (feature `testing`).
//!
//! istioctl (`istioctl/pkg/writer/ztunnel/configdump`) unmarshals the dump into
//! Go structs and prints tables from a few of their fields. The structs here
//! mirror those Go structs field for field (same JSON names, same nesting, same
//! types, every field optional as in Go), [`prime`] reads a dump the way
//! `Prime` does, and the `*_summary` functions redo the column extraction and
//! sorting of `PrintWorkloadSummary`, `PrintServiceSummary`,
//! `PrintPolicySummary` and `PrintSecretSummary`, including Go's
//! `text/tabwriter` layout. A change of shape that would break istioctl (a
//! renamed key, a number where Go wants a string) makes [`prime`] fail.
//!
//! Used by this crate's tests (against fixtures) and by the end-to-end tests
//! (against a running sidecar); not part of the sidecar.

// The Go structs' fields carry Go's names; each is documented there, not here.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

// ---- the Go structs (api.go) ----------------------------------------------

/// `Locality`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

/// `ApplicationTunnel`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ApplicationTunnel {
    pub protocol: String,
    pub port: Option<u16>,
}

/// `GatewayAddress` (waypoint or network gateway); only its destination is read.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct GatewayAddress {
    pub destination: String,
}

/// `ZtunnelWorkload`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct ZtunnelWorkload {
    pub uid: String,
    pub workload_ips: Vec<String>,
    pub waypoint: Option<GatewayAddress>,
    pub network_gateway: Option<GatewayAddress>,
    pub protocol: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub workload_name: String,
    pub workload_type: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub cluster_id: String,
    pub trust_domain: String,
    pub locality: Locality,
    pub node: String,
    pub network: String,
    pub status: String,
    pub hostname: String,
    pub capacity: u32,
    pub application_tunnel: ApplicationTunnel,
    pub authorization_policies: Vec<String>,
}

/// `LoadBalancer`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancer {
    pub mode: String,
    pub routing_preferences: Vec<String>,
    pub health_policy: String,
}

/// `ZtunnelEndpoint`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct ZtunnelEndpoint {
    pub workload_uid: String,
    pub service: String,
    pub address: String,
    pub port: BTreeMap<u16, u16>,
}

/// Go's CIDRVIP accepts `{"cidr":..,"network":..}` or `"network/cidr"`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum CidrVip {
    Object {
        #[serde(default)]
        cidr: String,
        #[serde(default)]
        network: String,
    },
    Text(String),
}

/// `ZtunnelService`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct ZtunnelService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    #[serde(rename = "vips")]
    pub addresses: Vec<String>,
    pub cidr_vips: Vec<CidrVip>,
    pub ports: BTreeMap<String, i64>,
    pub load_balancer: Option<LoadBalancer>,
    pub waypoint: Option<GatewayAddress>,
    pub endpoints: BTreeMap<String, ZtunnelEndpoint>,
    pub subject_alt_names: Vec<String>,
    pub ip_families: String,
    pub canonical: bool,
    pub visibility: String,
}

/// `StringMatch` (Go field names, capitalised, as istioctl reads them).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct StringMatch {
    #[serde(rename = "Exact")]
    pub exact: String,
    #[serde(rename = "Suffix")]
    pub suffix: String,
    #[serde(rename = "Prefix")]
    pub prefix: String,
    #[serde(rename = "Presence")]
    pub presence: Option<Value>,
}

/// `ServiceAccountMatch`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

/// `PolicyMatch`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyMatch {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub source_ips: Vec<String>,
    pub not_source_ips: Vec<String>,
    pub destination_ips: Vec<String>,
    pub not_destination_ips: Vec<String>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
}

/// `ZtunnelPolicy`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ZtunnelPolicy {
    pub name: String,
    pub namespace: String,
    pub scope: String,
    pub action: String,
    pub rules: Vec<Vec<Vec<Option<PolicyMatch>>>>,
}

/// `Cert`: one certificate of a chain.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct Cert {
    pub pem: String,
    pub serial_number: String,
    pub valid_from: String,
    pub expiration_time: String,
}

/// `CertsDump`: one identity's certificates.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub struct CertsDump {
    pub identity: String,
    pub state: String,
    pub cert_chain: Vec<Cert>,
    #[serde(rename = "rootCerts")]
    pub root_cert: Vec<Cert>,
}

/// What istioctl keeps of a dump.
#[derive(Default, Debug)]
pub struct ZtunnelDump {
    pub workloads: Vec<ZtunnelWorkload>,
    pub services: Vec<ZtunnelService>,
    pub policies: Vec<ZtunnelPolicy>,
    pub certificates: Vec<CertsDump>,
}

// ---- Prime (configdump.go) ------------------------------------------------

/// Go's `json.Unmarshal` treats `null` as "leave the zero value"; serde would
/// refuse it for a string. Removing nulls first gives Go's reading.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// A dump istioctl would refuse: which part, and why.
#[derive(Debug, thiserror::Error)]
#[error("istioctl could not unmarshal {part}: {source}")]
pub struct UnmarshalError {
    /// `document`, or the top-level key (`workloads`, `services`, …).
    pub part: &'static str,
    /// What the JSON decoder said.
    pub source: serde_json::Error,
}

/// `unmarshalListOrMap`: a JSON list, or a map whose values are taken.
fn list_or_map<T: for<'de> Deserialize<'de>>(
    part: &'static str,
    v: Option<&Value>,
) -> Result<Vec<T>, UnmarshalError> {
    let err = |source| UnmarshalError { part, source };
    match v {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .values()
            .map(|v| serde_json::from_value(v.clone()).map_err(err))
            .collect(),
        Some(v) => serde_json::from_value(v.clone()).map_err(err),
    }
}

/// Reads a `/config_dump` body as istioctl's `Prime` does.
pub fn prime(body: &[u8]) -> Result<ZtunnelDump, UnmarshalError> {
    let mut raw: Value = serde_json::from_slice(body).map_err(|source| UnmarshalError {
        part: "document",
        source,
    })?;
    drop_nulls(&mut raw);
    Ok(ZtunnelDump {
        services: list_or_map("services", raw.get("services"))?,
        workloads: list_or_map("workloads", raw.get("workloads"))?,
        certificates: list_or_map("certificates", raw.get("certificates"))?,
        policies: list_or_map("policies", raw.get("policies"))?,
    })
}

// ---- Go's text/tabwriter (minwidth 0, tabwidth 8, padchar ' ', no flags) ---

fn tabwriter(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        // The last cell of a line is not part of a column.
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + padding);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

// ---- workload.go ----------------------------------------------------------

fn waypoint_name(waypoint: &Option<GatewayAddress>, services: &[ZtunnelService]) -> String {
    let Some(waypoint) = waypoint else {
        return "None".into();
    };
    for svc in services {
        if format!("{}/{}", svc.namespace, svc.hostname) == waypoint.destination {
            return svc.name.clone();
        }
        if svc.addresses.contains(&waypoint.destination) {
            return svc.name.clone();
        }
    }
    "NA".into()
}

/// `istioctl ztunnel-config workloads`.
pub fn workload_summary(dump: &ZtunnelDump) -> String {
    let mut workloads: Vec<&ZtunnelWorkload> = dump.workloads.iter().collect();
    workloads.sort_by(|a, b| {
        (format!("{}.{}", a.namespace, a.name), &a.node)
            .cmp(&(format!("{}.{}", b.namespace, b.name), &b.node))
    });
    let mut rows = vec![row(&[
        "NAMESPACE",
        "POD NAME",
        "ADDRESS",
        "NODE",
        "WAYPOINT",
        "PROTOCOL",
    ])];
    for wl in workloads {
        let mut address = wl.workload_ips.join(",");
        if address.is_empty() {
            address = wl.hostname.clone();
        }
        rows.push(vec![
            wl.namespace.clone(),
            wl.name.clone(),
            address,
            wl.node.clone(),
            waypoint_name(&wl.waypoint, &dump.services),
            wl.protocol.clone(),
        ]);
    }
    tabwriter(&rows, 1)
}

// ---- services.go ----------------------------------------------------------

/// `istioctl ztunnel-config services`.
pub fn service_summary(dump: &ZtunnelDump) -> String {
    let workloads: BTreeMap<&str, &ZtunnelWorkload> =
        dump.workloads.iter().map(|w| (w.uid.as_str(), w)).collect();
    let mut services: Vec<&ZtunnelService> = dump.services.iter().collect();
    services.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.hostname).cmp(&(&b.namespace, &b.name, &b.hostname))
    });
    let mut rows = vec![row(&[
        "NAMESPACE",
        "SERVICE NAME",
        "SERVICE VIP",
        "WAYPOINT",
        "ENDPOINTS",
    ])];
    for svc in services {
        let ips: Vec<&str> = svc
            .addresses
            .iter()
            .map(|a| a.split_once('/').map_or("", |(_, ip)| ip))
            .collect();
        let healthy = svc
            .endpoints
            .values()
            .filter(|ep| {
                workloads
                    .get(ep.workload_uid.as_str())
                    .is_some_and(|w| w.status == "Healthy")
            })
            .count();
        rows.push(vec![
            svc.namespace.clone(),
            svc.name.clone(),
            ips.join(","),
            waypoint_name(&svc.waypoint, &dump.services),
            format!("{}/{}", healthy, svc.endpoints.len()),
        ]);
    }
    tabwriter(&rows, 1)
}

// ---- policies.go ----------------------------------------------------------

/// `istioctl ztunnel-config policies`.
pub fn policy_summary(dump: &ZtunnelDump) -> String {
    let mut policies: Vec<&ZtunnelPolicy> = dump.policies.iter().collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut rows = vec![row(&["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"])];
    for p in policies {
        rows.push(vec![
            p.namespace.clone(),
            p.name.clone(),
            p.action.clone(),
            p.scope.clone(),
        ]);
    }
    tabwriter(&rows, 1)
}

// ---- certificates.go ------------------------------------------------------

fn value_or_na(v: &str) -> String {
    if v.is_empty() { "NA".into() } else { v.into() }
}

/// Go's `time.Parse(time.RFC3339, ..)` for the `Z` form we print.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn cert_not_expired(cert: &Cert) -> bool {
    if cert.expiration_time.is_empty() && cert.valid_from.is_empty() {
        return false;
    }
    let (Some(exp), Some(from)) = (
        parse_rfc3339(&cert.expiration_time),
        parse_rfc3339(&cert.valid_from),
    ) else {
        return false;
    };
    let now = SystemTime::now();
    now > from && now < exp
}

/// `new(big.Int).SetString(s, 10)` printed with `%x`; `<nil>` when it does not parse.
pub fn decimal_to_hex(s: &str) -> String {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return "<nil>".into();
    }
    // Little-endian base-2^32 limbs.
    let mut limbs: Vec<u32> = vec![0];
    for digit in s.bytes().map(|b| u64::from(b - b'0')) {
        let mut carry = digit;
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    let mut hex = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            hex.push_str(&format!("{limb:x}"));
        } else {
            hex.push_str(&format!("{limb:08x}"));
        }
    }
    hex
}

/// `istioctl ztunnel-config certificates`.
pub fn secret_summary(dump: &ZtunnelDump) -> String {
    let mut rows = vec![row(&[
        "CERTIFICATE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ])];
    for secret in &dump.certificates {
        let state = if secret.state.contains("Unavailable") {
            "Unavailable".to_owned()
        } else {
            secret.state.clone()
        };
        if secret.cert_chain.is_empty() {
            rows.push(vec![
                secret.identity.clone(),
                value_or_na(""),
                state,
                "false".into(),
                value_or_na(""),
                value_or_na(""),
                value_or_na(""),
            ]);
            continue;
        }
        let legacy = secret.root_cert.is_empty();
        for (i, ca) in secret.cert_chain.iter().enumerate() {
            let kind = if i == 0 {
                "Leaf"
            } else if i == secret.cert_chain.len() - 1 && legacy {
                "Root"
            } else {
                "Intermediate"
            };
            rows.push(vec![
                secret.identity.clone(),
                kind.into(),
                state.clone(),
                cert_not_expired(ca).to_string(),
                decimal_to_hex(&ca.serial_number),
                value_or_na(&ca.expiration_time),
                value_or_na(&ca.valid_from),
            ]);
        }
        for ca in &secret.root_cert {
            rows.push(vec![
                secret.identity.clone(),
                "Root".into(),
                state.clone(),
                cert_not_expired(ca).to_string(),
                decimal_to_hex(&ca.serial_number),
                value_or_na(&ca.expiration_time),
                value_or_na(&ca.valid_from),
            ]);
        }
    }
    tabwriter(&rows, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_serials_convert_to_hex_like_big_int() {
        assert_eq!(decimal_to_hex("0"), "0");
        assert_eq!(decimal_to_hex("255"), "ff");
        assert_eq!(decimal_to_hex("4294967296"), "100000000");
        assert_eq!(
            decimal_to_hex("335836746864161670503"),
            "1234abcdef01234567"
        );
        assert_eq!(decimal_to_hex("0x1f"), "<nil>");
    }

    #[test]
    fn prime_names_the_part_istioctl_cannot_read() {
        let err = prime(br#"{"workloads":[{"capacity":"one"}]}"#).unwrap_err();
        assert_eq!(err.part, "workloads");
    }
}
