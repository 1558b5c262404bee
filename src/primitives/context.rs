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
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
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
    }

    proptest! {
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
