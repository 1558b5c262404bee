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
                plaintext: Bytes::from(vec![0x5au8; size]),
                context: Default::default(),
            })
            .collect(),
    }
}

pub async fn encrypt(ch: Channel, plaintext: Bytes) -> Bytes {
    envelope_client(ch)
        .encrypt(pb::EncryptRequest {
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
