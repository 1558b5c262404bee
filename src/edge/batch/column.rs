//! The column calls (EncryptColumn, DecryptColumn and their streams): a
//! column's outputs are a list of bytes and a map of errors by index, with
//! a token column per requested index.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{BatchCall, secret_bytes};
use crate::edge::gate::Done;
use crate::edge::status::item_error;
use crate::keys::column::{Rows, SealedColumn};
use crate::keys::index::{RecordTokens, TokenKeys};
use crate::keys::{Error, NamedKey};
use crate::pb;

/// A column's outputs in order (an empty one where an item failed) and its
/// errors by index.
/// A sealed column's records, its version, its errors and its audit summary.
pub(super) fn sealed_outputs(
    sealed: SealedColumn,
) -> (Vec<Bytes>, String, BTreeMap<u32, pb::ItemError>, Done) {
    let records = sealed.records;
    let (ciphertexts, errors) = column_outputs(sealed.results, |r| records.slice(r));
    let key_version = sealed
        .version
        .map(|m| m.version.as_str().to_owned())
        .unwrap_or_default();
    let done = Done {
        version: key_version.clone(),
        batch: Some((ciphertexts.len(), errors.len())),
        ..Done::default()
    };
    (ciphertexts, key_version, errors, done)
}

pub(super) fn column_outputs<T>(
    results: Vec<Result<T, Error>>,
    out: impl Fn(T) -> Bytes,
) -> (Vec<Bytes>, BTreeMap<u32, pb::ItemError>) {
    let mut outputs = Vec::with_capacity(results.len());
    let mut errors = BTreeMap::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(t) => outputs.push(out(t)),
            Err(e) => {
                outputs.push(Bytes::new());
                errors.insert(u32::try_from(i).unwrap_or(u32::MAX), item_error(e));
            }
        }
    }
    (outputs, errors)
}

impl BatchCall for pb::EncryptColumnRequest {
    type Response = pb::EncryptColumnResponse;

    fn len(&self) -> usize {
        self.plaintexts.len()
    }

    fn index_tokens(&self) -> usize {
        self.plaintexts.len() * self.indexes.len()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let rows = Rows {
            field: &self.row_field,
            values: &self.row_values,
        };
        // An unknown index fails the call before anything is sealed.
        for name in &self.indexes {
            key.index_spec(name)?;
        }
        let mut sealed = key
            .encrypt_column(&self.context, rows, &self.plaintexts)
            .await?;
        let index_tokens = self.column_tokens(&key, &mut sealed);
        let (ciphertexts, key_version, errors, done) = sealed_outputs(sealed);
        let resp = pb::EncryptColumnResponse {
            index_tokens,
            ciphertexts,
            key_version,
            errors,
        };
        Ok((resp, done))
    }
}

impl pb::EncryptColumnRequest {
    /// One token column per requested index, under the column's version;
    /// a value with no token fails its item (its record is dropped).
    fn column_tokens(
        &self,
        key: &NamedKey,
        sealed: &mut SealedColumn,
    ) -> BTreeMap<String, pb::TokenColumn> {
        let mut columns: BTreeMap<String, pb::TokenColumn> = BTreeMap::new();
        let Some(master) = sealed.version.clone() else {
            return columns;
        };
        if self.indexes.is_empty() {
            return columns;
        }
        let mut cache = TokenKeys::default();
        for (i, r) in sealed.results.iter_mut().enumerate() {
            let row = self.row_values.get(i).map(String::as_str);
            let scope = |e: &str| {
                if !self.row_field.is_empty() && e == self.row_field {
                    row
                } else {
                    self.context.get(e).map(String::as_str)
                }
            };
            let plaintext = self.plaintexts.get(i).map_or(&[][..], |p| p.as_ref());
            let tokens = match r {
                Ok(_) => key.write_tokens(&self.indexes, &master, scope, plaintext, &mut cache),
                Err(_) => Ok(RecordTokens::new()),
            };
            let mut tokens = tokens.unwrap_or_else(|e| {
                *r = Err(e);
                RecordTokens::new()
            });
            for name in &self.indexes {
                let t = tokens.remove(name).unwrap_or_default();
                columns.entry(name.clone()).or_default().tokens.push(t);
            }
        }
        columns
    }
}

impl BatchCall for pb::DecryptColumnRequest {
    type Response = pb::DecryptColumnResponse;

    fn len(&self) -> usize {
        self.ciphertexts.len()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let rows = Rows {
            field: &self.row_field,
            values: &self.row_values,
        };
        let mut opened = key
            .decrypt_column(&self.context, rows, &self.ciphertexts)
            .await?;
        let plain = secret_bytes(std::mem::take(&mut *opened.plaintexts));
        let (plaintexts, errors) = column_outputs(opened.results, |(r, _)| plain.slice(r));
        let done = Done {
            version: String::new(),
            batch: Some((plaintexts.len(), errors.len())),
            ..Done::default()
        }
        .flag(opened.compromised, crate::edge::gate::DECRYPTED);
        Ok((pb::DecryptColumnResponse { plaintexts, errors }, done))
    }
}

/// A column stream message: the column it wraps, answered as the unary call.
macro_rules! column_stream {
    ($($req:ty => $resp:ty;)*) => {$(
        impl BatchCall for $req {
            type Response = $resp;

            fn len(&self) -> usize {
                self.column.as_ref().map_or(0, BatchCall::len)
            }

            fn index_tokens(&self) -> usize {
                self.column.as_ref().map_or(0, BatchCall::index_tokens)
            }

            async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
                let column = self
                    .column
                    .ok_or(Error::Column("a stream message without a column"))?;
                let (column, done) = column.run(key).await?;
                Ok((Self::Response { column: Some(column) }, done))
            }
        }
    )*};
}

column_stream! {
    pb::EncryptColumnStreamRequest => pb::EncryptColumnStreamResponse;
    pb::DecryptColumnStreamRequest => pb::DecryptColumnStreamResponse;
}
