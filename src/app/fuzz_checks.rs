//! The properties each parser of untrusted bytes promises, as functions of
//! raw bytes: the fuzz targets in `fuzz/` call them under libFuzzer, and
//! `tests/fuzz_corpus.rs` replays the committed corpus and every past
//! finding through them in `cargo test`. Each returns normally when the
//! input is handled as documented and panics (a finding) when it is not;
//! the panics are the oracle, which is why this module allows them.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

mod alloc;
mod request;

pub use alloc::{Counting, counting, peak_of};
pub use request::request;

use crate::primitives::context::{self, ContextLimits};
use crate::primitives::record::{self, Kind, VersionId};

/// A fuzz target: its name (its directory under `fuzz/`), its property
/// check, and its allocation bound: while checking an input of `n` bytes
/// it may hold at most `base + per_byte * n` bytes at once.
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The property check.
    pub check: fn(&[u8]),
    /// Bytes allowed whatever the input.
    pub base: usize,
    /// Bytes allowed per input byte.
    pub per_byte: usize,
    /// Builds what every input shares (a runtime, a keyring) before any
    /// input is measured.
    warm: fn(),
}

const KIB: usize = 1024;

// Bounds: about twice the most any input of a local long run held
// (`ENVELOPE_FUZZ_REPLAY=all cargo test --test fuzz_corpus -- --nocapture`
// prints it). TOML documents hold up to ~600 bytes per input byte (tokens,
// spans, nested inline tables, an error's copy of the source); a
// super-linear path still crosses a linear bound within the 4 KiB inputs
// libFuzzer tries (as a regex in `log_level` did: fuzz/regressions/config). Each fuzz target
// names its own constant, so that its binary links (and libFuzzer scans the
// coverage of) only its own parser.

/// The record and data-key blob target.
pub const RECORD: Target = target("record", record, 4 * KIB, 4, || ());
/// The version id target.
pub const VERSION_ID: Target = target("version_id", version_id, 4 * KIB, 4, || ());
/// The context target.
pub const CONTEXT: Target = target("context", context, 16 * KIB, 32, || ());
/// The policy file target.
pub const POLICY: Target = target("policy", policy, 64 * KIB, 1024, || ());
/// The configuration file target.
pub const CONFIG: Target = target("config", config, 128 * KIB, 1024, || ());
/// The master-key secret target.
pub const SECRET: Target = target("secret", secret, 32 * KIB, 8, secret_warm);
/// The in-process gRPC request target.
pub const REQUEST: Target = target("request", request, 128 * KIB, 128, request::warm);

/// Every fuzz target, in the order `scripts/fuzz` runs them.
pub const TARGETS: [Target; 7] = [RECORD, VERSION_ID, CONTEXT, POLICY, CONFIG, SECRET, REQUEST];

const fn target(
    name: &'static str,
    check: fn(&[u8]),
    base: usize,
    per_byte: usize,
    warm: fn(),
) -> Target {
    Target {
        name,
        check,
        base,
        per_byte,
        warm,
    }
}

impl Target {
    /// Runs the check on `data` and asserts the allocation bound; returns
    /// the most bytes held at once. Needs [`Counting`] as the global
    /// allocator.
    pub fn run(&self, data: &[u8]) -> usize {
        thread_local!(static WARM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if !WARM.with(|w| w.replace(true)) {
            assert!(counting(), "the fuzz checks need alloc::Counting installed");
        }
        (self.warm)();
        let held = peak_of(|| (self.check)(data));
        let bound = self.base + self.per_byte * data.len();
        assert!(
            held <= bound,
            "{}: held {held} bytes at once for a {}-byte input (bound {bound})",
            self.name,
            data.len()
        );
        held
    }
}

/// A record or data-key blob: `parse` is total; what it accepts re-encodes
/// to the same header bytes, its parts tile the input, and the version id
/// it names reads back to the same bytes.
pub fn record(data: &[u8]) {
    for kind in [Kind::Record, Kind::DataKey] {
        let Ok(p) = record::parse(data, kind) else {
            continue;
        };
        assert!(p.header_len <= data.len());
        let version = VersionId::from_raw(p.version_raw)
            .unwrap_or_else(|e| panic!("parse accepted a version it cannot read: {e}"));
        assert_eq!(version.raw(), p.version_raw);
        let wrapped: &[u8; record::WRAPPED_LEN] = p.wrapped.try_into().unwrap();
        let mut header = Vec::new();
        record::write_header(&mut header, kind, &p.key_id, &version, wrapped);
        assert_eq!(
            header.as_slice(),
            &data[..p.header_len],
            "header does not re-encode"
        );
        assert_eq!(record::header_len(&version), p.header_len);
        match kind {
            Kind::DataKey => assert_eq!(p.header_len, data.len()),
            Kind::Record => assert_eq!(
                p.header_len + p.nonce.len() + p.ciphertext.len() + p.tag.len(),
                data.len(),
                "a record's parts do not tile it"
            ),
        }
    }
}

/// A version id: from the record bytes and from text, each form reads back
/// to itself, and the two agree.
pub fn version_id(data: &[u8]) {
    if let Ok(v) = VersionId::from_raw(data) {
        assert_eq!(v.raw(), data);
        let again = VersionId::new(v.as_str()).expect("a read version id is valid text");
        assert_eq!(again.raw(), data);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(v) = VersionId::new(text)
    {
        let again = VersionId::from_raw(v.raw()).expect("an encoded version id reads back");
        assert_eq!(
            again.as_str().to_ascii_lowercase(),
            v.as_str().to_ascii_lowercase()
        );
    }
}

/// Two contexts from the bytes (entries split at 0x00, key and value
/// alternating; the second context after the first 0xFF): validation is
/// total and keeps to its limits, and the canonical encoding is injective
/// (equal encodings only for equal contexts) and the one AAD the record
/// binds.
pub fn context(data: &[u8]) {
    let (a, b) = match data.iter().position(|&x| x == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (a, b) = (context_of(a), context_of(b));
    let limits = ContextLimits::default();
    for ctx in [&a, &b] {
        if let Ok(len) = context::validate(ctx, limits) {
            let mut out = Vec::new();
            context::encode_into(ctx, &mut out);
            assert_eq!(out.len(), len, "validate's length is the encoding's");
            assert!(ctx.len() <= limits.max_entries);
        }
    }
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    context::encode_into(&a, &mut ea);
    context::encode_into(&b, &mut eb);
    assert_eq!(
        ea == eb,
        a == b,
        "the encoding is not injective: {a:?} {b:?}"
    );
}

fn context_of(bytes: &[u8]) -> BTreeMap<String, String> {
    // One entry past the limit is enough to see it refused; building maps
    // of thousands of entries only slowed the target (sorting them was
    // most of its time) without reaching any other branch.
    let most = 2 * (ContextLimits::default().max_entries + 1);
    let parts: Vec<String> = bytes
        .split(|&x| x == 0)
        .take(most)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
        .collect()
}

/// A policy file: parsing is total, and a parsed policy answers every
/// question without panicking.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = crate::edge::authz::Policy::parse(text) {
        for caller in [None, Some("spiffe://example.org/ns/a/sa/b"), Some("x")] {
            use crate::edge::authz::Operation as O;
            for op in [
                O::Encrypt,
                O::Decrypt,
                O::Rewrap,
                O::GenerateDataKey,
                O::UnwrapDataKey,
                O::Index,
                O::Admin,
            ] {
                let _ = p.allows(caller, op, "pii");
            }
            let _ = p.index_quota(caller, "pii");
        }
        let _ = p.narrowed_grants();
    }
}

/// A configuration file: parsing and validation are total.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = toml::from_str::<super::config::FileConfig>(text) {
        let _ = super::config::Settings::from_file(file, super::config::Overrides::default());
    }
}

/// A master-key secret value (Envelope's document, seed 001's document,
/// seed 004's plain base64 key), read as a key that accepts every shape
/// with a salt: loading is total, and a refusal names the secret and
/// version and never the value.
pub fn secret(data: &[u8]) {
    use crate::backends::store::VersionInfo;
    use crate::keys::master_key::{self, KdfParams, MasterKeyError, Unwrapped};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, kms) = secret_env();
    let info = VersionInfo {
        id: "v1".into(),
        stages: vec!["AWSCURRENT".into()],
        created: None,
    };
    let kdf = KdfParams {
        salt: Some(zeroize::Zeroizing::new(b"fuzz-salt".to_vec())),
        iterations: None,
        unwrapped: Unwrapped::Any,
    };
    let loaded = rt.block_on(master_key::load("pii", "sec", info, text, kms, &kdf));
    if let Err(e) = loaded {
        let shown = e.to_string();
        if let MasterKeyError::Malformed {
            secret, version, ..
        } = &e
        {
            assert_eq!((secret.as_str(), version.as_str()), ("sec", "v1"));
        }
        // Key material is base64 (or a document holding it): a refusal
        // never repeats a key-like value. (Other text may coincide with the
        // message itself, which is no leak.)
        let key_like = text.len() >= 16
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if key_like {
            assert!(
                !shown.contains(text),
                "the refusal repeats the secret value"
            );
        }
    }
}

fn secret_warm() {
    secret_env();
}

fn secret_env() -> &'static (
    tokio::runtime::Runtime,
    crate::backends::kms::local::LocalKms,
) {
    static ENV: std::sync::OnceLock<(
        tokio::runtime::Runtime,
        crate::backends::kms::local::LocalKms,
    )> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("envelope-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let kms = crate::backends::kms::local::LocalKms::open_or_create(&dir.join("root.key"))
            .expect("a local root key");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        (rt, kms)
    })
}
