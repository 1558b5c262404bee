//! The Lambda function Secrets Manager invokes to rotate an Envelope master
//! key: each invocation runs one of the four steps via `envelope::app::lambda`.

use envelope::app::config::{LogFormat, lambda_aws_settings};
use envelope::app::lambda::{RotationEvent, handle};
use envelope::app::startup::{ServeError, init_process, open_aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Master keys pass through this process: the self-test must pass, and
    // no core dumps, not dumpable (a Lambda sandbox may refuse those two; the
    // function still rotates).
    match init_process("info", LogFormat::Json, false) {
        Ok(_) => {}
        Err(ServeError::Hardening(e)) => tracing::warn!(error = %e, "process hardening incomplete"),
        Err(e) => return Err(e.into()),
    }
    // A failed start prints the same short report as the CLI (its Debug
    // form would reach CloudWatch otherwise).
    let started = async {
        let settings = lambda_aws_settings()?;
        Ok::<_, anyhow::Error>(open_aws(&settings, &[]).await?)
    };
    let backends = match started.await {
        Ok(b) => b,
        Err(e) => {
            eprint!("{}", envelope::app::report::render(&e, false));
            std::process::exit(1);
        }
    };
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
