//! What a request names before it runs: the key, and the encryption
//! contexts it carries (one for a unary call, one per item of a batch or
//! stream message), for the gate's authorization and audit line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::authz::Operation;
use crate::keys::DEFAULT_KEY;
use crate::pb;

/// What the gate needs to know about a request before it runs.
pub struct Subject<'a> {
    /// The key name asked for ("" means default, "*" means every key).
    pub key: &'a str,
    /// The context of a unary call.
    pub context: Option<&'a BTreeMap<String, String>>,
    /// The blind index a ComputeIndex call names.
    pub index: Option<&'a str>,
}

/// Requests that name a key (and maybe carry contexts).
pub trait HasSubject {
    /// The key and context of this request.
    fn subject(&self) -> Subject<'_>;

    /// Whether `allowed` holds for every context the request carries: its
    /// own, or each item's for a batch. Requests without one pass.
    fn all_contexts(&self, allowed: &mut dyn FnMut(&BTreeMap<String, String>) -> bool) -> bool;
}

macro_rules! subject {
    ($($t:ty => $ctx:ident),* $(,)?) => {$(
        impl HasSubject for $t {
            fn subject(&self) -> Subject<'_> {
                Subject { key: &self.key, context: subject!(@ctx self $ctx), index: None }
            }
            fn all_contexts(
                &self,
                allowed: &mut dyn FnMut(&BTreeMap<String, String>) -> bool,
            ) -> bool {
                subject!(@all self allowed $ctx)
            }
        }
    )*};
    (@ctx $self:ident context) => { Some(&$self.context) };
    (@ctx $self:ident items) => { None };
    (@ctx $self:ident none) => { None };
    (@all $self:ident $f:ident context) => { $f(&$self.context) };
    (@all $self:ident $f:ident items) => { $self.items.iter().all(|i| $f(&i.context)) };
    (@all $self:ident $f:ident none) => {{
        let _ = $f;
        true
    }};
}

subject! {
    pb::EncryptRequest => context,
    pb::DecryptRequest => context,
    pb::RewrapRequest => context,
    pb::GenerateDataKeyRequest => context,
    pb::UnwrapDataKeyRequest => context,
    pb::EncryptBatchRequest => items,
    pb::DecryptBatchRequest => items,
    pb::EncryptStreamRequest => items,
    pb::DecryptStreamRequest => items,
    pb::RewrapBatchRequest => items,
    pb::ReencryptBatchRequest => items,
    pb::KeyStatusRequest => none,
    pb::RefreshKeysRequest => none,
}

/// A column names one shared context (its keys are audited) and, with a row
/// field, one merged context per row, each checked against the grant.
macro_rules! column_subject {
    ($($t:ty),*) => {$(
        impl HasSubject for $t {
            fn subject(&self) -> Subject<'_> {
                Subject { key: &self.key, context: Some(&self.context), index: None }
            }
            fn all_contexts(
                &self,
                allowed: &mut dyn FnMut(&BTreeMap<String, String>) -> bool,
            ) -> bool {
                if self.row_field.is_empty() {
                    return allowed(&self.context);
                }
                let mut merged = self.context.clone();
                self.row_values.iter().all(|v| {
                    merged.insert(self.row_field.clone(), v.clone());
                    allowed(&merged)
                })
            }
        }
    )*};
}

column_subject!(
    pb::EncryptColumnRequest,
    pb::DecryptColumnRequest,
    pb::ReencryptColumnRequest
);

/// A column stream message: its column's subject (a message without one
/// names the default key and is refused when it runs).
macro_rules! column_stream_subject {
    ($($t:ty),*) => {$(
        impl HasSubject for $t {
            fn subject(&self) -> Subject<'_> {
                self.column.as_ref().map_or(Subject { key: "", context: None, index: None }, HasSubject::subject)
            }
            fn all_contexts(
                &self,
                allowed: &mut dyn FnMut(&BTreeMap<String, String>) -> bool,
            ) -> bool {
                self.column.as_ref().is_none_or(|c| c.all_contexts(allowed))
            }
        }
    )*};
}

column_stream_subject!(
    pb::EncryptColumnStreamRequest,
    pb::DecryptColumnStreamRequest
);

/// Admin calls that act on one key: empty means the default key, not every key.
macro_rules! one_key_subject {
    ($($t:ty),*) => {$(
        impl HasSubject for $t {
            fn subject(&self) -> Subject<'_> {
                let key = if self.key.is_empty() {
                    DEFAULT_KEY
                } else {
                    &self.key
                };
                Subject {
                    key,
                    context: None,
                    index: None,
                }
            }

            fn all_contexts(&self, _: &mut dyn FnMut(&BTreeMap<String, String>) -> bool) -> bool {
                true
            }
        }
    )*};
}

one_key_subject!(pb::RotateMasterKeyRequest, pb::MarkCompromisedRequest);

impl HasSubject for pb::ComputeIndexRequest {
    fn subject(&self) -> Subject<'_> {
        Subject {
            key: &self.key,
            context: Some(&self.context),
            index: Some(&self.index),
        }
    }

    fn all_contexts(&self, allowed: &mut dyn FnMut(&BTreeMap<String, String>) -> bool) -> bool {
        allowed(&self.context)
    }
}

/// `s` cut to at most `max` characters (with a trailing `…` when cut).
pub(super) fn bounded(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}…", s.get(..i).unwrap_or_default())),
        None => Cow::Borrowed(s),
    }
}

/// The key name a request asks for (empty means the default key, or every
/// key for Admin calls) and its context keys, bounded for the audit line:
/// at most 64 context keys of at most 64 characters each.
pub(super) fn subject_of(
    req: &impl HasSubject,
    op: Operation,
) -> (String, Vec<String>, Option<String>) {
    let s = req.subject();
    let key = if s.key.is_empty() && op != Operation::Admin {
        DEFAULT_KEY.to_owned()
    } else if s.key.is_empty() {
        "*".to_owned()
    } else {
        s.key.to_owned()
    };
    let ctx: Vec<String> = s
        .context
        .map(|c| {
            c.keys()
                .take(64)
                .map(|k| bounded(k, 64).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let index = s.index.map(|i| bounded(i, 64).into_owned());
    (key, ctx, index)
}
