//! Blind-index tokens: a value's normalized form, HMAC-SHA256 under an
//! index key, truncated to the index's bits. An index key is derived (HKDF)
//! from a master-key version's index root, the key name, the index's name
//! and settings, and the values of its scope entries, so a changed setting,
//! another tenant or another version gives unrelated tokens. See
//! docs/SEARCH.md for what tokens reveal.

use unicode_normalization::UnicodeNormalization;

use super::crypto::{CryptoError, KeyBytes, MacKey, hkdf_sha256};

/// How a value is normalized before it is tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// The bytes as given (binary values allowed).
    None,
    /// NFC, then leading and trailing white space removed.
    Trim,
    /// NFC, then Unicode default case folding.
    Lowercase,
    /// NFC, trimmed, then case folded.
    Email,
    /// NFC, then only the ASCII digits 0–9 kept.
    Digits,
    /// NFC, case folded, then only 0–9 and A–Z kept (letters upper-cased):
    /// Brazil's alphanumeric CNPJ.
    Alnum,
}

impl Normalize {
    /// The setting's name, as configured and as bound into the index key.
    pub fn as_str(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Trim => "trim",
            Normalize::Lowercase => "lowercase",
            Normalize::Email => "email",
            Normalize::Digits => "digits",
            Normalize::Alnum => "alnum",
        }
    }
}

/// Shortest and longest token, in bits.
pub const MIN_BITS: u16 = 8;
/// See [`MIN_BITS`].
pub const MAX_BITS: u16 = 256;

/// One index of a key name: its name and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index name, unique per key name.
    pub name: String,
    /// The normalization.
    pub normalize: Normalize,
    /// Token length in bits, [`MIN_BITS`] to [`MAX_BITS`].
    pub bits: u16,
    /// Context entries whose values are mixed into the index key.
    pub scope: Vec<String>,
}

/// Why a value gets no token. Names the problem, never the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// A normalization other than `none` needs UTF-8 text.
    #[error("the value is not UTF-8 text, which normalize = {0:?} needs")]
    NotText(&'static str),
    /// Nothing is left after normalization.
    #[error("the value normalizes to nothing under normalize = {0:?}")]
    Empty(&'static str),
}

/// `value` normalized by `mode` into `out` (cleared first).
pub fn normalize(mode: Normalize, value: &[u8], out: &mut Vec<u8>) -> Result<(), IndexError> {
    out.clear();
    if mode == Normalize::None {
        out.extend_from_slice(value);
    } else if value.is_ascii() {
        // ASCII is already NFC, and its case folding is ASCII lowercasing:
        // the common case, without allocating.
        ascii(mode, value, out);
    } else {
        let text = std::str::from_utf8(value).map_err(|_| IndexError::NotText(mode.as_str()))?;
        let nfc: String = text.nfc().collect();
        let folded = |s: &str| caseless::default_case_fold_str(s);
        let normalized = match mode {
            Normalize::Trim => nfc.trim().to_owned(),
            Normalize::Lowercase => folded(&nfc),
            Normalize::Email => folded(nfc.trim()),
            Normalize::Digits => nfc.chars().filter(char::is_ascii_digit).collect(),
            Normalize::Alnum => folded(&nfc)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            Normalize::None => String::new(),
        };
        out.extend_from_slice(normalized.as_bytes());
    }
    if out.is_empty() {
        return Err(IndexError::Empty(mode.as_str()));
    }
    Ok(())
}

/// [`normalize`] of an ASCII value.
fn ascii(mode: Normalize, value: &[u8], out: &mut Vec<u8>) {
    // What `str::trim` removes among ASCII (Unicode White_Space, which,
    // unlike `u8::is_ascii_whitespace`, includes the vertical tab).
    let space = |b: &u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let start = value.iter().position(|b| !space(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |e| e + 1);
    let trimmed = value.get(start..end).unwrap_or_default();
    match mode {
        Normalize::None => out.extend_from_slice(value),
        Normalize::Trim => out.extend_from_slice(trimmed),
        Normalize::Lowercase => out.extend(value.iter().map(u8::to_ascii_lowercase)),
        Normalize::Email => out.extend(trimmed.iter().map(u8::to_ascii_lowercase)),
        Normalize::Digits => out.extend(value.iter().copied().filter(u8::is_ascii_digit)),
        Normalize::Alnum => out.extend(
            value
                .iter()
                .filter(|b| b.is_ascii_alphanumeric())
                .map(u8::to_ascii_uppercase),
        ),
    }
}

/// The index root of a master-key version: HKDF of the version's secret
/// input under a label of its own (never the KEK).
pub const ROOT_LABEL: &[u8] = b"envelope.v1/index-root";

/// The HMAC key of `spec` on key name `key_name` under a version's index
/// `root`, for the scope entries' `scope_values` (in `spec.scope` order).
/// Every input is length-prefixed, so no two settings encode alike.
pub fn index_key(
    root: &KeyBytes,
    key_name: &str,
    spec: &IndexSpec,
    scope_values: &[&str],
) -> Result<MacKey, CryptoError> {
    let mut info: Vec<u8> = Vec::with_capacity(64);
    let mut part = |b: &[u8]| {
        info.extend_from_slice(&(b.len() as u32).to_be_bytes());
        info.extend_from_slice(b);
    };
    part(key_name.as_bytes());
    part(spec.name.as_bytes());
    part(spec.normalize.as_str().as_bytes());
    part(&spec.bits.to_be_bytes());
    part(&(spec.scope.len() as u32).to_be_bytes());
    for (name, value) in spec.scope.iter().zip(scope_values) {
        part(name.as_bytes());
        part(value.as_bytes());
    }
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    hkdf_sha256(b"envelope.v1/index", root.expose(), &[&info], key.as_mut())?;
    Ok(MacKey::new(key.as_ref()))
}

/// The token of an already normalized value: HMAC-SHA256 truncated to
/// `bits` (ceil(bits / 8) bytes, the unused low bits of the last byte zero).
pub fn token(key: &MacKey, normalized: &[u8], bits: u16) -> Vec<u8> {
    let mac = key.sign(normalized);
    let bits = usize::from(bits.clamp(MIN_BITS, MAX_BITS));
    let mut out = mac.get(..bits.div_ceil(8)).unwrap_or(&mac).to_vec();
    let spare = (8 - bits % 8) % 8;
    if let Some(last) = out.last_mut() {
        *last &= 0xffu8 << spare;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn norm(mode: Normalize, v: &str) -> Result<String, IndexError> {
        let mut out = Vec::new();
        normalize(mode, v.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn each_mode_normalizes_as_documented() {
        // "é" composed and decomposed are one value after NFC.
        assert_eq!(norm(Normalize::Trim, " e\u{301} ").unwrap(), "\u{e9}");
        assert_eq!(norm(Normalize::None, " E ").unwrap(), " E ");
        // Case folding, not lowercasing: ß folds to "ss".
        assert_eq!(norm(Normalize::Lowercase, "Straße").unwrap(), "strasse");
        assert_eq!(norm(Normalize::Lowercase, " A ").unwrap(), " a ");
        assert_eq!(
            norm(Normalize::Email, "  Ana.Souza@Example.COM\n").unwrap(),
            "ana.souza@example.com"
        );
        assert_eq!(
            norm(Normalize::Digits, "123.456.789-09").unwrap(),
            "12345678909"
        );
        // The alphanumeric CNPJ keeps its letters, upper-cased.
        assert_eq!(
            norm(Normalize::Alnum, "12.aBc.345/01de-35").unwrap(),
            "12ABC34501DE35"
        );
        assert_eq!(
            norm(Normalize::Digits, "abc"),
            Err(IndexError::Empty("digits"))
        );
        assert_eq!(norm(Normalize::Trim, "  "), Err(IndexError::Empty("trim")));
        let mut out = Vec::new();
        for (mode, name) in [
            (Normalize::Trim, "trim"),
            (Normalize::Lowercase, "lowercase"),
            (Normalize::Email, "email"),
            (Normalize::Digits, "digits"),
            (Normalize::Alnum, "alnum"),
        ] {
            assert_eq!(
                normalize(mode, &[0xff, 0xfe], &mut out),
                Err(IndexError::NotText(name))
            );
        }
        assert!(normalize(Normalize::None, &[0xff, 0xfe], &mut out).is_ok());
    }

    /// The ASCII fast path gives what the Unicode path gives.
    #[test]
    fn the_ascii_path_agrees_with_the_unicode_path() {
        let modes = [
            Normalize::Trim,
            Normalize::Lowercase,
            Normalize::Email,
            Normalize::Digits,
            Normalize::Alnum,
        ];
        let values = [
            " Ana.Souza@Example.COM \t",
            "12.ABC.345/01DE-35",
            "\u{b}\u{c}x\r\n",
            "123.456.789-09",
            "MiXeD 42 !",
        ];
        for mode in modes {
            for v in values {
                let mut fast = Vec::new();
                ascii(mode, v.as_bytes(), &mut fast);
                // The Unicode path, forced: a non-ASCII marker that every
                // mode keeps or drops alike, then removed.
                let marked = format!("{v}\u{e9}");
                let slow = norm(mode, &marked).unwrap_or_default();
                let slow = slow
                    .trim_end_matches('\u{e9}')
                    .trim_end_matches('\u{c9}')
                    .to_owned();
                let fast = String::from_utf8(fast).unwrap();
                match mode {
                    // Trimming stops at the marker; compare the start only.
                    Normalize::Trim | Normalize::Email => {
                        assert_eq!(fast.trim_end(), slow.trim_end(), "{mode:?} {v:?}")
                    }
                    _ => assert_eq!(fast, slow, "{mode:?} {v:?}"),
                }
            }
        }
    }

    #[test]
    fn tokens_are_truncated_with_the_spare_bits_zero() {
        let key = MacKey::new(&[7u8; 32]);
        let full = key.sign(b"v");
        assert_eq!(token(&key, b"v", 256), full.to_vec());
        assert_eq!(token(&key, b"v", 8), full[..1].to_vec());
        let t = token(&key, b"v", 12);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], full[0]);
        assert_eq!(t[1], full[1] & 0xf0);
        assert_eq!(token(&key, b"v", 63)[7] & 0x01, 0);
    }

    #[test]
    fn every_setting_and_scope_value_changes_the_key() {
        let root = KeyBytes::from_slice(&[9u8; 32]).unwrap();
        let spec = IndexSpec {
            name: "email".into(),
            normalize: Normalize::Email,
            bits: 64,
            scope: vec!["tenant".into()],
        };
        let t = |name: &str, spec: &IndexSpec, scope: &[&str]| {
            token(&index_key(&root, name, spec, scope).unwrap(), b"x", 64)
        };
        let base = t("pii", &spec, &["acme"]);
        assert_eq!(base, t("pii", &spec, &["acme"]));
        let mut others = vec![t("other", &spec, &["acme"]), t("pii", &spec, &["globex"])];
        for change in [
            |s: &mut IndexSpec| s.name = "mail".into(),
            |s: &mut IndexSpec| s.normalize = Normalize::Lowercase,
            |s: &mut IndexSpec| s.bits = 63,
            |s: &mut IndexSpec| s.scope = vec!["org".into()],
        ] {
            let mut s = spec.clone();
            change(&mut s);
            others.push(t("pii", &s, &["acme"]));
        }
        for o in others {
            assert_ne!(o, base);
        }
        let other_root = KeyBytes::from_slice(&[8u8; 32]).unwrap();
        assert_ne!(
            token(
                &index_key(&other_root, "pii", &spec, &["acme"]).unwrap(),
                b"x",
                64
            ),
            base
        );
    }
}
