//! Data keys for callers that encrypt on their own side: a fresh key
//! wrapped under the current version with the caller's context bound, and
//! the unwrap of such a blob.

use std::sync::Arc;

use super::compromise::Use;
use super::error::Error;
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use crate::primitives::context::Context;
use crate::primitives::crypto::KeyBytes;
use crate::primitives::record::{self, Kind};
use crate::primitives::wrap;

impl NamedKey {
    /// A fresh data key for the caller, wrapped under the current version
    /// with `ctx` bound to the wrapping.
    pub async fn generate_data_key(
        &self,
        ctx: &Context,
    ) -> Result<(KeyBytes, Vec<u8>, Arc<MasterKey>), Error> {
        let ctx_enc = self.encode_context(ctx)?;
        let current = self.versions.current();
        self.check_use(current.version.as_str(), current.created, Use::Seal)?;
        let (plaintext, wrapped) = self
            .new_wrapped_key(&current, Kind::DataKey, Some(&ctx_enc), "client-data-key")
            .await?;
        let mut blob = Vec::with_capacity(record::header_len(&current.version));
        record::write_header(
            &mut blob,
            Kind::DataKey,
            &self.key_id,
            &current.version,
            &wrapped,
        );
        Ok((plaintext, blob, current))
    }

    /// Unwraps a blob from [`NamedKey::generate_data_key`] given the same context.
    pub async fn unwrap_data_key(
        &self,
        blob: &[u8],
        ctx: &Context,
    ) -> Result<(KeyBytes, Arc<MasterKey>), Error> {
        let ctx_enc = self.encode_context(ctx)?;
        let parsed = self.parse(blob, Kind::DataKey)?;
        let master = self.master_for(parsed.version_raw).await?;
        let compromised = self.check_use(master.version.as_str(), master.created, Use::Open)?;
        let key = wrap::unwrap(
            &master.kek,
            parsed.wrapped,
            &self.wrap_aad(&master, Kind::DataKey, Some(&ctx_enc)),
        )?;
        let used = self.usage.of(master.version.as_str());
        used.record(1, super::usage::now());
        if compromised {
            used.compromised(super::usage::Outcome::Decrypted, 1);
        }
        Ok((key, master))
    }
}
