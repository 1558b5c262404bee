//! What stops the start.

use crate::keys::Error;
use crate::primitives::self_test;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is not the running user's, or others may read it.
    #[error("local mode's data directory: {0}")]
    DataDirUnsafe(String),
    /// A key could not be loaded: Envelope never serves without its keys.
    #[error("cannot load key {key:?}: {source}")]
    Key {
        /// The key name.
        key: String,
        /// Why.
        #[source]
        source: Error,
    },
    /// A key's first version could not be created.
    #[error("cannot create the first master-key version of key {key:?}: {source}")]
    InitKey {
        /// The key name.
        key: String,
        /// Why.
        #[source]
        source: Error,
    },
    /// A key's salt secret could not be read.
    #[error("cannot read the salt secret of key {key:?} (salt_secret_id): {source}")]
    Salt {
        /// The key name.
        key: String,
        /// Why.
        #[source]
        source: crate::backends::store::StoreError,
    },
    /// Neither the configuration nor the SDK's region chain gives a region.
    #[error(
        "no AWS region: neither aws.region nor the SDK's region chain (AWS_REGION, the profile) gives one"
    )]
    NoRegion,
    /// An ARN in the configuration names another region than the one in use.
    #[error("{id} is in {theirs}, but Envelope uses {region}")]
    WrongRegion {
        /// The ARN.
        id: String,
        /// The region it names.
        theirs: String,
        /// The region in use.
        region: String,
    },
    /// The TLS files are not usable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::edge::tls::TlsError),
    /// The policy file is not usable.
    #[error("{0}")]
    Policy(String),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(String),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A primitive gave a wrong answer in the power-on self-test.
    #[error(transparent)]
    SelfTest(#[from] self_test::SelfTestError),
    /// The process could not be hardened (e.g. `lock_memory` refused).
    #[error("{0}")]
    Hardening(String),
    /// The metrics listener could not be bound.
    #[error("cannot listen on {addr} for metrics")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}
