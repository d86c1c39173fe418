//! The xDS node: who is asking. istiod uses the id and metadata to pick the
//! proxy's configuration (and its cluster, network, version), so they are
//! built exactly as ztunnel builds them.

use serde_json::{Map, Value};
use zs_proto::envoy::config::core::v3 as core;

/// Default for `INSTANCE_IP` when it is not set.
pub const DEFAULT_INSTANCE_IP: &str = "1.1.1.1";

const META_PREFIX: &str = "ISTIO_META_";
const METAJSON_PREFIX: &str = "ISTIO_METAJSON_";

/// An xDS node: id plus structured metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.metadata`, converted to a protobuf `Struct` on the wire.
    pub metadata: Map<String, Value>,
}

impl Node {
    /// ztunnel's node from environment variables (name, value):
    ///
    /// * id `ztunnel~<INSTANCE_IP or 1.1.1.1>~<POD_NAME>.<POD_NAMESPACE>~<POD_NAMESPACE>.svc.cluster.local`;
    /// * metadata `NAME`, `NAMESPACE`, `INSTANCE_IPS`, `NODE_NAME` (empty
    ///   strings when unset), then every `ISTIO_META_<K>` as `<K>`, then every
    ///   `ISTIO_METAJSON_<K>` parsed as JSON under `<K>` (values that are not
    ///   JSON are logged and skipped, as ztunnel does).
    ///
    /// Proxy metadata from other sources (mesh config, `PROXY_CONFIG`) can be
    /// passed in as further `ISTIO_META_<K>` pairs.
    pub fn ztunnel<K: AsRef<str>, V: AsRef<str>>(env: impl IntoIterator<Item = (K, V)>) -> Node {
        let env: Vec<(K, V)> = env.into_iter().collect();
        let get = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k.as_ref() == name)
                .map(|(_, v)| v.as_ref())
        };
        let ip = get("INSTANCE_IP").unwrap_or(DEFAULT_INSTANCE_IP);
        let pod = get("POD_NAME").unwrap_or("");
        let ns = get("POD_NAMESPACE").unwrap_or("");
        let node_name = get("NODE_NAME").unwrap_or("");

        let mut metadata = Map::new();
        for (k, v) in [
            ("NAME", pod),
            ("NAMESPACE", ns),
            ("INSTANCE_IPS", ip),
            ("NODE_NAME", node_name),
        ] {
            metadata.insert(k.to_string(), Value::String(v.to_string()));
        }
        for (k, v) in &env {
            if let Some(key) = k.as_ref().strip_prefix(META_PREFIX) {
                metadata.insert(key.to_string(), Value::String(v.as_ref().to_string()));
            }
        }
        for (k, v) in &env {
            if let Some(key) = k.as_ref().strip_prefix(METAJSON_PREFIX) {
                match serde_json::from_str::<Value>(v.as_ref()) {
                    Ok(value) => {
                        metadata.insert(key.to_string(), value);
                    }
                    Err(e) => {
                        tracing::error!(variable = k.as_ref(), error = %e, "ignoring node metadata that is not JSON")
                    }
                }
            }
        }
        Node {
            id: format!("ztunnel~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
            metadata,
        }
    }

    /// The protobuf form sent in initial requests.
    pub fn to_proto(&self) -> core::Node {
        core::Node {
            id: self.id.clone(),
            metadata: Some(to_struct(&self.metadata)),
            ..Default::default()
        }
    }
}

fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        // protobuf's Struct has only doubles.
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    #[test]
    fn id_follows_ztunnels_format() {
        let node = Node::ztunnel([
            ("INSTANCE_IP", "10.0.1.7"),
            ("POD_NAME", "echo-7d9"),
            ("POD_NAMESPACE", "ecs-demo"),
        ]);
        assert_eq!(
            node.id,
            "ztunnel~10.0.1.7~echo-7d9.ecs-demo~ecs-demo.svc.cluster.local"
        );
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let node = Node::ztunnel(Vec::<(String, String)>::new());
        assert_eq!(node.id, "ztunnel~1.1.1.1~.~.svc.cluster.local");
        assert_eq!(node.metadata["INSTANCE_IPS"], "1.1.1.1");
        assert_eq!(node.metadata["NAME"], "");
        assert_eq!(node.metadata["NAMESPACE"], "");
        assert_eq!(node.metadata["NODE_NAME"], "");
    }

    #[test]
    fn istio_meta_variables_become_metadata_keys() {
        let node = Node::ztunnel([
            ("ISTIO_META_CLUSTER_ID", "ecs-cluster"),
            ("ISTIO_META_NETWORK", "ecs-net"),
            ("UNRELATED", "x"),
        ]);
        assert_eq!(node.metadata["CLUSTER_ID"], "ecs-cluster");
        assert_eq!(node.metadata["NETWORK"], "ecs-net");
        assert!(!node.metadata.contains_key("UNRELATED"));
    }

    #[test]
    fn metajson_variables_are_structured() {
        let node = Node::ztunnel([
            ("ISTIO_METAJSON_LABELS", r#"{"app":"echo","tier":2}"#),
            ("ISTIO_METAJSON_BROKEN", "{not json"),
        ]);
        assert_eq!(
            node.metadata["LABELS"],
            serde_json::json!({"app": "echo", "tier": 2})
        );
        assert!(!node.metadata.contains_key("BROKEN"));
    }

    #[test]
    fn proto_metadata_keeps_structure() {
        let node = Node::ztunnel([("ISTIO_METAJSON_LABELS", r#"{"app":"echo","n":[1,true]}"#)]);
        let proto = node.to_proto();
        let meta = proto.metadata.unwrap();
        let Some(Kind::StructValue(labels)) = &meta.fields["LABELS"].kind else {
            panic!("LABELS is not a struct");
        };
        assert_eq!(
            labels.fields["app"].kind,
            Some(Kind::StringValue("echo".into()))
        );
        let Some(Kind::ListValue(list)) = &labels.fields["n"].kind else {
            panic!("n is not a list");
        };
        assert_eq!(list.values[0].kind, Some(Kind::NumberValue(1.0)));
        assert_eq!(list.values[1].kind, Some(Kind::BoolValue(true)));
        assert_eq!(
            meta.fields["INSTANCE_IPS"].kind,
            Some(Kind::StringValue("1.1.1.1".into()))
        );
    }
}
