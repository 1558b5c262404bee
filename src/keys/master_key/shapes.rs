//! The three shapes a master-key version's secret string comes in, how a
//! string is recognised as one of them, and what each yields: a KMS-wrapped
//! key, or a passphrase with its PBKDF2 salt and iteration count
//! (docs/FORMAT.md, "Master-key secret shapes").
//!
//! A string is recognised by its top-level members alone, with [`Members`]: a
//! typed probe that walks the whole JSON value (so a document fails it exactly
//! when it is not valid JSON) but keeps no part of it. Only then is the string
//! read again into the one shape it has. Secret members land in [`SecretText`],
//! which wipes its buffer on drop.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use super::{ALGORITHM, DEFAULT_PBKDF2_ITERATIONS, FORMAT, KdfParams, Refusal};

/// What a secret string yields once its shape has been read and checked.
pub(super) enum KeyMaterial {
    /// Envelope's own document: a master key KMS must unwrap.
    Wrapped(WrappedKey),
    /// A passphrase-style key (seeds 001 and 004), for PBKDF2.
    Passphrase(Passphrase),
}

/// A master key as KMS wrapped it, from [`EnvelopeDocument`].
pub(super) struct WrappedKey {
    /// The KMS key that wrapped it.
    pub(super) kms_key_id: String,
    /// The KMS ciphertext blob.
    pub(super) blob: Zeroizing<Vec<u8>>,
}

/// A passphrase-style key and what PBKDF2 stretches it with. The bounds on
/// the salt and count are checked where PBKDF2 runs, in `derive`.
pub(super) struct Passphrase {
    /// The key text as stored (not decoded): the PBKDF2 password.
    pub(super) password: SecretText,
    /// The salt's bytes as stored (not decoded).
    pub(super) salt: Zeroizing<Vec<u8>>,
    /// The PBKDF2 iteration count.
    pub(super) iterations: u32,
}

/// Reads a trimmed secret string in whichever shape it has.
pub(super) fn read(trimmed: &str, kdf: &KdfParams) -> Result<KeyMaterial, Refusal> {
    match kind(trimmed)? {
        Kind::Envelope => EnvelopeDocument::parse(trimmed)?
            .wrapped_key()
            .map(KeyMaterial::Wrapped),
        Kind::Passphrase => PassphraseDocument::parse(trimmed)?
            .passphrase(kdf)
            .map(KeyMaterial::Passphrase),
        Kind::PlainKey => plain_key(trimmed, kdf).map(KeyMaterial::Passphrase),
        Kind::Neither => Err(Refusal::Malformed(
            "JSON document is neither an Envelope master-key document (\"format\") nor a masterKey document"
                .into(),
        )),
    }
}

/// Which shape a trimmed secret string has, by its first byte and top-level members.
pub(super) enum Kind {
    /// A JSON object with a `format` member, whatever else it has or the member's value.
    Envelope,
    /// A JSON object with `masterKey` and no `format`.
    Passphrase,
    /// Text that does not open with `{`.
    PlainKey,
    /// A JSON object with neither member: refused.
    Neither,
}

/// Tells a trimmed secret string's shape; refuses an opening `{` that is not valid JSON.
pub(super) fn kind(trimmed: &str) -> Result<Kind, Refusal> {
    if !trimmed.starts_with('{') {
        return Ok(Kind::PlainKey);
    }
    let members: Members = serde_json::from_str(trimmed)
        .map_err(|e| Refusal::Malformed(format!("not valid JSON ({})", category(&e))))?;
    Ok(if members.format {
        Kind::Envelope
    } else if members.master_key {
        Kind::Passphrase
    } else {
        Kind::Neither
    })
}

/// Envelope's own document, the shape every version Envelope writes has:
/// `{"format":"envelope.master-key.v1","algorithm":"AES-256-GCM","kmsKeyId":…,"wrappedKey":<base64 KMS blob>}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct EnvelopeDocument {
    format: String,
    algorithm: String,
    kms_key_id: String,
    wrapped_key: SecretText,
}

impl EnvelopeDocument {
    /// A document for a blob that `kms_key_id` made.
    pub(super) fn new(kms_key_id: &str, blob: &[u8]) -> Self {
        Self {
            format: FORMAT.into(),
            algorithm: ALGORITHM.into(),
            kms_key_id: kms_key_id.into(),
            wrapped_key: SecretText(Zeroizing::new(B64.encode(blob))),
        }
    }

    fn parse(trimmed: &str) -> Result<Self, Refusal> {
        serde_json::from_str(trimmed).map_err(|e| {
            Refusal::Malformed(format!("Envelope master-key document: {}", category(&e)))
        })
    }

    fn wrapped_key(self) -> Result<WrappedKey, Refusal> {
        if self.format != FORMAT {
            return Err(Refusal::Malformed(format!(
                "unknown format, expected {FORMAT}"
            )));
        }
        if self.algorithm != ALGORITHM {
            return Err(Refusal::Malformed(format!(
                "unsupported algorithm, expected {ALGORITHM}"
            )));
        }
        let blob = B64
            .decode(self.wrapped_key.expose())
            .map_err(|_| Refusal::Malformed("wrappedKey is not base64".into()))?;
        Ok(WrappedKey {
            kms_key_id: self.kms_key_id,
            blob: Zeroizing::new(blob),
        })
    }
}

/// A passphrase document, as seed 001 (`../shared/seeds/001_…`, the
/// `mistersmith/app/encryption` secret) stores its encryption key:
/// `{"masterKey":<base64>,"algorithm":"AES-256-GCM","keyDerivation":"PBKDF2"}`,
/// here optionally with `salt` and `iterations`. Other members are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PassphraseDocument {
    master_key: SecretText,
    algorithm: String,
    key_derivation: String,
    salt: Option<SecretText>,
    iterations: Option<u32>,
}

impl PassphraseDocument {
    fn parse(trimmed: &str) -> Result<Self, Refusal> {
        serde_json::from_str(trimmed)
            .map_err(|e| Refusal::Malformed(format!("masterKey document: {}", category(&e))))
    }

    /// The key, with the document's salt and count, else the key's settings.
    fn passphrase(self, kdf: &KdfParams) -> Result<Passphrase, Refusal> {
        if self.algorithm != ALGORITHM {
            return Err(Refusal::Malformed(format!("algorithm must be {ALGORITHM}")));
        }
        if !self.key_derivation.eq_ignore_ascii_case("PBKDF2") {
            return Err(Refusal::Malformed("keyDerivation must be PBKDF2".into()));
        }
        check_base64_key("masterKey", self.master_key.expose())?;
        let salt = match (self.salt, &kdf.salt) {
            (Some(own), _) => own.into_bytes(),
            (None, Some(secret)) => secret.clone(),
            (None, None) => {
                return Err(Refusal::Malformed(
                    "a masterKey document needs a salt: a \"salt\" field, or salt_secret_id in the key's configuration"
                        .into(),
                ));
            }
        };
        Ok(Passphrase {
            password: self.master_key,
            salt,
            iterations: self
                .iterations
                .or(kdf.iterations)
                .unwrap_or(DEFAULT_PBKDF2_ITERATIONS),
        })
    }
}

/// A plain base64 key, the whole secret string, as seed 004
/// (`../shared/seeds/004_…`, the `email-gateway/encryption-key` secret)
/// stores it; its salt is a separate secret (`email-gateway/encryption-salt`),
/// configured as the key's `salt_secret_id`.
fn plain_key(trimmed: &str, kdf: &KdfParams) -> Result<Passphrase, Refusal> {
    check_base64_key("plain key secret", trimmed)?;
    let Some(salt) = &kdf.salt else {
        return Err(Refusal::Malformed(
            "a plain base64 key secret needs salt_secret_id in the key's configuration".into(),
        ));
    };
    Ok(Passphrase {
        password: SecretText(Zeroizing::new(trimmed.to_owned())),
        salt: salt.clone(),
        iterations: kdf.iterations.unwrap_or(DEFAULT_PBKDF2_ITERATIONS),
    })
}

/// Passphrase-style keys are used as stored (the base64 text itself is the
/// PBKDF2 password), but must look like a base64 key of at least 16 bytes.
fn check_base64_key(what: &str, text: &str) -> Result<(), Refusal> {
    let decoded = Zeroizing::new(
        B64.decode(text)
            .map_err(|_| Refusal::Malformed(format!("{what} is not base64")))?,
    );
    if decoded.len() < 16 {
        return Err(Refusal::Malformed(format!(
            "{what} decodes to {} bytes; at least 16 are required",
            decoded.len()
        )));
    }
    Ok(())
}

/// serde_json's error category, never its message: the message can quote input.
fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "missing, unknown or mistyped fields",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// Secret text from a document: held in a buffer wiped on drop, never printed.
pub(super) struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The text.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }

    /// The text's bytes, moved (not copied) into a wiped buffer.
    fn into_bytes(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut *self.0).into_bytes())
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Which of the members that decide the shape a JSON object has. A member
/// counts whatever its value, `null` included, and a repeated member is no
/// error. Every value is parsed as `serde_json::Value` would parse it (numbers
/// in range, escapes valid, nesting within the limit) but dropped unkept, so
/// the probe refuses exactly the documents that are not valid JSON.
/// (serde's `IgnoredAny` would not do: `Option<IgnoredAny>` takes `null` for
/// absent, and it skips numbers and escapes without checking them.)
#[derive(Default)]
struct Members {
    format: bool,
    master_key: bool,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Members::default();
        while let Some(name) = map.next_key::<Name>()? {
            map.next_value::<Checked>()?;
            match name {
                Name::Format => members.format = true,
                Name::MasterKey => members.master_key = true,
                Name::Other => {}
            }
        }
        Ok(members)
    }
}

/// A member name, looked at in place.
enum Name {
    Format,
    MasterKey,
    Other,
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(match name {
                    "format" => Name::Format,
                    "masterKey" => Name::MasterKey,
                    _ => Name::Other,
                })
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// Any JSON value, parsed in full and dropped: strings are looked at in place.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}
