//! AWS SDK setup: one `SdkConfig` loaded at start (credentials from the
//! SDK's default provider chain only), clients built from it, and the
//! classification of SDK errors. AWS SDK types stay inside the `aws.rs` files.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// AWS settings from the configuration file.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Primary region; `None` uses the SDK's default region chain.
    pub region: Option<String>,
    /// Endpoint for every service and region (a local AWS-API server in tests).
    pub endpoint_url: Option<String>,
    /// Secrets Manager endpoint in the primary region (e.g. an interface VPC endpoint).
    pub secretsmanager_endpoint_url: Option<String>,
    /// KMS endpoint in the primary region (e.g. an interface VPC endpoint).
    pub kms_endpoint_url: Option<String>,
    /// KMS key id, ARN or alias that wraps master keys.
    pub kms_key_id: Option<String>,
    /// The KMS keys (ids, ARNs or aliases) a master key may be wrapped by;
    /// empty means `kms_key_id` alone. Resolved to ARNs with DescribeKey.
    pub allowed_kms_keys: Vec<String>,
    /// Regions to fail over to, in order, when the primary region errors.
    pub replica_regions: Vec<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Timeout of one operation, retries included.
    pub operation_timeout: Duration,
    /// Attempts per operation (the SDK's standard retry mode, with backoff).
    pub max_attempts: u32,
}

impl AwsSettings {
    /// Settings for `kms_key_id` with every other value at its default: the
    /// SDK's region chain, AWS's endpoints, no replicas, 3 s connect, 5 s
    /// attempt and 15 s operation timeouts, 3 attempts.
    pub fn new(kms_key_id: String) -> Self {
        Self {
            region: None,
            endpoint_url: None,
            secretsmanager_endpoint_url: None,
            kms_endpoint_url: None,
            kms_key_id: Some(kms_key_id),
            allowed_kms_keys: Vec::new(),
            replica_regions: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            max_attempts: 3,
        }
    }
}

/// Loads the SDK configuration for `region` (the primary when `None`).
pub async fn sdk_config(settings: &AwsSettings, region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .operation_timeout(settings.operation_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)));
    if let Some(r) = region
        .map(str::to_owned)
        .or_else(|| settings.region.clone())
    {
        loader = loader.region(Region::new(r));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// What kind of failure an SDK error is; each gets its own clear message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The caller's credentials may not do this.
    AccessDenied(String),
    /// The secret, version or key does not exist.
    NotFound(String),
    /// The service throttled us.
    Throttled(String),
    /// KMS refused the ciphertext (wrong key, wrong encryption context, damaged).
    InvalidCiphertext(String),
    /// The service refused a parameter (e.g. a malformed version id).
    Invalid(String),
    /// A conflicting request (e.g. a version id reused with another value).
    Conflict(String),
    /// No answer, a timeout, or a service-side failure: worth a replica region.
    Unavailable(String),
    /// Anything else the service refused.
    Other(String),
}

impl Failure {
    /// Whether another region might answer.
    pub fn regional(&self) -> bool {
        matches!(self, Failure::Unavailable(_) | Failure::Throttled(_))
    }
}

/// Classifies an SDK error by its transport outcome and error code.
pub fn classify<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::DispatchFailure(_) => {
            let detail = DisplayErrorContext(err).to_string();
            // The SDK reports a failed credential chain as a dispatch failure;
            // it is no regional outage, so it must not look like one.
            if detail.contains("credentials") {
                return Failure::AccessDenied(format!(
                    "no usable AWS credentials from the SDK's default provider chain: {detail}"
                ));
            }
            return Failure::Unavailable(detail);
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            return Failure::Unavailable(DisplayErrorContext(err).to_string());
        }
        _ => {}
    }
    let code = err.code().unwrap_or_default();
    let message = format!("{code}: {}", err.message().unwrap_or("no message"));
    match code {
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => Failure::AccessDenied(message),
        "ResourceNotFoundException" | "NotFoundException" => Failure::NotFound(message),
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => Failure::Throttled(message),
        // A quota (e.g. Secrets Manager's 20 staging labels per secret), not a rate.
        "LimitExceededException" => Failure::Invalid(message),
        "InvalidCiphertextException" | "IncorrectKeyException" => {
            Failure::InvalidCiphertext(message)
        }
        "ResourceExistsException" => Failure::Conflict(message),
        "InvalidParameterException" | "InvalidRequestException" | "ValidationException" => {
            Failure::Invalid(message)
        }
        "InternalServiceError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException" => Failure::Unavailable(message),
        _ => Failure::Other(message),
    }
}

/// The same secret id in another region: names are region-free, ARNs name
/// their region in their fourth field.
pub fn secret_id_in_region(secret_id: &str, region: &str) -> String {
    let parts: Vec<&str> = secret_id.splitn(5, ':').collect();
    match parts.as_slice() {
        ["arn", partition, service, _, rest] => {
            format!("arn:{partition}:{service}:{region}:{rest}")
        }
        _ => secret_id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_move_region_and_names_do_not() {
        assert_eq!(
            secret_id_in_region(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:envelope/pii-AbCdEf",
                "us-west-2"
            ),
            "arn:aws:secretsmanager:us-west-2:111122223333:secret:envelope/pii-AbCdEf"
        );
        assert_eq!(
            secret_id_in_region("envelope/pii", "us-west-2"),
            "envelope/pii"
        );
    }
}
