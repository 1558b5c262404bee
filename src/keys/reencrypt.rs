//! Re-encryption: each record opened under its context and its plaintext
//! sealed again under the current version, with a data key made under that
//! version (rewrapping keeps the old data key, which a compromised version
//! can unwrap from any copy of the record). The plaintext stays in a buffer
//! that is wiped when the call ends.

use std::sync::Arc;

use bytes::Bytes;

use super::column::{Rows, SealedColumn};
use super::compromise::Use;
use super::error::Error;
use super::index::{RecordTokens, TokenKeys};
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use crate::primitives::context::Context;

/// A re-encrypted record: the new record, its version, its index tokens.
pub type Reencrypted = (Bytes, Arc<MasterKey>, RecordTokens);

impl NamedKey {
    /// Re-encrypts each item's record (`get` gives the record, its context
    /// and the indexes whose tokens to return), in order; one failing item
    /// never fails the others. Also returns how many records were under a
    /// compromised version.
    pub async fn reencrypt_many<T>(
        &self,
        items: &[T],
        get: impl Fn(&T) -> (&[u8], &Context, &[String]),
    ) -> (Vec<Result<Reencrypted, Error>>, u64) {
        // Refused before anything is opened (or counted as re-encrypted)
        // when nothing can be sealed now: a compromised AWSCURRENT.
        if self.check_sealable().is_err() {
            let refused = |_: &T| match self.check_sealable() {
                Err(e) => Err(e),
                Ok(()) => Err(Error::Internal("sealable")),
            };
            return (items.iter().map(refused).collect(), 0);
        }
        let opened = self
            .open_many(Use::Reencrypt, items, |t| {
                let (record, ctx, _) = get(t);
                (record, ctx)
            })
            .await;
        // The items that opened, with their plaintexts in the wiped buffer.
        let compromised = opened.compromised;
        let mut to_seal: Vec<(&[u8], &Context)> = Vec::new();
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(items.len());
        let mut results: Vec<Result<Reencrypted, Error>> = Vec::with_capacity(items.len());
        for (item, r) in items.iter().zip(opened.results) {
            match r.and_then(|(range, _)| {
                opened
                    .plaintexts
                    .get(range)
                    .ok_or(Error::Internal("plaintext range"))
            }) {
                Ok(plaintext) => {
                    slots.push(Some(to_seal.len()));
                    to_seal.push((plaintext, get(item).1));
                    results.push(Err(Error::Internal("not sealed")));
                }
                Err(e) => {
                    slots.push(None);
                    results.push(Err(e));
                }
            }
        }
        let sealed = self.encrypt_many(&to_seal, |(p, c)| (p, c)).await;
        let mut cache = TokenKeys::default();
        for ((item, slot), out) in items.iter().zip(slots).zip(results.iter_mut()) {
            let Some(i) = slot else { continue };
            let (Some(r), Some((plaintext, ctx))) = (sealed.results.get(i), to_seal.get(i)) else {
                continue;
            };
            *out = match r {
                Ok((range, v)) => sealed
                    .versions
                    .get(*v)
                    .cloned()
                    .ok_or(Error::Internal("batch version"))
                    .and_then(|master| {
                        let indexes = get(item).2;
                        let tokens =
                            self.context_tokens(indexes, &master, ctx, plaintext, &mut cache)?;
                        Ok((sealed.records.slice(range.clone()), master, tokens))
                    }),
                Err(_) => Err(Error::Internal("sealing failed after opening")),
            };
        }
        (results, compromised)
    }

    /// Re-encrypts a column: opened under `shared` merged with each row's
    /// entry, sealed again under one current version with the same rows.
    pub async fn reencrypt_column(
        &self,
        shared: &Context,
        rows: Rows<'_>,
        records: &[Bytes],
    ) -> Result<SealedColumn, Error> {
        self.check_sealable()?;
        let opened = self
            .open_column(Use::Reencrypt, shared, rows, records)
            .await?;
        let compromised = opened.compromised;
        let mut plaintexts: Vec<&[u8]> = Vec::new();
        let mut row_values: Vec<String> = Vec::new();
        let mut slots: Vec<Result<usize, Error>> = Vec::with_capacity(records.len());
        for (i, r) in opened.results.into_iter().enumerate() {
            match r.and_then(|(range, _)| {
                opened
                    .plaintexts
                    .get(range)
                    .ok_or(Error::Internal("plaintext range"))
            }) {
                Ok(p) => {
                    slots.push(Ok(plaintexts.len()));
                    plaintexts.push(p);
                    if !rows.field.is_empty() {
                        row_values.push(rows.values.get(i).cloned().unwrap_or_default());
                    }
                }
                Err(e) => slots.push(Err(e)),
            }
        }
        let rows = Rows {
            field: rows.field,
            values: &row_values,
        };
        let mut sealed = self.encrypt_column(shared, rows, &plaintexts).await?;
        sealed.compromised = compromised;
        let mut sealed_results = std::mem::take(&mut sealed.results).into_iter();
        sealed.results = slots
            .into_iter()
            .map(|s| match s {
                Ok(_) => sealed_results
                    .next()
                    .unwrap_or(Err(Error::Internal("column result"))),
                Err(e) => Err(e),
            })
            .collect();
        Ok(sealed)
    }
}
