//! Compiles the protos with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that server reflection serves.

use std::path::PathBuf;

const SECRET_MESSAGES: [&str; 18] = [
    ".envelope.v1.EncryptRequest",
    ".envelope.v1.EncryptItem",
    ".envelope.v1.EncryptBatchRequest",
    ".envelope.v1.EncryptStreamRequest",
    ".envelope.v1.DecryptStreamResponse",
    ".envelope.v1.DecryptResponse",
    ".envelope.v1.DecryptResult",
    ".envelope.v1.DecryptBatchResponse",
    ".envelope.v1.GenerateDataKeyResponse",
    ".envelope.v1.UnwrapDataKeyResponse",
    ".envelope.v1.EncryptColumnRequest",
    ".envelope.v1.DecryptColumnRequest",
    ".envelope.v1.DecryptColumnResponse",
    ".envelope.v1.EncryptColumnStreamRequest",
    ".envelope.v1.DecryptColumnStreamResponse",
    ".envelope.v1.ComputeIndexRequest",
    ".envelope.v1.IndexToken",
    ".envelope.v1.IndexTokens",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/envelope/v1/envelope.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("envelope_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Payloads as `bytes::Bytes`: decoding slices the request buffer instead of copying.
        .bytes(".")
        // Sorted maps make the context encoding canonical without a sort per request.
        .btree_map(".")
        // Messages that carry plaintext or key bytes get a hand-written,
        // redacted Debug (src/pb_debug.rs) instead of the derived one.
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
