//! The `envelope.v1.Envelope` gRPC service: every call goes through the
//! [`Gate`] (identity, authorization, audit); errors become statuses in
//! `status.rs`.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use crate::edge::authz::Operation;
use crate::edge::gate::{Done, Gate};
use crate::edge::status::item_error;
use crate::edge::tls::PeerInfo;
use crate::keys::error::Error;
use crate::keys::Keyring;
use crate::pb::{self, decrypt_result, encrypt_result, rewrap_result};

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

/// Runs `op` on every item in order; one failing item never fails the
/// batch. Returns each item's outcome with its key version, and the batch's
/// audit summary.
async fn each<I, T, F, Fut>(
    items: Vec<I>,
    mut op: F,
) -> (Vec<(Result<T, pb::ItemError>, String)>, Done)
where
    F: FnMut(I) -> Fut,
    Fut: std::future::Future<Output = Result<(T, String), Error>>,
{
    let n = items.len();
    let mut out = Vec::with_capacity(n);
    let (mut version, mut failed) = (String::new(), 0);
    for item in items {
        match op(item).await {
            Ok((t, v)) => {
                if version.is_empty() {
                    version.clone_from(&v);
                }
                out.push((Ok(t), v));
            }
            Err(e) => {
                failed += 1;
                out.push((Err(item_error(e)), String::new()));
            }
        }
    }
    (
        out,
        Done {
            version,
            batch: Some((n, failed)),
        },
    )
}

async fn key_of(
    keyring: &Keyring,
    name: &str,
) -> Result<Arc<crate::keys::NamedKey>, Error> {
    keyring.get(name).cloned()
}

async fn encrypt_batch(
    keyring: Arc<Keyring>,
    name: String,
    req: pb::EncryptBatchRequest,
    max: usize,
) -> Result<(pb::EncryptBatchResponse, Done), Error> {
    check_batch(req.items.len(), max)?;
    let key = key_of(&keyring, &name).await?;
    let sealed = key
        .encrypt_many(&req.items, |i| (&i.plaintext, &i.context))
        .await;
    let versions: Vec<&str> = sealed.versions.iter().map(|v| v.version.as_str()).collect();
    let mut failed = 0;
    let results = sealed
        .results
        .into_iter()
        .map(|r| match r {
            Ok((range, v)) => pb::EncryptResult {
                result: Some(encrypt_result::Result::Ciphertext(
                    sealed.records.slice(range),
                )),
                key_version: versions.get(v).copied().unwrap_or_default().to_owned(),
            },
            Err(e) => {
                failed += 1;
                pb::EncryptResult {
                    result: Some(encrypt_result::Result::Error(item_error(e))),
                    key_version: String::new(),
                }
            }
        })
        .collect();
    let done = Done {
        version: versions.first().copied().unwrap_or_default().to_owned(),
        batch: Some((req.items.len(), failed)),
    };
    Ok((pb::EncryptBatchResponse { results }, done))
}

async fn decrypt_batch(
    keyring: Arc<Keyring>,
    name: String,
    req: pb::DecryptBatchRequest,
    max: usize,
) -> Result<(pb::DecryptBatchResponse, Done), Error> {
    check_batch(req.items.len(), max)?;
    let key = key_of(&keyring, &name).await?;
    let mut opened = key
        .decrypt_many(&req.items, |i| (&i.ciphertext, &i.context))
        .await;
    // One owner for every plaintext of the batch: wiped once the response
    // is encoded and the last slice dropped.
    let plaintexts = secret_bytes(std::mem::take(&mut *opened.plaintexts));
    let mut failed = 0;
    let results = opened
        .results
        .into_iter()
        .map(|r| match r {
            Ok((range, version)) => pb::DecryptResult {
                result: Some(decrypt_result::Result::Plaintext(plaintexts.slice(range))),
                key_version: version.to_string(),
            },
            Err(e) => {
                failed += 1;
                pb::DecryptResult {
                    result: Some(decrypt_result::Result::Error(item_error(e))),
                    key_version: String::new(),
                }
            }
        })
        .collect();
    // Records of a batch may name different versions: none is "the" version.
    let done = Done {
        version: String::new(),
        batch: Some((req.items.len(), failed)),
    };
    Ok((pb::DecryptBatchResponse { results }, done))
}

/// The response stream of EncryptStream and DecryptStream.
pub type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Messages of a response stream buffered ahead of a slow reader; past
/// this the server stops reading the request stream (back-pressure).
const STREAM_BUFFER: usize = 4;

/// Answers each message of a request stream through the gate, in order. A
/// message the gate refuses ends the stream with its status.
fn stream<Req, Resp, F, Fut>(
    gate: Gate,
    req: Request<Streaming<Req>>,
    rpc: &'static str,
    op: Operation,
    f: F,
) -> Response<ResponseStream<Resp>>
where
    Req: crate::edge::gate::HasSubject + Send + 'static,
    Resp: Send + 'static,
    F: Fn(Arc<Keyring>, String, Req) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Resp, Done), Error>> + Send,
{
    let peer = req
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default();
    let mut inbound = req.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            let out = gate
                .handle(&peer, msg, rpc, op, &f)
                .await
                .map(Response::into_inner);
            let last = out.is_err();
            if tx.send(out).await.is_err() || last {
                break;
            }
        }
    });
    Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
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
            .run(req, "EncryptBatch", Operation::Encrypt, move |k, n, r| {
                encrypt_batch(k, n, r, max)
            })
            .await
    }

    type EncryptStreamStream = ResponseStream<pb::EncryptBatchResponse>;

    async fn encrypt_stream(
        &self,
        req: Request<Streaming<pb::EncryptBatchRequest>>,
    ) -> Result<Response<Self::EncryptStreamStream>, Status> {
        let max = self.max_batch_items;
        Ok(stream(
            self.gate.clone(),
            req,
            "EncryptStream",
            Operation::Encrypt,
            move |k, n, r| encrypt_batch(k, n, r, max),
        ))
    }

    async fn decrypt_batch(
        &self,
        req: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        let max = self.max_batch_items;
        self.gate
            .run(req, "DecryptBatch", Operation::Decrypt, move |k, n, r| {
                decrypt_batch(k, n, r, max)
            })
            .await
    }

    type DecryptStreamStream = ResponseStream<pb::DecryptBatchResponse>;

    async fn decrypt_stream(
        &self,
        req: Request<Streaming<pb::DecryptBatchRequest>>,
    ) -> Result<Response<Self::DecryptStreamStream>, Status> {
        let max = self.max_batch_items;
        Ok(stream(
            self.gate.clone(),
            req,
            "DecryptStream",
            Operation::Decrypt,
            move |k, n, r| decrypt_batch(k, n, r, max),
        ))
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
                    let (outcomes, done) = each(req.items, |item| {
                        let key = &key;
                        async move {
                            let (ct, master) = key.rewrap(&item.ciphertext, &item.context).await?;
                            Ok((Bytes::from(ct), master.version.as_str().to_owned()))
                        }
                    })
                    .await;
                    let results = outcomes
                        .into_iter()
                        .map(|(r, key_version)| pb::RewrapResult {
                            result: Some(match r {
                                Ok(ct) => rewrap_result::Result::Ciphertext(ct),
                                Err(e) => rewrap_result::Result::Error(e),
                            }),
                            key_version,
                        })
                        .collect();
                    Ok((pb::RewrapBatchResponse { results }, done))
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
