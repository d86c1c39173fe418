//! System DNS for names that are not in the mesh.
//!
//! Uses a pure-Rust resolver reading `/etc/resolv.conf` and `/etc/hosts`, so it
//! works in a statically linked binary in an image with no libc NSS modules.
//! Mesh names never get here: they are resolved against the mesh state first.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;

/// Why a name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    #[error("no DNS answer for {name}: {reason}")]
    NoAnswer { name: String, reason: String },
    #[error("DNS is not configured ({0}); only mesh names and IP addresses can be used")]
    Unconfigured(String),
}

/// A shared resolver (cheap to clone).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Result<TokioResolver, String>>,
    search: Arc<[String]>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("configured", &self.inner.is_ok())
            .field("search", &self.search)
            .finish()
    }
}

impl Resolver {
    /// A resolver from the system configuration. A missing or broken resolv.conf
    /// is not fatal: lookups then fail with a clear error.
    pub fn from_system() -> Self {
        let (built, search) = match hickory_resolver::system_conf::read_system_conf() {
            Ok((config, options)) => {
                let search: Vec<String> = config
                    .search()
                    .iter()
                    .map(|n| n.to_utf8().trim_end_matches('.').to_string())
                    .collect();
                let built = TokioResolver::builder_with_config(config, Default::default())
                    .with_options(options)
                    .build()
                    .map_err(|e| e.to_string());
                (built, search)
            }
            Err(e) => (Err(e.to_string()), Vec::new()),
        };
        Resolver {
            inner: Arc::new(built),
            search: search.into(),
        }
    }

    /// The search domains from resolv.conf (used to expand short mesh names).
    pub fn search_domains(&self) -> &[String] {
        &self.search
    }

    /// Resolves a name to its addresses (IPv4 first). IP literals and `localhost`
    /// are answered without a query.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let bare = name.trim_end_matches('.');
        if let Ok(ip) = bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        if bare.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]);
        }
        let resolver = match &*self.inner {
            Ok(r) => r,
            Err(e) => return Err(DnsError::Unconfigured(e.clone())),
        };
        let answer = resolver
            .lookup_ip(bare)
            .await
            .map_err(|e| DnsError::NoAnswer {
                name: bare.to_string(),
                reason: e.to_string(),
            })?;
        let mut ips: Vec<IpAddr> = answer.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::NoAnswer {
                name: bare.to_string(),
                reason: "empty answer".into(),
            });
        }
        ips.sort_by_key(|ip| ip.is_ipv6());
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost_need_no_query() {
        let r = Resolver::from_system();
        assert_eq!(
            r.lookup("10.1.2.3").await.unwrap(),
            vec![IpAddr::from([10, 1, 2, 3])]
        );
        assert_eq!(
            r.lookup("[::1]").await.unwrap(),
            vec![IpAddr::from(std::net::Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(
            r.lookup("localhost.").await.unwrap()[0],
            IpAddr::from([127, 0, 0, 1])
        );
    }
}
