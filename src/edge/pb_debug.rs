//! Redacted `Debug` for the generated messages that carry plaintext or key
//! bytes (build.rs tells prost not to derive theirs): lengths and context
//! keys are shown, bytes and context values never.

use std::collections::BTreeMap;
use std::fmt;

use crate::pb;

struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[REDACTED {} bytes]", self.0)
    }
}

struct ContextKeys<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for ContextKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[REDACTED]")))
            .finish()
    }
}

impl fmt::Debug for pb::EncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("key", &self.key)
            .field("plaintext", &Redacted(self.plaintext.len()))
            .field("context", &ContextKeys(&self.context))
            .field("indexes", &self.indexes)
            .finish()
    }
}

impl fmt::Debug for pb::EncryptItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptItem")
            .field("plaintext", &Redacted(self.plaintext.len()))
            .field("context", &ContextKeys(&self.context))
            .finish()
    }
}

/// The batch messages and their stream twins: the same fields.
macro_rules! items_debug {
    ($($t:ty => $name:literal, $field:ident;)*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                items_debug!(@struct self, f, $name, $field)
            }
        }
    )*};
    (@struct $s:ident, $f:ident, $name:literal, items) => {
        $f.debug_struct($name).field("key", &$s.key).field("items", &$s.items).finish()
    };
    (@struct $s:ident, $f:ident, $name:literal, results) => {
        $f.debug_struct($name).field("results", &$s.results).finish()
    };
}

items_debug! {
    pb::EncryptBatchRequest => "EncryptBatchRequest", items;
    pb::EncryptStreamRequest => "EncryptStreamRequest", items;
    pb::DecryptBatchResponse => "DecryptBatchResponse", results;
    pb::DecryptStreamResponse => "DecryptStreamResponse", results;
}

impl fmt::Debug for pb::DecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("plaintext", &Redacted(self.plaintext.len()))
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl fmt::Debug for pb::decrypt_result::Result {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plaintext(p) => f
                .debug_tuple("Plaintext")
                .field(&Redacted(p.len()))
                .finish(),
            Self::Error(e) => f.debug_tuple("Error").field(e).finish(),
        }
    }
}

impl fmt::Debug for pb::DecryptResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResult")
            .field("result", &self.result)
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl fmt::Debug for pb::GenerateDataKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateDataKeyResponse")
            .field("plaintext_key", &Redacted(self.plaintext_key.len()))
            .field("wrapped_key", &Redacted(self.wrapped_key.len()))
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl fmt::Debug for pb::UnwrapDataKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapDataKeyResponse")
            .field("plaintext_key", &Redacted(self.plaintext_key.len()))
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// A list of secret values: how many, and their total length.
struct RedactedList(usize, usize);

impl RedactedList {
    fn of<T: AsRef<[u8]>>(items: &[T]) -> Self {
        Self(items.len(), items.iter().map(|i| i.as_ref().len()).sum())
    }
}

impl fmt::Debug for RedactedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[REDACTED {} items, {} bytes]", self.0, self.1)
    }
}

impl fmt::Debug for pb::EncryptColumnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptColumnRequest")
            .field("key", &self.key)
            .field("context", &ContextKeys(&self.context))
            .field("plaintexts", &RedactedList::of(&self.plaintexts))
            .field("row_field", &self.row_field)
            .field("row_values", &RedactedList::of(&self.row_values))
            .finish()
    }
}

impl fmt::Debug for pb::DecryptColumnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptColumnRequest")
            .field("key", &self.key)
            .field("context", &ContextKeys(&self.context))
            .field("ciphertexts", &RedactedList::of(&self.ciphertexts))
            .field("row_field", &self.row_field)
            .field("row_values", &RedactedList::of(&self.row_values))
            .finish()
    }
}

impl fmt::Debug for pb::DecryptColumnResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptColumnResponse")
            .field("plaintexts", &RedactedList::of(&self.plaintexts))
            .field("errors", &self.errors)
            .finish()
    }
}

impl fmt::Debug for pb::EncryptColumnStreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptColumnStreamRequest")
            .field("column", &self.column)
            .finish()
    }
}

impl fmt::Debug for pb::DecryptColumnStreamResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptColumnStreamResponse")
            .field("column", &self.column)
            .finish()
    }
}

impl fmt::Debug for pb::ComputeIndexRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputeIndexRequest")
            .field("key", &self.key)
            .field("index", &self.index)
            .field("values", &RedactedList::of(&self.values))
            .field("context", &ContextKeys(&self.context))
            .finish()
    }
}

impl fmt::Debug for pb::IndexToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexToken")
            .field("key_version", &self.key_version)
            .field("token", &Redacted(self.token.len()))
            .finish()
    }
}

impl fmt::Debug for pb::IndexTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexTokens")
            .field("tokens", &self.tokens)
            .field("error", &self.error)
            .finish()
    }
}

#[cfg(test)]
mod tests;
