//! What operators see and rely on, beside the request path: metrics, the
//! health endpoints with the one readiness rule, metered backends, and
//! process hardening.
//!
//! - [`metrics`]: the Prometheus registry and the families every layer
//!   above records into.
//! - [`metered`]: secret-store and KMS wrappers that time and count every
//!   backend call.
//! - [`hardening`]: no core dumps, not dumpable, memory locked.
//!
//! Imports: [`crate::keys`], [`crate::backends`], [`crate::primitives`].

pub mod hardening;
pub mod metered;
pub mod metrics;
