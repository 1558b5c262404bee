//! The gRPC edge: everything between a caller's bytes and a key operation.
//!
//! - [`gate`]: what every call passes through (identity, authorization,
//!   the key lookup, metrics, the audit line, the request id).
//! - [`envelope_service`], [`admin_service`]: the two gRPC services.
//! - [`status`]: the one place errors become gRPC status codes.
//! - [`authz`]: the per-key policy; [`tls`]: rustls with client
//!   certificates and the caller's identity; [`audit`]: the audit log;
//!   [`index_quota`]: the per-caller quota on blind-index tokens.
//! - Before authorization, everything a peer can make the server hold is
//!   bounded ([`limits`]): connections ([`listener`]), request bytes
//!   ([`budget`]), streams ([`stream_pool`]); and a caller with no grant for
//!   a method is refused from its headers ([`early`]).
//!
//! Imports: [`crate::ops`], [`crate::keys`], [`crate::backends`],
//! [`crate::primitives`] and the generated [`crate::pb`].

pub mod admin_service;
pub mod audit;
pub mod authz;
mod batch;
pub mod budget;
pub mod early;
pub mod envelope_service;
pub mod gate;
pub mod index_quota;
pub mod limits;
pub mod listener;
mod pb_debug;
pub mod request_id;
pub mod status;
pub mod stream_pool;
pub mod subject;
pub mod tls;
