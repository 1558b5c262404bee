//! The encryption context: validation against limits and the canonical,
//! unambiguous byte encoding bound into a record's associated data.
//!
//! Encoding: `u32 count`, then per entry in byte-wise key order
//! `u32 key_len, key, u32 value_len, value` (big-endian lengths). Length
//! prefixes make it injective: no two different maps encode alike, whatever
//! bytes their keys and values hold. Maps arrive as `BTreeMap`, so the order
//! is already canonical and no sort happens per request.

use std::collections::BTreeMap;

/// An encryption context as the API carries it: entries in key order.
pub type Context = BTreeMap<String, String>;

/// Limits on a context, checked before anything is encoded.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    /// Most entries in one context.
    pub max_entries: usize,
    /// Most bytes of keys and values together.
    pub max_bytes: usize,
}

impl Default for ContextLimits {
    fn default() -> Self {
        Self {
            max_entries: 64,
            max_bytes: 8 * 1024,
        }
    }
}

/// Why a context was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// More entries than allowed.
    #[error("encryption context has {got} entries; the limit is {max}")]
    TooManyEntries {
        /// Entries given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// More key and value bytes than allowed.
    #[error("encryption context holds {got} bytes; the limit is {max}")]
    TooLarge {
        /// Bytes given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An entry with an empty key.
    #[error("encryption context has an entry with an empty key")]
    EmptyKey,
    /// A column's row field that the shared context already has.
    #[error("row_field {0:?} is already a key of the context")]
    RowFieldInContext(String),
}

/// Checks `ctx` against `limits` and returns its encoded length.
pub fn validate(
    ctx: &BTreeMap<String, String>,
    limits: ContextLimits,
) -> Result<usize, ContextError> {
    if ctx.len() > limits.max_entries {
        return Err(ContextError::TooManyEntries {
            got: ctx.len(),
            max: limits.max_entries,
        });
    }
    let mut bytes = 0usize;
    for (k, v) in ctx {
        if k.is_empty() {
            return Err(ContextError::EmptyKey);
        }
        bytes = bytes.saturating_add(k.len()).saturating_add(v.len());
    }
    if bytes > limits.max_bytes {
        return Err(ContextError::TooLarge {
            got: bytes,
            max: limits.max_bytes,
        });
    }
    Ok(4 + ctx.len() * 8 + bytes)
}

/// Appends the canonical encoding of `ctx` to `out`. Lengths are `u32`, and
/// request messages are far below 4 GiB, so every length fits its prefix.
pub fn encode_into(ctx: &BTreeMap<String, String>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
    for (k, v) in ctx {
        entry(out, k, v);
    }
}

/// The contexts of a column: one shared context, plus `{field: value}` per
/// row when a row field is set. The shared entries are checked and encoded
/// once; each row's encoding is the shared entries before `field`, the row
/// entry, and those after it, which is byte for byte [`encode_into`] of the
/// merged map.
#[derive(Debug)]
pub struct ColumnContext<'a> {
    /// The entry count and the shared entries that sort before the field
    /// (all of them without one).
    before: Vec<u8>,
    /// The shared entries that sort after the field.
    after: Vec<u8>,
    field: Option<&'a str>,
    /// Key and value bytes of the shared entries and the field name.
    bytes: usize,
    max_bytes: usize,
}

impl<'a> ColumnContext<'a> {
    /// Checks `shared` plus the row field against `limits` (its values are
    /// checked per row) and encodes the shared entries.
    pub fn new(
        shared: &BTreeMap<String, String>,
        field: Option<&'a str>,
        limits: ContextLimits,
    ) -> Result<Self, ContextError> {
        let merged = shared.len() + usize::from(field.is_some());
        if merged > limits.max_entries {
            return Err(ContextError::TooManyEntries {
                got: merged,
                max: limits.max_entries,
            });
        }
        let mut bytes = 0usize;
        for (k, v) in shared {
            if k.is_empty() {
                return Err(ContextError::EmptyKey);
            }
            bytes = bytes.saturating_add(k.len()).saturating_add(v.len());
        }
        if let Some(f) = field {
            if shared.contains_key(f) {
                return Err(ContextError::RowFieldInContext(f.to_owned()));
            }
            bytes = bytes.saturating_add(f.len());
        }
        if bytes > limits.max_bytes {
            return Err(ContextError::TooLarge {
                got: bytes,
                max: limits.max_bytes,
            });
        }
        let mut before = Vec::with_capacity(4 + shared.len() * 8 + bytes);
        let mut after = Vec::new();
        before.extend_from_slice(&(merged as u32).to_be_bytes());
        for (k, v) in shared {
            let out = match field {
                Some(f) if k.as_str() > f => &mut after,
                _ => &mut before,
            };
            entry(out, k, v);
        }
        Ok(Self {
            before,
            after,
            field,
            bytes,
            max_bytes: limits.max_bytes,
        })
    }

    /// Appends the encoding of the merged context of the row whose value
    /// is `value` (ignored without a row field).
    pub fn encode_row_into(&self, value: &str, out: &mut Vec<u8>) -> Result<(), ContextError> {
        out.extend_from_slice(&self.before);
        if let Some(f) = self.field {
            let got = self.bytes.saturating_add(value.len());
            if got > self.max_bytes {
                return Err(ContextError::TooLarge {
                    got,
                    max: self.max_bytes,
                });
            }
            entry(out, f, value);
            out.extend_from_slice(&self.after);
        }
        Ok(())
    }
}

fn entry(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(pairs: &[(&str, &str)]) -> Vec<u8> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out = Vec::new();
        encode_into(&m, &mut out);
        assert_eq!(out.len(), validate(&m, ContextLimits::default()).unwrap());
        out
    }

    /// FORMAT.md's two examples, byte for byte.
    #[test]
    fn the_documented_examples_encode_as_shown() {
        assert_eq!(enc(&[]), [0, 0, 0, 0]);
        let mut want = vec![0, 0, 0, 2, 0, 0, 0, 6];
        want.extend_from_slice(b"column");
        want.extend_from_slice(&[0, 0, 0, 3]);
        want.extend_from_slice(b"cpf");
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"table");
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"users");
        // Given out of order: the encoding sorts the keys.
        let got = enc(&[("table", "users"), ("column", "cpf")]);
        assert_eq!(got, want);
        assert_eq!(got.len(), 39);
    }

    #[test]
    fn encoding_is_unambiguous_for_shifted_boundaries() {
        assert_ne!(enc(&[("ab", "c")]), enc(&[("a", "bc")]));
        assert_ne!(
            enc(&[("a", "b"), ("c", "d")]),
            enc(&[("a", "b\0\0\0\u{1}c\0\0\0\u{1}d")])
        );
        assert_ne!(enc(&[]), enc(&[("a", "")]));
    }

    #[test]
    fn limits_are_enforced() {
        let mut m = BTreeMap::new();
        m.insert(String::new(), "x".to_string());
        assert_eq!(
            validate(&m, ContextLimits::default()),
            Err(ContextError::EmptyKey)
        );
        let big: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            validate(&big, ContextLimits::default()),
            Err(ContextError::TooManyEntries { got: 65, max: 64 })
        ));
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "v".repeat(8 * 1024));
        assert!(matches!(
            validate(&m, ContextLimits::default()),
            Err(ContextError::TooLarge { .. })
        ));
        // At each limit, and an empty value: taken.
        let mut at: BTreeMap<String, String> = (0..63)
            .map(|i| (format!("k{i:02}"), String::new()))
            .collect();
        at.insert("z".into(), "v".repeat(8 * 1024 - 63 * 3 - 1));
        assert!(validate(&at, ContextLimits::default()).is_ok());
    }

    #[test]
    fn column_limits_count_the_row_entry() {
        let limits = ContextLimits {
            max_entries: 2,
            max_bytes: 10,
        };
        let shared: BTreeMap<String, String> = [("t".to_owned(), "u".to_owned())].into();
        let col = ColumnContext::new(&shared, Some("row"), limits).unwrap();
        let mut out = Vec::new();
        // 2 + 3 + 5 = 10 bytes: at the limit; one more is over.
        col.encode_row_into("12345", &mut out).unwrap();
        assert_eq!(
            col.encode_row_into("123456", &mut out),
            Err(ContextError::TooLarge { got: 11, max: 10 })
        );
        assert_eq!(
            ColumnContext::new(&shared, Some("t"), limits).unwrap_err(),
            ContextError::RowFieldInContext("t".into())
        );
        let two: BTreeMap<String, String> = [("a", ""), ("b", "")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        assert!(ColumnContext::new(&two, None, limits).is_ok());
        assert_eq!(
            ColumnContext::new(&two, Some("c"), limits).unwrap_err(),
            ContextError::TooManyEntries { got: 3, max: 2 }
        );
    }

    proptest! {
        /// A row's encoding is the merged map's canonical encoding, wherever
        /// the row field sorts among the shared keys.
        #[test]
        fn a_column_row_encodes_as_its_merged_context(
            shared in proptest::collection::btree_map(".{1,6}", ".{0,6}", 0..6),
            field in ".{1,6}",
            value in ".{0,6}",
        ) {
            prop_assume!(!shared.contains_key(&field));
            let col = ColumnContext::new(&shared, Some(&field), ContextLimits::default()).unwrap();
            let mut got = Vec::new();
            col.encode_row_into(&value, &mut got).unwrap();
            let mut merged = shared.clone();
            merged.insert(field.clone(), value.clone());
            let mut want = Vec::new();
            encode_into(&merged, &mut want);
            prop_assert_eq!(got, want);
            // Without a row field, every row is the shared context itself.
            let col = ColumnContext::new(&shared, None, ContextLimits::default()).unwrap();
            let mut got = Vec::new();
            col.encode_row_into("ignored", &mut got).unwrap();
            let mut want = Vec::new();
            encode_into(&shared, &mut want);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn different_maps_encode_differently(
            a in proptest::collection::btree_map(".{1,6}", ".{0,6}", 0..5),
            b in proptest::collection::btree_map(".{1,6}", ".{0,6}", 0..5),
        ) {
            let mut ea = Vec::new();
            let mut eb = Vec::new();
            encode_into(&a, &mut ea);
            encode_into(&b, &mut eb);
            prop_assert_eq!(a == b, ea == eb);
        }
    }
}
