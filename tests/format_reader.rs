//! An independent reader of Envelope's formats, written from docs/FORMAT.md
//! alone with RustCrypto's `aes-gcm`, `sha2` and `hkdf` (none of Envelope's
//! own code or of *ring*): from a local data directory's `root.key` and
//! secret files it opens every record and data-key blob the server writes.
//! If the document left out a byte, these tests could not pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envelope::pb;
use sha2::{Digest, Sha256};

/// FORMAT.md, "Canonical context encoding".
fn context_encoding(ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = (ctx.len() as u32).to_be_bytes().to_vec();
    for (k, v) in ctx {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn open(key: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let nonce = Nonce::try_from(nonce).ok()?;
    cipher.decrypt(&nonce, Payload { msg: sealed, aad }).ok()
}

/// The header fields of FORMAT.md, "Record" and "Data-key blob".
struct Header<'a> {
    kind: u8,
    key_id: &'a [u8],
    /// The version-id field as encoded (form byte included).
    version_field: &'a [u8],
    /// The version id as text.
    version: String,
    wrapped: &'a [u8],
    rest: &'a [u8],
}

fn header(bytes: &[u8]) -> Header<'_> {
    assert_eq!(bytes[0], 0x01, "format version");
    let kind = bytes[1];
    let key_id = &bytes[2..6];
    let (version_field, version) = match bytes[6] {
        0x00 => {
            let raw: [u8; 16] = bytes[7..23].try_into().unwrap();
            (
                &bytes[6..23],
                uuid::Uuid::from_bytes(raw).hyphenated().to_string(),
            )
        }
        0x01 => {
            let t = usize::from(bytes[7]);
            let text = String::from_utf8(bytes[8..8 + t].to_vec()).unwrap();
            (&bytes[6..8 + t], text)
        }
        other => panic!("version-id form {other}"),
    };
    let end = 6 + version_field.len();
    Header {
        kind,
        key_id,
        version_field,
        version,
        wrapped: &bytes[end..end + 60],
        rest: &bytes[end + 60..],
    }
}

/// A local data directory read as FORMAT.md describes it.
struct DataDir {
    root_key: Vec<u8>,
    secrets: serde_json::Value,
    key_name: String,
}

impl DataDir {
    fn read(dir: &Path, key_name: &str) -> Self {
        let root_key = std::fs::read(dir.join("root.key")).unwrap();
        assert_eq!(root_key.len(), 32);
        let text = std::fs::read_to_string(dir.join("secrets").join(format!("{key_name}.json")));
        Self {
            root_key,
            secrets: serde_json::from_str(&text.unwrap()).unwrap(),
            key_name: key_name.to_owned(),
        }
    }

    /// FORMAT.md, "Local KMS blob", "Envelope's own document", "KEK derivation".
    fn kek(&self, version: &str, version_field: &[u8]) -> Vec<u8> {
        let v = self.secrets["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == version)
            .unwrap_or_else(|| panic!("no version {version}"));
        let doc: serde_json::Value = serde_json::from_str(v["value"].as_str().unwrap()).unwrap();
        assert_eq!(doc["format"], "envelope.master-key.v1");
        assert_eq!(doc["algorithm"], "AES-256-GCM");
        let blob = B64.decode(doc["wrappedKey"].as_str().unwrap()).unwrap();
        assert_eq!((blob.len(), blob[0]), (61, 0x01));
        let mut kms_context = BTreeMap::new();
        kms_context.insert("envelope:key".to_owned(), self.key_name.clone());
        kms_context.insert("envelope:version".to_owned(), version.to_owned());
        let mut aad = b"envelope.local-kms.v1\0".to_vec();
        aad.extend(context_encoding(&kms_context));
        let master = open(&self.root_key, &blob[1..13], &aad, &blob[13..]).expect("KMS blob");
        let mut info = vec![self.key_name.len() as u8];
        info.extend_from_slice(self.key_name.as_bytes());
        info.extend_from_slice(version_field);
        let mut kek = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"envelope.v1/kek"), &master)
            .expand(&info, &mut kek)
            .unwrap();
        kek.to_vec()
    }

    /// FORMAT.md, "Wrapped data key (wrap AAD)".
    fn unwrap(&self, h: &Header<'_>, ctx: Option<&BTreeMap<String, String>>) -> Vec<u8> {
        let key_id =
            &Sha256::digest([b"envelope.v1.key-id\0", self.key_name.as_bytes()].concat())[..4];
        assert_eq!(h.key_id, key_id, "key id");
        let mut aad = b"envelope.v1/wrap\0".to_vec();
        aad.extend_from_slice(&[0x01, h.kind, self.key_name.len() as u8]);
        aad.extend_from_slice(self.key_name.as_bytes());
        aad.extend_from_slice(h.version_field);
        if let Some(ctx) = ctx {
            aad.extend(context_encoding(ctx));
        }
        let kek = self.kek(&h.version, h.version_field);
        open(&kek, &h.wrapped[..12], &aad, &h.wrapped[12..]).expect("wrapped data key")
    }

    /// A record (kind 0x01): its plaintext and master-key version.
    fn open_record(&self, record: &[u8], ctx: &BTreeMap<String, String>) -> (Vec<u8>, String) {
        let h = header(record);
        assert_eq!(h.kind, 0x01);
        let data_key = self.unwrap(&h, None);
        let mut aad = b"envelope.v1/payload\0".to_vec();
        aad.extend_from_slice(&[0x01, 0x01, self.key_name.len() as u8]);
        aad.extend_from_slice(self.key_name.as_bytes());
        aad.extend(context_encoding(ctx));
        let plaintext = open(&data_key, &h.rest[..12], &aad, &h.rest[12..]).expect("payload");
        (plaintext, h.version)
    }

    /// A data-key blob (kind 0x02): the data key and master-key version.
    fn open_blob(&self, blob: &[u8], ctx: &BTreeMap<String, String>) -> (Vec<u8>, String) {
        let h = header(blob);
        assert_eq!(h.kind, 0x02);
        assert!(h.rest.is_empty(), "nothing after the wrapped key");
        (self.unwrap(&h, Some(ctx)), h.version)
    }
}

fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The committed golden records, made by an earlier build.
#[test]
fn reads_the_golden_records() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let data = DataDir::read(&dir.join("data"), "default");
    let lines = std::fs::read_to_string(dir.join("records.tsv")).unwrap();
    let mut n = 0;
    for line in lines.lines() {
        let mut cols = line.split('\t');
        let context: BTreeMap<String, String> = serde_json::from_str(cols.next().unwrap()).unwrap();
        let plaintext = cols.next().unwrap();
        let record = B64.decode(cols.next().unwrap()).unwrap();
        assert_eq!(data.open_record(&record, &context).0, plaintext.as_bytes());
        n += 1;
    }
    assert_eq!(n, 5);
}

/// Records, batches, rewrapped records and data-key blobs from a running
/// server, across a rotation.
#[tokio::test]
async fn reads_what_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(&dir.path().join("data"), None);
    let mut client = server.client().await;
    let users = ctx(&[
        ("table", "users"),
        ("column", "email"),
        ("tenant", "açaí-中"),
    ]);
    // (record, plaintext, context)
    type Made = (Vec<u8>, Vec<u8>, BTreeMap<String, String>);
    let mut made: Vec<Made> = Vec::new();
    for size in [0usize, 1, 15, 16, 17, 64, 1000, 4096] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let context = if size % 2 == 0 {
            users.clone()
        } else {
            BTreeMap::new()
        };
        let r = client
            .encrypt(pb::EncryptRequest {
                indexes: Vec::new(),
                key: String::new(),
                plaintext: plaintext.clone().into(),
                context: context.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        made.push((r.ciphertext.to_vec(), plaintext, context));
    }
    let items: Vec<pb::EncryptItem> = (0..20u8)
        .map(|i| pb::EncryptItem {
            indexes: Vec::new(),
            plaintext: vec![i; usize::from(i)].into(),
            context: ctx(&[("row", &i.to_string())]),
        })
        .collect();
    let batch = client
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items: items.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (item, r) in items.iter().zip(batch.results) {
        let Some(pb::encrypt_result::Result::Ciphertext(ct)) = r.result else {
            panic!("batch item failed");
        };
        made.push((ct.to_vec(), item.plaintext.to_vec(), item.context.clone()));
    }
    let blob_ctx = ctx(&[("purpose", "local-file-encryption")]);
    let generated = client
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: blob_ctx.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let before = server
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    let rewrapped = client
        .rewrap(pb::RewrapRequest {
            indexes: Vec::new(),
            key: String::new(),
            ciphertext: made[2].0.clone().into(),
            context: made[2].2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rewrapped.key_version, before.current_version);
    made.push((
        rewrapped.ciphertext.to_vec(),
        made[2].1.clone(),
        made[2].2.clone(),
    ));
    let after = client
        .encrypt(pb::EncryptRequest {
            indexes: Vec::new(),
            key: String::new(),
            plaintext: b"after the rotation".to_vec().into(),
            context: users.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    made.push((
        after.ciphertext.to_vec(),
        b"after the rotation".to_vec(),
        users,
    ));

    let data = DataDir::read(&dir.path().join("data"), "default");
    let mut versions = std::collections::BTreeSet::new();
    for (record, plaintext, context) in &made {
        let (opened, version) = data.open_record(record, context);
        assert_eq!(&opened, plaintext);
        versions.insert(version);
    }
    assert_eq!(versions.len(), 2, "records under both versions");
    let (key, version) = data.open_blob(&generated.wrapped_key, &blob_ctx);
    assert_eq!(key, generated.plaintext_key.to_vec());
    assert_eq!(version, generated.key_version);
}
