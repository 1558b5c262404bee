//! ReencryptBatch and ReencryptColumn: records opened and sealed again
//! under the current version, answered like RewrapBatch and EncryptColumn.

use std::sync::Arc;

use super::column::sealed_outputs;
use super::{BatchCall, Results};
use crate::edge::gate::{Done, REENCRYPTED};
use crate::keys::{Error, NamedKey};
use crate::pb;

impl BatchCall for pb::ReencryptBatchRequest {
    type Response = pb::ReencryptBatchResponse;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn index_tokens(&self) -> usize {
        self.items.iter().map(|i| i.indexes.len()).sum()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let (done, compromised) = key
            .reencrypt_many(&self.items, |i| (&i.ciphertext, &i.context, &i.indexes))
            .await;
        let mut out = Results::with_capacity(self.items.len());
        for r in done {
            out.push(r.map(|(record, master, tokens)| {
                (record, master.version.as_str().to_owned(), tokens)
            }));
        }
        let (results, done) = out.finish(true);
        let done = done.flag(compromised, REENCRYPTED);
        Ok((pb::ReencryptBatchResponse { results }, done))
    }
}

impl BatchCall for pb::ReencryptColumnRequest {
    type Response = pb::ReencryptColumnResponse;

    fn len(&self) -> usize {
        self.ciphertexts.len()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let rows = crate::keys::column::Rows {
            field: &self.row_field,
            values: &self.row_values,
        };
        let sealed = key
            .reencrypt_column(&self.context, rows, &self.ciphertexts)
            .await?;
        let compromised = sealed.compromised;
        let (ciphertexts, key_version, errors, done) = sealed_outputs(sealed);
        let done = done.flag(compromised, REENCRYPTED);
        let resp = pb::ReencryptColumnResponse {
            ciphertexts,
            key_version,
            errors,
        };
        Ok((resp, done))
    }
}
