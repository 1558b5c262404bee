//! `envelope migrate` over TLS to a PostgreSQL that takes TLS connections
//! only: `sslmode` is honoured, and the server's certificate is verified
//! (against `--db-ca-file` or `PGSSLROOTCERT`, never skipped).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use bytes::Bytes;
use common::Server;
use common::pki::Ca;
use common::postgres::Postgres;
use common::requests::{ctx, rotate};
use envelope::pb;

const SHARED: &[(&str, &str)] = &[("table", "users"), ("column", "email")];

fn migrate(server: &Server, url: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = common::cli::migrate_users(&server.addr, url)
        .args(extra)
        .env_remove("PGSSLROOTCERT")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn migrate_speaks_verified_tls_as_sslmode_asks() {
    let ca = Ca::new("Envelope test database CA");
    let issued = ca.server(&["localhost"]);
    let pg = Postgres::start_tls(&issued.cert, &issued.key);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let ca_arg = ca_file.to_str().unwrap();

    let server = Server::start(&dir.path().join("data"), None);
    let db = pg.socket_client().await;
    db.batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, email bytea)")
        .await
        .unwrap();
    let sealed = server
        .client()
        .await
        .encrypt_column(pb::EncryptColumnRequest {
            key: String::new(),
            context: ctx(SHARED),
            plaintexts: (1..=50)
                .map(|i| Bytes::from(format!("u{i}@example.com")))
                .collect(),
            row_field: String::new(),
            row_values: Vec::new(),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = (1..=50).collect();
    let records: Vec<Vec<u8>> = sealed.ciphertexts.iter().map(|b| b.to_vec()).collect();
    db.execute(
        "INSERT INTO users SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &[&ids, &records],
    )
    .await
    .unwrap();
    let old = sealed.key_version;
    let new = rotate(&server, "default").await.current_version;

    // Plaintext is refused by the database (hostssl only).
    let plain = format!("{}?sslmode=disable", pg.url);
    let (ok, out) = migrate(&server, &plain, &["--dry-run"], &[]);
    assert!(!ok, "{out}");
    // TLS without the database's CA: the certificate is not trusted.
    let require = format!("{}?sslmode=require", pg.url);
    let (ok, out) = migrate(&server, &require, &["--dry-run"], &[]);
    assert!(!ok && out.contains("TLS"), "{out}");
    // With the CA, by flag or by PGSSLROOTCERT: verified and migrated.
    let (ok, out) = migrate(
        &server,
        &require,
        &["--dry-run", "--db-ca-file", ca_arg],
        &[],
    );
    assert!(
        ok && out.contains(&format!("50 records under {old}")),
        "{out}"
    );
    let full = format!("{}?sslmode=verify-full", pg.url);
    let (ok, out) = migrate(&server, &full, &[], &[("PGSSLROOTCERT", ca_arg)]);
    assert!(ok && out.contains("rewrapped 50,"), "{out}");
    // The default (prefer) takes TLS when the server offers it.
    let (ok, out) = migrate(
        &server,
        &pg.url,
        &["--dry-run", "--db-ca-file", ca_arg],
        &[],
    );
    assert!(
        ok && out.contains(&format!("50 records under {new}")),
        "{out}"
    );
}
