//! Building a local mesh: the PKI and the `LOCAL_XDS_PATH` file both programs read.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use zs_identity::Identity;
use zs_tls::testing::TestCa;

/// A throwaway CA and a directory to put certificate dirs and config files in.
pub struct Pki {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Pki {
            ca: TestCa::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes `cert-chain.pem`, `key.pem`, `root-cert.pem` for `ns/sa` and returns the dir.
    pub fn cert_dir(&self, namespace: &str, service_account: &str) -> PathBuf {
        let id = Identity::new("cluster.local", namespace, service_account).unwrap();
        let dir = self
            .dir
            .path()
            .join(format!("certs-{namespace}-{service_account}"));
        self.ca.write_cert_dir(&id, &dir).expect("write cert dir");
        dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A workload in the local config.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    pub hbone: bool,
    pub network: String,
    /// (service key `ns/hostname`, service port, target port)
    pub services: Vec<(String, u16, u16)>,
    pub extra: Value,
}

impl WorkloadSpec {
    pub fn new(namespace: &str, name: &str, service_account: &str, ip: IpAddr) -> Self {
        WorkloadSpec {
            uid: format!("cluster1//Pod/{namespace}/{name}"),
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            ips: vec![ip],
            hbone: true,
            network: String::new(),
            services: Vec::new(),
            extra: json!({}),
        }
    }

    pub fn in_service(mut self, key: &str, service_port: u16, target_port: u16) -> Self {
        self.services.push((key.into(), service_port, target_port));
        self
    }

    fn to_json(&self) -> Value {
        let mut services = serde_json::Map::new();
        for (key, sp, tp) in &self.services {
            let entry = services.entry(key.clone()).or_insert_with(|| json!({}));
            entry[sp.to_string()] = json!(tp);
        }
        let mut v = json!({
            "uid": self.uid,
            "name": self.name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "trustDomain": "cluster.local",
            "workloadIps": self.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "protocol": if self.hbone { "HBONE" } else { "TCP" },
            "network": self.network,
            "services": services,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), self.extra.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// A service in the local config.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<String>,
    pub ports: Vec<(u16, u16)>,
    pub sans: Vec<String>,
    pub extra: Value,
}

impl ServiceSpec {
    pub fn new(namespace: &str, name: &str, hostname: &str) -> Self {
        ServiceSpec {
            name: name.into(),
            namespace: namespace.into(),
            hostname: hostname.into(),
            vips: Vec::new(),
            ports: Vec::new(),
            sans: Vec::new(),
            extra: json!({}),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }

    pub fn port(mut self, service_port: u16, target_port: u16) -> Self {
        self.ports.push((service_port, target_port));
        self
    }

    pub fn vip(mut self, network_ip: &str) -> Self {
        self.vips.push(network_ip.into());
        self
    }

    pub fn san(mut self, ns: &str, sa: &str) -> Self {
        self.sans
            .push(format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"));
        self
    }

    fn to_json(&self) -> Value {
        let mut ports = serde_json::Map::new();
        for (sp, tp) in &self.ports {
            ports.insert(sp.to_string(), json!(tp));
        }
        let mut v = json!({
            "name": self.name,
            "namespace": self.namespace,
            "hostname": self.hostname,
            "vips": self.vips,
            "ports": ports,
            "subjectAltNames": self.sans,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), self.extra.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// JSON → YAML, turning all-digit map keys (port maps) into integer keys, as
/// the local-config format requires (`ports: {80: 8080}`).
fn yaml_value(v: Value) -> serde_yaml::Value {
    match v {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(b),
        Value::Number(n) => serde_yaml::to_value(n).expect("number"),
        Value::String(s) => serde_yaml::Value::String(s),
        Value::Array(a) => serde_yaml::Value::Sequence(a.into_iter().map(yaml_value).collect()),
        Value::Object(o) => serde_yaml::Value::Mapping(
            o.into_iter()
                .map(|(k, v)| {
                    let key = match k.parse::<u64>() {
                        Ok(n) => serde_yaml::Value::Number(n.into()),
                        Err(_) => serde_yaml::Value::String(k),
                    };
                    (key, yaml_value(v))
                })
                .collect(),
        ),
    }
}

/// The whole local config file.
#[derive(Clone, Debug, Default)]
pub struct MeshConfig {
    pub workloads: Vec<WorkloadSpec>,
    pub services: Vec<ServiceSpec>,
    /// Raw YAML list items (policies use YAML tags such as `!Exact`).
    pub policies: Vec<String>,
}

impl MeshConfig {
    pub fn workload(mut self, w: WorkloadSpec) -> Self {
        self.workloads.push(w);
        self
    }

    pub fn service(mut self, s: ServiceSpec) -> Self {
        self.services.push(s);
        self
    }

    /// A policy in local-config YAML, e.g.
    /// `name: x\nnamespace: ns\nscope: Namespace\naction: Allow\ndryRun: false\nrules: []`.
    pub fn policy(mut self, yaml: &str) -> Self {
        self.policies.push(yaml.to_string());
        self
    }

    /// The YAML text (JSON flow style for workloads/services; raw YAML policies).
    pub fn render(&self) -> String {
        let workloads: Vec<Value> = self.workloads.iter().map(WorkloadSpec::to_json).collect();
        let services: Vec<Value> = self.services.iter().map(ServiceSpec::to_json).collect();
        let doc = serde_yaml::to_string(&yaml_value(json!({
            "workloads": workloads,
            "services": services,
        })))
        .expect("render YAML");
        let mut out = doc;
        if self.policies.is_empty() {
            out.push_str("policies: []\n");
        } else {
            out.push_str("policies:\n");
            for p in &self.policies {
                let mut first = true;
                for line in p.lines() {
                    out.push_str(if first { "- " } else { "  " });
                    out.push_str(line);
                    out.push('\n');
                    first = false;
                }
            }
        }
        out
    }

    /// Writes the file and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.render()).expect("write mesh config");
        path
    }
}
