//! Columns: many values under one shared context, each bound to its row
//! (`{row_field: row_value}` merged into the context). The shared context is
//! checked and encoded once per column; every record is an ordinary record,
//! so unary Decrypt opens it under the merged context, and a column of
//! unary records opens here.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::error::Error;
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use super::open::Opened;
use super::seal::SealBatch;
use crate::primitives::context::{ColumnContext, Context};
use crate::primitives::record::RECORD_OVERHEAD_UUID;

/// The rows of a column: the field that names each row in the context and
/// one value per item, or neither.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The context key of the row entry; empty for a column without rows.
    pub field: &'a str,
    /// One row value per item when `field` is set; empty otherwise.
    pub values: &'a [String],
}

impl<'a> Rows<'a> {
    /// Checks the rows against `items` and the shared context: the one
    /// check of a column before any item runs.
    fn context(
        &self,
        shared: &Context,
        items: usize,
        key: &NamedKey,
    ) -> Result<ColumnContext<'a>, Error> {
        if self.field.is_empty() {
            if !self.values.is_empty() {
                return Err(Error::Column("row_values given without row_field"));
            }
            return Ok(ColumnContext::new(shared, None, key.limits.context)?);
        }
        if self.values.len() != items {
            return Err(Error::Column(
                "row_values must have exactly one entry per item when row_field is set",
            ));
        }
        Ok(ColumnContext::new(
            shared,
            Some(self.field),
            key.limits.context,
        )?)
    }

    fn value(&self, i: usize) -> &str {
        self.values.get(i).map_or("", String::as_str)
    }
}

/// The records of [`NamedKey::encrypt_column`].
#[derive(Debug)]
pub struct SealedColumn {
    /// Every record, back to back.
    pub records: Bytes,
    /// Per item: its record's range in `records`, or why it failed.
    pub results: Vec<Result<Range<usize>, Error>>,
    /// The one master-key version every record names (none if no record
    /// was sealed).
    pub version: Option<Arc<MasterKey>>,
    /// Records opened under compromised versions to be sealed again here
    /// (re-encryption only).
    pub compromised: u64,
}

impl NamedKey {
    /// Seals `plaintexts` in order under `shared` merged with each row's
    /// entry, back to back into one buffer, all under one master-key
    /// version. A bad item (too large, a row value over the context limit)
    /// fails alone; rows that do not fit the items fail the column.
    pub async fn encrypt_column<P: AsRef<[u8]>>(
        &self,
        shared: &Context,
        rows: Rows<'_>,
        plaintexts: &[P],
    ) -> Result<SealedColumn, Error> {
        let column = rows.context(shared, plaintexts.len(), self)?;
        let capacity = plaintexts
            .iter()
            .map(|p| p.as_ref().len().min(self.limits.max_plaintext_bytes) + RECORD_OVERHEAD_UUID)
            .sum();
        let mut batch = SealBatch::pinned(self, capacity);
        let mut results = Vec::with_capacity(plaintexts.len());
        for (i, plaintext) in plaintexts.iter().enumerate() {
            let row = rows.value(i);
            let r = batch
                .seal_with(plaintext.as_ref(), |aad| {
                    Ok(column.encode_row_into(row, aad)?)
                })
                .await;
            results.push(r);
        }
        let version = batch.version().cloned();
        Ok(SealedColumn {
            records: Bytes::from(std::mem::take(&mut batch.out)),
            results,
            version,
            compromised: 0,
        })
    }

    /// Opens `records` in order under `shared` merged with each row's entry,
    /// into one buffer that is wiped when dropped.
    pub async fn decrypt_column(
        &self,
        shared: &Context,
        rows: Rows<'_>,
        records: &[Bytes],
    ) -> Result<Opened, Error> {
        self.open_column(super::compromise::Use::Open, shared, rows, records)
            .await
    }

    /// [`Self::decrypt_column`] for `usage`.
    pub(super) async fn open_column(
        &self,
        usage: super::compromise::Use,
        shared: &Context,
        rows: Rows<'_>,
        records: &[Bytes],
    ) -> Result<Opened, Error> {
        let column = rows.context(shared, records.len(), self)?;
        let opened = self
            .open_each(usage, records.iter().map(|r| r.as_ref()), |i, aad| {
                Ok(column.encode_row_into(rows.value(i), aad)?)
            })
            .await;
        Ok(opened)
    }
}
