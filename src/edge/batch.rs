//! One runner for every batch, column and stream message (EncryptBatch,
//! DecryptBatch, RewrapBatch, EncryptColumn, DecryptColumn and their
//! streams) and the builders of their per-item results: each item in order,
//! one failing item never failing the batch.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::gate::Charge;
mod column;
mod reencrypt;

use super::gate::{Done, HasSubject};
use super::status::item_error;
use crate::keys::index::{RecordTokens, TokenKeys};
use crate::keys::{Error, NamedKey};
use crate::pb::{self, decrypt_result, encrypt_result, rewrap_result};

/// A batch request: its item count and how its items are run.
pub(super) trait BatchCall: HasSubject + Send + 'static {
    /// The response message.
    type Response: Send + 'static;
    /// Items in the request.
    fn len(&self) -> usize;
    /// Blind-index tokens the request asks for (charged to the caller's
    /// quota before it runs).
    fn index_tokens(&self) -> usize {
        0
    }
    /// Runs every item under `key`, in order; fails as a whole only when
    /// the request's parts do not fit together.
    fn run(
        self,
        key: Arc<NamedKey>,
    ) -> impl Future<Output = Result<(Self::Response, Done), Error>> + Send;
}

/// Checks the batch size, charges the index tokens it asks for, then runs it.
pub(super) async fn run<B: BatchCall>(
    key: Arc<NamedKey>,
    req: B,
    max: usize,
    charge: Charge,
) -> Result<(B::Response, Done), Error> {
    if req.len() > max {
        return Err(Error::BatchTooLarge {
            got: req.len(),
            max,
        });
    }
    charge.take(key.name(), req.index_tokens())?;
    req.run(key).await
}

/// A per-item result message: output bytes with their version (and index
/// tokens, where the message has them), or an error.
trait ItemResult {
    fn ok(out: Bytes, version: &str, tokens: RecordTokens) -> Self;
    fn err(e: pb::ItemError) -> Self;
}

macro_rules! item_result {
    ($($t:ty => $oneof:ident, $ok:ident, $tokens:ident;)*) => {$(
        impl ItemResult for $t {
            fn ok(out: Bytes, version: &str, tokens: RecordTokens) -> Self {
                item_result!(@ok $tokens $oneof $ok out version tokens)
            }
            fn err(e: pb::ItemError) -> Self {
                Self { result: Some($oneof::Result::Error(e)), ..Default::default() }
            }
        }
    )*};
    (@ok yes $oneof:ident $ok:ident $o:ident $v:ident $t:ident) => {
        Self {
            result: Some($oneof::Result::$ok($o)),
            key_version: $v.to_owned(),
            index_tokens: $t,
        }
    };
    (@ok no $oneof:ident $ok:ident $o:ident $v:ident $t:ident) => {{
        let _ = $t;
        Self { result: Some($oneof::Result::$ok($o)), key_version: $v.to_owned() }
    }};
}

item_result! {
    pb::EncryptResult => encrypt_result, Ciphertext, yes;
    pb::DecryptResult => decrypt_result, Plaintext, no;
    pb::RewrapResult => rewrap_result, Ciphertext, yes;
}

/// Builds the results of one batch in order, and its audit summary.
struct Results<R> {
    results: Vec<R>,
    failed: usize,
    /// The version of the first item that succeeded.
    version: Option<String>,
}

impl<R: ItemResult> Results<R> {
    fn with_capacity(n: usize) -> Self {
        Self {
            results: Vec::with_capacity(n),
            failed: 0,
            version: None,
        }
    }

    fn push<V: AsRef<str>>(&mut self, outcome: Result<(Bytes, V, RecordTokens), Error>) {
        match outcome {
            Ok((out, version, tokens)) => {
                let version = version.as_ref();
                if self.version.is_none() {
                    self.version = Some(version.to_owned());
                }
                self.results.push(R::ok(out, version, tokens));
            }
            Err(e) => {
                self.failed += 1;
                self.results.push(R::err(item_error(e)));
            }
        }
    }

    /// The results, and the audit summary naming the first version used
    /// when `one_version` (a batch sealed under the current version);
    /// otherwise none, since the records of a batch may name different versions.
    fn finish(self, one_version: bool) -> (Vec<R>, Done) {
        let done = Done {
            version: if one_version {
                self.version.unwrap_or_default()
            } else {
                String::new()
            },
            batch: Some((self.results.len(), self.failed)),
            ..Done::default()
        };
        (self.results, done)
    }
}

impl BatchCall for pb::EncryptBatchRequest {
    type Response = pb::EncryptBatchResponse;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn index_tokens(&self) -> usize {
        self.items.iter().map(|i| i.indexes.len()).sum()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let sealed = key
            .encrypt_many(&self.items, |i| (&i.plaintext, &i.context))
            .await;
        let mut out = Results::with_capacity(self.items.len());
        let mut cache = TokenKeys::default();
        for (item, r) in self.items.iter().zip(sealed.results) {
            out.push(r.and_then(|(range, v)| {
                let master = sealed
                    .versions
                    .get(v)
                    .ok_or(Error::Internal("batch version"))?;
                let tokens = key.context_tokens(
                    &item.indexes,
                    master,
                    &item.context,
                    &item.plaintext,
                    &mut cache,
                )?;
                Ok((sealed.records.slice(range), master.version.as_str(), tokens))
            }));
        }
        let (results, done) = out.finish(true);
        Ok((pb::EncryptBatchResponse { results }, done))
    }
}

impl BatchCall for pb::DecryptBatchRequest {
    type Response = pb::DecryptBatchResponse;

    fn len(&self) -> usize {
        self.items.len()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let mut opened = key
            .decrypt_many(&self.items, |i| (&i.ciphertext, &i.context))
            .await;
        // One owner for every plaintext of the batch: wiped once the response
        // is encoded and the last slice dropped.
        let plaintexts = secret_bytes(std::mem::take(&mut *opened.plaintexts));
        let mut out = Results::with_capacity(self.items.len());
        for r in opened.results {
            out.push(r.map(|(range, v)| (plaintexts.slice(range), v, RecordTokens::new())));
        }
        let (results, done) = out.finish(false);
        let done = done.flag(opened.compromised, super::gate::DECRYPTED);
        Ok((pb::DecryptBatchResponse { results }, done))
    }
}

/// The batch messages and their stream twins have the same fields (and the
/// same bytes on the wire): each converts into the other by moving them.
macro_rules! twins {
    ($($a:ty, $b:ty => $($field:ident),+;)*) => {$(
        impl From<$a> for $b {
            fn from(m: $a) -> Self {
                Self { $($field: m.$field),+ }
            }
        }
        impl From<$b> for $a {
            fn from(m: $b) -> Self {
                Self { $($field: m.$field),+ }
            }
        }
    )*};
}

twins! {
    pb::EncryptStreamRequest, pb::EncryptBatchRequest => key, items;
    pb::EncryptStreamResponse, pb::EncryptBatchResponse => results;
    pb::DecryptStreamRequest, pb::DecryptBatchRequest => key, items;
    pb::DecryptStreamResponse, pb::DecryptBatchResponse => results;
}

/// A batch stream message: run as the batch it is field for field.
macro_rules! batch_stream {
    ($($req:ty => $batch:ty, $resp:ty, tokens($m:ident) $tokens:expr;)*) => {$(
        impl BatchCall for $req {
            type Response = $resp;

            fn len(&self) -> usize {
                self.items.len()
            }

            // The batch's own count: the grant check and the quota charge
            // see a stream message exactly as the batch it is.
            fn index_tokens(&self) -> usize {
                let $m = self;
                $tokens
            }

            async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
                let (resp, done) = <$batch>::from(self).run(key).await?;
                Ok((resp.into(), done))
            }
        }
    )*};
}

batch_stream! {
    pb::EncryptStreamRequest => pb::EncryptBatchRequest, pb::EncryptStreamResponse,
        tokens(m) m.items.iter().map(|i| i.indexes.len()).sum();
    pb::DecryptStreamRequest => pb::DecryptBatchRequest, pb::DecryptStreamResponse,
        tokens(_m) 0;
}

impl BatchCall for pb::RewrapBatchRequest {
    type Response = pb::RewrapBatchResponse;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn index_tokens(&self) -> usize {
        self.items.iter().map(|i| i.indexes.len()).sum()
    }

    async fn run(self, key: Arc<NamedKey>) -> Result<(Self::Response, Done), Error> {
        let mut out = Results::with_capacity(self.items.len());
        let mut cache = crate::keys::open::RewrapCache::default();
        for item in &self.items {
            let rewrapped = key
                .rewrap_indexed(&item.ciphertext, &item.context, &item.indexes, &mut cache)
                .await;
            match rewrapped {
                Ok((ct, master, tokens)) => {
                    out.push(Ok((Bytes::from(ct), master.version.as_str(), tokens)))
                }
                Err(e) => out.push(Err::<(Bytes, &str, _), _>(e)),
            }
        }
        let (results, done) = out.finish(true);
        Ok((pb::RewrapBatchResponse { results }, done))
    }
}

/// A buffer of secret bytes (plaintext, key bytes) handed to a response:
/// tonic drops the message after encoding it, and this owner wipes the
/// bytes then. (Encoded frames in flight are tonic's and are not wiped.)
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Secret bytes as response bytes, wiped when the response is dropped.
pub(super) fn secret_bytes(v: Vec<u8>) -> Bytes {
    Bytes::from_owner(Wiped(v))
}
