//! Request builders for the tests, and the calls they make most often
//! (Encrypt, Decrypt, a round trip, KeyStatus, RotateMasterKey) as one
//! function each.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use envelope::pb;
use envelope::pb::envelope_client::EnvelopeClient;
use tonic::transport::Channel;

use super::Server;

pub type Client = EnvelopeClient<Channel>;

/// The context most tests seal under.
pub const CTX: &[(&str, &str)] = &[("table", "users"), ("column", "cpf")];

/// An encryption context from its pairs.
pub fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An EncryptRequest for `key` ("" for the default key).
pub fn enc(key: &str, pt: impl AsRef<[u8]>, c: &[(&str, &str)]) -> pb::EncryptRequest {
    pb::EncryptRequest {
        indexes: Vec::new(),
        key: key.into(),
        plaintext: Bytes::copy_from_slice(pt.as_ref()),
        context: ctx(c),
    }
}

/// A DecryptRequest for `key` ("" for the default key).
pub fn dec(key: &str, ct: impl AsRef<[u8]>, c: &[(&str, &str)]) -> pb::DecryptRequest {
    pb::DecryptRequest {
        key: key.into(),
        ciphertext: Bytes::copy_from_slice(ct.as_ref()),
        context: ctx(c),
    }
}

/// An EncryptBatchRequest of `n` records "record-{i}", each under the
/// context row = i, for i from `from`.
pub fn batch(key: &str, from: usize, n: usize) -> pb::EncryptBatchRequest {
    pb::EncryptBatchRequest {
        key: key.into(),
        items: (from..from + n)
            .map(|i| pb::EncryptItem {
                indexes: Vec::new(),
                plaintext: Bytes::from(format!("record-{i}")),
                context: ctx(&[("row", &i.to_string())]),
            })
            .collect(),
    }
}

/// What [`encrypt`] and [`decrypt`] call through.
pub trait Target {
    /// The client for one call: a client's clone (the same connection), a
    /// new client on a channel (the channel's identity), or a new
    /// connection to a server.
    fn client_for_call(&self) -> impl Future<Output = Client> + Send;
}

impl Target for Client {
    fn client_for_call(&self) -> impl Future<Output = Client> + Send {
        std::future::ready(self.clone())
    }
}

impl Target for Channel {
    fn client_for_call(&self) -> impl Future<Output = Client> + Send {
        std::future::ready(EnvelopeClient::new(self.clone()))
    }
}

impl Target for Server {
    fn client_for_call(&self) -> impl Future<Output = Client> + Send {
        self.client()
    }
}

/// Encrypt of `pt` under `key` and the context `c`.
pub async fn encrypt(
    to: &impl Target,
    key: &str,
    pt: impl AsRef<[u8]>,
    c: &[(&str, &str)],
) -> Result<pb::EncryptResponse, tonic::Status> {
    let req = enc(key, pt, c);
    let mut client = to.client_for_call().await;
    client.encrypt(req).await.map(tonic::Response::into_inner)
}

/// Decrypt of `ct` under `key` and the context `c`.
pub async fn decrypt(
    to: &impl Target,
    key: &str,
    ct: impl AsRef<[u8]>,
    c: &[(&str, &str)],
) -> Result<pb::DecryptResponse, tonic::Status> {
    let req = dec(key, ct, c);
    let mut client = to.client_for_call().await;
    client.decrypt(req).await.map(tonic::Response::into_inner)
}

/// Encrypt and Decrypt of `pt` under `key` and [`CTX`] on one new
/// connection, checking the plaintext comes back; the Encrypt answer.
pub async fn round_trip(server: &Server, key: &str, pt: &str) -> pb::EncryptResponse {
    let mut c = server.client().await;
    let e = c
        .encrypt(enc(key, pt, CTX))
        .await
        .unwrap_or_else(|s| panic!("encrypt: {s:?}\n{}", server.logs()))
        .into_inner();
    let d = c
        .decrypt(dec(key, &e.ciphertext, CTX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext.as_ref(), pt.as_bytes());
    e
}

/// KeyStatus of the server's first key.
pub async fn key_status(server: &Server) -> pb::KeyInfo {
    server
        .admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys
        .remove(0)
}

/// RotateMasterKey of `key` ("" for the default key) on a new connection.
pub async fn rotate(server: &Server, key: &str) -> pb::RotateMasterKeyResponse {
    server
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest { key: key.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The `x-request-id` a response or status carries.
pub fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}
