//! Loading, defaults and refusals of the configuration.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn defaults_and_overrides() {
    let s = Settings::load(None, Overrides::default()).unwrap();
    assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(s.keys.len(), 1);
    assert_eq!(s.keys[0].name, "default");
    let file: FileConfig =
        toml::from_str("listen = \"127.0.0.1:1\"\n[[keys]]\nname = \"pii\"\n").unwrap();
    let s = Settings::from_file(
        file,
        Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            data_dir: None,
        },
    )
    .unwrap();
    assert_eq!(s.listen.port(), 2);
    assert_eq!(s.keys[0].name, "pii");
}

/// The defaults CONFIG.md, ARCHITECTURE.md and CLIENTS.md quote, as the
/// server takes them with no file.
#[test]
fn the_documented_defaults() {
    let s = Settings::load(None, Overrides::default()).unwrap();
    let secs = Duration::from_secs;
    assert_eq!(s.limits.data_key.max_records, 1 << 24);
    assert_eq!(s.limits.data_key.max_age, secs(300));
    assert_eq!(s.request_timeout, secs(30));
    assert_eq!(s.refresh_interval, secs(300));
    assert_eq!(s.max_staleness, secs(3600));
    assert_eq!(s.drain_timeout, secs(20));
    assert_eq!(
        (s.max_batch_items, s.max_concurrent_requests),
        (10_000, 1024)
    );
    let t = &s.transport;
    assert_eq!(t.stream_idle_timeout, secs(30));
    assert_eq!(
        (t.max_connection_age, t.max_connection_age_grace),
        (secs(3600), secs(30))
    );
    assert_eq!(
        (t.keepalive_interval, t.keepalive_timeout),
        (secs(30), secs(10))
    );
    assert_eq!(t.handshake_timeout, secs(5));
    assert_eq!((t.max_streams, t.max_streams_per_caller), (256, 32));
    assert_eq!(t.max_streams_per_connection, 100);
    assert_eq!(t.request_bytes_budget, 256 << 20);
    assert_eq!((t.max_connections, t.max_header_list_bytes), (4096, 16_384));
    assert_eq!(t.message_read_timeout, secs(10));
    assert_eq!(
        (t.max_local_error_resets, t.max_pending_accept_resets),
        (1024, 20)
    );
    // The top level, [audit] and the rest of [limits] and [data_keys].
    assert_eq!((s.mode, s.log_format), (Mode::Local, LogFormat::Text));
    assert_eq!(s.log_level, "info");
    assert_eq!(s.listen.to_string(), "127.0.0.1:50051");
    assert_eq!(s.data_dir, PathBuf::from("envelope-data"));
    assert!(s.metrics_listen.is_none() && s.tls.is_none() && s.policy_file.is_none());
    assert!(!s.insecure_plaintext && !s.lock_memory);
    assert_eq!(s.audit, Some(crate::edge::audit::Output::Stdout));
    assert_eq!(s.audit_on_failure, crate::edge::audit::OnFailure::Continue);
    assert_eq!(s.max_request_bytes, 4 << 20);
    let l = &s.limits;
    assert_eq!(l.max_plaintext_bytes, (4 << 20) - (64 << 10));
    assert_eq!((l.context.max_entries, l.context.max_bytes), (64, 8192));
    assert_eq!(
        (l.decrypt_cache_entries, l.max_loaded_versions),
        (10_000, 32)
    );
    assert_eq!(
        (l.negative_cache_ttl, l.compromised_window),
        (secs(30), secs(60))
    );
    assert_eq!(l.data_key.max_bytes, 1 << 36);
    assert_eq!(
        s.keys[0].kdf_iterations, None,
        "the key's own default applies"
    );
    // AWS mode: refuse on audit failure, the SDK timeouts, TLS reloads.
    let file: FileConfig = toml::from_str(
        "mode = \"aws\"\n[aws]\nkms_key_id = \"alias/k\"\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    )
    .unwrap();
    let s = Settings::from_file(file, Overrides::default()).unwrap();
    assert_eq!(s.audit_on_failure, crate::edge::audit::OnFailure::Refuse);
    let a = s.aws.unwrap();
    assert_eq!(
        (a.connect_timeout, a.attempt_timeout, a.operation_timeout),
        (secs(3), secs(5), secs(15))
    );
    assert_eq!(a.max_attempts, 3);
    // The rotation Lambda starts from the same defaults (ROTATION.md).
    let lambda = crate::backends::aws_sdk::AwsSettings::new("k".into());
    assert_eq!(
        (
            lambda.connect_timeout,
            lambda.attempt_timeout,
            lambda.operation_timeout,
            lambda.max_attempts
        ),
        (
            a.connect_timeout,
            a.attempt_timeout,
            a.operation_timeout,
            a.max_attempts
        )
    );
    // Empty: only kms_key_id is allowed (`AwsKms::allowing`).
    assert!(a.allowed_kms_keys.is_empty() && a.replica_regions.is_empty());
    // No region or endpoints of our own: the SDK's chain decides.
    assert!(a.region.is_none() && a.endpoint_url.is_none());
    assert!(a.secretsmanager_endpoint_url.is_none() && a.kms_endpoint_url.is_none());
    let tls = s.tls.unwrap();
    assert_eq!(tls.reload_interval, secs(10));
    assert!(!tls.allow_tls12 && tls.client_ca.is_none());
    // A [[keys]] table's defaults: its secret is its name, nothing accepted
    // or marked, no minimum; an index's scope is empty.
    let file: FileConfig = toml::from_str(
        "[[keys]]\nname = \"pii\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 64\n",
    )
    .unwrap();
    let s = Settings::from_file(file, Overrides::default()).unwrap();
    let k = &s.keys[0];
    assert_eq!(k.secret_id(), "pii");
    assert!(k.salt_secret_id.is_none() && k.min_decryption_version.is_none());
    assert!(!k.allow_unwrapped_master_keys && !k.allow_compromised_decrypts);
    assert!(k.unwrapped_versions.is_empty() && k.compromised_versions.is_empty());
    assert!(k.indexes[0].scope.is_empty());
}

#[test]
fn bad_values_are_refused() {
    // Each refused for its own reason, named in the message: a test that
    // took any error (a TOML typo in the case itself) proved nothing.
    for (bad, why) in [
        (
            "[[keys]]\nname = \"../x\"\n",
            "invalid setting keys.name: \"../x\" must be",
        ),
        (
            "[[keys]]\nname = \".a\"\n",
            "invalid setting keys.name: \".a\" must be",
        ),
        (
            "[[keys]]\nname = \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n",
            "invalid setting keys.name: \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\" must be",
        ),
        (
            "[[keys]]\nname = \"a\"\n[[keys]]\nname = \"a\"\n",
            "keys.name: \"a\" is listed twice",
        ),
        (
            "[data_keys]\nmax_records = 0\n",
            "data_keys.max_records: must be between 1 and 2^32",
        ),
        (
            "[data_keys]\nmax_records = 8589934592\n",
            "data_keys.max_records: must be between 1 and 2^32",
        ),
        ("unknown = 1\n", "unknown field `unknown`"),
        (
            "metrics_listen = \"localhost:9464\"\n",
            "invalid setting metrics_listen: \"localhost:9464\" is not host:port or \"off\"",
        ),
        (
            "refresh_interval_secs = \"300\"\n",
            "invalid type: string \"300\", expected u64",
        ),
        (
            "log_level = \"[[[\"\n",
            "invalid setting log_level: \"[[[\" is not a tracing filter",
        ),
        (
            "log_level = \"envelope[call{key=pii}]=debug\"\n",
            "(field filters in braces are not accepted)",
        ),
        (
            "mode = \"aws\"\n",
            "invalid setting tls: AWS mode serves only over TLS",
        ),
        (
            "[aws]\nregion = \"us-east-1\"\n",
            "invalid setting aws: an [aws] section needs mode = \"aws\"",
        ),
        (
            "max_staleness_secs = 1\n",
            "max_staleness_secs: must be at least refresh_interval_secs",
        ),
    ] {
        refused(bad, why);
    }
}

/// Why `bad` is refused, or "accepted".
fn refusal(bad: &str) -> String {
    match toml::from_str::<FileConfig>(bad) {
        Err(e) => e.to_string(),
        Ok(f) => match Settings::from_file(f, Overrides::default()) {
            Err(e) => e.to_string(),
            Ok(_) => "accepted".into(),
        },
    }
}

fn refused(bad: &str, why: &str) {
    let got = refusal(bad);
    assert!(got.contains(why), "{bad:?}: {got}");
}

/// CONFIG.md's validation table, a row at a time: each value just past its
/// rule is refused, naming the setting.
#[test]
fn every_validation_rule_is_enforced() {
    let aws = "mode = \"aws\"\ninsecure_plaintext = true\n[aws]\nregion = \"us-east-1\"\nkms_key_id = \"k\"\n";
    let cases: Vec<(String, &str)> = vec![
        ("[limits]\nmax_request_bytes = 0\n".into(), "limits.max_request_bytes"),
        ("[limits]\nmax_request_bytes = 1073741825\n".into(), "limits.max_request_bytes"),
        ("[limits]\nmax_request_bytes = 1000\n".into(), "limits.max_plaintext_bytes"),
        ("[limits]\nmax_batch_items = 1000001\n".into(), "limits.max_batch_items"),
        ("[limits]\nmax_context_entries = 1025\n".into(), "limits.max_context_*"),
        ("[limits]\nmax_context_bytes = 1048577\n".into(), "limits.max_context_*"),
        ("[data_keys]\nmax_bytes = 10\n".into(), "data_keys.max_bytes"),
        ("[data_keys]\nmax_age_secs = 0\n".into(), "data_keys.max_age_secs"),
        ("[limits]\nmax_loaded_versions = 2\n".into(), "max_loaded_versions"),
        ("[limits]\ndecrypt_cache_entries = 0\n".into(), "decrypt_cache_entries"),
        ("refresh_interval_secs = 0\n".into(), "refresh_interval_secs"),
        ("[limits]\nmax_connections = 0\n".into(), "limits.max_connections"),
        ("[limits]\nmax_streams_per_connection = 0\n".into(), "limits.max_streams_per_connection"),
        ("[limits]\nmax_header_list_bytes = 0\n".into(), "limits.max_header_list_bytes"),
        ("[limits]\nkeepalive_interval_secs = 0\n".into(), "limits.keepalive_interval_secs"),
        ("[limits]\nmax_connection_age_secs = 0\n".into(), "limits.max_connection_age_secs"),
        ("[limits]\ntls_handshake_timeout_secs = 0\n".into(), "limits.tls_handshake_timeout_secs"),
        ("[limits]\nstream_idle_timeout_secs = 0\n".into(), "limits.stream_idle_timeout_secs"),
        ("[limits]\nmessage_read_timeout_secs = 0\n".into(), "limits.message_read_timeout_secs"),
        ("[limits]\nmax_streams = 0\nmax_streams_per_caller = 0\n".into(), "limits.max_streams"),
        ("[limits]\nmax_streams = 4\nmax_streams_per_caller = 5\n".into(), "limits.max_streams_per_caller"),
        ("[limits]\nmax_request_bytes = 4194304\nrequest_bytes_budget = 4194303\n".into(), "limits.request_bytes_budget"),
        ("refresh_interval_secs = 7200\n".into(), "max_staleness_secs"),
        (format!("[[keys]]\nname = \"k\"\nsecret_id = \"{}\"\n", "s".repeat(2049)), "keys.secret_id"),
        ("[[keys]]\nname = \"k\"\nkdf_iterations = 99999\n".into(), "keys.kdf_iterations"),
        ("[aws]\nregion = \"us-east-1\"\n".into(), "an [aws] section needs mode = \"aws\""),
        ("mode = \"aws\"\ninsecure_plaintext = true\n[aws]\nregion = \"us-east-1\"\nkms_key_id = \"\"\n".into(), "aws.kms_key_id"),
        (format!("{aws}max_attempts = 11\n"), "aws.max_attempts"),
        (format!("{aws}connect_timeout_secs = 0\n"), "aws.*_timeout_secs: timeouts must be positive"),
        ("listen = \"0.0.0.0:50051\"\n".into(), "plaintext gRPC only on a loopback address, not 0.0.0.0:50051"),
        ("[tls]\ncert = \"c\"\nkey = \"k\"\nreload_interval_secs = 0\n".into(), "tls.reload_interval_secs"),
        ("[limits]\nmax_concurrent_requests = 100001\n".into(), "limits.max_concurrent_requests"),
        ("[limits]\nrequest_timeout_secs = 0\n".into(), "limits.request_timeout_secs"),
        (
            format!(
                "[[keys]]\nname = \"k\"\ncompromised_versions = [{}]\n",
                (0..101).map(|i| format!("\"v{i}\"")).collect::<Vec<_>>().join(", ")
            ),
            "keys.compromised_versions: at most 100 versions",
        ),
        // Found untested by an audit of CONFIG.md's table (2026-11-28).
        ("[limits]\nmax_batch_items = 0\n".into(), "limits.max_batch_items"),
        ("[limits]\nmax_concurrent_requests = 0\n".into(), "limits.max_concurrent_requests"),
        ("[limits]\nkeepalive_timeout_secs = 0\n".into(), "limits.keepalive_timeout_secs"),
        ("[limits]\nmax_streams_per_caller = 0\n".into(), "limits.max_streams_per_caller"),
        ("[limits]\ncompromised_window_secs = 0\n".into(), "limits.compromised_window_secs"),
        ("[limits]\ncompromised_window_secs = 86401\n".into(), "limits.compromised_window_secs"),
        ("[[keys]]\nname = \"k\"\nkdf_iterations = 10000001\n".into(), "keys.kdf_iterations"),
        ("[[keys]]\nname = \"k\"\nsecret_id = \"\"\n".into(), "keys.secret_id"),
        (format!("[[keys]]\nname = \"k\"\nmin_decryption_version = \"{}\"\n", "v".repeat(65)), "keys.min_decryption_version"),
        ("[[keys]]\nname = \"k\"\ncompromised_versions = [\"a\\tb\"]\n".into(), "keys.compromised_versions: \"a\\tb\" is not a version id"),
        ("[[keys]]\nname = \"k\"\nunwrapped_versions = [\"\"]\n".into(), "keys.unwrapped_versions"),
        ("[audit]\non_failure = \"drop\"\n".into(), "audit.on_failure"),
        (format!("{aws}max_attempts = 0\n"), "aws.max_attempts"),
        (format!("{aws}attempt_timeout_secs = 0\n"), "aws.*_timeout_secs"),
        (format!("{aws}operation_timeout_secs = 0\n"), "aws.*_timeout_secs"),
    ];
    // [[keys.indexes]]: a name, 8 to 256 bits, a scope of distinct entries.
    let index = |fields: &str| {
        format!("[[keys]]\nname = \"k\"\n[[keys.indexes]]\nnormalize = \"email\"\n{fields}")
    };
    let cases: Vec<(String, &str)> = cases
        .into_iter()
        .chain([
            (index("name = \"a b\"\nbits = 64\n"), "keys.indexes.name"),
            (index("name = \"e\"\nbits = 7\n"), "keys.indexes.bits"),
            (index("name = \"e\"\nbits = 257\n"), "keys.indexes.bits"),
            (
                index("name = \"e\"\nbits = 64\nscope = [\"t\", \"t\"]\n"),
                "keys.indexes.scope",
            ),
            (
                index("name = \"e\"\nbits = 64\nscope = [\"\"]\n"),
                "keys.indexes.scope",
            ),
            (
                format!(
                    "{}[[keys.indexes]]\nname = \"e\"\nnormalize = \"email\"\nbits = 64\n",
                    index("name = \"e\"\nbits = 64\n")
                ),
                "keys.indexes.name: \"e\" is listed twice",
            ),
        ])
        .collect();
    let wrong: Vec<String> = cases
        .iter()
        .map(|(bad, why)| (bad, why, refusal(bad)))
        .filter(|(_, why, got)| !got.contains(**why))
        .map(|(bad, why, got)| format!("{bad:?}: want {why:?}, got {got}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The age's grace may be 0 (CONFIG.md): taken, not refused.
    let file: FileConfig = toml::from_str("[limits]\nmax_connection_age_grace_secs = 0\n").unwrap();
    let s = Settings::from_file(file, Overrides::default()).unwrap();
    assert!(s.transport.max_connection_age_grace.is_zero());
}

/// CONFIG.md, `policy_file`: without one, local mode on loopback allows
/// every call, and AWS mode or a `listen` address off loopback denies them
/// all (`prepare_security` and doctor's policy check both ask this).
#[test]
fn only_local_mode_on_loopback_is_open_without_a_policy() {
    for (toml, reachable) in [
        ("listen = \"127.0.0.1:1\"\n", false),
        ("listen = \"[::1]:1\"\n", false),
        ("listen = \"0.0.0.0:1\"\ninsecure_plaintext = true\n", true),
        ("listen = \"10.1.2.3:1\"\ninsecure_plaintext = true\n", true),
    ] {
        let file: FileConfig = toml::from_str(toml).unwrap();
        let s = Settings::from_file(file, Overrides::default()).unwrap();
        assert_eq!(s.reachable_from_network(), reachable, "{toml}");
    }
    let mut s = Settings::load(None, Overrides::default()).unwrap();
    s.mode = Mode::Aws;
    assert!(s.reachable_from_network());
}
