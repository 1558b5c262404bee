//! The record format: a strict, total parser and the encoders.
//!
//! ```text
//! record (kind 0x01):
//!   0      1   format version (0x01)
//!   1      1   kind / algorithm (0x01: AES-256-GCM record, data key wrapped with AES-256-GCM)
//!   2      4   key id: SHA-256("envelope.v1.key-id" || 0x00 || key name)[0..4]
//!   6      1   version-id form: 0x00 UUID (16 bytes follow), 0x01 text (1-byte length n, n bytes)
//!   7    16|1+n master-key version id
//!   ..    60   wrapped data key: nonce(12) || AES-256-GCM(KEK, data key)(32) || tag(16)
//!   ..    12   record nonce
//!   ..     n   ciphertext
//!   ..    16   tag
//! data-key blob (kind 0x02, from GenerateDataKey): the same header up to and
//! including the wrapped data key, and nothing after it.
//! ```
//! See docs/FORMAT.md for the reasoning and the associated data.

use crate::primitives::crypto::{NONCE_BYTES, TAG_LEN};

/// The format version this build writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// Length of the key id.
pub const KEY_ID_LEN: usize = 4;
pub use super::wrap::WRAPPED_LEN;
/// Longest text version id.
pub const MAX_TEXT_VERSION: usize = 64;
/// Bytes a record adds to its plaintext when its version id is a UUID.
pub const RECORD_OVERHEAD_UUID: usize = 2 + KEY_ID_LEN + 17 + WRAPPED_LEN + NONCE_BYTES + TAG_LEN;

const FORM_UUID: u8 = 0x00;
const FORM_TEXT: u8 = 0x01;

/// What a byte string holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sealed record.
    Record = 0x01,
    /// A wrapped data key from GenerateDataKey.
    DataKey = 0x02,
}

/// Why bytes are not a valid record or data-key blob. Messages name the
/// field, never the bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input ended inside the named field.
    #[error("input is truncated in the {0} field")]
    Truncated(&'static str),
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A kind byte this build does not know, or the wrong kind for the call.
    #[error("unsupported or unexpected kind {0}")]
    UnexpectedKind(u8),
    /// The version-id field is malformed.
    #[error("malformed master-key version id field")]
    BadVersionId,
    /// Bytes after the end of a data-key blob.
    #[error("trailing bytes after the wrapped data key")]
    Trailing,
}

/// The 4-byte identity of a key name carried in every record.
pub fn key_id(name: &str) -> [u8; KEY_ID_LEN] {
    let h = crate::primitives::crypto::sha256(&[b"envelope.v1.key-id\0", name.as_bytes()]);
    [h[0], h[1], h[2], h[3]]
}

/// A master-key version id in its record encoding. Built once per version.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VersionId {
    text: String,
    raw: Box<[u8]>,
}

impl VersionId {
    /// Encodes a version id: canonical lowercase UUIDs take 17 bytes, other
    /// printable ASCII ids of 1 to 64 bytes take 2 + n.
    pub fn new(text: &str) -> Result<Self, FormatError> {
        if let Ok(u) = uuid::Uuid::try_parse(text)
            && u.hyphenated().to_string() == text
        {
            let mut raw = Vec::with_capacity(17);
            raw.push(FORM_UUID);
            raw.extend_from_slice(u.as_bytes());
            return Ok(Self {
                text: text.to_owned(),
                raw: raw.into(),
            });
        }
        let b = text.as_bytes();
        if b.is_empty() || b.len() > MAX_TEXT_VERSION || !b.iter().all(|c| c.is_ascii_graphic()) {
            return Err(FormatError::BadVersionId);
        }
        let mut raw = Vec::with_capacity(2 + b.len());
        raw.push(FORM_TEXT);
        raw.push(b.len() as u8);
        raw.extend_from_slice(b);
        Ok(Self {
            text: text.to_owned(),
            raw: raw.into(),
        })
    }

    /// Decodes the record encoding of a version id.
    pub fn from_raw(raw: &[u8]) -> Result<Self, FormatError> {
        let text = match raw {
            [FORM_UUID, rest @ ..] => {
                let bytes: [u8; 16] = rest.try_into().map_err(|_| FormatError::BadVersionId)?;
                uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
            }
            [FORM_TEXT, n, rest @ ..] if usize::from(*n) == rest.len() => std::str::from_utf8(rest)
                .map_err(|_| FormatError::BadVersionId)?
                .to_owned(),
            _ => return Err(FormatError::BadVersionId),
        };
        let v = Self::new(&text)?;
        // Only the canonical encoding of an id is accepted, so each id has one encoding.
        if *v.raw != *raw {
            return Err(FormatError::BadVersionId);
        }
        Ok(v)
    }

    /// The id as the secret store knows it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The id's record encoding.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl std::fmt::Debug for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A parsed header and the slices of the input it names.
pub struct Parsed<'a> {
    /// What the input holds.
    pub kind: Kind,
    /// The key-name identity.
    pub key_id: [u8; KEY_ID_LEN],
    /// The encoded version id (form byte onwards).
    pub version_raw: &'a [u8],
    /// The wrapped data key.
    pub wrapped: &'a [u8],
    /// Version id and wrapped key together: the data-key cache's lookup key.
    pub wrap_slot: &'a [u8],
    /// Everything before the record nonce: what a Rewrap replaces.
    pub header_len: usize,
    /// The record nonce (records only).
    pub nonce: [u8; NONCE_BYTES],
    /// Ciphertext without the tag (records only).
    pub ciphertext: &'a [u8],
    /// The tag (records only).
    pub tag: &'a [u8],
}

impl std::fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names the header fields; the wrapped key, ciphertext and tag stay out.
        f.debug_struct("Parsed")
            .field("kind", &self.kind)
            .field("version_raw_len", &self.version_raw.len())
            .field("header_len", &self.header_len)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
    if input.len() < n {
        return Err(FormatError::Truncated(field));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Whether `id` is a text version id in its canonical encoding: printable
/// ASCII, and not a canonical UUID (which takes the 16-byte form).
fn canonical_text_id(id: &[u8]) -> bool {
    if !id.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    match uuid::Uuid::try_parse_ascii(id) {
        Ok(u) => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            u.hyphenated().encode_lower(&mut buf).as_bytes() != id
        }
        Err(_) => true,
    }
}

/// Parses `input`, which must be of kind `expect`. Total: every input gives
/// a value or an error, never a panic.
pub fn parse(input: &[u8], expect: Kind) -> Result<Parsed<'_>, FormatError> {
    let mut rest = input;
    let version = take(&mut rest, 1, "format version")?;
    if version != [FORMAT_V1] {
        return Err(FormatError::UnsupportedVersion(
            version.first().copied().unwrap_or(0),
        ));
    }
    let kind = take(&mut rest, 1, "kind")?;
    let kind = match kind {
        [0x01] => Kind::Record,
        [0x02] => Kind::DataKey,
        [k] => return Err(FormatError::UnexpectedKind(*k)),
        _ => return Err(FormatError::Truncated("kind")),
    };
    if kind != expect {
        return Err(FormatError::UnexpectedKind(kind as u8));
    }
    let key_id: [u8; KEY_ID_LEN] = take(&mut rest, KEY_ID_LEN, "key id")?
        .try_into()
        .map_err(|_| FormatError::Truncated("key id"))?;
    let slot_start = input.len() - rest.len();
    let form = take(&mut rest, 1, "version id")?;
    let id_len = match form {
        [FORM_UUID] => 16,
        [FORM_TEXT] => {
            let n = take(&mut rest, 1, "version id")?;
            let n = usize::from(n.first().copied().unwrap_or(0));
            if n == 0 || n > MAX_TEXT_VERSION {
                return Err(FormatError::BadVersionId);
            }
            n
        }
        _ => return Err(FormatError::BadVersionId),
    };
    let id = take(&mut rest, id_len, "version id")?;
    // Only the one canonical encoding of a text id (what VersionId::from_raw
    // reads back), so every record accepted here names a readable version.
    if form == [FORM_TEXT] && !canonical_text_id(id) {
        return Err(FormatError::BadVersionId);
    }
    let version_end = input.len() - rest.len();
    let wrapped = take(&mut rest, WRAPPED_LEN, "wrapped data key")?;
    let header_len = input.len() - rest.len();
    let version_raw = input
        .get(slot_start..version_end)
        .ok_or(FormatError::BadVersionId)?;
    let wrap_slot = input
        .get(slot_start..header_len)
        .ok_or(FormatError::BadVersionId)?;
    let mut parsed = Parsed {
        kind,
        key_id,
        version_raw,
        wrapped,
        wrap_slot,
        header_len,
        nonce: [0; NONCE_BYTES],
        ciphertext: &[],
        tag: &[],
    };
    match kind {
        Kind::DataKey => {
            if !rest.is_empty() {
                return Err(FormatError::Trailing);
            }
        }
        Kind::Record => {
            parsed.nonce = take(&mut rest, NONCE_BYTES, "nonce")?
                .try_into()
                .map_err(|_| FormatError::Truncated("nonce"))?;
            if rest.len() < TAG_LEN {
                return Err(FormatError::Truncated("tag"));
            }
            let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
            parsed.ciphertext = ct;
            parsed.tag = tag;
        }
    }
    Ok(parsed)
}

/// Writes a header (everything up to and including the wrapped data key).
pub fn write_header(
    out: &mut Vec<u8>,
    kind: Kind,
    key_id: &[u8; KEY_ID_LEN],
    version: &VersionId,
    wrapped: &[u8],
) {
    out.push(FORMAT_V1);
    out.push(kind as u8);
    out.extend_from_slice(key_id);
    out.extend_from_slice(version.raw());
    out.extend_from_slice(wrapped);
}

/// Length of a header for `version`.
pub fn header_len(version: &VersionId) -> usize {
    2 + KEY_ID_LEN + version.raw().len() + WRAPPED_LEN
}

/// Associated data of a wrapped data key: binds the format, the kind, the key
/// name and the master-key version; data-key blobs also bind the caller's
/// context, records bind theirs in the payload instead.
pub fn wrap_aad(kind: Kind, key_name: &str, version: &[u8], context: Option<&[u8]>) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(40 + key_name.len() + version.len() + context.map_or(0, |c| c.len()));
    aad.extend_from_slice(b"envelope.v1/wrap\0");
    aad.push(FORMAT_V1);
    aad.push(kind as u8);
    push_name(&mut aad, key_name);
    aad.extend_from_slice(version);
    if let Some(c) = context {
        aad.extend_from_slice(c);
    }
    aad
}

/// Starts a payload's associated data: what a Rewrap leaves unchanged (format,
/// algorithm, key name). The caller appends the context encoding.
pub fn payload_aad_prefix(aad: &mut Vec<u8>, key_name: &str) {
    aad.extend_from_slice(b"envelope.v1/payload\0");
    aad.push(FORMAT_V1);
    aad.push(Kind::Record as u8);
    push_name(aad, key_name);
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample(pt_len: usize) -> Vec<u8> {
        let v = VersionId::new("6f1c3a2e-9b7d-4c1e-8f00-0123456789ab").unwrap();
        let mut out = Vec::new();
        write_header(
            &mut out,
            Kind::Record,
            &key_id("default"),
            &v,
            &[7u8; WRAPPED_LEN],
        );
        out.extend_from_slice(&[9u8; NONCE_BYTES]);
        out.extend(std::iter::repeat_n(1u8, pt_len));
        out.extend_from_slice(&[2u8; TAG_LEN]);
        out
    }

    #[test]
    fn overhead_is_111_bytes() {
        assert_eq!(sample(0).len(), RECORD_OVERHEAD_UUID);
        assert_eq!(RECORD_OVERHEAD_UUID, 111);
    }

    #[test]
    fn parses_what_it_writes() {
        let r = sample(5);
        let p = parse(&r, Kind::Record).unwrap();
        assert_eq!(p.key_id, key_id("default"));
        assert_eq!(
            VersionId::from_raw(p.version_raw).unwrap().as_str(),
            "6f1c3a2e-9b7d-4c1e-8f00-0123456789ab"
        );
        assert_eq!(p.ciphertext, &[1u8; 5]);
        assert_eq!(p.nonce, [9u8; NONCE_BYTES]);
        assert_eq!(p.header_len, 83);
        assert!(parse(&r, Kind::DataKey).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_or_shorter_body() {
        let r = sample(0);
        for n in 0..r.len() {
            assert!(parse(&r[..n], Kind::Record).is_err(), "prefix {n} parsed");
        }
        // FORMAT.md: the message names the field the input ends in.
        let id = 2 + KEY_ID_LEN;
        let wrapped = id + 1 + 16;
        let nonce = wrapped + WRAPPED_LEN;
        for (cut, field) in [
            (0, "format version"),
            (1, "kind"),
            (2, "key id"),
            (id, "version id"),
            (id + 8, "version id"),
            (wrapped, "wrapped data key"),
            (nonce, "nonce"),
            (nonce + NONCE_BYTES + TAG_LEN - 1, "tag"),
        ] {
            let e = parse(&r[..cut], Kind::Record).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("input is truncated in the {field} field"),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn text_and_uuid_version_ids_round_trip_canonically() {
        for t in ["AWSCURRENT-token-0001", "x", &"a".repeat(64)] {
            let v = VersionId::new(t).unwrap();
            assert_eq!(VersionId::from_raw(v.raw()).unwrap().as_str(), t);
        }
        assert!(VersionId::new("").is_err());
        assert!(VersionId::new(&"a".repeat(65)).is_err());
        assert!(VersionId::new("has space").is_err());
        // An uppercase UUID is kept as text so that it round-trips exactly.
        let up = "6F1C3A2E-9B7D-4C1E-8F00-0123456789AB";
        assert_eq!(VersionId::new(up).unwrap().raw()[0], FORM_TEXT);
        // A text-form encoding of a lowercase UUID is not canonical.
        let lower = "6f1c3a2e-9b7d-4c1e-8f00-0123456789ab";
        let mut raw = vec![FORM_TEXT, 36];
        raw.extend_from_slice(lower.as_bytes());
        assert!(VersionId::from_raw(&raw).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes, Kind::Record);
            let _ = parse(&bytes, Kind::DataKey);
        }
    }
}
