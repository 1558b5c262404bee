//! Envelope: envelope encryption of personal data as a gRPC service.
//!
//! The crate is cut into layers; each imports only the layers below it
//! (`scripts/check-layers.py` enforces this), and each layer's file opens
//! with a map of its modules. From the bottom up:
//!
//! - [`primitives`]: AES-256-GCM, KDFs, key types, the wrapped-key layout,
//!   the encryption context and the record format.
//! - [`backends`]: the secret store and KMS, local and AWS.
//! - [`keys`]: master keys, the keyring with its caches and operations, and
//!   rotation.
//! - [`ops`]: metrics, health and readiness, metered backends, hardening.
//! - [`edge`]: the gRPC services, the gate every call passes, status
//!   mapping, authorization, TLS and audit.
//! - [`app`]: configuration, the server's life cycle, the CLI and the
//!   rotation Lambda.
//!
//! `docs/ARCHITECTURE.md` walks one request through them.

pub mod app;
pub mod backends;
pub mod edge;
pub mod keys;
pub mod ops;
pub mod primitives;

/// Generated protobuf and gRPC code for `envelope.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod pb {
    tonic::include_proto!("envelope.v1");
}

/// The encoded descriptor set of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envelope_descriptor.bin"));
