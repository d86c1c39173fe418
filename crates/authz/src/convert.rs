//! Conversions between the xDS message `istio.security.Authorization` and
//! [`Policy`].
//!
//! Inbound (istiod → us) follows ztunnel's acceptance rules, because an
//! accepted or rejected resource is visible on the wire as an ACK or a NACK:
//! an unknown scope or action rejects the resource; an address that is not a
//! valid CIDR and a string match with no variant are dropped from their match
//! without failing it; ports and prefix lengths are narrowed to their integer
//! width exactly as ztunnel narrows them (istiod never sends values that
//! overflow). Outbound (for a control plane that serves policies it read from
//! YAML) is lossless.

use std::net::IpAddr;

use ipnet::IpNet;
use zs_proto::istio::security as xds;
use zs_proto::istio::security::string_match::MatchType;

use crate::policy::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};

/// Why an xDS `Authorization` resource cannot become a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// The scope is not GLOBAL, NAMESPACE or WORKLOAD_SELECTOR.
    #[error("authorization policy {policy}: unknown scope value {value}")]
    UnknownScope {
        /// `<namespace>/<name>` of the rejected resource.
        policy: String,
        /// The enum value received.
        value: i32,
    },
    /// The action is not ALLOW or DENY (ztunnel has no AUDIT or CUSTOM).
    #[error("authorization policy {policy}: unknown action value {value}")]
    UnknownAction {
        /// `<namespace>/<name>` of the rejected resource.
        policy: String,
        /// The enum value received.
        value: i32,
    },
}

/// Accepts what ztunnel accepts: unknown scope or action values reject the
/// resource; addresses that are not a valid IP with a fitting prefix length
/// and string matches with no variant are dropped from their match; ports
/// are narrowed to 16 bits and prefix lengths to 8 bits before use, as
/// ztunnel narrows them.
impl TryFrom<xds::Authorization> for Policy {
    type Error = ConversionError;

    fn try_from(msg: xds::Authorization) -> Result<Self, Self::Error> {
        let key = || format!("{}/{}", msg.namespace, msg.name);
        let scope = match xds::Scope::try_from(msg.scope) {
            Ok(xds::Scope::Global) => Scope::Global,
            Ok(xds::Scope::Namespace) => Scope::Namespace,
            Ok(xds::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => {
                return Err(ConversionError::UnknownScope {
                    policy: key(),
                    value: msg.scope,
                });
            }
        };
        let action = match xds::Action::try_from(msg.action) {
            Ok(xds::Action::Allow) => Action::Allow,
            Ok(xds::Action::Deny) => Action::Deny,
            Err(_) => {
                return Err(ConversionError::UnknownAction {
                    policy: key(),
                    value: msg.action,
                });
            }
        };
        let rules = msg
            .rules
            .into_iter()
            .map(|rule| Rule {
                clauses: rule
                    .clauses
                    .into_iter()
                    .map(|clause| Clause {
                        matches: clause.matches.into_iter().map(Match::from).collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Policy {
            name: msg.name,
            namespace: msg.namespace,
            scope,
            action,
            rules,
            dry_run: msg.dry_run,
        })
    }
}

impl From<xds::Match> for Match {
    fn from(m: xds::Match) -> Self {
        Match {
            namespaces: string_matches(m.namespaces),
            not_namespaces: string_matches(m.not_namespaces),
            service_accounts: service_accounts(m.service_accounts),
            not_service_accounts: service_accounts(m.not_service_accounts),
            principals: string_matches(m.principals),
            not_principals: string_matches(m.not_principals),
            source_ips: cidrs(&m.source_ips),
            not_source_ips: cidrs(&m.not_source_ips),
            destination_ips: cidrs(&m.destination_ips),
            not_destination_ips: cidrs(&m.not_destination_ips),
            destination_ports: ports(&m.destination_ports),
            not_destination_ports: ports(&m.not_destination_ports),
        }
    }
}

fn string_matches(list: Vec<xds::StringMatch>) -> Vec<StringMatch> {
    list.into_iter()
        .filter_map(|m| {
            Some(match m.match_type? {
                MatchType::Exact(s) => StringMatch::Exact(s),
                MatchType::Prefix(s) => StringMatch::Prefix(s),
                MatchType::Suffix(s) => StringMatch::Suffix(s),
                MatchType::Presence(()) => StringMatch::Presence,
            })
        })
        .collect()
}

fn service_accounts(list: Vec<xds::ServiceAccountMatch>) -> Vec<ServiceAccountMatch> {
    list.into_iter()
        .map(|m| ServiceAccountMatch {
            namespace: m.namespace,
            service_account: m.service_account,
        })
        .collect()
}

/// Drops what is not an IPv4/IPv6 address with a prefix length that fits it.
/// The length is narrowed to a byte before checking, as ztunnel does.
fn cidrs(list: &[xds::Address]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|a| {
            let ip = match a.address.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(a.address.as_slice()).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(a.address.as_slice()).ok()?),
                _ => return None,
            };
            IpNet::new(ip, a.length as u8).ok()
        })
        .collect()
}

/// Ports travel as uint32 and are narrowed to 16 bits, as ztunnel does.
fn ports(list: &[u32]) -> Vec<u16> {
    list.iter().map(|&p| p as u16).collect()
}

impl From<&Policy> for xds::Authorization {
    fn from(p: &Policy) -> Self {
        xds::Authorization {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            scope: match p.scope {
                Scope::Global => xds::Scope::Global,
                Scope::Namespace => xds::Scope::Namespace,
                Scope::WorkloadSelector => xds::Scope::WorkloadSelector,
            } as i32,
            action: match p.action {
                Action::Allow => xds::Action::Allow,
                Action::Deny => xds::Action::Deny,
            } as i32,
            rules: p
                .rules
                .iter()
                .map(|rule| xds::Rule {
                    clauses: rule
                        .clauses
                        .iter()
                        .map(|clause| xds::Clause {
                            matches: clause.matches.iter().map(xds::Match::from).collect(),
                        })
                        .collect(),
                })
                .collect(),
            dry_run: p.dry_run,
            extensions: Vec::new(),
        }
    }
}

impl From<&Match> for xds::Match {
    fn from(m: &Match) -> Self {
        xds::Match {
            namespaces: m.namespaces.iter().map(xds::StringMatch::from).collect(),
            not_namespaces: m
                .not_namespaces
                .iter()
                .map(xds::StringMatch::from)
                .collect(),
            principals: m.principals.iter().map(xds::StringMatch::from).collect(),
            not_principals: m
                .not_principals
                .iter()
                .map(xds::StringMatch::from)
                .collect(),
            source_ips: m.source_ips.iter().map(address).collect(),
            not_source_ips: m.not_source_ips.iter().map(address).collect(),
            destination_ips: m.destination_ips.iter().map(address).collect(),
            not_destination_ips: m.not_destination_ips.iter().map(address).collect(),
            destination_ports: m.destination_ports.iter().map(|&p| u32::from(p)).collect(),
            not_destination_ports: m
                .not_destination_ports
                .iter()
                .map(|&p| u32::from(p))
                .collect(),
            service_accounts: m
                .service_accounts
                .iter()
                .map(xds::ServiceAccountMatch::from)
                .collect(),
            not_service_accounts: m
                .not_service_accounts
                .iter()
                .map(xds::ServiceAccountMatch::from)
                .collect(),
            extensions: Vec::new(),
        }
    }
}

impl From<&StringMatch> for xds::StringMatch {
    fn from(m: &StringMatch) -> Self {
        xds::StringMatch {
            match_type: Some(match m {
                StringMatch::Exact(s) => MatchType::Exact(s.clone()),
                StringMatch::Prefix(s) => MatchType::Prefix(s.clone()),
                StringMatch::Suffix(s) => MatchType::Suffix(s.clone()),
                StringMatch::Presence => MatchType::Presence(()),
            }),
        }
    }
}

impl From<&ServiceAccountMatch> for xds::ServiceAccountMatch {
    fn from(m: &ServiceAccountMatch) -> Self {
        xds::ServiceAccountMatch {
            namespace: m.namespace.clone(),
            service_account: m.service_account.clone(),
        }
    }
}

/// The address keeps its host bits (`10.0.0.1/8` stays `10.0.0.1`, length 8),
/// as ztunnel keeps them, so a round trip is exact.
fn address(net: &IpNet) -> xds::Address {
    let address = match net.addr() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    xds::Address {
        address,
        length: u32::from(net.prefix_len()),
    }
}
