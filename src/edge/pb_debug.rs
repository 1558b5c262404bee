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

impl fmt::Debug for pb::EncryptBatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptBatchRequest")
            .field("key", &self.key)
            .field("items", &self.items)
            .finish()
    }
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

impl fmt::Debug for pb::DecryptBatchResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptBatchResponse")
            .field("results", &self.results)
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::pb;

    #[test]
    fn secret_bearing_messages_print_redacted() {
        let mut ctx = std::collections::BTreeMap::new();
        ctx.insert("table".to_owned(), "CANARY-ctx".to_owned());
        let out = format!(
            "{:?} {:?} {:?} {:?}",
            pb::EncryptRequest {
                key: "k".into(),
                plaintext: Bytes::from_static(b"CANARY-pt"),
                context: ctx.clone()
            },
            pb::DecryptBatchResponse {
                results: vec![pb::DecryptResult {
                    result: Some(pb::decrypt_result::Result::Plaintext(Bytes::from_static(
                        b"CANARY-pt"
                    ))),
                    key_version: "v".into(),
                }],
            },
            pb::GenerateDataKeyResponse {
                plaintext_key: Bytes::from_static(b"CANARY-key"),
                wrapped_key: Bytes::new(),
                key_version: "v".into()
            },
            pb::DecryptResponse {
                plaintext: Bytes::from_static(b"CANARY-pt"),
                key_version: "v".into()
            },
        );
        assert!(!out.contains("CANARY"), "{out}");
        assert!(
            out.contains("REDACTED 9 bytes") && out.contains("table"),
            "{out}"
        );
    }
}
