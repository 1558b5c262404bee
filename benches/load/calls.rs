//! The calls the drivers make, with what they count as records, and the
//! batch requests they send.

use bytes::Bytes;
use envelope::pb;
use tonic::transport::Channel;

use crate::BATCH;
use crate::process::envelope_client;

/// An EncryptBatch of [`BATCH`] records of `size` bytes.
pub fn encrypt_batch_request(size: usize) -> pb::EncryptBatchRequest {
    pb::EncryptBatchRequest {
        key: String::new(),
        items: (0..BATCH)
            .map(|_| pb::EncryptItem {
                indexes: Vec::new(),
                plaintext: Bytes::from(vec![0x5au8; size]),
                context: Default::default(),
            })
            .collect(),
    }
}

pub async fn encrypt(ch: Channel, plaintext: Bytes) -> Bytes {
    envelope_client(ch)
        .encrypt(pb::EncryptRequest {
            indexes: Vec::new(),
            key: String::new(),
            plaintext,
            context: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

pub async fn decrypt(ch: Channel, ciphertext: Bytes) -> u64 {
    let r = envelope_client(ch)
        .decrypt(pb::DecryptRequest {
            key: String::new(),
            ciphertext,
            context: Default::default(),
        })
        .await
        .unwrap();
    std::hint::black_box(r);
    1
}

pub async fn encrypt_batch(ch: Channel, b: pb::EncryptBatchRequest) -> u64 {
    let r = envelope_client(ch)
        .encrypt_batch(b)
        .await
        .unwrap()
        .into_inner();
    r.results.len() as u64
}

pub async fn decrypt_batch(ch: Channel, b: pb::DecryptBatchRequest) -> u64 {
    let r = envelope_client(ch)
        .decrypt_batch(b)
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.results
            .iter()
            .all(|r| matches!(r.result, Some(pb::decrypt_result::Result::Plaintext(_)))),
        "a record failed to decrypt"
    );
    r.results.len() as u64
}

/// The records of an EncryptBatch answer, as a DecryptBatch request.
pub fn decrypt_request(sealed: pb::EncryptBatchResponse) -> pb::DecryptBatchRequest {
    pb::DecryptBatchRequest {
        key: String::new(),
        items: sealed
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::encrypt_result::Result::Ciphertext(c)) => pb::DecryptItem {
                    ciphertext: c,
                    context: Default::default(),
                },
                _ => panic!("batch item failed"),
            })
            .collect(),
    }
}

/// The shared context of the column benches: one table and column.
pub fn column_context() -> std::collections::BTreeMap<String, String> {
    [("table", "users"), ("column", "email")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// An EncryptColumn of [`BATCH`] values of `size` bytes, each bound to its
/// own row id.
pub fn encrypt_column_request(size: usize) -> pb::EncryptColumnRequest {
    pb::EncryptColumnRequest {
        indexes: Vec::new(),
        key: String::new(),
        context: column_context(),
        plaintexts: (0..BATCH)
            .map(|_| Bytes::from(vec![0x5au8; size]))
            .collect(),
        row_field: "row".into(),
        row_values: (0..BATCH).map(|i| format!("{}", 1_000_000 + i)).collect(),
    }
}

/// The records of an EncryptColumn answer, as a DecryptColumn request.
pub fn decrypt_column_request(
    req: &pb::EncryptColumnRequest,
    sealed: pb::EncryptColumnResponse,
) -> pb::DecryptColumnRequest {
    assert!(sealed.errors.is_empty(), "a column item failed");
    pb::DecryptColumnRequest {
        key: req.key.clone(),
        context: req.context.clone(),
        ciphertexts: sealed.ciphertexts,
        row_field: req.row_field.clone(),
        row_values: req.row_values.clone(),
    }
}

pub async fn encrypt_column(ch: Channel, c: pb::EncryptColumnRequest) -> u64 {
    let r = envelope_client(ch)
        .encrypt_column(c)
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors.is_empty(), "a column item failed");
    r.ciphertexts.len() as u64
}

pub async fn decrypt_column(ch: Channel, c: pb::DecryptColumnRequest) -> u64 {
    let r = envelope_client(ch)
        .decrypt_column(c)
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors.is_empty(), "a column record failed to decrypt");
    r.plaintexts.len() as u64
}
