//! Resolving a hostname the client gave us (`socks5h://`, HTTP CONNECT) to a mesh
//! service, the way ztunnel's DNS proxy would have answered it.
//!
//! With DNS, the client's resolver would first turn the name into queries
//! (the name as given, and the name with each `search` domain of resolv.conf
//! appended) and ztunnel's DNS proxy would answer each query from the mesh. A
//! proxy request carries the name as the application wrote it, so both steps
//! happen here:
//!
//! * queries, in the resolver's order (`ndots:1`): a name with a dot is tried
//!   as given, then with each search domain appended; a name without one is
//!   tried with the search domains first. A name ending in `.` is absolute
//!   and tried only as given.
//! * each query is answered as ztunnel's DNS proxy does, trying in order, each
//!   against exact service hostnames and then wildcard ones (`*.example.com`):
//!   1. the query itself;
//!   2. Kubernetes short forms expanded with the client's namespace and the
//!      cluster domain: `svc` → `svc.<ns>.svc.<domain>`, `svc.ns` →
//!      `svc.ns.svc.<domain>`, `svc.ns.svc` → `svc.ns.svc.<domain>`;
//!   3. the query with each search domain stripped from its end.
//!
//! No DNS server is involved, and names that match nothing go to system DNS.

use crate::model::{NamespacedHostname, Service};
use crate::store::MeshState;

/// How short names expand (from `CLUSTER_DOMAIN` and the task's resolv.conf).
#[derive(Clone, Debug)]
pub struct NameConfig {
    pub cluster_domain: String,
    pub search_domains: Vec<String>,
}

impl Default for NameConfig {
    fn default() -> Self {
        NameConfig {
            cluster_domain: "cluster.local".into(),
            search_domains: Vec::new(),
        }
    }
}

impl MeshState {
    /// The mesh service a client-supplied hostname names, if any.
    pub fn resolve_hostname(
        &self,
        name: &str,
        client_namespace: &str,
        cfg: &NameConfig,
    ) -> Option<NamespacedHostname> {
        let (name, absolute) = match name.strip_suffix('.') {
            Some(n) => (n, true),
            None => (name, false),
        };
        if name.is_empty() {
            return None;
        }
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if absolute {
            return self.answer(name, client_namespace, cfg);
        }
        let with_search_domains = || {
            cfg.search_domains.iter().find_map(|search| {
                let search = search.trim_end_matches('.');
                if search.is_empty() {
                    return None;
                }
                self.answer(&format!("{name}.{search}"), client_namespace, cfg)
            })
        };
        if name.contains('.') {
            self.answer(name, client_namespace, cfg)
                .or_else(with_search_domains)
        } else {
            with_search_domains().or_else(|| self.answer(name, client_namespace, cfg))
        }
    }

    /// What ztunnel's DNS proxy would answer for one query (lowercase, no
    /// trailing dot).
    fn answer(
        &self,
        name: &str,
        client_namespace: &str,
        cfg: &NameConfig,
    ) -> Option<NamespacedHostname> {
        let found = |candidate: &str| -> Option<&Service> {
            self.services_by_hostname(candidate, client_namespace)
                .or_else(|| self.wildcard_match(candidate, client_namespace))
        };
        if let Some(s) = found(name) {
            return Some(s.key());
        }
        let domain = &cfg.cluster_domain;
        let dots = name.matches('.').count();
        let expanded = match dots {
            0 => Some(format!("{name}.{client_namespace}.svc.{domain}")),
            1 => Some(format!("{name}.svc.{domain}")),
            2 if name.ends_with(".svc") => Some(format!("{name}.{domain}")),
            _ => None,
        };
        if let Some(s) = expanded.as_deref().and_then(found) {
            return Some(s.key());
        }
        for search in &cfg.search_domains {
            let search = search.trim_end_matches('.');
            if let Some(stripped) = name
                .strip_suffix(search)
                .and_then(|n| n.strip_suffix('.'))
                .filter(|n| !n.is_empty())
                && let Some(s) = self.answer(
                    stripped,
                    client_namespace,
                    &NameConfig {
                        cluster_domain: cfg.cluster_domain.clone(),
                        search_domains: Vec::new(),
                    },
                )
            {
                return Some(s);
            }
        }
        None
    }

    /// The most specific wildcard service hostname covering `name` (`*.b.c` before `*.c`).
    fn wildcard_match(&self, name: &str, client_namespace: &str) -> Option<&Service> {
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            let wildcard = format!("*.{parent}");
            if self.has_hostname(&wildcard)
                && let Some(s) = self.services_by_hostname(&wildcard, client_namespace)
            {
                return Some(s);
            }
            rest = parent;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Service, Visibility};

    fn state() -> MeshState {
        let mut m = MeshState::new();
        for (ns, host) in [
            ("ecs-demo-1", "echo-service.ecs-demo-1.ecs.local"),
            ("default", "echo.default.svc.cluster.local"),
            ("ns2", "echo.ns2.svc.cluster.local"),
            ("ext", "*.example.com"),
        ] {
            m.insert_service(Service::new(ns, host.split('.').next().unwrap(), host));
        }
        m
    }

    fn resolve(m: &MeshState, name: &str, ns: &str) -> Option<String> {
        let cfg = NameConfig {
            cluster_domain: "cluster.local".into(),
            search_domains: vec!["us-east-2.compute.internal".into()],
        };
        m.resolve_hostname(name, ns, &cfg).map(|k| k.to_string())
    }

    #[test]
    fn full_hostname_resolves_exactly() {
        let m = state();
        assert_eq!(
            resolve(&m, "echo-service.ecs-demo-1.ecs.local", "other").as_deref(),
            Some("ecs-demo-1/echo-service.ecs-demo-1.ecs.local")
        );
        assert_eq!(
            resolve(&m, "Echo-Service.ecs-demo-1.ecs.local.", "other").as_deref(),
            Some("ecs-demo-1/echo-service.ecs-demo-1.ecs.local")
        );
    }

    #[test]
    fn short_names_expand_with_the_client_namespace() {
        let m = state();
        assert_eq!(
            resolve(&m, "echo", "default").as_deref(),
            Some("default/echo.default.svc.cluster.local")
        );
        assert_eq!(
            resolve(&m, "echo.ns2", "default").as_deref(),
            Some("ns2/echo.ns2.svc.cluster.local")
        );
        assert_eq!(
            resolve(&m, "echo.ns2.svc", "default").as_deref(),
            Some("ns2/echo.ns2.svc.cluster.local")
        );
        assert_eq!(resolve(&m, "echo", "nowhere"), None);
    }

    #[test]
    fn search_domain_is_stripped() {
        let m = state();
        assert_eq!(
            resolve(&m, "echo.ns2.us-east-2.compute.internal", "default").as_deref(),
            Some("ns2/echo.ns2.svc.cluster.local")
        );
    }

    #[test]
    fn search_domains_complete_a_name_as_the_resolver_would() {
        let mut m = state();
        m.insert_service(Service::new(
            "ecs-demo-1",
            "echo-service",
            "echo-service.ecs-demo-1.ecs.local",
        ));
        let cfg = NameConfig {
            cluster_domain: "cluster.local".into(),
            search_domains: vec!["example.org".into(), "ecs.local.".into()],
        };
        let resolve = |name: &str| {
            m.resolve_hostname(name, "default", &cfg)
                .map(|k| k.to_string())
        };
        assert_eq!(
            resolve("echo-service.ecs-demo-1").as_deref(),
            Some("ecs-demo-1/echo-service.ecs-demo-1.ecs.local")
        );
        assert_eq!(
            resolve("echo-service.ecs-demo-1.ecs.local").as_deref(),
            Some("ecs-demo-1/echo-service.ecs-demo-1.ecs.local")
        );
        // Absolute: the resolver appends nothing.
        assert_eq!(resolve("echo-service.ecs-demo-1."), None);
        assert_eq!(resolve("echo-service.ecs-demo-9"), None);
    }

    #[test]
    fn search_domains_come_first_only_for_names_without_a_dot() {
        let mut m = MeshState::new();
        for (ns, host) in [
            ("default", "echo.default.svc.cluster.local"),
            ("ecs", "echo.ecs.local"),
            ("ecs", "echo.default.ecs.local"),
        ] {
            m.insert_service(Service::new(ns, "echo", host));
        }
        let cfg = NameConfig {
            cluster_domain: "cluster.local".into(),
            search_domains: vec!["ecs.local".into()],
        };
        let resolve = |name: &str| {
            m.resolve_hostname(name, "default", &cfg)
                .map(|k| k.to_string())
        };
        // `echo` has fewer dots than ndots:1, so `echo.ecs.local` is asked first.
        assert_eq!(resolve("echo").as_deref(), Some("ecs/echo.ecs.local"));
        // `echo.default` is asked as given first, which the DNS proxy expands.
        assert_eq!(
            resolve("echo.default").as_deref(),
            Some("default/echo.default.svc.cluster.local")
        );
    }

    #[test]
    fn wildcard_hostnames_match_subdomains() {
        let m = state();
        assert_eq!(
            resolve(&m, "api.example.com", "default").as_deref(),
            Some("ext/*.example.com")
        );
        assert_eq!(resolve(&m, "example.com", "default"), None);
    }

    #[test]
    fn unknown_names_do_not_resolve() {
        let m = state();
        assert_eq!(resolve(&m, "www.rust-lang.org", "default"), None);
        assert_eq!(resolve(&m, "", "default"), None);
    }

    #[test]
    fn namespace_visibility_applies_to_names() {
        let mut m = MeshState::new();
        let mut s = Service::new("private", "db", "db.private.svc.cluster.local");
        s.visibility = Visibility::Namespace;
        m.insert_service(s);
        assert!(resolve(&m, "db.private", "private").is_some());
        assert_eq!(resolve(&m, "db.private", "default"), None);
    }
}
