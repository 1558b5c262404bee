//! The Lambda function Secrets Manager invokes to rotate an Envelope master
//! key: each invocation runs one of the four steps via `envelope::app::lambda`.

use envelope::app::config::{LogFormat, lambda_aws_settings};
use envelope::app::lambda::{RotationEvent, handle};
use envelope::app::startup::{init_process, open_aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Master keys pass through this process: no core dumps, not dumpable.
    // A Lambda sandbox may refuse either; the function still rotates.
    if let Err(e) = init_process("info", LogFormat::Json, false) {
        tracing::warn!(error = %e, "process hardening incomplete");
    }
    let settings = lambda_aws_settings()?;
    let backends = open_aws(&settings).await;
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
