//! The echo server: this bench binary again (`ENVELOPE_BENCH_ECHO` set),
//! answering the Envelope API with no work behind it, pinned to the
//! server's core. Its figures are the ceiling of protobuf, HTTP/2 and tonic.

use envelope::pb;
use tonic::{Request, Response, Status, Streaming};

/// The echo server: the Envelope API with no work behind it (batches come
/// back as their own plaintexts), so the same calls measure what protobuf,
/// HTTP/2 and tonic cost on their own.
#[derive(Clone, Copy)]
struct Echo;

fn echo_batch(req: pb::EncryptBatchRequest) -> pb::EncryptBatchResponse {
    pb::EncryptBatchResponse {
        results: req
            .items
            .into_iter()
            .map(|i| pb::EncryptResult {
                index_tokens: Default::default(),
                result: Some(pb::encrypt_result::Result::Ciphertext(i.plaintext)),
                key_version: "00000000-0000-0000-0000-000000000000".to_owned(),
            })
            .collect(),
    }
}

fn echo_decrypt_batch(req: pb::DecryptBatchRequest) -> pb::DecryptBatchResponse {
    pb::DecryptBatchResponse {
        results: req
            .items
            .into_iter()
            .map(|i| pb::DecryptResult {
                result: Some(pb::decrypt_result::Result::Plaintext(i.ciphertext)),
                key_version: "00000000-0000-0000-0000-000000000000".to_owned(),
            })
            .collect(),
    }
}

fn echo_column(req: pb::EncryptColumnRequest) -> pb::EncryptColumnResponse {
    pb::EncryptColumnResponse {
        index_tokens: Default::default(),
        ciphertexts: req.plaintexts,
        key_version: "00000000-0000-0000-0000-000000000000".to_owned(),
        errors: Default::default(),
    }
}

fn echo_decrypt_column(req: pb::DecryptColumnRequest) -> pb::DecryptColumnResponse {
    pb::DecryptColumnResponse {
        plaintexts: req.ciphertexts,
        errors: Default::default(),
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::envelope_server::Envelope for Echo {
    async fn encrypt(
        &self,
        r: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        Ok(Response::new(pb::EncryptResponse {
            index_tokens: Default::default(),
            ciphertext: r.into_inner().plaintext,
            key_version: String::new(),
        }))
    }
    async fn decrypt(
        &self,
        _: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn encrypt_batch(
        &self,
        r: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        Ok(Response::new(echo_batch(r.into_inner())))
    }
    type EncryptStreamStream = Stream<pb::EncryptStreamResponse>;
    async fn encrypt_stream(
        &self,
        r: Request<Streaming<pb::EncryptStreamRequest>>,
    ) -> Result<Response<Self::EncryptStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r
            .into_inner()
            .map(|m| m.map(|m| echo_batch(m.into()).into()));
        Ok(Response::new(Box::pin(s)))
    }
    async fn decrypt_batch(
        &self,
        r: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        Ok(Response::new(echo_decrypt_batch(r.into_inner())))
    }
    type DecryptStreamStream = Stream<pb::DecryptStreamResponse>;
    async fn decrypt_stream(
        &self,
        r: Request<Streaming<pb::DecryptStreamRequest>>,
    ) -> Result<Response<Self::DecryptStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r
            .into_inner()
            .map(|m| m.map(|m| echo_decrypt_batch(m.into()).into()));
        Ok(Response::new(Box::pin(s)))
    }
    async fn encrypt_column(
        &self,
        r: Request<pb::EncryptColumnRequest>,
    ) -> Result<Response<pb::EncryptColumnResponse>, Status> {
        Ok(Response::new(echo_column(r.into_inner())))
    }
    async fn decrypt_column(
        &self,
        r: Request<pb::DecryptColumnRequest>,
    ) -> Result<Response<pb::DecryptColumnResponse>, Status> {
        Ok(Response::new(echo_decrypt_column(r.into_inner())))
    }
    type EncryptColumnStreamStream = Stream<pb::EncryptColumnStreamResponse>;
    async fn encrypt_column_stream(
        &self,
        r: Request<Streaming<pb::EncryptColumnStreamRequest>>,
    ) -> Result<Response<Self::EncryptColumnStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r.into_inner().map(|m| {
            m.map(|m| pb::EncryptColumnStreamResponse {
                column: m.column.map(echo_column),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
    type DecryptColumnStreamStream = Stream<pb::DecryptColumnStreamResponse>;
    async fn decrypt_column_stream(
        &self,
        r: Request<Streaming<pb::DecryptColumnStreamRequest>>,
    ) -> Result<Response<Self::DecryptColumnStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r.into_inner().map(|m| {
            m.map(|m| pb::DecryptColumnStreamResponse {
                column: m.column.map(echo_decrypt_column),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
    async fn reencrypt_batch(
        &self,
        _: Request<pb::ReencryptBatchRequest>,
    ) -> Result<Response<pb::ReencryptBatchResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn reencrypt_column(
        &self,
        _: Request<pb::ReencryptColumnRequest>,
    ) -> Result<Response<pb::ReencryptColumnResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn compute_index(
        &self,
        _: Request<pb::ComputeIndexRequest>,
    ) -> Result<Response<pb::ComputeIndexResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn rewrap(
        &self,
        _: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn rewrap_batch(
        &self,
        _: Request<pb::RewrapBatchRequest>,
    ) -> Result<Response<pb::RewrapBatchResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn generate_data_key(
        &self,
        _: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn unwrap_data_key(
        &self,
        _: Request<pb::UnwrapDataKeyRequest>,
    ) -> Result<Response<pb::UnwrapDataKeyResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// Serves [`Echo`] with the transport settings of the real server.
pub fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on {}", l.local_addr().unwrap());
        tonic::transport::Server::builder()
            .add_service(
                pb::envelope_server::EnvelopeServer::new(Echo)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming(async_stream_nodelay(l))
            .await
            .unwrap();
    });
}

/// Accepted connections with Nagle's algorithm off, as the real server has
/// them (otherwise delayed ACKs stall every large response by ~40 ms).
fn async_stream_nodelay(
    l: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}
