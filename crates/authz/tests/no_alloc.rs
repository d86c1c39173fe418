//! Evaluation must not allocate: it runs once per inbound connection and
//! again for every tracked connection on each policy push. This test binary
//! counts the allocations the current thread makes during `evaluate`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use zs_authz::{Action, Match, Scope, StringMatch, Target};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is bumping a thread-local counter
// whose `const` initializer means touching it never allocates (no recursion).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same layout the caller gave us, per the `alloc` contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    let after = ALLOCATIONS.with(Cell::get);
    drop(out);
    after - before
}

#[test]
fn evaluate_does_not_allocate_on_any_path() {
    let mut deny = policy(
        "app",
        "deny-attacker",
        Scope::Global,
        Action::Deny,
        only(Match {
            principals: vec![StringMatch::Suffix("/sa/attacker".into())],
            ..Match::default()
        }),
    );
    let mut dry_deny = deny.clone();
    dry_deny.name = "dry-deny-all".into();
    dry_deny.dry_run = true;
    dry_deny.rules = everything();
    let mut dry_allow = dry_deny.clone();
    dry_allow.name = "dry-allow-all".into();
    dry_allow.action = Action::Allow;
    let allow = policy(
        "app",
        "allow-client",
        Scope::WorkloadSelector,
        Action::Allow,
        only(Match {
            principals: vec![StringMatch::Prefix("cluster.local/ns/client-ns/".into())],
            namespaces: vec![StringMatch::Exact("client-ns".into())],
            source_ips: vec!["10.0.0.0/8".parse().unwrap()],
            ..Match::default()
        }),
    );
    deny.scope = Scope::Namespace;
    let s = store(vec![deny, dry_deny, dry_allow, allow]);
    let named = names(&["app/allow-client", "app/unknown"]);
    let target = Target::new("app", &named);

    let allowed = mtls();
    let not_allowed = conn(
        "10.0.0.1",
        "10.0.1.1:8080",
        Some("spiffe://td/ns/other/sa/x"),
    );
    let denied = conn(
        "10.0.0.1",
        "10.0.1.1:8080",
        Some("spiffe://td/ns/other/sa/attacker"),
    );
    assert_eq!(
        s.evaluate(&target, &allowed).to_string(),
        "allowed by: app/allow-client"
    );
    assert_eq!(
        s.evaluate(&target, &not_allowed).to_string(),
        "allow policies exist, but none allowed"
    );
    assert_eq!(
        s.evaluate(&target, &denied).to_string(),
        "explicitly denied by: app/deny-attacker"
    );

    for c in [&allowed, &not_allowed, &denied, &plaintext()] {
        assert_eq!(allocations_during(|| s.evaluate(&target, c)), 0, "{c:?}");
    }
}
