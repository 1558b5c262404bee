//! The gRPC request path in-process: a decoded request message of each
//! unary and batch RPC through the Envelope service's own handler (gate,
//! batch runner, keys), over a local keyring holding the golden test key,
//! so that the committed golden records open and seeds reach the crypto.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prost::Message;
use tonic::{Code, Request};

use crate::edge::authz::{Authorizer, Default as Policy};
use crate::edge::envelope_service::EnvelopeService;
use crate::edge::gate::Gate;
use crate::edge::stream_pool::StreamPool;
use crate::keys::{KeySource, Keyring, Limits, NamedKey};
use crate::pb;
use crate::pb::envelope_server::Envelope;

/// Codes a handler may answer with; INTERNAL or UNKNOWN would be a finding.
const DOCUMENTED: [Code; 8] = [
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::Unavailable,
    Code::OutOfRange,
];

/// The first byte picks the RPC; the rest is its request message.
pub fn request(data: &[u8]) {
    let Some((&rpc, body)) = data.split_first() else {
        return;
    };
    let (rt, svc) = env();
    let code = rt.block_on(async {
        macro_rules! call {
            ($method:ident, $msg:ty) => {{
                let Ok(m) = <$msg>::decode(body) else {
                    return None;
                };
                Some(svc.$method(Request::new(m)).await.map(|_| ()))
            }};
        }
        let r = match rpc % 12 {
            0 => call!(encrypt, pb::EncryptRequest),
            1 => call!(decrypt, pb::DecryptRequest),
            2 => call!(encrypt_batch, pb::EncryptBatchRequest),
            3 => call!(decrypt_batch, pb::DecryptBatchRequest),
            4 => call!(encrypt_column, pb::EncryptColumnRequest),
            5 => call!(decrypt_column, pb::DecryptColumnRequest),
            6 => call!(rewrap, pb::RewrapRequest),
            7 => call!(rewrap_batch, pb::RewrapBatchRequest),
            8 => call!(reencrypt_batch, pb::ReencryptBatchRequest),
            9 => call!(generate_data_key, pb::GenerateDataKeyRequest),
            10 => call!(unwrap_data_key, pb::UnwrapDataKeyRequest),
            _ => call!(compute_index, pb::ComputeIndexRequest),
        };
        r.map(|r| r.err().map_or(Code::Ok, |s| s.code()))
    });
    if let Some(code) = code {
        assert!(
            DOCUMENTED.contains(&code),
            "RPC {} answered {code:?}",
            rpc % 12
        );
    }
}

/// Builds the shared runtime and service.
pub(super) fn warm() {
    env();
}

fn env() -> &'static (tokio::runtime::Runtime, EnvelopeService) {
    static ENV: OnceLock<(tokio::runtime::Runtime, EnvelopeService)> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir =
            std::env::temp_dir().join(format!("envelope-fuzz-request-{}", std::process::id()));
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/data");
        copy_private(&golden, &dir);
        let key = rt.block_on(async {
            let source = KeySource::open_local(&dir, "default")
                .await
                .expect("the golden key");
            NamedKey::load(source, Limits::default())
                .await
                .expect("the golden key loads")
        });
        let gate = Gate {
            keyring: Arc::new(Keyring::new([key])),
            authz: Arc::new(Authorizer::new(None, Policy::Allow).expect("no policy file")),
            audit: None,
            index_meter: Default::default(),
        };
        let streams = StreamPool::new(4, 4);
        let svc = EnvelopeService::new(gate, 10_000, streams, Duration::from_secs(5));
        (rt, svc)
    })
}

/// Copies the golden data directory (owner-only, as local mode requires).
fn copy_private(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("a directory");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for e in std::fs::read_dir(from).expect("golden data") {
        let e = e.expect("an entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_private(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
}
