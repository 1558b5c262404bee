//! Records from earlier builds keep decrypting: every record in
//! tests/golden/records.tsv opens under its context with today's binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use common::Server;
use envelope::pb;

fn copy_private(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_private(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if entry.file_type().unwrap().is_dir() {
                0o700
            } else {
                0o600
            };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

#[tokio::test]
async fn golden_records_still_decrypt() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_private(&golden.join("data"), &data);
    let server = Server::start(&data, None);
    let mut c = server.client().await;
    let records = std::fs::read_to_string(golden.join("records.tsv")).unwrap();
    let mut n = 0;
    for line in records.lines() {
        let mut f = line.split('\t');
        let (ctx, pt, ct) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let context: BTreeMap<String, String> = serde_json::from_str(ctx).unwrap();
        let ciphertext = Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(ct)
                .unwrap(),
        );
        let d = c
            .decrypt(pb::DecryptRequest {
                key: String::new(),
                ciphertext: ciphertext.clone(),
                context: context.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("golden record {n} ({ctx}): {s:?}"))
            .into_inner();
        assert_eq!(d.plaintext.as_ref(), pt.as_bytes());
        // And it moves forward to the current version.
        let r = c
            .rewrap(pb::RewrapRequest {
                indexes: Vec::new(),
                key: String::new(),
                ciphertext,
                context,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.key_version, "f064de42-8b59-47a1-b447-60a451697cb5");
        n += 1;
    }
    assert_eq!(n, 5);
}
