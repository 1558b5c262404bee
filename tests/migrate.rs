//! `envelope migrate` against a real PostgreSQL and the real server: a
//! column of records with row ids, a rotation, an application writing rows
//! throughout, the migrator killed part-way and resumed; at the end every
//! row decrypts to what was last written, every row is under the current
//! version, dry-run reports no debt for the old one, and no row was written
//! twice by the migrator, and the index column holds each row's token
//! under the current version.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::Server;
use common::postgres::Postgres;
use common::requests::{ctx, rotate};
use envelope::pb;

const ROWS: i64 = 100_000;
const SHARED: &[(&str, &str)] = &[("table", "users"), ("column", "email")];

fn value(id: i64, generation: u32) -> String {
    format!("user{id}-{generation}@example.com")
}

fn migrate(server: &Server, pg: &Postgres, extra: &[&str]) -> Command {
    let mut c = common::cli::migrate_users(&server.addr, &pg.url);
    c.args([
        "--row-field",
        "id",
        "--index",
        "email",
        "--index-column",
        "email_idx",
    ])
    .args(extra);
    c
}

/// The rows `(id, email)` opened under their row ids: (id, plaintext).
async fn open_rows(
    c: &mut envelope::pb::envelope_client::EnvelopeClient<tonic::transport::Channel>,
    rows: &[tokio_postgres::Row],
) -> Vec<(i64, Bytes)> {
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let opened = c
        .decrypt_column(pb::DecryptColumnRequest {
            key: String::new(),
            context: ctx(SHARED),
            ciphertexts: rows
                .iter()
                .map(|r| Bytes::from(r.get::<_, Vec<u8>>(1)))
                .collect(),
            row_field: "id".into(),
            row_values: ids.iter().map(i64::to_string).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(opened.errors.is_empty(), "{:?}", opened.errors);
    ids.into_iter().zip(opened.plaintexts).collect()
}

/// Dry-run's counts: version -> records.
fn debt(server: &Server, pg: &Postgres) -> HashMap<String, u64> {
    let out = migrate(server, pg, &["--dry-run"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(" records under ")?;
            Some((rest.to_owned(), n.parse().unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_column_moves_to_the_current_version_across_a_kill_and_concurrent_writes() {
    let pg = Postgres::start();
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, email bytea, email_idx bytea);
         CREATE TABLE migrator_writes (id bigint);
         CREATE FUNCTION count_migrator() RETURNS trigger AS $$
         BEGIN
           IF current_setting('application_name') = 'envelope migrate' THEN
             INSERT INTO migrator_writes VALUES (NEW.id);
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER count_migrator AFTER UPDATE ON users
           FOR EACH ROW EXECUTE FUNCTION count_migrator();",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An index on the key, and a policy whose index quota lets the bulk
    // writes and lookups through.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[allow]]\nanonymous = true\nkeys = [\"*\"]\noperations = [\"encrypt\", \"decrypt\", \"rewrap\", \"index\", \"admin\"]\nindex_tokens_per_second = 100000000\nindex_tokens_per_day = 100000000000\n",
    )
    .unwrap();
    let config = format!(
        "policy_file = \"{}/policy.toml\"\n[[keys]]\nname = \"default\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 32\n",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let mut c = server.client().await;

    // The column, sealed with each row's id bound into its context.
    let mut v1 = String::new();
    for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(1000) {
        let sealed = c
            .encrypt_column(pb::EncryptColumnRequest {
                key: String::new(),
                context: ctx(SHARED),
                plaintexts: chunk.iter().map(|i| Bytes::from(value(*i, 0))).collect(),
                row_field: "id".into(),
                row_values: chunk.iter().map(i64::to_string).collect(),
                indexes: vec!["email".into()],
            })
            .await
            .unwrap()
            .into_inner();
        v1 = sealed.key_version.clone();
        let tx_ids: Vec<i64> = chunk.to_vec();
        let records: Vec<Vec<u8>> = sealed.ciphertexts.iter().map(|b| b.to_vec()).collect();
        let tokens: Vec<Vec<u8>> = sealed.index_tokens["email"]
            .tokens
            .iter()
            .map(|b| b.to_vec())
            .collect();
        db.execute(
            "INSERT INTO users SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
            &[&tx_ids, &records, &tokens],
        )
        .await
        .unwrap();
    }
    let v2 = rotate(&server, "default").await.current_version;
    assert_eq!(
        debt(&server, &pg),
        HashMap::from([(v1.clone(), ROWS as u64)])
    );

    // The application keeps writing new values to random rows.
    let expected: Arc<Mutex<HashMap<i64, String>>> =
        Arc::new(Mutex::new((1..=ROWS).map(|i| (i, value(i, 0))).collect()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (expected, stop, client) = (expected.clone(), stop.clone(), c.clone());
        let db = pg.client().await;
        tokio::spawn(async move {
            let mut client = client;
            let mut writes = 0u32;
            let mut x: i64 = 7;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = (x * 48271) % 2_147_483_647;
                let id = 1 + x % ROWS;
                writes += 1;
                let v = value(id, writes);
                let row = id.to_string();
                let rec = client
                    .encrypt(pb::EncryptRequest {
                        indexes: vec!["email".into()],
                        ..common::requests::enc("", &v, &[SHARED, &[("id", row.as_str())]].concat())
                    })
                    .await
                    .unwrap()
                    .into_inner();
                db.execute(
                    "UPDATE users SET email = $1, email_idx = $3 WHERE id = $2",
                    &[
                        &rec.ciphertext.as_ref(),
                        &id,
                        &rec.index_tokens["email"].as_ref(),
                    ],
                )
                .await
                .unwrap();
                expected.lock().unwrap().insert(id, v);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            writes
        })
    };

    // The migrator, killed once it has committed a few batches (its
    // checkpoint has moved past five of them).
    let mut first = migrate(&server, &pg, &["--batch", "500"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let moved = db
            .query_opt("SELECT last_id FROM envelope_migrate_checkpoint", &[])
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.get::<_, i64>(0) >= 2_500);
        if moved {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the migrator ended before five batches"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no five batches in 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let checkpoint: i64 = db
        .query_one("SELECT last_id FROM envelope_migrate_checkpoint", &[])
        .await
        .unwrap()
        .get(0);
    assert!(checkpoint > 0 && checkpoint < ROWS, "{checkpoint}");

    // Resumed: it starts after the checkpoint and finishes.
    let out = tokio::task::spawn_blocking({
        let mut cmd = migrate(&server, &pg, &["--batch", "500"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming after id = {checkpoint}")),
        "{stderr}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(
        writes > 10,
        "the application wrote during the migration: {writes}"
    );

    // Every row is under the current version, and decrypts to what was last written.
    assert_eq!(
        debt(&server, &pg),
        HashMap::from([(v2.clone(), ROWS as u64)])
    );
    let expected = expected.lock().unwrap().clone();
    let rows = db
        .query("SELECT id, email FROM users ORDER BY id", &[])
        .await
        .unwrap();
    for chunk in rows.chunks(1000) {
        for (id, p) in open_rows(&mut c, chunk).await {
            assert_eq!(p.as_ref(), expected[&id].as_bytes(), "row {id}");
        }
    }
    // A lookup by the current version's token finds every row.
    let idx: HashMap<i64, Vec<u8>> = db
        .query("SELECT id, email_idx FROM users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ids: Vec<i64> = (1..=ROWS).collect();
    for chunk in ids.chunks(1000) {
        let tokens = c
            .compute_index(pb::ComputeIndexRequest {
                key: String::new(),
                index: "email".into(),
                values: chunk
                    .iter()
                    .map(|i| Bytes::from(expected[i].clone()))
                    .collect(),
                context: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        for (id, t) in chunk.iter().zip(&tokens.results) {
            assert_eq!(t.tokens[0].key_version, v2);
            assert_eq!(t.tokens[0].token.to_vec(), idx[id], "row {id}");
        }
    }
    // No row was written twice by the migrator, and it left nothing behind.
    let twice: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT id FROM migrator_writes GROUP BY id HAVING count(*) > 1) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0);
    let left: i64 = db
        .query_one("SELECT count(*) FROM envelope_migrate_checkpoint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Run again: nothing to do.
    let again = migrate(&server, &pg, &[]).output().unwrap();
    let summary = String::from_utf8_lossy(&again.stdout);
    assert!(summary.contains("rewrapped 0,"), "{summary}");
}

/// A server with an `email` index and a PostgreSQL `users` table of `n`
/// rows sealed as a column with row ids; `tamper` changes records before
/// they are stored. Returns the pieces and the records as stored.
async fn small_table(
    n: i64,
    tamper: impl FnOnce(&mut [Vec<u8>]),
) -> (Postgres, tempfile::TempDir, Server, Vec<Vec<u8>>) {
    let pg = Postgres::start();
    let db = pg.client().await;
    db.batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, email bytea, email_idx bytea)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = "[[keys]]\nname = \"default\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 32\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let ids: Vec<i64> = (1..=n).collect();
    let sealed = server
        .client()
        .await
        .encrypt_column(pb::EncryptColumnRequest {
            key: String::new(),
            context: ctx(SHARED),
            plaintexts: ids.iter().map(|i| Bytes::from(value(*i, 0))).collect(),
            row_field: "id".into(),
            row_values: ids.iter().map(i64::to_string).collect(),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut records: Vec<Vec<u8>> = sealed.ciphertexts.iter().map(|b| b.to_vec()).collect();
    tamper(&mut records);
    let empty: Vec<Vec<u8>> = vec![Vec::new(); ids.len()];
    db.execute(
        "INSERT INTO users SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
        &[&ids, &records, &empty],
    )
    .await
    .unwrap();
    (pg, dir, server, records)
}

/// `--reencrypt` seals every record again under a new data key of the
/// current version: the payloads change (a rewrap would keep them), every
/// row still decrypts, and dry-run reports no debt.
#[tokio::test]
async fn reencrypt_mode_gives_every_record_a_new_data_key() {
    let (pg, _dir, server, before) = small_table(1000, |_| {}).await;
    let db = pg.client().await;
    let mut c = server.client().await;
    let v2 = rotate(&server, "default").await.current_version;
    // A rewrap first: the records then name the current version but keep
    // their data keys, which --reencrypt must still replace.
    let out = migrate(&server, &pg, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit lines of each RPC, once the writer has written them (10 ms).
    let items = |rpc: &str| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let lines: Vec<serde_json::Value> = server
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["rpc"] == rpc)
            .collect();
        let items: u64 = lines.iter().map(|l| l["items"].as_u64().unwrap()).sum();
        (lines.len(), items)
    };
    let rewraps = items("RewrapBatch");
    let out = migrate(&server, &pg, &["--reencrypt", "--batch", "100"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // API.md and ROTATION.md: --reencrypt uses ReencryptBatch and sends each
    // record once, straight to it (no rewrap attempt first).
    assert_eq!(items("ReencryptBatch"), (10, 1000));
    assert_eq!(items("RewrapBatch"), rewraps);
    assert_eq!(debt(&server, &pg), HashMap::from([(v2, 1000)]));
    let rows = db
        .query("SELECT id, email FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let payload = |r: &[u8]| {
        let p = envelope::primitives::record::parse(r, envelope::primitives::record::Kind::Record)
            .unwrap();
        r[p.header_len..].to_vec()
    };
    for (row, old) in rows.iter().zip(&before) {
        let new: Vec<u8> = row.get(1);
        assert_ne!(
            payload(&new),
            payload(old),
            "a new data key seals the payload"
        );
    }
    let opened = open_rows(&mut c, &rows).await;
    assert_eq!(opened[41], (42, Bytes::from(value(42, 0))));
}

/// A row that fails holds the checkpoint before it: the run fails, and the
/// next one goes back to that row rather than past it.
#[tokio::test]
async fn a_failed_row_is_retried_not_skipped() {
    // Row 50's record is tampered with: it will not rewrap.
    let (pg, _dir, server, records) = small_table(100, |r| *r[49].last_mut().unwrap() ^= 1).await;
    let db = pg.client().await;
    let mut good_50 = records[49].clone();
    *good_50.last_mut().unwrap() ^= 1;
    let rotated = rotate(&server, "default").await;
    let (v1, v2) = (rotated.previous_version, rotated.current_version);
    let out = migrate(&server, &pg, &["--batch", "10"]).output().unwrap();
    assert!(!out.status.success());
    // The run went on past the failed row: every other row moved.
    assert_eq!(
        debt(&server, &pg),
        HashMap::from([(v1, 1), (v2.clone(), 99)]),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoint: i64 = db
        .query_one("SELECT last_id FROM envelope_migrate_checkpoint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(checkpoint, 49, "never past the failed row");
    // Repaired, the next run picks it up and finishes.
    db.execute("UPDATE users SET email = $1 WHERE id = 50", &[&good_50])
        .await
        .unwrap();
    let out = migrate(&server, &pg, &["--batch", "10"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(debt(&server, &pg), HashMap::from([(v2, 100)]));
    // ROTATION.md, "Progress": off a terminal, a line after the first batch
    // (rows 50 to 59), on stderr, then the summary.
    let first = stderr
        .lines()
        .find(|l| l.starts_with("users: up to id = "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        first.starts_with("users: up to id = 59, 1 rewrapped so far (") && first.ends_with("/s)"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "scanned 51, rewrapped 1, already current 50, changed meanwhile 0, failed 0 in "
        ),
        "{stdout}"
    );
}

/// Database errors reach the operator with their cause and a fix
/// (docs/OPERATIONS.md, "Start-up errors"): tokio-postgres says only "db
/// error" itself, the server's message is its source.
#[tokio::test]
async fn database_errors_name_their_cause_and_fix() {
    let (pg, _dir, server, _) = small_table(3, |_| {}).await;
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The tests' migrate command with one argument changed.
    let with = |flag: &str, value: &str| {
        let mut args: Vec<String> = migrate(&server, &pg, &[])
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_owned();
        let mut c = std::process::Command::new(common::BIN);
        c.args(args).env("DATABASE_URL", &pg.url);
        c
    };
    let err = run(with("--table", "nosuch").arg("--dry-run"));
    assert!(
        err.contains("error: ") && err.contains("relation \"nosuch\" does not exist"),
        "{err}"
    );
    assert!(err.contains("fix: check --table"), "{err}");
    let err = run(&mut with("--column", "nosuch"));
    assert!(err.contains("column \"nosuch\" does not exist"), "{err}");
    assert!(err.contains("fix: check --column"), "{err}");
    // Nothing listens: the refusal, not a TLS problem.
    let mut nowhere = migrate(&server, &pg, &["--dry-run"]);
    nowhere.env("DATABASE_URL", "postgres://envelope@127.0.0.1:1/envelope");
    let err = run(&mut nowhere);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(err.contains("fix: check that PostgreSQL listens"), "{err}");
}

/// ROTATION.md, `--dry-run`: it counts the debt and writes nothing.
#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let (pg, _dir, server, _) = small_table(100, |_| {}).await;
    let db = pg.client().await;
    let snapshot = || async {
        db.query("SELECT id, email FROM users ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)))
            .collect::<Vec<_>>()
    };
    let v1 = common::requests::key_status(&server).await.current_version;
    rotate(&server, "default").await;
    let before = snapshot().await;
    assert_eq!(debt(&server, &pg), HashMap::from([(v1, 100)]));
    assert_eq!(snapshot().await, before);
}

/// ROTATION.md, "Current rows": once a run knows the current version (from
/// its first batch's answers), a row already under it is skipped from its
/// record header, with no RPC.
#[tokio::test]
async fn current_rows_are_skipped_without_a_call() {
    let (pg, _dir, server, _) = small_table(100, |_| {}).await;
    let calls = || {
        server
            .stdout()
            .lines()
            .filter(|l| l.contains("\"rpc\":\"RewrapBatch\""))
            .count()
    };
    let run = |batch: &str| {
        let out = migrate(&server, &pg, &["--batch", batch]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("100");
    server.audit_with(&["\"rpc\":\"RewrapBatch\""]).await;
    // Ten batches of current rows: the first asks, the other nine are skipped.
    let before = calls();
    run("10");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(calls(), before + 1, "{}", server.stdout());
}

/// A server that forwards RewrapBatch to a real one and drops the last
/// answer: what a broken or hostile server might send. Every other call
/// is refused.
struct ShortReplies(pb::envelope_client::EnvelopeClient<tonic::transport::Channel>);

type Refused<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Methods refused with UNIMPLEMENTED, in the shape `async_trait` gives the
/// trait's methods (it does not see methods a macro writes).
macro_rules! refused {
    ($($call:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $call<'life0, 'async_trait>(
            &'life0 self,
            _: tonic::Request<$req>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<tonic::Response<$resp>, tonic::Status>>
                    + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(tonic::Status::unimplemented("not served here")) })
        }
    )*};
}

#[tonic::async_trait]
impl pb::envelope_server::Envelope for ShortReplies {
    type EncryptStreamStream = Refused<pb::EncryptStreamResponse>;
    type DecryptStreamStream = Refused<pb::DecryptStreamResponse>;
    type EncryptColumnStreamStream = Refused<pb::EncryptColumnStreamResponse>;
    type DecryptColumnStreamStream = Refused<pb::DecryptColumnStreamResponse>;

    async fn rewrap_batch(
        &self,
        req: tonic::Request<pb::RewrapBatchRequest>,
    ) -> Result<tonic::Response<pb::RewrapBatchResponse>, tonic::Status> {
        let mut answer = self.0.clone().rewrap_batch(req.into_inner()).await?;
        answer.get_mut().results.pop();
        Ok(answer)
    }

    refused! {
        encrypt(pb::EncryptRequest) -> pb::EncryptResponse;
        decrypt(pb::DecryptRequest) -> pb::DecryptResponse;
        encrypt_batch(pb::EncryptBatchRequest) -> pb::EncryptBatchResponse;
        decrypt_batch(pb::DecryptBatchRequest) -> pb::DecryptBatchResponse;
        encrypt_stream(tonic::Streaming<pb::EncryptStreamRequest>) -> Self::EncryptStreamStream;
        decrypt_stream(tonic::Streaming<pb::DecryptStreamRequest>) -> Self::DecryptStreamStream;
        encrypt_column(pb::EncryptColumnRequest) -> pb::EncryptColumnResponse;
        decrypt_column(pb::DecryptColumnRequest) -> pb::DecryptColumnResponse;
        encrypt_column_stream(tonic::Streaming<pb::EncryptColumnStreamRequest>) -> Self::EncryptColumnStreamStream;
        decrypt_column_stream(tonic::Streaming<pb::DecryptColumnStreamRequest>) -> Self::DecryptColumnStreamStream;
        compute_index(pb::ComputeIndexRequest) -> pb::ComputeIndexResponse;
        rewrap(pb::RewrapRequest) -> pb::RewrapResponse;
        reencrypt_batch(pb::ReencryptBatchRequest) -> pb::ReencryptBatchResponse;
        reencrypt_column(pb::ReencryptColumnRequest) -> pb::ReencryptColumnResponse;
        generate_data_key(pb::GenerateDataKeyRequest) -> pb::GenerateDataKeyResponse;
        unwrap_data_key(pb::UnwrapDataKeyRequest) -> pb::UnwrapDataKeyResponse;
    }
}

/// ROTATION.md, "Failures": a reply that does not answer every record
/// stops the run before the batch is written; nothing is written, and no
/// checkpoint is kept past it.
#[tokio::test]
async fn a_reply_short_of_a_record_stops_the_run_before_writing() {
    let (pg, _dir, server, records) = small_table(20, |_| {}).await;
    rotate(&server, "default").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let short = ShortReplies(server.client().await);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::envelope_server::EnvelopeServer::new(short))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let out = tokio::task::spawn_blocking({
        let mut cmd = common::cli::migrate_users(&addr, &pg.url);
        cmd.args(["--row-field", "id", "--batch", "10"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "the server answered 9 results for 10 records; nothing of this batch was written"
        ),
        "{stderr}"
    );
    let db = pg.client().await;
    let rows = db
        .query("SELECT email FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let now: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(now, records, "a row was written");
    let kept = db
        .query("SELECT last_id FROM envelope_migrate_checkpoint", &[])
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    assert_eq!(kept, 0, "a checkpoint past the unwritten batch");
}
