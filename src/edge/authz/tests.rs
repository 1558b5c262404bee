//! The policy's decisions.
use super::*;

const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://example.org/ns/billing/sa/api"]
keys = ["payments"]
operations = ["encrypt", "decrypt"]

[[allow]]
callers = ["spiffe://example.org/ns/etl/*"]
keys = ["*"]
operations = ["rewrap"]
"#;

#[test]
fn grants_are_exact_or_prefix_and_everything_else_is_denied() {
    let p = Policy::parse(POLICY).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.allows(
        Some("spiffe://example.org/ns/billing/sa/api"),
        Operation::Encrypt,
        "payments"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/billing/sa/api"),
        Operation::Encrypt,
        "pii"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/billing/sa/api"),
        Operation::Rewrap,
        "payments"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/billing/sa/apix"),
        Operation::Encrypt,
        "payments"
    ));
    assert!(p.allows(
        Some("spiffe://example.org/ns/etl/sa/job"),
        Operation::Rewrap,
        "pii"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/etl/sa/job"),
        Operation::Decrypt,
        "pii"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/etl/sa/job"),
        Operation::Admin,
        "pii"
    ));
    // Exact and case-sensitive; only a trailing `*` is a wildcard.
    assert!(!p.allows(
        Some("spiffe://example.org/ns/BILLING/sa/api"),
        Operation::Encrypt,
        "payments"
    ));
    assert!(!p.allows(
        Some("spiffe://example.org/ns/billing/sa/api"),
        Operation::Encrypt,
        "Payments"
    ));
    let inner = Policy::parse(
        "[[allow]]\ncallers = [\"spiffe://example.org/*/etl\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!inner.allows(Some("spiffe://example.org/ns/etl"), Operation::Encrypt, "k"));
    assert!(inner.allows(Some("spiffe://example.org/*/etl"), Operation::Encrypt, "k"));
}

#[test]
fn malformed_policies_are_refused() {
    for bad in [
        "[[allow]]\ncallers = []\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
        "[[allow]]\ncallers = [\"*\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
        "[[allow]]\ncallers = [\"a\"]\nkeys = [\"*\"]\noperations = [\"launch\"]\n",
        "allow = 3",
        // An empty caller, an unknown field, and a grant without callers
        // (or anonymous), keys or operations.
        "[[allow]]\ncallers = [\"\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
        "[[allow]]\ncallers = [\"a\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\nexpires = 1\n",
        "[[allow]]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
        "[[allow]]\ncallers = [\"a\"]\noperations = [\"encrypt\"]\n",
        "[[allow]]\ncallers = [\"a\"]\nkeys = [\"*\"]\n",
        "[[deny]]\ncallers = [\"a\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
    ] {
        assert!(Policy::parse(bad).is_err(), "{bad}");
    }
}

/// SECURITY.md: a policy file with no grants denies every call.
#[test]
fn a_policy_without_grants_denies_everything() {
    for empty in ["", "# nothing granted yet\n"] {
        let p = Policy::parse(empty).unwrap_or_else(|e| panic!("{e}"));
        for op in [Operation::Encrypt, Operation::Decrypt, Operation::Admin] {
            assert!(!p.allows(Some("a"), op, "default"));
            assert!(!p.allows(None, op, "default"));
        }
    }
}

#[test]
fn defaults_without_a_policy() {
    let open = Authorizer::new(None, Default::Allow).unwrap_or_else(|e| panic!("{e}"));
    assert!(open.check(None, Operation::Admin, "x").is_ok());
    let closed = Authorizer::new(None, Default::Deny).unwrap_or_else(|e| panic!("{e}"));
    assert!(closed.check(Some("a"), Operation::Encrypt, "x").is_err());
    assert_eq!(closed.denied.load(Ordering::Relaxed), 1);
}

#[test]
fn generate_data_key_no_longer_unwraps() {
    let p = Policy::parse(
        "[[allow]]\ncallers = [\"producer\"]\nkeys = [\"pii\"]\noperations = [\"generate_data_key\"]\n",
    )
    .unwrap();
    assert!(p.allows(Some("producer"), Operation::GenerateDataKey, "pii"));
    assert!(!p.allows(Some("producer"), Operation::UnwrapDataKey, "pii"));
    assert_eq!(p.narrowed_grants(), vec![1]);
    let p = Policy::parse(
        "[[allow]]\ncallers = [\"c\"]\nkeys = [\"pii\"]\noperations = [\"generate_data_key\", \"unwrap_data_key\"]\n",
    )
    .unwrap();
    assert!(p.allows(Some("c"), Operation::UnwrapDataKey, "pii"));
    assert!(p.narrowed_grants().is_empty());
}

#[test]
fn grants_can_require_context_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[[allow]]\ncallers = [\"acme-app\"]\nkeys = [\"pii\"]\noperations = [\"encrypt\"]\ncontext = { tenant = \"acme\" }\n\
         [[allow]]\ncallers = [\"ops\"]\nkeys = [\"pii\"]\noperations = [\"encrypt\"]\n\
         [[allow]]\ncallers = [\"ops\"]\nkeys = [\"pii\"]\noperations = [\"encrypt\"]\ncontext = { tenant = \"x\" }\n",
    )
    .unwrap();
    let a = Authorizer::new(Some(path), Default::Deny).unwrap();
    let ctx = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    };
    let scope = a
        .check_scoped(Some("acme-app"), Operation::Encrypt, "pii")
        .unwrap();
    assert!(scope.admits(&ctx(&[("tenant", "acme"), ("column", "email")])));
    assert!(!scope.admits(&ctx(&[("tenant", "globex")])));
    assert!(!scope.admits(&ctx(&[])));
    // An unconditional grant among the matches means any context.
    let scope = a
        .check_scoped(Some("ops"), Operation::Encrypt, "pii")
        .unwrap();
    assert!(matches!(scope, Scope::Any));
    assert!(
        a.check_scoped(Some("acme-app"), Operation::Decrypt, "pii")
            .is_err()
    );
}

/// SEARCH.md: with several matching `index` grants the most generous
/// applies, each part on its own; an unset part is the default.
#[test]
fn the_most_generous_index_quota_applies() {
    let p = Policy::parse(
        "[[allow]]\ncallers = [\"a\"]\nkeys = [\"*\"]\noperations = [\"index\"]\nindex_tokens_per_second = 5\nindex_tokens_per_day = 20000000\n\
         [[allow]]\ncallers = [\"a\"]\nkeys = [\"pii\"]\noperations = [\"index\"]\nindex_tokens_per_second = 50\nindex_tokens_per_day = 7\n\
         [[allow]]\ncallers = [\"b\"]\nkeys = [\"*\"]\noperations = [\"index\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let q = p
        .index_quota(Some("a"), "pii")
        .unwrap_or_else(|| panic!("no quota"));
    assert_eq!((q.per_second, q.per_day), (50, 20_000_000));
    let q = p
        .index_quota(Some("a"), "other")
        .unwrap_or_else(|| panic!("no quota"));
    assert_eq!((q.per_second, q.per_day), (5, 20_000_000));
    let d = p
        .index_quota(Some("b"), "pii")
        .unwrap_or_else(|| panic!("no quota"));
    assert_eq!(
        (d.per_second, d.per_day),
        (IndexQuota::DEFAULT.per_second, IndexQuota::DEFAULT.per_day)
    );
    assert!(p.index_quota(Some("c"), "pii").is_none());
    // The defaults SEARCH.md gives, and the quota without a policy file.
    assert_eq!(
        (IndexQuota::DEFAULT.per_second, IndexQuota::DEFAULT.per_day),
        (10_000, 10_000_000)
    );
    let open = Authorizer::new(None, Default::Allow).unwrap_or_else(|e| panic!("{e}"));
    let q = open
        .index_quota(None, "pii")
        .unwrap_or_else(|| panic!("no quota"));
    assert_eq!((q.per_second, q.per_day), (10_000, 10_000_000));
}
