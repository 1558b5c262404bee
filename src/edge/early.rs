//! Authorization from the request headers, before any message is read: a
//! caller who may not call the method's operation with any key at all is
//! refused here, so an unauthorized peer never makes the server buffer or
//! decode a message. The check per key follows in the [`Gate`] once the
//! request names its key. The refusal is audited and counted like any other.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::authz::Operation;
use super::gate::Gate;
use super::tls::PeerInfo;

/// The RPC name and operation of a method path, for Envelope and Admin.
pub fn method(path: &str) -> Option<(&'static str, Operation)> {
    let (service, rpc) = path.strip_prefix('/')?.split_once('/')?;
    let op = |rpc| -> Option<(&'static str, Operation)> {
        Some(match rpc {
            "Encrypt" => ("Encrypt", Operation::Encrypt),
            "EncryptBatch" => ("EncryptBatch", Operation::Encrypt),
            "EncryptStream" => ("EncryptStream", Operation::Encrypt),
            "Decrypt" => ("Decrypt", Operation::Decrypt),
            "DecryptBatch" => ("DecryptBatch", Operation::Decrypt),
            "DecryptStream" => ("DecryptStream", Operation::Decrypt),
            "EncryptColumn" => ("EncryptColumn", Operation::Encrypt),
            "EncryptColumnStream" => ("EncryptColumnStream", Operation::Encrypt),
            "DecryptColumn" => ("DecryptColumn", Operation::Decrypt),
            "DecryptColumnStream" => ("DecryptColumnStream", Operation::Decrypt),
            "Rewrap" => ("Rewrap", Operation::Rewrap),
            "RewrapBatch" => ("RewrapBatch", Operation::Rewrap),
            "ReencryptBatch" => ("ReencryptBatch", Operation::Rewrap),
            "ReencryptColumn" => ("ReencryptColumn", Operation::Rewrap),
            "GenerateDataKey" => ("GenerateDataKey", Operation::GenerateDataKey),
            "UnwrapDataKey" => ("UnwrapDataKey", Operation::UnwrapDataKey),
            "ComputeIndex" => ("ComputeIndex", Operation::Index),
            _ => return None,
        })
    };
    match service {
        "envelope.v1.Envelope" => op(rpc),
        "envelope.v1.Admin" => match rpc {
            "KeyStatus" => Some(("KeyStatus", Operation::Admin)),
            "RefreshKeys" => Some(("RefreshKeys", Operation::Admin)),
            "RotateMasterKey" => Some(("RotateMasterKey", Operation::Admin)),
            "MarkCompromised" => Some(("MarkCompromised", Operation::Admin)),
            _ => None,
        },
        _ => None,
    }
}

/// The layer; wraps the whole router (health and reflection pass through).
#[derive(Debug, Clone)]
pub struct EarlyAuthLayer(pub Gate);

impl<S> tower::Layer<S> for EarlyAuthLayer {
    type Service = EarlyAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EarlyAuth {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// See [`EarlyAuthLayer`].
#[derive(Debug, Clone)]
pub struct EarlyAuth<S> {
    inner: S,
    gate: Gate,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for EarlyAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some((rpc, op)) = method(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let identity = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone());
        match self.gate.authz.check_any(identity.as_deref(), op) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(denied) => {
                let gate = self.gate.clone();
                Box::pin(async move {
                    let status = gate.refuse(identity.as_deref(), rpc, op, denied).await;
                    Ok(status.into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_maps_to_its_operation() {
        assert_eq!(
            method("/envelope.v1.Envelope/UnwrapDataKey"),
            Some(("UnwrapDataKey", Operation::UnwrapDataKey))
        );
        assert_eq!(
            method("/envelope.v1.Admin/KeyStatus"),
            Some(("KeyStatus", Operation::Admin))
        );
        assert_eq!(method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(method("/envelope.v1.Envelope/Nope"), None);
        assert_eq!(method("garbage"), None);
    }
}
