//! The Lambda function Secrets Manager invokes to rotate an Envelope master
//! key: each invocation runs one of the four steps via `envelope::app::lambda`.

use envelope::app::lambda::{RotationEvent, handle};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .init();
    // Master keys pass through this process: no core dumps, not dumpable.
    let _ = envelope::ops::hardening::harden(false);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = envelope::app::config::lambda_aws_settings()?;
    let backends = envelope::app::server::open_aws(&settings).await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<RotationEvent>| {
        let backends = backends.clone();
        async move {
            // A returned error marks the rotation failed; AWSCURRENT is untouched.
            handle(&event.payload, &backends).await?;
            Ok::<(), Error>(())
        }
    }))
    .await
}
