//! The HBONE headers a server reads from untrusted clients: the CONNECT
//! authority, the `Forwarded` host and `baggage`. Properties: no input panics;
//! what parses re-serializes and parses back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zs_hbone::headers::{self, Authority, Baggage};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        // Header values may be arbitrary bytes: baggage parsing must cope.
        if let Ok(value) = http::HeaderValue::from_bytes(data) {
            let _ = Baggage::parse([&value]);
        }
        let _ = headers::parse_traceparent(data);
        return;
    };

    // Authority: whatever parses prints back to something that parses the same.
    if let Ok(authority) = headers::parse_authority(s) {
        let printed = authority.to_string();
        assert_eq!(headers::parse_authority(&printed).as_ref(), Ok(&authority));
        if let Authority::Host { host, .. } = &authority {
            assert!(!host.is_empty());
        }
    }

    // Forwarded host: a substring of the input, ASCII, never empty.
    if let Some(host) = headers::forwarded_host(s) {
        assert!(!host.is_empty() && host.is_ascii());
        assert!(s.contains(host));
    }

    // Baggage: parsing, then building, then parsing again is stable.
    let parsed = Baggage::parse_str(s);
    let rebuilt = parsed.to_header_value();
    let reparsed = Baggage::parse([&rebuilt]);
    // Building drops values that would break the syntax; those that survive are
    // unchanged, and a second round changes nothing.
    assert_eq!(Baggage::parse([&reparsed.to_header_value()]), reparsed);
    for (a, b) in [
        (&parsed.cluster_id, &reparsed.cluster_id),
        (&parsed.namespace, &reparsed.namespace),
        (&parsed.workload_name, &reparsed.workload_name),
        (&parsed.service_name, &reparsed.service_name),
        (&parsed.service_version, &reparsed.service_version),
        (&parsed.region, &reparsed.region),
        (&parsed.zone, &reparsed.zone),
    ] {
        assert!(b.is_empty() || a == b);
    }

    // Forwarded header built from a parsed address round-trips its host.
    if let Ok(Authority::Addr(addr)) = headers::parse_authority(s) {
        let value = headers::forwarded(addr, Some("svc.ns.svc.cluster.local"));
        let value = value.to_str().unwrap();
        assert_eq!(
            headers::forwarded_host(value),
            Some("svc.ns.svc.cluster.local")
        );
    }

    let _ = headers::parse_traceparent(data);
});
