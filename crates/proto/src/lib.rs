//! Protobuf messages (and, with the `grpc` feature, tonic client/server stubs)
//! for the protocols between a ztunnel-compatible proxy and istiod:
//!
//! * [`istio::workload`]: workloads and services (`istio.workload.Address`),
//! * [`istio::security`]: L4 authorization policies (`istio.security.Authorization`),
//! * [`istio::v1::auth`]: the CA's `CreateCertificate` call,
//! * [`envoy::service::discovery::v3`]: delta aggregated discovery (ADS),
//! * [`google::rpc`]: the `Status` carried by NACKs.
//!
//! The `.proto` sources live in the repository's top-level `proto/` folder. They
//! were written for this project from the ztunnel reference; their field numbers
//! are a wire contract with istiod and upstream ztunnel and must not change.
//! This crate holds no logic: conversions into the mesh model live in `zs-state`
//! and `zs-authz`.

#![allow(clippy::all, missing_docs)]

/// Type URL of workload and service resources.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of authorization policy resources.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

pub mod istio {
    pub mod workload {
        include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));
    }
    pub mod security {
        include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
    }
    pub mod v1 {
        pub mod auth {
            include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
        }
    }
}

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

#[cfg(test)]
mod tests {
    use super::istio::security::{Authorization, StringMatch, string_match::MatchType};
    use super::istio::workload::{Address, Workload, address};
    use prost::Message;

    /// Field numbers are the contract: a hand-encoded Workload with uid (20) and
    /// capacity (27) must decode into the expected fields.
    #[test]
    fn workload_field_numbers_match_the_wire_contract() {
        // field 20 (uid), wire type 2: tag = (20 << 3) | 2 = 162 = 0xa2 0x01
        let mut buf = vec![0xa2, 0x01, 3, b'a', b'/', b'b'];
        // field 27 (capacity, UInt32Value{value=1: 7}): tag = (27<<3)|2 = 218 = 0xda 0x01
        buf.extend_from_slice(&[0xda, 0x01, 2, 0x08, 7]);
        // field 3 (addresses): 4 raw bytes
        buf.extend_from_slice(&[0x1a, 4, 10, 0, 0, 1]);
        let w = Workload::decode(buf.as_slice()).unwrap();
        assert_eq!(w.uid, "a/b");
        assert_eq!(w.capacity, Some(7));
        assert_eq!(&w.addresses[0][..], &[10, 0, 0, 1]);
    }

    #[test]
    fn address_oneof_round_trips() {
        let a = Address {
            r#type: Some(address::Type::Workload(Workload {
                uid: "x".into(),
                ..Default::default()
            })),
        };
        let back = Address::decode(a.encode_to_vec().as_slice()).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn string_match_presence_is_field_four() {
        let p = Authorization {
            rules: vec![super::istio::security::Rule {
                clauses: vec![super::istio::security::Clause {
                    matches: vec![super::istio::security::Match {
                        principals: vec![StringMatch {
                            match_type: Some(MatchType::Presence(())),
                        }],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        // ... principals (3) -> StringMatch -> field 4, length 0: 0x22 0x00
        assert!(bytes.windows(2).any(|w| w == [0x22, 0x00]));
    }
}
