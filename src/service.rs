//! The `envelope.v1.Envelope` gRPC service: every call goes through the
//! [`Gate`] (identity, authorization, audit); errors become statuses in
//! `status.rs`.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::authz::Operation;
use crate::error::Error;
use crate::gate::{Done, Gate};
use crate::keyring::Keyring;
use crate::pb::{self, decrypt_result, encrypt_result, rewrap_result};
use crate::status::item_error;

/// The Envelope service.
#[derive(Debug, Clone)]
pub struct EnvelopeService {
    gate: Gate,
    max_batch_items: usize,
}

impl EnvelopeService {
    /// A service behind `gate`, accepting batches of at most `max_batch_items`.
    pub fn new(gate: Gate, max_batch_items: usize) -> Self {
        Self {
            gate,
            max_batch_items,
        }
    }
}

/// A buffer of secret bytes (plaintext, key bytes) handed to a response:
/// tonic drops the message after encoding it, and this owner wipes the
/// bytes then. (Encoded frames in flight are tonic's and are not wiped.)
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

fn secret_bytes(v: Vec<u8>) -> Bytes {
    Bytes::from_owner(Wiped(v))
}

fn check_batch(n: usize, max: usize) -> Result<(), Error> {
    if n > max {
        return Err(Error::BatchTooLarge { got: n, max });
    }
    Ok(())
}

fn done(version: &str) -> Done {
    Done {
        version: version.to_owned(),
        batch: None,
    }
}

fn batch_done(results_ok: impl Iterator<Item = bool>, version: String) -> Done {
    let (mut n, mut failed) = (0, 0);
    for ok in results_ok {
        n += 1;
        if !ok {
            failed += 1;
        }
    }
    Done {
        version,
        batch: Some((n, failed)),
    }
}

async fn key_of(keyring: &Keyring, name: &str) -> Result<Arc<crate::keyring::NamedKey>, Error> {
    keyring.get(name).cloned()
}

#[tonic::async_trait]
impl pb::envelope_server::Envelope for EnvelopeService {
    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        self.gate
            .run(
                req,
                "Encrypt",
                Operation::Encrypt,
                |keyring, name, req| async move {
                    let key = key_of(&keyring, &name).await?;
                    let (ciphertext, master) = key.encrypt(&req.plaintext, &req.context).await?;
                    let version = master.version.as_str().to_owned();
                    Ok((
                        pb::EncryptResponse {
                            ciphertext: Bytes::from(ciphertext),
                            key_version: version.clone(),
                        },
                        done(&version),
                    ))
                },
            )
            .await
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        self.gate
            .run(
                req,
                "Decrypt",
                Operation::Decrypt,
                |keyring, name, req| async move {
                    let key = key_of(&keyring, &name).await?;
                    let (plaintext, version) = key.decrypt(&req.ciphertext, &req.context).await?;
                    Ok((
                        pb::DecryptResponse {
                            plaintext: secret_bytes(plaintext),
                            key_version: version.to_string(),
                        },
                        done(&version),
                    ))
                },
            )
            .await
    }

    async fn encrypt_batch(
        &self,
        req: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        let max = self.max_batch_items;
        self.gate
            .run(
                req,
                "EncryptBatch",
                Operation::Encrypt,
                |keyring, name, req| async move {
                    check_batch(req.items.len(), max)?;
                    let key = key_of(&keyring, &name).await?;
                    let mut results = Vec::with_capacity(req.items.len());
                    let mut version = String::new();
                    for item in &req.items {
                        results.push(match key.encrypt(&item.plaintext, &item.context).await {
                            Ok((ct, master)) => {
                                if version.is_empty() {
                                    version = master.version.as_str().to_owned();
                                }
                                pb::EncryptResult {
                                    result: Some(encrypt_result::Result::Ciphertext(Bytes::from(
                                        ct,
                                    ))),
                                    key_version: master.version.as_str().to_owned(),
                                }
                            }
                            Err(e) => pb::EncryptResult {
                                result: Some(encrypt_result::Result::Error(item_error(e))),
                                key_version: String::new(),
                            },
                        });
                    }
                    let d = batch_done(
                        results.iter().map(|r| {
                            matches!(r.result, Some(encrypt_result::Result::Ciphertext(_)))
                        }),
                        version,
                    );
                    Ok((pb::EncryptBatchResponse { results }, d))
                },
            )
            .await
    }

    async fn decrypt_batch(
        &self,
        req: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        let max = self.max_batch_items;
        self.gate
            .run(
                req,
                "DecryptBatch",
                Operation::Decrypt,
                |keyring, name, req| async move {
                    check_batch(req.items.len(), max)?;
                    let key = key_of(&keyring, &name).await?;
                    let mut results = Vec::with_capacity(req.items.len());
                    for item in &req.items {
                        results.push(match key.decrypt(&item.ciphertext, &item.context).await {
                            Ok((pt, version)) => pb::DecryptResult {
                                result: Some(decrypt_result::Result::Plaintext(secret_bytes(pt))),
                                key_version: version.to_string(),
                            },
                            Err(e) => pb::DecryptResult {
                                result: Some(decrypt_result::Result::Error(item_error(e))),
                                key_version: String::new(),
                            },
                        });
                    }
                    let d = batch_done(
                        results.iter().map(|r| {
                            matches!(r.result, Some(decrypt_result::Result::Plaintext(_)))
                        }),
                        String::new(),
                    );
                    Ok((pb::DecryptBatchResponse { results }, d))
                },
            )
            .await
    }

    async fn rewrap(
        &self,
        req: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        self.gate
            .run(
                req,
                "Rewrap",
                Operation::Rewrap,
                |keyring, name, req| async move {
                    let key = key_of(&keyring, &name).await?;
                    let (ciphertext, master) = key.rewrap(&req.ciphertext, &req.context).await?;
                    let version = master.version.as_str().to_owned();
                    Ok((
                        pb::RewrapResponse {
                            ciphertext: Bytes::from(ciphertext),
                            key_version: version.clone(),
                        },
                        done(&version),
                    ))
                },
            )
            .await
    }

    async fn rewrap_batch(
        &self,
        req: Request<pb::RewrapBatchRequest>,
    ) -> Result<Response<pb::RewrapBatchResponse>, Status> {
        let max = self.max_batch_items;
        self.gate
            .run(
                req,
                "RewrapBatch",
                Operation::Rewrap,
                |keyring, name, req| async move {
                    check_batch(req.items.len(), max)?;
                    let key = key_of(&keyring, &name).await?;
                    let mut results = Vec::with_capacity(req.items.len());
                    let mut version = String::new();
                    for item in &req.items {
                        results.push(match key.rewrap(&item.ciphertext, &item.context).await {
                            Ok((ct, master)) => {
                                if version.is_empty() {
                                    version = master.version.as_str().to_owned();
                                }
                                pb::RewrapResult {
                                    result: Some(rewrap_result::Result::Ciphertext(Bytes::from(
                                        ct,
                                    ))),
                                    key_version: master.version.as_str().to_owned(),
                                }
                            }
                            Err(e) => pb::RewrapResult {
                                result: Some(rewrap_result::Result::Error(item_error(e))),
                                key_version: String::new(),
                            },
                        });
                    }
                    let d = batch_done(
                        results.iter().map(|r| {
                            matches!(r.result, Some(rewrap_result::Result::Ciphertext(_)))
                        }),
                        version,
                    );
                    Ok((pb::RewrapBatchResponse { results }, d))
                },
            )
            .await
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        self.gate
            .run(
                req,
                "GenerateDataKey",
                Operation::GenerateDataKey,
                |keyring, name, req| async move {
                    let key = key_of(&keyring, &name).await?;
                    let (plaintext, wrapped, master) = key.generate_data_key(&req.context).await?;
                    let version = master.version.as_str().to_owned();
                    Ok((
                        pb::GenerateDataKeyResponse {
                            // The caller asked for the key bytes; the copy is wiped once sent.
                            plaintext_key: secret_bytes(plaintext.expose().to_vec()),
                            wrapped_key: Bytes::from(wrapped),
                            key_version: version.clone(),
                        },
                        done(&version),
                    ))
                },
            )
            .await
    }

    async fn unwrap_data_key(
        &self,
        req: Request<pb::UnwrapDataKeyRequest>,
    ) -> Result<Response<pb::UnwrapDataKeyResponse>, Status> {
        self.gate
            .run(
                req,
                "UnwrapDataKey",
                Operation::GenerateDataKey,
                |keyring, name, req| async move {
                    let key = key_of(&keyring, &name).await?;
                    let (plaintext, master) =
                        key.unwrap_data_key(&req.wrapped_key, &req.context).await?;
                    let version = master.version.as_str().to_owned();
                    Ok((
                        pb::UnwrapDataKeyResponse {
                            plaintext_key: secret_bytes(plaintext.expose().to_vec()),
                            key_version: version.clone(),
                        },
                        done(&version),
                    ))
                },
            )
            .await
    }
}
