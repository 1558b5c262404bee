//! Rotation, restart, Rewrap, health, reflection and the CLI, against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::requests::{decrypt, encrypt, key_status};
use common::{Server, ctx, run_stdin};
use envelope::pb;
use std::time::Duration;
use tonic::Code;

const CTX: &[(&str, &str)] = &[("table", "users"), ("column", "email")];

#[tokio::test]
async fn rotation_restart_and_rewrap_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let mut c = server.client().await;
    let mut admin = server.admin().await;

    let before = encrypt(&c, "", "alice@example.com", CTX).await.unwrap();
    let rotated = admin
        .rotate_master_key(pb::RotateMasterKeyRequest { key: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.previous_version, before.key_version);
    assert_ne!(rotated.current_version, before.key_version);
    // A fresh UUIDv4 version id (API.md, RotateMasterKey).
    let id = uuid::Uuid::parse_str(&rotated.current_version).unwrap();
    assert_eq!(
        (id.get_version_num(), id.hyphenated().to_string()),
        (4, rotated.current_version.clone())
    );

    let after = encrypt(&c, "", "bob@example.com", CTX).await.unwrap();
    assert_eq!(
        after.key_version, rotated.current_version,
        "new records carry the new version"
    );
    assert_eq!(
        decrypt(&c, "", &before.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"alice@example.com"
    );
    assert_eq!(
        decrypt(&c, "", &after.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"bob@example.com"
    );

    // KeyStatus shows both versions with their stages.
    let status = admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let key = &status.keys[0];
    assert_eq!(key.current_version, rotated.current_version);
    let stages_of = |v: &str| {
        key.versions
            .iter()
            .find(|x| x.version == v)
            .map(|x| x.stages.clone())
            .unwrap_or_default()
    };
    assert!(stages_of(&before.key_version).contains(&"AWSPREVIOUS".to_string()));
    assert!(stages_of(&rotated.current_version).contains(&"AWSCURRENT".to_string()));
    assert!(
        stages_of(&before.key_version).contains(&format!("envelope-pin-{}", before.key_version))
    );
    assert_eq!(key.pinned_versions.len(), 2);

    // Rewrap moves the old record forward, leaves its payload alone, and it still decrypts.
    let rewrap = |ciphertext: bytes::Bytes| pb::RewrapRequest {
        indexes: Vec::new(),
        key: String::new(),
        ciphertext,
        context: ctx(CTX),
    };
    let rw = c
        .rewrap(rewrap(before.ciphertext.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rw.key_version, rotated.current_version);
    assert_eq!(rw.ciphertext.len(), before.ciphertext.len());
    assert_eq!(
        rw.ciphertext[83..],
        before.ciphertext[83..],
        "payload bytes unchanged"
    );
    assert_ne!(rw.ciphertext[..83], before.ciphertext[..83]);
    // API.md, Rewrap step 5: a fresh random wrap nonce each time, so the
    // same record rewrapped again gets another header.
    let again = c
        .rewrap(rewrap(before.ciphertext.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.ciphertext[83..], rw.ciphertext[83..]);
    assert_ne!(again.ciphertext[..83], rw.ciphertext[..83]);
    let d = decrypt(&c, "", &rw.ciphertext, CTX).await.unwrap();
    assert_eq!(d.plaintext.as_ref(), b"alice@example.com");
    assert_eq!(d.key_version, rotated.current_version);
    // Rewrap checks the context first.
    let s = c
        .rewrap(pb::RewrapRequest {
            indexes: Vec::new(),
            key: String::new(),
            ciphertext: before.ciphertext.clone(),
            context: ctx(&[]),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    // Restart on the same data directory: everything made before still decrypts.
    server.stop();
    let server = Server::start(&data, None);
    let c = server.client().await;
    for (ct, pt) in [
        (&before.ciphertext, "alice@example.com"),
        (&after.ciphertext, "bob@example.com"),
        (&rw.ciphertext, "alice@example.com"),
    ] {
        assert_eq!(
            decrypt(&c, "", ct, CTX).await.unwrap().plaintext.as_ref(),
            pt.as_bytes()
        );
    }
    assert_eq!(
        encrypt(&c, "", "carol", CTX).await.unwrap().key_version,
        rotated.current_version
    );
}

#[tokio::test]
async fn a_version_dropped_from_the_stages_is_fetched_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let c = server.client().await;
    let mut admin = server.admin().await;
    let first = encrypt(&c, "", "oldest", CTX).await.unwrap();
    // Two rotations: the first version loses every stage (AWSPREVIOUS moves on).
    for _ in 0..2 {
        admin
            .rotate_master_key(pb::RotateMasterKeyRequest::default())
            .await
            .unwrap();
    }
    // A fresh server loads only staged versions, so it must fetch the first one by id.
    server.stop();
    let server = Server::start(&data, None);
    let c = server.client().await;
    let mut admin = server.admin().await;
    let before = admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !before.keys[0]
            .versions
            .iter()
            .any(|v| v.version == first.key_version)
    );
    assert_eq!(
        decrypt(&c, "", &first.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"oldest"
    );
    let after = admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let v = after.keys[0]
        .versions
        .iter()
        .find(|v| v.version == first.key_version)
        .unwrap();
    assert!(v.stages.is_empty());
}

#[tokio::test]
async fn health_and_reflection_v1_list_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let ch = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "envelope.v1.Envelope", "envelope.v1.Admin"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // Any other service name is NOT_FOUND.
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envelope.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(unknown.message(), "service not registered");
    // Watch answers the same names, its first message the status now.
    for service in ["", "envelope.v1.Envelope", "envelope.v1.Admin"] {
        let mut watch = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(
            first.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "envelope.v1.Nope".into(),
        })
        .await;
    let unknown = match unknown {
        Ok(r) => r.into_inner().message().await.unwrap_err(),
        Err(s) => s,
    };
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::NotFound, "service not registered")
    );
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "envelope.v1.Admin",
            "envelope.v1.Envelope",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"
        ]
    );
    // Descriptors over either protocol: what grpcurl's describe and list read.
    macro_rules! descriptor_of {
        ($pb:path, $symbol:expr) => {{
            use $pb as p;
            let mut refl =
                p::server_reflection_client::ServerReflectionClient::new(server.channel().await);
            let req = p::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    p::server_reflection_request::MessageRequest::FileContainingSymbol(
                        $symbol.into(),
                    ),
                ),
            };
            let mut stream = refl
                .server_reflection_info(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner();
            let resp = stream.message().await.unwrap().unwrap();
            let Some(p::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) =
                resp.message_response
            else {
                panic!("{resp:?}")
            };
            assert!(!f.file_descriptor_proto.is_empty());
        }};
    }
    descriptor_of!(tonic_reflection::pb::v1, "envelope.v1.Admin");
    descriptor_of!(tonic_reflection::pb::v1alpha, "envelope.v1.Envelope");
}

#[tokio::test]
async fn cli_encrypts_decrypts_rotates_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let addr = server.addr.clone();
    let (ok, ct, err) = run_stdin(
        &[
            "encrypt",
            "--addr",
            &addr,
            "--context",
            "table=users",
            "--base64",
        ],
        b"555-0100",
    );
    assert!(ok, "{err}");
    // CONFIG.md: the version goes to stderr, the record alone to stdout.
    let version = key_status(&server).await.current_version;
    assert_eq!(err.trim_end(), format!("key_version: {version}"));
    let decrypt = |context: &str, input: &[u8]| {
        run_stdin(
            &["decrypt", "--addr", &addr, "--context", context, "--base64"],
            input,
        )
    };
    let (ok, pt, err) = decrypt("table=users", &ct);
    assert!(ok, "{err}");
    assert_eq!(pt, b"555-0100");
    // Surrounding whitespace around the base64 text is trimmed (CONFIG.md).
    let padded = [b"  \n".as_slice(), ct.trim_ascii(), b" \n\n"].concat();
    let (ok, pt, err) = decrypt("table=users", &padded);
    assert!(ok, "{err}");
    assert_eq!(pt, b"555-0100");
    let (ok, _, err) = decrypt("table=other", &ct);
    assert!(!ok && err.contains("InvalidArgument"), "{err}");
    let (ok, out, err) = run_stdin(&["rotate", "--addr", &addr, "--key", "default"], b"");
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("current_version: "));
    let (ok, out, err) = run_stdin(&["status", "--addr", &addr], b"");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["keys"][0]["name"], "default");
    assert_eq!(v["keys"][0]["versions"].as_array().unwrap().len(), 2);
    // A server's refusal: its code name and message, the fix, the pointer.
    let (ok, _, err) = run_stdin(&["decrypt", "--addr", &addr], b"not a record");
    assert!(!ok);
    let block: Vec<&str> = err.lines().filter(|l| !l.starts_with("20")).collect();
    assert!(block.len() <= 3, "{err}");
    assert!(block[0].starts_with("error: InvalidArgument: "), "{err}");
    assert!(block.iter().any(|l| l.contains("--verbose")), "{err}");
    // --addr as a URL; stdin over 16 MiB refused before any call.
    let url = format!("http://{addr}");
    let (ok, _, err) = run_stdin(&["encrypt", "--addr", &url], b"x");
    assert!(ok, "{err}");
    let (ok, _, err) = run_stdin(&["encrypt", "--addr", &addr], &vec![0u8; (16 << 20) + 1]);
    assert!(!ok && err.contains("input is over 16777216 bytes"), "{err}");
    // Raw bytes in and out without --base64.
    let (ok, raw_ct, _) = run_stdin(&["encrypt", "--addr", &addr], &[0, 1, 2, 255]);
    assert!(ok);
    let (ok, raw_pt, _) = run_stdin(&["decrypt", "--addr", &addr], &raw_ct);
    assert!(ok);
    assert_eq!(raw_pt, [0, 1, 2, 255]);
}

/// ROTATION.md: an unreadable AWSPREVIOUS or AWSPENDING version is skipped
/// with a warning; the key still loads and serves under AWSCURRENT.
#[tokio::test]
async fn unreadable_previous_and_pending_versions_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Server::start(&data, None));
    let path = data.join("secrets").join("default.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let created = file["versions"][0]["created"].clone();
    let mut bad = Vec::new();
    for stage in ["AWSPREVIOUS", "AWSPENDING"] {
        let id = uuid::Uuid::new_v4().to_string();
        file["versions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": id,
                "created": created,
                "stages": [stage],
                "value": "not a master key",
            }));
        bad.push(id);
    }
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();

    let server = Server::start(&data, None);
    let status = server
        .admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let loaded: Vec<&str> = status.keys[0]
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(loaded.len(), 1, "{status:?}");
    assert!(!bad.iter().any(|b| loaded.contains(&b.as_str())));
    let logs = server.logs();
    for id in &bad {
        assert!(
            logs.lines()
                .any(|l| l.contains("skipping unreadable master-key version")
                    && l.contains(id.as_str())),
            "{logs}"
        );
    }
    let sealed = encrypt(&server.channel().await, "", "still serving", &[])
        .await
        .unwrap();
    let back = decrypt(&server.channel().await, "", &sealed.ciphertext, &[])
        .await
        .unwrap();
    assert_eq!(back.plaintext.as_ref(), b"still serving");
    // A refresh skips them too: it succeeds.
    server
        .admin()
        .await
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
}

/// API.md, "Rewrap": Rewrap neither uses nor fills the decryption cache
/// (it unwraps under the record's version and wraps again, keeping no data
/// key); Decrypt, the control, fills it.
#[tokio::test]
async fn rewrap_leaves_the_decryption_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let sealed = encrypt(&server.channel().await, "", "cached?", &[])
        .await
        .unwrap();
    // A restart: the record's data key is in no cache.
    drop(server);
    let server = Server::start(&data, None);
    let ch = server.channel().await;
    let cache = || async {
        let status = server
            .admin()
            .await
            .key_status(pb::KeyStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        let c = status.keys[0].cache.unwrap();
        (
            c.decrypt_cache_entries,
            c.decrypt_cache_hits,
            c.decrypt_cache_misses,
        )
    };
    let before = cache().await;
    assert_eq!(before, (0, 0, 0));
    for _ in 0..2 {
        pb::envelope_client::EnvelopeClient::new(ch.clone())
            .rewrap(pb::RewrapRequest {
                key: String::new(),
                ciphertext: sealed.ciphertext.clone(),
                context: ctx(&[]),
                indexes: Vec::new(),
            })
            .await
            .unwrap();
    }
    assert_eq!(cache().await, before);
    decrypt(&ch, "", &sealed.ciphertext, &[]).await.unwrap();
    assert_eq!(cache().await, (1, 0, 1));
}

/// API.md, "RefreshKeys": key names are refreshed in order; the first
/// failure ends the call with its error and counts in that key's
/// `refresh_failures`; names after it are not refreshed, names before it
/// stay refreshed.
#[tokio::test]
async fn refresh_keys_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Configured c, b, a: refreshed in name order, a, b, c (CONFIG.md).
    let config = "[[keys]]\nname = \"c\"\n[[keys]]\nname = \"b\"\n[[keys]]\nname = \"a\"\n";
    let server = Server::start(&data, Some(config));
    let mut admin = server.admin().await;
    let status = |admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>| {
        let mut admin = admin.clone();
        async move {
            admin
                .key_status(pb::KeyStatusRequest::default())
                .await
                .unwrap()
                .into_inner()
                .keys
                .into_iter()
                .map(|k| (k.name, (k.last_refresh, k.refresh_failures)))
                .collect::<std::collections::BTreeMap<_, _>>()
        }
    };
    let before = status(&mut admin).await;
    // Key "b"'s secret becomes unreadable.
    let b = data.join("secrets").join("b.json");
    let good = std::fs::read(&b).unwrap();
    std::fs::write(&b, b"{ not json").unwrap();
    // Refreshes are stamped to the microsecond or so; make "later" visible.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let err = admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let after = status(&mut admin).await;
    assert_ne!(after["a"].0, before["a"].0, "a was not refreshed");
    assert_eq!(after["b"].1, before["b"].1 + 1, "b's failure not counted");
    assert_eq!(after["c"], before["c"], "c was refreshed after b failed");
    std::fs::write(&b, good).unwrap();
    let ok = admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.refreshed, ["a", "b", "c"]);
}

/// CONFIG.md, "Refresh and readiness": a failed refresh pass is retried
/// after 1 s, then 2 s, 4 s, … doubling up to `refresh_interval_secs`,
/// each ±10% (the log's `retry_in_ms` is the pause taken), while the cached
/// keys keep serving; once the store reads again the key refreshes.
#[tokio::test]
async fn a_failing_refresh_backs_off_doubling_up_to_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some("refresh_interval_secs = 5\n"));
    let path = data.join("secrets").join("default.json");
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, b"not a secret file").unwrap();

    // Passes at about 5 s (the interval), then 1 s, 2 s and 4 s later.
    let failed = server
        .log_lines(
            "refresh failed; keeping cached keys",
            4,
            Duration::from_secs(30),
        )
        .await;
    let pauses: Vec<u64> = failed
        .iter()
        .map(|l| {
            let ms = l.split("retry_in_ms=").nth(1).unwrap();
            ms.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    for (pause, base) in pauses.iter().zip([1000u64, 2000, 4000, 5000]) {
        assert!(
            (base * 9 / 10..=base * 11 / 10).contains(pause),
            "pauses {pauses:?}, expected about 1 s, 2 s, 4 s, 5 s"
        );
    }
    let c = server.client().await;
    let record = encrypt(&c, "", "still serving", CTX).await.unwrap();
    let status = || common::requests::key_status(&server);
    let stale = status().await;
    assert!(stale.refresh_failures >= 4, "{}", stale.refresh_failures);

    // The next pass (at most 5.5 s away) reads the store again.
    std::fs::write(&path, &good).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status().await.last_refresh == stale.last_refresh {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = decrypt(&c, "", record.ciphertext, CTX).await.unwrap();
    assert_eq!(opened.plaintext, "still serving".as_bytes());
}

/// FORMAT.md, "KEK": derived once per version, at load, never per request.
/// Every derivation logs `master-key version loaded`. 200 calls and three
/// refreshes add none; a rotation's TestSecret and FinishSecret steps each
/// derive the current and the pending version to check them, then the
/// keyring loads the new version once; 40 more calls and a refresh add none.
#[tokio::test]
async fn each_version_is_derived_once_not_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let c = server.client().await;
    let loaded = |version: &str| {
        server
            .logs()
            .lines()
            .filter(|l| l.contains("master-key version loaded") && l.contains(version))
            .count()
    };
    let first = encrypt(&c, "", "x", CTX).await.unwrap().key_version;
    let mut admin = server.admin().await;
    for i in 0..100 {
        let sealed = encrypt(&c, "", &format!("value {i}"), CTX).await.unwrap();
        decrypt(&c, "", &sealed.ciphertext, CTX).await.unwrap();
        if i % 40 == 0 {
            admin
                .refresh_keys(pb::RefreshKeysRequest::default())
                .await
                .unwrap();
        }
    }
    assert_eq!(loaded(&first), 1, "{}", server.logs());
    let second = common::requests::rotate(&server, "").await.current_version;
    let rotated = (loaded(&first), loaded(&second));
    assert_eq!(rotated, (3, 3), "{}", server.logs());
    for _ in 0..20 {
        let sealed = encrypt(&c, "", "y", CTX).await.unwrap();
        assert_eq!(sealed.key_version, second);
        decrypt(&c, "", &sealed.ciphertext, CTX).await.unwrap();
    }
    admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(
        (loaded(&first), loaded(&second)),
        rotated,
        "{}",
        server.logs()
    );
}

/// ROTATION.md, "Restart to apply": `min_decryption_version` is read at
/// start. A refresh (RefreshKeys) does not re-read the configuration, so a
/// minimum written after start retires nothing until the restart, which
/// then applies the same file.
#[tokio::test]
async fn a_refresh_does_not_re_read_the_minimum_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plain = "[[keys]]\nname = \"default\"\n";
    let server = Server::start(&data, Some(plain));
    let c = server.client().await;
    let old = encrypt(&c, "", "old", CTX).await.unwrap();
    let current = common::requests::rotate(&server, "").await.current_version;
    let pinned = format!("{plain}min_decryption_version = \"{current}\"\n");
    std::fs::write(data.with_extension("toml"), &pinned).unwrap();
    server
        .admin()
        .await
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    let opened = decrypt(&c, "", &old.ciphertext, CTX).await.unwrap();
    assert_eq!(opened.plaintext.as_ref(), b"old");
    drop(server);
    // The same file, read at start, retires the old version.
    let server = Server::start(&data, Some(&pinned));
    let refused = decrypt(&server.client().await, "", &old.ciphertext, CTX)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

/// ROTATION.md, "Retirement": with `min_decryption_version` set, Decrypt,
/// DecryptBatch items, Rewrap, RewrapBatch items and UnwrapDataKey refuse
/// what an older version wrote, with the documented message; Encrypt and
/// GenerateDataKey go on.
#[tokio::test]
async fn a_retired_version_is_refused_by_every_call_that_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let mut c = server.client().await;
    let old = encrypt(&c, "", "old", CTX).await.unwrap();
    let blob = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(CTX),
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped_key;
    let current = common::requests::rotate(&server, "").await.current_version;
    let new = encrypt(&c, "", "new", CTX).await.unwrap();
    drop(server);

    let cfg = format!("[[keys]]\nname = \"default\"\nmin_decryption_version = \"{current}\"\n");
    let server = Server::start(&data, Some(&cfg));
    let mut c = server.client().await;
    let message = format!(
        "master-key version {} of key \"default\" is retired (older than the key's min_decryption_version)",
        old.key_version
    );
    let refused = |s: tonic::Status| {
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, message.as_str())
        );
    };
    refused(decrypt(&c, "", &old.ciphertext, CTX).await.unwrap_err());
    refused(
        c.rewrap(pb::RewrapRequest {
            key: String::new(),
            ciphertext: old.ciphertext.clone(),
            context: ctx(CTX),
            indexes: Vec::new(),
        })
        .await
        .unwrap_err(),
    );
    refused(
        c.unwrap_data_key(pb::UnwrapDataKeyRequest {
            key: String::new(),
            wrapped_key: blob,
            context: ctx(CTX),
        })
        .await
        .unwrap_err(),
    );
    let item_code = |e: &pb::ItemError| {
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::FailedPrecondition as i32, message.as_str())
        );
    };
    let items = [&old, &new].map(|r| pb::DecryptItem {
        ciphertext: r.ciphertext.clone(),
        context: ctx(CTX),
    });
    let opened = c
        .decrypt_batch(pb::DecryptBatchRequest {
            key: String::new(),
            items: items.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let Some(pb::decrypt_result::Result::Error(e)) = &opened[0].result else {
        panic!("{opened:?}")
    };
    item_code(e);
    assert!(matches!(
        &opened[1].result,
        Some(pb::decrypt_result::Result::Plaintext(p)) if p.as_ref() == b"new"
    ));
    let rewrapped = c
        .rewrap_batch(pb::RewrapBatchRequest {
            key: String::new(),
            items: vec![pb::RewrapItem {
                ciphertext: old.ciphertext.clone(),
                context: ctx(CTX),
                indexes: Vec::new(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let Some(pb::rewrap_result::Result::Error(e)) = &rewrapped[0].result else {
        panic!("{rewrapped:?}")
    };
    item_code(e);
    // Not affected: Encrypt, EncryptBatch and GenerateDataKey.
    assert_eq!(
        encrypt(&c, "", "still", CTX).await.unwrap().key_version,
        current
    );
    let batch = c
        .encrypt_batch(common::requests::batch("", 0, 3))
        .await
        .unwrap()
        .into_inner();
    assert!(
        batch.results.iter().all(|r| r.key_version == current),
        "{batch:?}"
    );
    c.generate_data_key(pb::GenerateDataKeyRequest {
        key: String::new(),
        context: ctx(CTX),
    })
    .await
    .unwrap();
}

/// API.md, MarkCompromised: idempotent (a second call changes nothing in
/// the store and gives the same answer); a version the store lacks is
/// FAILED_PRECONDITION; a bad reason is INVALID_ARGUMENT.
#[tokio::test]
async fn mark_compromised_is_idempotent_and_refuses_what_it_cannot_mark() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let first = common::requests::rotate(&server, "").await.previous_version;
    let mut admin = server.admin().await;
    let mark = |version: &str, reason: &str| pb::MarkCompromisedRequest {
        key: String::new(),
        version: version.into(),
        reason: reason.into(),
    };
    let secret = data.join("secrets").join("default.json");
    let once = admin
        .mark_compromised(mark(&first, "laptop lost"))
        .await
        .unwrap()
        .into_inner();
    let stored = std::fs::read_to_string(&secret).unwrap();
    assert!(stored.contains(&format!("envelope-compromised-{first}")));
    let twice = admin
        .mark_compromised(mark(&first, "laptop lost"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(twice.current_version, once.current_version);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), stored);

    let absent = uuid::Uuid::new_v4().to_string();
    let e = admin
        .mark_compromised(mark(&absent, "typo"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // A reason of 1 to 512 printable characters (API.md): empty, 513 and a
    // control character are refused; 512 is taken (the version is already
    // marked, so nothing changes).
    for bad in [String::new(), "a".repeat(513), "a\tb".to_owned()] {
        let e = admin
            .mark_compromised(mark(&first, &bad))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    admin
        .mark_compromised(mark(&first, &"a".repeat(512)))
        .await
        .unwrap();
}

/// ROTATION.md, "A compromised version": with `allow_compromised_decrypts`,
/// a record under a marked version opens, its audit line says so, and
/// KeyStatus reports the setting.
#[tokio::test]
async fn an_allowed_compromised_decrypt_is_flagged_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "metrics_listen = \"127.0.0.1:0\"\n[[keys]]\nname = \"default\"\nallow_compromised_decrypts = true\n";
    let server = Server::start(&dir.path().join("data"), Some(cfg));
    let old = encrypt(&server, "", "old", CTX).await.unwrap();
    common::requests::rotate(&server, "").await;
    let mut admin = server.admin().await;
    admin
        .mark_compromised(pb::MarkCompromisedRequest {
            key: String::new(),
            version: old.key_version.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let opened = decrypt(&server, "", &old.ciphertext, CTX).await.unwrap();
    assert_eq!(opened.plaintext.as_ref(), b"old");
    let audit = server
        .audit_with(&["decrypted under a compromised version"])
        .await;
    let line = audit
        .lines()
        .find(|l| l.contains("\"rpc\":\"Decrypt\""))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        line.contains("\"compromised_records\":1")
            && line.contains("decrypted under a compromised version (allow_compromised_decrypts)"),
        "{line}"
    );
    let status = admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.keys[0].allow_compromised_decrypts);
    // KeyInfo.versions flags the marked version only (API.md).
    for v in &status.keys[0].versions {
        assert_eq!(v.compromised, v.version == old.key_version, "{v:?}");
    }
    // Counted as `decrypted` (OPERATIONS.md, `envelope_compromised_records_total`).
    let (_, metrics) = common::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let series = format!(
        "envelope_compromised_records_total{{key=\"default\",version=\"{}\",outcome=\"decrypted\"}} 1\n",
        old.key_version
    );
    assert!(metrics.contains(&series), "{metrics}");
    assert_eq!(status.keys[0].compromised_versions, vec![old.key_version]);
}
