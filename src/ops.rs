//! What operators see and rely on, beside the request path: metrics, the
//! health endpoints with the one readiness rule, metered backends, and
//! process hardening.
//!
//! - [`metrics`]: the Prometheus registry and the families every layer
//!   above records into.
//! - [`health`]: `/metrics`, `/healthz`, `/readyz` and the readiness rule.
//! - [`metered`]: secret-store and KMS wrappers that time and count every
//!   backend call.
//! - [`hardening`]: no core dumps, not dumpable, memory locked.
//!
//! Imports: [`crate::keys`], [`crate::backends`], [`crate::primitives`].

pub mod hardening;
pub mod health;
pub mod metered;
pub mod metrics;
