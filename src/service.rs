//! The `envelope.v1.Envelope` gRPC service: request validation and
//! translation to the keyring; errors become statuses in `status.rs`.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::keyring::Keyring;
use crate::pb::{self, decrypt_result, encrypt_result, rewrap_result};
use crate::status::item_error;

/// The Envelope service over a keyring.
#[derive(Debug, Clone)]
pub struct EnvelopeService {
    keyring: Arc<Keyring>,
    max_batch_items: usize,
}

impl EnvelopeService {
    /// A service over `keyring` accepting batches of at most `max_batch_items`.
    pub fn new(keyring: Arc<Keyring>, max_batch_items: usize) -> Self {
        Self {
            keyring,
            max_batch_items,
        }
    }

    fn check_batch(&self, n: usize) -> Result<(), Error> {
        if n > self.max_batch_items {
            return Err(Error::BatchTooLarge {
                got: n,
                max: self.max_batch_items,
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::envelope_server::Envelope for EnvelopeService {
    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let req = req.into_inner();
        let key = self.keyring.get(&req.key)?;
        let (ciphertext, master) = key.encrypt(&req.plaintext, &req.context).await?;
        Ok(Response::new(pb::EncryptResponse {
            ciphertext: Bytes::from(ciphertext),
            key_version: master.version.as_str().to_owned(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let req = req.into_inner();
        let key = self.keyring.get(&req.key)?;
        let (plaintext, version) = key.decrypt(&req.ciphertext, &req.context).await?;
        Ok(Response::new(pb::DecryptResponse {
            plaintext: Bytes::from(plaintext),
            key_version: version.to_string(),
        }))
    }

    async fn encrypt_batch(
        &self,
        req: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        let req = req.into_inner();
        self.check_batch(req.items.len())?;
        let key = self.keyring.get(&req.key)?;
        let mut results = Vec::with_capacity(req.items.len());
        for item in &req.items {
            results.push(match key.encrypt(&item.plaintext, &item.context).await {
                Ok((ct, master)) => pb::EncryptResult {
                    result: Some(encrypt_result::Result::Ciphertext(Bytes::from(ct))),
                    key_version: master.version.as_str().to_owned(),
                },
                Err(e) => pb::EncryptResult {
                    result: Some(encrypt_result::Result::Error(item_error(e))),
                    key_version: String::new(),
                },
            });
        }
        Ok(Response::new(pb::EncryptBatchResponse { results }))
    }

    async fn decrypt_batch(
        &self,
        req: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        let req = req.into_inner();
        self.check_batch(req.items.len())?;
        let key = self.keyring.get(&req.key)?;
        let mut results = Vec::with_capacity(req.items.len());
        for item in &req.items {
            results.push(match key.decrypt(&item.ciphertext, &item.context).await {
                Ok((pt, version)) => pb::DecryptResult {
                    result: Some(decrypt_result::Result::Plaintext(Bytes::from(pt))),
                    key_version: version.to_string(),
                },
                Err(e) => pb::DecryptResult {
                    result: Some(decrypt_result::Result::Error(item_error(e))),
                    key_version: String::new(),
                },
            });
        }
        Ok(Response::new(pb::DecryptBatchResponse { results }))
    }

    async fn rewrap(
        &self,
        req: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        let req = req.into_inner();
        let key = self.keyring.get(&req.key)?;
        let (ciphertext, master) = key.rewrap(&req.ciphertext, &req.context).await?;
        Ok(Response::new(pb::RewrapResponse {
            ciphertext: Bytes::from(ciphertext),
            key_version: master.version.as_str().to_owned(),
        }))
    }

    async fn rewrap_batch(
        &self,
        req: Request<pb::RewrapBatchRequest>,
    ) -> Result<Response<pb::RewrapBatchResponse>, Status> {
        let req = req.into_inner();
        self.check_batch(req.items.len())?;
        let key = self.keyring.get(&req.key)?;
        let mut results = Vec::with_capacity(req.items.len());
        for item in &req.items {
            results.push(match key.rewrap(&item.ciphertext, &item.context).await {
                Ok((ct, master)) => pb::RewrapResult {
                    result: Some(rewrap_result::Result::Ciphertext(Bytes::from(ct))),
                    key_version: master.version.as_str().to_owned(),
                },
                Err(e) => pb::RewrapResult {
                    result: Some(rewrap_result::Result::Error(item_error(e))),
                    key_version: String::new(),
                },
            });
        }
        Ok(Response::new(pb::RewrapBatchResponse { results }))
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let req = req.into_inner();
        let key = self.keyring.get(&req.key)?;
        let (plaintext, wrapped, master) = key.generate_data_key(&req.context).await?;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            // The caller asked for the key bytes; this copy leaves with the response.
            plaintext_key: Bytes::copy_from_slice(plaintext.expose()),
            wrapped_key: Bytes::from(wrapped),
            key_version: master.version.as_str().to_owned(),
        }))
    }

    async fn unwrap_data_key(
        &self,
        req: Request<pb::UnwrapDataKeyRequest>,
    ) -> Result<Response<pb::UnwrapDataKeyResponse>, Status> {
        let req = req.into_inner();
        let key = self.keyring.get(&req.key)?;
        let (plaintext, master) = key.unwrap_data_key(&req.wrapped_key, &req.context).await?;
        Ok(Response::new(pb::UnwrapDataKeyResponse {
            plaintext_key: Bytes::copy_from_slice(plaintext.expose()),
            key_version: master.version.as_str().to_owned(),
        }))
    }
}
