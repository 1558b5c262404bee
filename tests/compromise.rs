//! A compromised master-key version on a three-replica fleet against the
//! AWS-API server (moto) and a real PostgreSQL: after MarkCompromised and
//! one refresh interval no replica encrypts under it, also once a writer of
//! the secret removes the label and moves AWSCURRENT back to it, and after
//! a restart that knows the mark from configuration alone; Decrypt refuses
//! its records; `envelope migrate` re-encrypts them under new data keys;
//! the servers count what they were asked to open, and the gauge of recent
//! requests returns to 0.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Server;
use common::aws_config::{UNDER_LOAD, aws_config, secret_key};
use common::moto::{TEST_ENV, kms_key, moto};
use common::postgres::Postgres;
use common::process::http_get;
use common::requests::{ctx, dec, enc};
use envelope::pb;
use envelope::primitives::record::{self, Kind};
use tonic::Code;

const ROWS: i64 = 300;
const SHARED: &[(&str, &str)] = &[("table", "users"), ("column", "email")];
/// A refresh interval (1 s ±10%) and then some.
const ONE_REFRESH: Duration = Duration::from_millis(2500);

/// Key "pii" on `secret`, refreshed every second, with a one-second window
/// behind the recent-requests gauge; `extra` goes into the key's table.
fn config(kms_key: &str, secret: &str, extra: &str) -> String {
    aws_config(
        &moto().url(),
        kms_key,
        UNDER_LOAD,
        "refresh_interval_secs = 1\nmax_staleness_secs = 600\nmetrics_listen = \"127.0.0.1:0\"\n\
         [limits]\ncompromised_window_secs = 1\n",
        &(secret_key("pii", secret) + extra),
    )
}

fn email(id: i64) -> String {
    format!("user{id}@example.com")
}

/// A series of /metrics for key "pii" and `version` (0 when absent).
fn series(server: &Server, name: &str, version: &str, outcome: Option<&str>) -> f64 {
    let (_, text) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let extra = outcome.map_or(String::new(), |o| format!(",outcome=\"{o}\""));
    let series = format!("{name}{{key=\"pii\",version=\"{version}\"{extra}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn migrate(server: &Server, pg: &Postgres, extra: &[&str]) -> std::process::Output {
    common::cli::migrate_users(&server.addr, &pg.url)
        .args(["--key", "pii", "--row-field", "id"])
        .args(extra)
        .output()
        .unwrap()
}

/// Records per version in the column, from `migrate --dry-run`.
fn debt(server: &Server, pg: &Postgres, version: &str) -> u64 {
    let out = migrate(server, pg, &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" records under {version}")))
        .map_or(0, |n| n.parse().unwrap())
}

async fn encrypt_version(server: &Server) -> Result<String, tonic::Status> {
    let r = server
        .client()
        .await
        .encrypt(enc("pii", "probe", &[]))
        .await?;
    Ok(r.into_inner().key_version)
}

async fn decrypt_code(server: &Server, ct: &Bytes) -> (Code, String) {
    match server.client().await.decrypt(dec("pii", ct, &[])).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

/// The version id and wrapped data key a record's header names.
fn header(value: &[u8]) -> (String, Vec<u8>) {
    let p = record::parse(value, Kind::Record).unwrap();
    let v = record::VersionId::from_raw(p.version_raw).unwrap();
    (v.as_str().to_owned(), p.wrapped.to_vec())
}

async fn set_stage(secret: &str, stage: &str, to: Option<&str>, from: Option<&str>) {
    moto()
        .secrets()
        .update_secret_version_stage()
        .secret_id(secret)
        .version_stage(stage)
        .set_move_to_version_id(to.map(str::to_owned))
        .set_remove_from_version_id(from.map(str::to_owned))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_version_is_refused_fleet_wide_and_migrated_away() {
    let dir = tempfile::tempdir().unwrap();
    let kms_key = kms_key().await;
    let secret = format!("envelope/compromise-{}", uuid::Uuid::new_v4().simple());
    let plain = config(&kms_key, &secret, "");
    let (ok, _, err) = common::cli::init_keys(&dir.path().join("init.toml"), &plain, TEST_ENV);
    assert!(ok, "{err}");
    let start = |i: usize, cfg: &str| {
        Server::start_with(&dir.path().join(format!("r{i}")), Some(cfg), TEST_ENV)
    };
    let mut replicas: Vec<Server> = (0..3).map(|i| start(i, &plain)).collect();

    // A table whose column is sealed under V, with row ids bound.
    let pg = Postgres::start();
    let db = pg.client().await;
    db.batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, email bytea)")
        .await
        .unwrap();
    let ids: Vec<i64> = (1..=ROWS).collect();
    let sealed = replicas[0]
        .client()
        .await
        .encrypt_column(pb::EncryptColumnRequest {
            key: "pii".into(),
            context: ctx(SHARED),
            plaintexts: ids.iter().map(|i| Bytes::from(email(*i))).collect(),
            row_field: "id".into(),
            row_values: ids.iter().map(i64::to_string).collect(),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let v = sealed.key_version.clone();
    let before: Vec<Vec<u8>> = sealed.ciphertexts.iter().map(|b| b.to_vec()).collect();
    db.execute(
        "INSERT INTO users SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &[&ids, &before],
    )
    .await
    .unwrap();
    let single = replicas[1]
        .client()
        .await
        .encrypt(enc("pii", "one record", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(single.key_version, v);
    for r in &replicas {
        assert_eq!(encrypt_version(r).await.unwrap(), v);
    }
    assert_eq!(debt(&replicas[0], &pg, &v), ROWS as u64);

    // The mark, through replica 0: V was current, so it rotates at once.
    let marked = replicas[0]
        .admin()
        .await
        .mark_compromised(pb::MarkCompromisedRequest {
            key: "pii".into(),
            version: v.clone(),
            reason: "key material found in a leaked backup (INC-1234)".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let n = marked.current_version.clone();
    assert_ne!(n, v);
    let audit = replicas[0].audit_with(&["\"MarkCompromised\""]).await;
    let line = audit
        .lines()
        .find(|l| l.contains("\"MarkCompromised\""))
        .unwrap();
    assert!(line.contains("INC-1234") && line.contains(&v), "{line}");

    // One refresh interval later, no replica encrypts under V, and every
    // one refuses Decrypt of a V record, naming the compromise.
    tokio::time::sleep(ONE_REFRESH).await;
    let single_ct = single.ciphertext.clone();
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(encrypt_version(r).await.unwrap(), n, "replica {i}");
        let (code, message) = decrypt_code(r, &single_ct).await;
        assert_eq!(code, Code::FailedPrecondition, "replica {i}: {message}");
        // ROTATION.md's table, word for word.
        assert_eq!(
            message,
            format!(
                "master-key version {v} of key \"pii\" is marked compromised: its records can be forged by \
                 whoever holds it, so Decrypt refuses them; re-encrypt them (envelope migrate, or \
                 ReencryptBatch) or, for a migration window, set allow_compromised_decrypts on the key"
            )
        );
        let mut admin = r.admin().await;
        let status = admin.key_status(pb::KeyStatusRequest { key: "pii".into() });
        let info = status.await.unwrap().into_inner().keys.remove(0);
        assert_eq!(info.compromised_versions, vec![v.clone()], "replica {i}");
        assert!(series(r, "envelope_compromised_records_total", &v, Some("refused")) >= 1.0);
        assert!(series(r, "envelope_compromised_records_recent", &v, None) >= 1.0);
    }

    // A writer of the secret removes the label and moves AWSCURRENT back to V.
    set_stage(
        &secret,
        &format!("envelope-compromised-{v}"),
        None,
        Some(&v),
    )
    .await;
    set_stage(&secret, "AWSCURRENT", Some(&v), Some(&n)).await;
    tokio::time::sleep(ONE_REFRESH).await;
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(
            encrypt_version(r).await.unwrap(),
            n,
            "replica {i} after the rollback"
        );
        assert_eq!(
            decrypt_code(r, &single_ct).await.0,
            Code::FailedPrecondition
        );
    }
    // A restart forgets what it saw; the configuration still lists V.
    let listed = config(
        &kms_key,
        &secret,
        &format!("compromised_versions = [\"{v}\"]\n"),
    );
    drop(replicas.remove(2));
    replicas.push(start(3, &listed));
    let refused = encrypt_version(&replicas[2]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("compromised"), "{refused:?}");
    assert_eq!(
        decrypt_code(&replicas[2], &single_ct).await.0,
        Code::FailedPrecondition
    );
    // Without the configuration a restarted replica would take V back: the
    // reason the runbook asks for both.
    set_stage(&secret, "AWSCURRENT", Some(&n), Some(&v)).await;
    drop(replicas.remove(2));
    replicas.push(start(4, &listed));
    assert_eq!(encrypt_version(&replicas[2]).await.unwrap(), n);
    assert_eq!(
        decrypt_code(&replicas[2], &single_ct).await.0,
        Code::FailedPrecondition
    );

    // migrate in its default (rewrap) mode: every V row is refused a
    // rewrap and re-encrypted instead.
    let refused = |r: &Server| series(r, "envelope_compromised_records_total", &v, Some("refused"));
    let refused_before = refused(&replicas[1]);
    let out = migrate(&replicas[1], &pg, &["--batch", "100"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.contains(&format!("rewrapped {ROWS} (of them {ROWS} re-encrypted")),
        "{summary}"
    );
    assert_eq!(debt(&replicas[0], &pg, &v), 0);
    assert_eq!(debt(&replicas[0], &pg, &n), ROWS as u64);
    let rows = db
        .query("SELECT id, email FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let after: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
    for (old, new) in before.iter().zip(&after) {
        let ((_, old_dk), (version, new_dk)) = (header(old), header(new));
        assert_eq!(version, n);
        assert_ne!(
            old_dk, new_dk,
            "a new data key, not a rewrap of the old one"
        );
    }
    let opened = replicas[2]
        .client()
        .await
        .decrypt_column(pb::DecryptColumnRequest {
            key: "pii".into(),
            context: ctx(SHARED),
            ciphertexts: after.iter().map(|b| Bytes::from(b.clone())).collect(),
            row_field: "id".into(),
            row_values: ids.iter().map(i64::to_string).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(opened.errors.is_empty(), "{:?}", opened.errors);
    for (id, p) in ids.iter().zip(&opened.plaintexts) {
        assert_eq!(p.as_ref(), email(*id).as_bytes());
    }
    let reencrypted = series(
        &replicas[1],
        "envelope_compromised_records_total",
        &v,
        Some("reencrypted"),
    );
    assert_eq!(reencrypted, ROWS as f64);
    // Each record's rewrap was refused first (ROTATION.md).
    assert_eq!(refused(&replicas[1]) - refused_before, ROWS as f64);
    let audit = replicas[1]
        .audit_with(&["re-encrypted from a compromised version"])
        .await;
    let flagged: u64 = audit
        .lines()
        .filter(|l| l.contains("re-encrypted from a compromised version"))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["compromised_records"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(
        flagged, ROWS as u64,
        "every re-encrypted record is in the audit log"
    );

    // Nothing asks for V any more: the gauge drops to 0 on every replica
    // within two windows, while the counters keep the history.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (i, r) in replicas.iter().enumerate() {
        let recent = series(r, "envelope_compromised_records_recent", &v, None);
        assert_eq!(recent, 0.0, "replica {i}");
    }
    assert_eq!(
        series(
            &replicas[1],
            "envelope_compromised_records_total",
            &v,
            Some("reencrypted")
        ),
        ROWS as f64
    );
}
