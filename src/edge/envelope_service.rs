//! The `envelope.v1.Envelope` gRPC service: every call goes through the
//! [`Gate`] (identity, authorization, the key lookup, audit) and is handed
//! the key it names; batches and streams share one runner
//! ([`super::batch`]); errors become statuses in [`super::status`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use super::authz::Operation;
use super::batch::{self, BatchCall, secret_bytes};
use super::gate::{Done, Gate};
use super::tls::PeerInfo;
use crate::keys::{Error, NamedKey};
use crate::pb;

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

    /// Runs one batch call through the gate.
    async fn batch<B: BatchCall>(
        &self,
        req: Request<B>,
        rpc: &'static str,
        op: Operation,
    ) -> Result<Response<B::Response>, Status> {
        let max = self.max_batch_items;
        self.gate
            .run(req, rpc, op, move |key, req| batch::run(key, req, max))
            .await
    }

    /// Answers each message of a request stream through the gate, in order,
    /// with the batch runner. A message the gate refuses ends the stream
    /// with its status.
    fn stream<B: BatchCall>(
        &self,
        req: Request<Streaming<B>>,
        rpc: &'static str,
        op: Operation,
    ) -> Response<ResponseStream<B::Response>> {
        let max = self.max_batch_items;
        stream(self.gate.clone(), req, rpc, op, move |key, req| {
            batch::run(key, req, max)
        })
    }
}

/// The response stream of EncryptStream and DecryptStream.
pub type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Messages of a response stream buffered ahead of a slow reader; past
/// this the server stops reading the request stream (back-pressure).
const STREAM_BUFFER: usize = 4;

fn stream<Req, Resp, F, Fut>(
    gate: Gate,
    req: Request<Streaming<Req>>,
    rpc: &'static str,
    op: Operation,
    f: F,
) -> Response<ResponseStream<Resp>>
where
    Req: super::gate::HasSubject + Send + 'static,
    Resp: Send + 'static,
    F: Fn(Arc<NamedKey>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(Resp, Done), Error>> + Send,
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
        let f = |key: Arc<NamedKey>, req: pb::EncryptRequest| async move {
            let (ciphertext, master) = key.encrypt(&req.plaintext, &req.context).await?;
            let version = master.version.as_str();
            let resp = pb::EncryptResponse {
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
            Ok((resp, Done::version(&version)))
        };
        self.gate.run(req, "Decrypt", Operation::Decrypt, f).await
    }

    async fn encrypt_batch(
        &self,
        req: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        self.batch(req, "EncryptBatch", Operation::Encrypt).await
    }

    type EncryptStreamStream = ResponseStream<pb::EncryptBatchResponse>;

    async fn encrypt_stream(
        &self,
        req: Request<Streaming<pb::EncryptBatchRequest>>,
    ) -> Result<Response<Self::EncryptStreamStream>, Status> {
        Ok(self.stream(req, "EncryptStream", Operation::Encrypt))
    }

    async fn decrypt_batch(
        &self,
        req: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        self.batch(req, "DecryptBatch", Operation::Decrypt).await
    }

    type DecryptStreamStream = ResponseStream<pb::DecryptBatchResponse>;

    async fn decrypt_stream(
        &self,
        req: Request<Streaming<pb::DecryptBatchRequest>>,
    ) -> Result<Response<Self::DecryptStreamStream>, Status> {
        Ok(self.stream(req, "DecryptStream", Operation::Decrypt))
    }

    async fn rewrap(
        &self,
        req: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        let f = |key: Arc<NamedKey>, req: pb::RewrapRequest| async move {
            let (ciphertext, master) = key.rewrap(&req.ciphertext, &req.context).await?;
            let version = master.version.as_str();
            let resp = pb::RewrapResponse {
                ciphertext: Bytes::from(ciphertext),
                key_version: version.to_owned(),
            };
            Ok((resp, Done::version(version)))
        };
        self.gate.run(req, "Rewrap", Operation::Rewrap, f).await
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
            Ok((resp, Done::version(version)))
        };
        let op = Operation::GenerateDataKey;
        self.gate.run(req, "UnwrapDataKey", op, f).await
    }
}
