//! AWS mode against a real AWS-API server (moto) on loopback, over time:
//! stage loading, on-demand fetch and refresh, outage and recovery, bounded
//! API calls under a flood of bogus versions, and a replica region. The
//! secret shapes end to end: tests/aws.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Server;
use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::moto::{
    Proxy, TEST_ENV, create_envelope_secret, envelope_doc, kms_key, moto, sdk_config_for, unique,
    uuid,
};
use common::requests::{CTX, dec, decrypt, key_status, round_trip};
use envelope::pb;
use tonic::Code;

/// The last part of finishSecret: take AWSPENDING off the new version.
async fn finish(sm: &aws_sdk_secretsmanager::Client, secret: &str, version: &str) {
    sm.update_secret_version_stage()
        .secret_id(secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(version)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn stages_on_demand_fetch_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/stages");
    let sm = moto().secrets();
    let (v1, v2, v3) = (uuid(), uuid(), uuid());
    create_envelope_secret(&secret, &key, "default", &v1).await;
    let doc = envelope_doc(&key, "default", &v2).await;
    common::moto::put_version(&secret, &v2, doc, "AWSPENDING").await;
    let keys = secret_key("default", &secret);
    let cfg = aws_config(
        &moto().url(),
        &key,
        FAIL_FAST,
        "refresh_interval_secs = 1\nmax_staleness_secs = 60\n",
        &keys,
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);

    // AWSCURRENT and AWSPENDING are both loaded; AWSCURRENT encrypts.
    let s = key_status(&server).await;
    assert_eq!(s.current_version, v1);
    let staged: Vec<_> = s
        .versions
        .iter()
        .map(|v| (v.version.clone(), v.stages.clone()))
        .collect();
    assert!(
        staged.contains(&(v2.clone(), vec!["AWSPENDING".into()])),
        "{staged:?}"
    );
    let old = round_trip(&server, "", "under v1").await;
    assert_eq!(old.key_version, v1);

    // Another replica finishes a rotation: RefreshKeys picks up the new AWSCURRENT.
    sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v2)
        .remove_from_version_id(&v1)
        .send()
        .await
        .unwrap();
    finish(&sm, &secret, &v2).await;
    server
        .admin()
        .await
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(round_trip(&server, "", "under v2").await.key_version, v2);

    // And the periodic refresh (1 s here) picks up the next one by itself.
    let doc = envelope_doc(&key, "default", &v3).await;
    common::moto::put_version(&secret, &v3, doc, "AWSPENDING").await;
    sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v3)
        .remove_from_version_id(&v2)
        .send()
        .await
        .unwrap();
    finish(&sm, &secret, &v3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if round_trip(&server, "", "probe").await.key_version == v3 {
            break;
        }
        assert!(Instant::now() < deadline, "refresh never picked up {v3}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // v1 has no stage left (v2 is AWSPREVIOUS now): a fresh server fetches it by id on demand.
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&cfg), TEST_ENV);
    let staged = key_status(&server).await.versions;
    assert!(!staged.iter().any(|v| v.version == v1), "{staged:?}");
    assert_eq!(
        decrypt(&server, "", &old.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"under v1"
    );
    assert!(
        key_status(&server)
            .await
            .versions
            .iter()
            .any(|v| v.version == v1 && v.stages.is_empty())
    );
}

#[tokio::test]
async fn outage_keeps_serving_flips_readiness_after_the_bound_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/outage");
    let v1 = uuid();
    create_envelope_secret(&secret, &key, "default", &v1).await;
    let proxy = Proxy::start(moto().addr);
    let keys = secret_key("default", &secret);
    let cfg = aws_config(
        &proxy.url(),
        &key,
        FAIL_FAST,
        "refresh_interval_secs = 1\nmax_staleness_secs = 3\nmetrics_listen = \"127.0.0.1:0\"\n",
        &keys,
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let metrics = server.metrics.clone().expect("metrics address");
    assert_eq!(common::http_get(&metrics, "/readyz").0, 200);
    let before = round_trip(&server, "", "before the outage").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let serving = |r: tonic_health::pb::HealthCheckResponse| {
        r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    };
    let check =
        |h: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>| {
            let mut h = h.clone();
            async move {
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: "envelope.v1.Envelope".into(),
                })
                .await
                .unwrap()
                .into_inner()
            }
        };
    assert!(serving(check(&mut health).await));

    proxy.set_down(true);
    let down_at = Instant::now();
    // Cached keys keep serving through the outage.
    let during = round_trip(&server, "", "during the outage").await;
    assert_eq!(
        decrypt(&server, "", &before.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"before the outage"
    );
    // Readiness flips only past the staleness bound (3 s), and promptly:
    // judged by the server's own clock (its staleness gauge) and its count
    // of failed refreshes, not by this test's timing. The readiness check
    // runs once a second and a refresh is tried once a second, so the flip
    // comes after the bound and before the bound's worth of failed
    // refreshes plus two.
    let gauge = |name: &str| -> f64 {
        let text = common::http_get(&metrics, "/metrics").1;
        let line = format!("{name}{{key=\"default\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {name} for the key in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let failures_at_start = gauge("envelope_key_refresh_failures_total");
    let mut samples = 0;
    let (stale_at_flip, failed_at_flip) = loop {
        let staleness = gauge("envelope_key_staleness_seconds");
        let failed = gauge("envelope_key_refresh_failures_total") - failures_at_start;
        let ready = serving(check(&mut health).await);
        if !ready {
            // Read after the flip: staleness only grows during the outage,
            // so a flip before the bound shows here as a value below it.
            break (gauge("envelope_key_staleness_seconds"), failed);
        }
        assert!(
            failed <= 5.0,
            "still ready after {failed} failed refreshes (staleness {staleness} s, bound 3 s)"
        );
        samples += 1;
        assert!(samples < 400, "readiness never changed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "readiness NOT_SERVING at staleness {stale_at_flip:.2} s (bound 3 s), after {failed_at_flip} failed refreshes, {:?} after the AWS-API server went away",
        down_at.elapsed()
    );
    assert!(
        stale_at_flip >= 3.0,
        "not ready too early: staleness {stale_at_flip} s"
    );
    assert!(failed_at_flip >= 1.0, "flipped with no failed refresh");
    assert!(key_status(&server).await.refresh_failures > 0);
    // /readyz says why: the key is stale; /healthz still answers; the
    // metrics count the failed store calls.
    let (code, body) = common::http_get(&metrics, "/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["keys"]["default"]["status"], "stale");
    assert_eq!(ready["status"], "not_ready", "{body}");
    // The last store call (a refresh) failed: OPERATIONS.md, `checks`.
    assert_eq!(ready["checks"]["secret_store"], "failing", "{body}");
    assert_eq!(common::http_get(&metrics, "/healthz").0, 200);
    // The Admin service stays SERVING, so KeyStatus and RefreshKeys stay usable.
    let admin = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envelope.v1.Admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(serving(admin), "Admin went NOT_SERVING with the keys");
    // The server as a whole ("") turns NOT_SERVING with the Envelope service.
    let whole = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!serving(whole), "\"\" still SERVING");
    // At ERROR, naming the stale key (OPERATIONS.md's runbook).
    assert!(
        server.logs().lines().any(|l| l.contains(" ERROR ")
            && l.contains("keys stale past the bound; not ready")
            && l.contains("keys=[\"default\"]")),
        "{}",
        server.logs()
    );
    let scraped = common::http_get(&metrics, "/metrics").1;
    assert!(
        scraped.contains("envelope_backend_calls_total{service=\"secretsmanager\",op=\"DescribeSecret\",outcome=\"error\"}"),
        "{scraped}"
    );
    assert_eq!(
        decrypt(&server, "", &during.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"during the outage"
    );
    assert!(
        server
            .logs()
            .contains("refresh failed; keeping cached keys")
    );

    proxy.set_down(false);
    let up_at = Instant::now();
    loop {
        if serving(check(&mut health).await) {
            break;
        }
        assert!(up_at.elapsed() < Duration::from_secs(30), "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "ready again {:?} after the AWS-API server came back",
        up_at.elapsed()
    );
    assert_eq!(common::http_get(&metrics, "/readyz").0, 200);
    assert!(server.logs().contains("keys fresh again; ready"));
    // Both data-plane names are SERVING again, "" included.
    server.wait_health(true).await;
    round_trip(&server, "", "after the outage").await;
}

#[tokio::test]
async fn a_flood_of_bogus_versions_costs_one_call_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/flood");
    let v1 = uuid();
    create_envelope_secret(&secret, &key, "default", &v1).await;
    let proxy = Proxy::start(moto().addr);
    let keys = secret_key("default", &secret);
    let cfg = aws_config(&proxy.url(), &key, FAIL_FAST, "", &keys);
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let good = round_trip(&server, "", "x").await.ciphertext;
    let before = proxy.count("secretsmanager.GetSecretValue");

    // 10 bogus versions, each named by 30 concurrent requests.
    let bogus: Vec<Bytes> = (0..10)
        .map(|_| {
            let mut r = good.to_vec();
            r[7..23].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            Bytes::from(r)
        })
        .collect();
    let mut tasks = Vec::new();
    for round in 0..30 {
        for ct in &bogus {
            let ct = ct.clone();
            let mut c = server.client().await;
            tasks.push(tokio::spawn(async move {
                let _ = round;
                c.decrypt(dec("", &ct, CTX)).await.unwrap_err().code()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Code::FailedPrecondition);
    }
    let calls = proxy.count("secretsmanager.GetSecretValue") - before;
    eprintln!("300 decrypts naming 10 bogus versions made {calls} GetSecretValue calls");
    assert!((1..=10).contains(&calls), "{calls} calls");
    // Asked again within the negative-cache TTL: no further calls.
    for ct in &bogus {
        assert_eq!(
            decrypt(&server, "", ct, CTX).await.unwrap_err().code(),
            Code::FailedPrecondition
        );
    }
    assert_eq!(proxy.count("secretsmanager.GetSecretValue") - before, calls);
    // Fetches of different versions run one at a time per key name
    // (FORMAT.md, ROTATION.md): with each store call held 300 ms, five
    // concurrent Decrypts of five new versions have made one call 150 ms
    // in, and all five in the end.
    let before = proxy.count("secretsmanager.GetSecretValue");
    proxy.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let mut r = good.to_vec();
        r[7..23].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            c.decrypt(dec("", &r, CTX)).await.unwrap_err().code()
        }));
    }
    // Sampled 150 ms into each 300 ms call: at most one more each time.
    let started = Instant::now();
    for n in 1..=4u32 {
        let at = Duration::from_millis(300) * (n - 1) + Duration::from_millis(150);
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let fetched = proxy.count("secretsmanager.GetSecretValue") - before;
        assert!(fetched <= u64::from(n), "{fetched} fetches {at:?} in");
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Code::FailedPrecondition);
    }
    assert_eq!(proxy.count("secretsmanager.GetSecretValue") - before, 5);
    proxy.set_delay(Duration::ZERO);
    let _ = sdk_config_for;
}

#[tokio::test]
async fn replica_region_serves_when_the_primary_fails_and_kms_key_by_alias() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let alias = format!("alias/{}", unique("envelope"));
    moto()
        .kms()
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let secret = unique("envelope/replicated");
    let v1 = uuid();
    let doc = envelope_doc(&alias, "default", &v1).await;
    // The same secret, version and value in the primary and the replica region.
    let west = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&moto().sdk_config())
            .region(aws_sdk_secretsmanager::config::Region::new("us-west-2"))
            .build(),
    );
    for client in [moto().secrets(), west] {
        client
            .create_secret()
            .name(&secret)
            .client_request_token(&v1)
            .secret_string(&doc)
            .send()
            .await
            .unwrap();
    }
    // Secrets Manager in the primary region goes through a proxy that is down.
    let proxy = Proxy::start(moto().addr);
    proxy.set_down(true);
    let keys = secret_key("default", &secret);
    let cfg = aws_config(&moto().url(), &alias, FAIL_FAST, "", &keys).replace(
        "[aws]\n",
        &format!(
            "[aws]\nsecretsmanager_endpoint_url = \"{}\"\nreplica_regions = [\"us-west-2\"]\n",
            proxy.url()
        ),
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let e = round_trip(&server, "", "served from the replica").await;
    assert_eq!(e.key_version, v1);
    let logs = server.logs();
    assert!(
        logs.contains("served by a replica region") && logs.contains("us-west-2"),
        "{logs}"
    );
    // The primary was tried first, and never answered.
    assert!(
        proxy.refused("secretsmanager.DescribeSecret") >= 1,
        "the primary region was never tried"
    );
    assert_eq!(proxy.count("secretsmanager.DescribeSecret"), 0);
}

/// OPERATIONS.md, "Every replica refreshes on its own": a refresh of an
/// unchanged key costs one DescribeSecret; GetSecretValue and KMS Decrypt
/// come only for a version not loaded yet, once each.
#[tokio::test]
async fn a_refresh_fetches_only_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/refresh-cost");
    create_envelope_secret(&secret, &key, "default", &uuid()).await;
    let proxy = Proxy::start(moto().addr);
    let keys = secret_key("default", &secret);
    let top = "refresh_interval_secs = 1";
    let cfg = aws_config(&proxy.url(), &key, FAIL_FAST, top, &keys);
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let count = |t: &str| proxy.count(t);
    let (describe, get, decrypt) = (
        "secretsmanager.DescribeSecret",
        "secretsmanager.GetSecretValue",
        "TrentService.Decrypt",
    );
    let at_start = (count(describe), count(get), count(decrypt));
    let refreshes = |n: u64, from: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(describe) < from + n {
            assert!(Instant::now() < deadline, "fewer than {n} refreshes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    refreshes(3, at_start.0).await;
    assert_eq!((count(get), count(decrypt)), (at_start.1, at_start.2));
    // A new AWSCURRENT: fetched and decrypted once, then not again.
    let v2 = uuid();
    let doc = envelope_doc(&key, "default", &v2).await;
    common::moto::put_version(&secret, &v2, doc, "AWSCURRENT").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while key_status(&server).await.current_version != v2 {
        assert!(Instant::now() < deadline, "the new version never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refreshes(2, count(describe)).await;
    assert_eq!(
        (count(get) - at_start.1, count(decrypt) - at_start.2),
        (1, 1)
    );
}

/// CONFIG.md, `kms_endpoint_url`: KMS calls go there, Secrets Manager's to
/// `endpoint_url` (here a proxy that counts them).
#[tokio::test]
async fn kms_endpoint_url_takes_the_kms_calls() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/kms-endpoint");
    create_envelope_secret(&secret, &key, "default", &uuid()).await;
    let proxy = Proxy::start(moto().addr);
    let keys = secret_key("default", &secret);
    let cfg = aws_config(&proxy.url(), &key, FAIL_FAST, "", &keys).replace(
        "[aws]\n",
        &format!("[aws]\nkms_endpoint_url = \"{}\"\n", moto().url()),
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    round_trip(&server, "", "x").await;
    assert!(proxy.count("secretsmanager.DescribeSecret") > 0);
    for op in ["TrentService.Decrypt", "TrentService.GenerateDataKey"] {
        assert_eq!(proxy.count(op), 0, "{op} went to endpoint_url");
    }
}
