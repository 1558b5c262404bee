//! The hostile calls: each request of the table as a value, made and sent
//! by [`run_call`], which answers with the status code alone.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};
use envelope::pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::common::Server;

/// Sends raw bytes as a request message, for garbage and hand-built protobuf.
#[derive(Default, Clone)]
struct RawCodec;
struct RawEnc;
struct RawDec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

impl Encoder for RawEnc {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw(
    server: &Server,
    path: &'static str,
    body: Bytes,
) -> Result<tonic::Response<Bytes>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
}

#[derive(Debug, PartialEq)]
pub enum Call {
    Decrypt {
        key: String,
        ct: Vec<u8>,
        ctx: BTreeMap<String, String>,
    },
    Encrypt {
        key: String,
        pt: Vec<u8>,
        ctx: BTreeMap<String, String>,
    },
    Rewrap {
        ct: Vec<u8>,
        ctx: BTreeMap<String, String>,
    },
    Unwrap {
        blob: Vec<u8>,
        ctx: BTreeMap<String, String>,
    },
    EncryptBatch {
        items: usize,
    },
    Raw {
        path: &'static str,
        body: Vec<u8>,
    },
}

/// The call's code, and whether it carried an `x-request-id` (only calls
/// that reached the gate do).
fn code_of<T>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, bool) {
    match r {
        Ok(r) => (Code::Ok, r.metadata().contains_key("x-request-id")),
        Err(s) => (s.code(), s.metadata().contains_key("x-request-id")),
    }
}

pub async fn run_call(server: &Server, call: &Call) -> Code {
    run_call_seen(server, call).await.0
}

/// As [`run_call`], and whether the answer carried an `x-request-id`.
pub async fn run_call_seen(server: &Server, call: &Call) -> (Code, bool) {
    let mut c = server.client().await;
    match call {
        Call::Decrypt { key, ct, ctx } => code_of(
            c.decrypt(pb::DecryptRequest {
                key: key.clone(),
                ciphertext: Bytes::from(ct.clone()),
                context: ctx.clone(),
            })
            .await,
        ),
        Call::Encrypt { key, pt, ctx } => code_of(
            c.encrypt(pb::EncryptRequest {
                indexes: Vec::new(),
                key: key.clone(),
                plaintext: Bytes::from(pt.clone()),
                context: ctx.clone(),
            })
            .await,
        ),
        Call::Rewrap { ct, ctx } => code_of(
            c.rewrap(pb::RewrapRequest {
                indexes: Vec::new(),
                key: String::new(),
                ciphertext: Bytes::from(ct.clone()),
                context: ctx.clone(),
            })
            .await,
        ),
        Call::Unwrap { blob, ctx } => code_of(
            c.unwrap_data_key(pb::UnwrapDataKeyRequest {
                key: String::new(),
                wrapped_key: Bytes::from(blob.clone()),
                context: ctx.clone(),
            })
            .await,
        ),
        Call::EncryptBatch { items } => code_of(
            c.encrypt_batch(pb::EncryptBatchRequest {
                key: String::new(),
                items: (0..*items).map(|_| pb::EncryptItem::default()).collect(),
            })
            .await,
        ),
        Call::Raw { path, body } => code_of(raw(server, path, Bytes::from(body.clone())).await),
    }
}

/// One entry (`k`, `v`) of a DecryptRequest's context map (field 3), encoded
/// on its own, to append to an encoded request.
pub fn context_entry(k: &str, v: &str) -> Vec<u8> {
    let mut e = Vec::new();
    prost::encoding::string::encode(1, &k.to_owned(), &mut e);
    prost::encoding::string::encode(2, &v.to_owned(), &mut e);
    let mut out = vec![0x1a];
    prost::encoding::encode_varint(e.len() as u64, &mut out);
    out.extend(e);
    out
}
