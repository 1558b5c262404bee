//! The `envelope.v1.Envelope` gRPC service: every call goes through the
//! [`Gate`] (identity, authorization, the key lookup, audit) and is handed
//! the key it names; batches and streams share one runner
//! ([`super::batch`]); errors become statuses in [`super::status`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use super::authz::Operation;
use super::batch::{self, BatchCall, secret_bytes};
use super::gate::Charge;
use super::gate::{DECRYPTED, Done, Gate};
use super::stream_pool::{Slot, StreamPool};
use super::tls::PeerInfo;
use crate::keys::index::TokenKeys;
use crate::keys::{Error, NamedKey};
use crate::pb;

/// The Envelope service.
#[derive(Debug, Clone)]
pub struct EnvelopeService {
    gate: Gate,
    max_batch_items: usize,
    streams: Arc<StreamPool>,
    stream_idle_timeout: Duration,
}

impl EnvelopeService {
    /// A service behind `gate`, accepting batches of at most
    /// `max_batch_items`, streams from `streams`, each reset after
    /// `stream_idle_timeout` without a message.
    pub fn new(
        gate: Gate,
        max_batch_items: usize,
        streams: Arc<StreamPool>,
        stream_idle_timeout: Duration,
    ) -> Self {
        Self {
            gate,
            max_batch_items,
            streams,
            stream_idle_timeout,
        }
    }

    /// The index-token account of the caller of `req`.
    fn charge<T>(&self, req: &Request<T>) -> Charge {
        self.charge_for(req.extensions().get::<PeerInfo>())
    }

    fn charge_for(&self, peer: Option<&PeerInfo>) -> Charge {
        Charge {
            authz: self.gate.authz.clone(),
            meter: self.gate.index_meter.clone(),
            identity: peer.and_then(|p| p.identity.clone()),
        }
    }

    /// Runs one batch call through the gate.
    async fn batch<B: BatchCall>(
        &self,
        req: Request<B>,
        rpc: &'static str,
        op: Operation,
    ) -> Result<Response<B::Response>, Status> {
        let max = self.max_batch_items;
        let charge = self.charge(&req);
        self.gate
            .run(req, rpc, op, move |key, req| {
                batch::run(key, req, max, charge)
            })
            .await
    }

    /// A stream through the gate and the batch runner, if the pool has room.
    fn stream<B: BatchCall>(
        &self,
        req: Request<Streaming<B>>,
        rpc: &'static str,
        op: Operation,
    ) -> Result<Response<ResponseStream<B::Response>>, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default();
        let Some(slot) = self.streams.enter(&peer) else {
            return Err(Status::resource_exhausted(
                "too many streams are open (for this caller, or in all); retry later",
            ));
        };
        let max = self.max_batch_items;
        let charge = self.charge_for(Some(&peer));
        let open = Open {
            gate: self.gate.clone(),
            peer,
            rpc,
            op,
            idle: self.stream_idle_timeout,
            _slot: slot,
        };
        Ok(stream(open, req, move |key, req| {
            batch::run(key, req, max, charge.clone())
        }))
    }
}

/// The response stream of EncryptStream and DecryptStream.
pub type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Messages of a response stream buffered ahead of a slow reader; past
/// this the server stops reading the request stream (back-pressure).
const STREAM_BUFFER: usize = 4;

/// One open stream: who it is for, what it may run, and its pool slot.
struct Open {
    gate: Gate,
    peer: PeerInfo,
    rpc: &'static str,
    op: Operation,
    idle: Duration,
    _slot: Slot,
}

/// Answers each message of a request stream through the gate, in order. A
/// message the gate refuses ends the stream with its status; so does a
/// stream with no message for `idle`, which also gives back its slot.
fn stream<Req, Resp, F, Fut>(
    open: Open,
    req: Request<Streaming<Req>>,
    f: F,
) -> Response<ResponseStream<Resp>>
where
    Req: super::gate::HasSubject + Send + 'static,
    Resp: Send + 'static,
    F: Fn(Arc<NamedKey>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(Resp, Done), Error>> + Send,
{
    let mut inbound = req.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        loop {
            let msg = match tokio::time::timeout(open.idle, inbound.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => break,
                Ok(Err(status)) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                Err(_) => {
                    crate::ops::metrics::get()
                        .refused(crate::ops::metrics::Refusal::StreamIdleTimeout);
                    let idle = Status::deadline_exceeded(
                        "no message on this stream within the idle timeout; stream closed",
                    );
                    let _ = tx.send(Err(idle)).await;
                    break;
                }
            };
            let out = open
                .gate
                .handle(&open.peer, msg, open.rpc, open.op, &f)
                .await
                .map(Response::into_inner);
            let last = out.is_err();
            if tx.send(out).await.is_err() || last {
                break;
            }
        }
        // Named, so the task owns all of `open` (a closure or async block
        // captures only the fields it uses): the pool slot is given back
        // when the stream ends, not when it starts.
        drop(open);
    });
    Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl pb::envelope_server::Envelope for EnvelopeService {
    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let charge = self.charge(&req);
        let f = |key: Arc<NamedKey>, req: pb::EncryptRequest| async move {
            // A refused call takes no quota: everything checked first.
            key.check_index_request(&req.indexes, &req.context)?;
            charge.take(key.name(), req.indexes.len())?;
            let (ciphertext, master) = key.encrypt(&req.plaintext, &req.context).await?;
            let mut cache = TokenKeys::default();
            let index_tokens = key.context_tokens(
                &req.indexes,
                &master,
                &req.context,
                &req.plaintext,
                &mut cache,
            )?;
            let version = master.version.as_str();
            let resp = pb::EncryptResponse {
                index_tokens,
                ciphertext: Bytes::from(ciphertext),
                key_version: version.to_owned(),
            };
            Ok((resp, Done::version(version)))
        };
        self.gate.run(req, "Encrypt", Operation::Encrypt, f).await
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let f = |key: Arc<NamedKey>, req: pb::DecryptRequest| async move {
            let (plaintext, version) = key.decrypt(&req.ciphertext, &req.context).await?;
            let resp = pb::DecryptResponse {
                plaintext: secret_bytes(plaintext),
                key_version: version.to_string(),
            };
            let flagged = u64::from(key.is_compromised(&version));
            Ok((resp, Done::version(&version).flag(flagged, DECRYPTED)))
        };
        self.gate.run(req, "Decrypt", Operation::Decrypt, f).await
    }

    async fn encrypt_batch(
        &self,
        req: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        self.batch(req, "EncryptBatch", Operation::Encrypt).await
    }

    type EncryptStreamStream = ResponseStream<pb::EncryptStreamResponse>;

    async fn encrypt_stream(
        &self,
        req: Request<Streaming<pb::EncryptStreamRequest>>,
    ) -> Result<Response<Self::EncryptStreamStream>, Status> {
        self.stream(req, "EncryptStream", Operation::Encrypt)
    }

    async fn decrypt_batch(
        &self,
        req: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        self.batch(req, "DecryptBatch", Operation::Decrypt).await
    }

    type DecryptStreamStream = ResponseStream<pb::DecryptStreamResponse>;

    async fn decrypt_stream(
        &self,
        req: Request<Streaming<pb::DecryptStreamRequest>>,
    ) -> Result<Response<Self::DecryptStreamStream>, Status> {
        self.stream(req, "DecryptStream", Operation::Decrypt)
    }

    async fn encrypt_column(
        &self,
        req: Request<pb::EncryptColumnRequest>,
    ) -> Result<Response<pb::EncryptColumnResponse>, Status> {
        self.batch(req, "EncryptColumn", Operation::Encrypt).await
    }

    async fn decrypt_column(
        &self,
        req: Request<pb::DecryptColumnRequest>,
    ) -> Result<Response<pb::DecryptColumnResponse>, Status> {
        self.batch(req, "DecryptColumn", Operation::Decrypt).await
    }

    type EncryptColumnStreamStream = ResponseStream<pb::EncryptColumnStreamResponse>;

    async fn encrypt_column_stream(
        &self,
        req: Request<Streaming<pb::EncryptColumnStreamRequest>>,
    ) -> Result<Response<Self::EncryptColumnStreamStream>, Status> {
        self.stream(req, "EncryptColumnStream", Operation::Encrypt)
    }

    type DecryptColumnStreamStream = ResponseStream<pb::DecryptColumnStreamResponse>;

    async fn decrypt_column_stream(
        &self,
        req: Request<Streaming<pb::DecryptColumnStreamRequest>>,
    ) -> Result<Response<Self::DecryptColumnStreamStream>, Status> {
        self.stream(req, "DecryptColumnStream", Operation::Decrypt)
    }

    async fn compute_index(
        &self,
        req: Request<pb::ComputeIndexRequest>,
    ) -> Result<Response<pb::ComputeIndexResponse>, Status> {
        let charge = self.charge(&req);
        let max = self.max_batch_items;
        let f = move |key: Arc<NamedKey>, req: pb::ComputeIndexRequest| async move {
            if req.values.len() > max {
                return Err(Error::BatchTooLarge {
                    got: req.values.len(),
                    max,
                });
            }
            // Unknown index, context and scope first: a refused call takes no quota.
            key.check_index_request(std::slice::from_ref(&req.index), &req.context)?;
            let versions = key.index_versions().await?;
            charge.take(key.name(), req.values.len() * versions.len())?;
            let computed = key.compute_index(&req.index, &req.context, &req.values, &versions)?;
            let mut failed = 0;
            let results = computed
                .into_iter()
                .map(|r| match r {
                    Ok(tokens) => pb::IndexTokens {
                        tokens: tokens
                            .into_iter()
                            .map(|(v, t)| pb::IndexToken {
                                key_version: v.to_string(),
                                token: Bytes::from(t),
                            })
                            .collect(),
                        error: None,
                    },
                    Err(e) => {
                        failed += 1;
                        pb::IndexTokens {
                            tokens: Vec::new(),
                            error: Some(super::status::item_error(e)),
                        }
                    }
                })
                .collect::<Vec<_>>();
            let done = Done {
                version: versions
                    .first()
                    .map(|m| m.version.as_str().to_owned())
                    .unwrap_or_default(),
                batch: Some((results.len(), failed)),
                ..Done::default()
            };
            Ok((pb::ComputeIndexResponse { results }, done))
        };
        self.gate
            .run(req, "ComputeIndex", Operation::Index, f)
            .await
    }

    async fn rewrap(
        &self,
        req: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        let charge = self.charge(&req);
        let f = |key: Arc<NamedKey>, req: pb::RewrapRequest| async move {
            key.check_index_request(&req.indexes, &req.context)?;
            charge.take(key.name(), req.indexes.len())?;
            let mut cache = crate::keys::open::RewrapCache::default();
            let (ciphertext, master, index_tokens) = key
                .rewrap_indexed(&req.ciphertext, &req.context, &req.indexes, &mut cache)
                .await?;
            let version = master.version.as_str();
            let resp = pb::RewrapResponse {
                index_tokens,
                ciphertext: Bytes::from(ciphertext),
                key_version: version.to_owned(),
            };
            Ok((resp, Done::version(version)))
        };
        self.gate.run(req, "Rewrap", Operation::Rewrap, f).await
    }

    async fn reencrypt_batch(
        &self,
        req: Request<pb::ReencryptBatchRequest>,
    ) -> Result<Response<pb::ReencryptBatchResponse>, Status> {
        self.batch(req, "ReencryptBatch", Operation::Rewrap).await
    }

    async fn reencrypt_column(
        &self,
        req: Request<pb::ReencryptColumnRequest>,
    ) -> Result<Response<pb::ReencryptColumnResponse>, Status> {
        self.batch(req, "ReencryptColumn", Operation::Rewrap).await
    }

    async fn rewrap_batch(
        &self,
        req: Request<pb::RewrapBatchRequest>,
    ) -> Result<Response<pb::RewrapBatchResponse>, Status> {
        self.batch(req, "RewrapBatch", Operation::Rewrap).await
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let f = |key: Arc<NamedKey>, req: pb::GenerateDataKeyRequest| async move {
            let (plaintext, wrapped, master) = key.generate_data_key(&req.context).await?;
            let version = master.version.as_str();
            let resp = pb::GenerateDataKeyResponse {
                // The caller asked for the key bytes; the copy is wiped once sent.
                plaintext_key: secret_bytes(plaintext.expose().to_vec()),
                wrapped_key: Bytes::from(wrapped),
                key_version: version.to_owned(),
            };
            Ok((resp, Done::version(version)))
        };
        let op = Operation::GenerateDataKey;
        self.gate.run(req, "GenerateDataKey", op, f).await
    }

    async fn unwrap_data_key(
        &self,
        req: Request<pb::UnwrapDataKeyRequest>,
    ) -> Result<Response<pb::UnwrapDataKeyResponse>, Status> {
        let f = |key: Arc<NamedKey>, req: pb::UnwrapDataKeyRequest| async move {
            let (plaintext, master) = key.unwrap_data_key(&req.wrapped_key, &req.context).await?;
            let version = master.version.as_str();
            let resp = pb::UnwrapDataKeyResponse {
                plaintext_key: secret_bytes(plaintext.expose().to_vec()),
                key_version: version.to_owned(),
            };
            let flagged = u64::from(key.is_compromised(version));
            Ok((resp, Done::version(version).flag(flagged, DECRYPTED)))
        };
        let op = Operation::UnwrapDataKey;
        self.gate.run(req, "UnwrapDataKey", op, f).await
    }
}
