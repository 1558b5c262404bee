//! AWS SDK setup: one `SdkConfig` loaded at start (credentials from the
//! SDK's default provider chain only), clients built from it, and the
//! classification of SDK errors. AWS SDK types stay inside the `aws.rs` files.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::http::HttpResponse;
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
/// The messages are one line in plain words: the SDK's own error chain,
/// which can run to kilobytes of Debug output, goes only to the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The SDK's default provider chain found no credentials at all.
    NoCredentials,
    /// Credentials were found but are expired or not accepted.
    BadCredentials(String),
    /// The caller's credentials may not do this.
    AccessDenied(String),
    /// The secret, version or key does not exist.
    NotFound(String),
    /// The secret is scheduled for deletion.
    Deleted(String),
    /// The KMS key is disabled, pending deletion or pending import.
    KeyState(String),
    /// The service throttled us.
    Throttled(String),
    /// KMS refused the ciphertext (wrong key, wrong encryption context, damaged).
    InvalidCiphertext(String),
    /// The service refused a parameter (e.g. a malformed version id).
    Invalid(String),
    /// A conflicting request (e.g. a version id reused with another value).
    Conflict(String),
    /// No connection to the endpoint (refused, DNS, network).
    Unreachable(String),
    /// No answer in time, or a service-side failure: worth a replica region.
    Unavailable(String),
    /// Anything else the service refused.
    Other(String),
}

impl Failure {
    /// Whether another region might answer.
    pub fn regional(&self) -> bool {
        matches!(
            self,
            Failure::Unavailable(_) | Failure::Unreachable(_) | Failure::Throttled(_)
        )
    }
}

/// Why [`Failure::NoCredentials`]: the sources the SDK's default chain
/// tries, in its order.
pub const NO_CREDENTIALS: &str = "the AWS SDK's default provider chain found no credentials \
     (it tried environment variables, the shared config and credentials files, a web identity token, \
     container credentials and the instance metadata service)";

/// Why [`Failure::BadCredentials`] when a provider of the chain failed.
pub const PROVIDER_FAILED: &str = "a credential provider of the AWS SDK's chain failed (an assumed role or web \
     identity refused, an expired SSO or profile token, or STS unreachable)";

/// The longest service message kept in a [`Failure`]: AWS's messages are a
/// sentence or two (an access denial names the identity, action and
/// resource); anything longer is cut.
const MESSAGE_MAX: usize = 400;

/// Classifies an SDK error by its transport outcome and error code.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    tracing::debug!(error = %DisplayErrorContext(err), "AWS SDK error, in full");
    match err {
        SdkError::DispatchFailure(d) => {
            // The SDK reports a failed credential chain as a dispatch failure;
            // it is no regional outage, so it must not look like one.
            let detail = DisplayErrorContext(err).to_string();
            if detail.contains("credential") {
                // None found (the chain's end, or no instance metadata to
                // ask), or a provider that failed on its own: a role or web
                // identity refused, an expired token.
                return if detail.contains("no credentials found in chain")
                    || detail.contains("IMDS")
                {
                    Failure::NoCredentials
                } else {
                    Failure::BadCredentials(PROVIDER_FAILED.into())
                };
            }
            return if d.is_timeout() {
                Failure::Unreachable("no connection within aws.connect_timeout_secs".into())
            } else if d.is_io() {
                Failure::Unreachable("the connection failed (refused, DNS or network)".into())
            } else {
                Failure::Unreachable("the request could not be sent".into())
            };
        }
        SdkError::TimeoutError(_) => {
            return Failure::Unavailable("no answer within the configured timeout".into());
        }
        SdkError::ResponseError(_) => {
            return Failure::Unavailable("the service's answer could not be read".into());
        }
        _ => {}
    }
    let (code, text) = match (err.code(), err.raw_response()) {
        (Some(code), _) => (
            code.to_owned(),
            err.message().unwrap_or("no message").to_owned(),
        ),
        (None, Some(raw)) => without_code(raw),
        (None, None) => (String::new(), "no message".to_owned()),
    };
    let message = format!("{code}: {}", one_line(&text, MESSAGE_MAX));
    let (code, text) = (code.as_str(), text.as_str());
    match code {
        "ExpiredTokenException"
        | "ExpiredToken"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "RequestExpired"
        | "RequestTimeTooSkewed"
        | "InvalidClientTokenId" => Failure::BadCredentials(message),
        // Secrets Manager could not decrypt the secret with its own KMS key:
        // a permission of that key's, in practice.
        "DecryptionFailure" => Failure::AccessDenied(message),
        "InvalidKeyUsageException" => Failure::KeyState(message),
        "AccessDeniedException" | "AccessDenied" => Failure::AccessDenied(message),
        "ResourceNotFoundException" | "NotFoundException" => Failure::NotFound(message),
        "DisabledException" | "KMSInvalidStateException" => Failure::KeyState(message),
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
        // Secrets Manager's answers for a secret scheduled for deletion
        // (AWS's wording, and moto's).
        "InvalidRequestException"
            if text.contains("marked for deletion") || text.contains("marked deleted") =>
        {
            Failure::Deleted(message)
        }
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

/// The code and message of an answer the SDK found no error code in: an
/// error in XML (`<Code>`, `<Message>`: the query protocol's shape, which an
/// IAM authorization layer can answer with even for a JSON service), or else
/// the HTTP status alone.
fn without_code(raw: &HttpResponse) -> (String, String) {
    let body = raw
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let len = body.get(start..)?.find(&format!("</{name}>"))?;
        body.get(start..start + len).map(str::to_owned)
    };
    let status = raw.status().as_u16();
    match (element("Code"), element("Message")) {
        (Some(code), message) => (code, message.unwrap_or_else(|| format!("HTTP {status}"))),
        _ => (
            match status {
                403 => "AccessDenied",
                404 => "ResourceNotFoundException",
                429 => "ThrottlingException",
                500..=599 => "ServiceUnavailable",
                _ => "",
            }
            .to_owned(),
            format!("HTTP {status} without an AWS error code"),
        ),
    }
}

/// `text` on one line, at most `max` bytes (cut at a character, then `…`).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The first of `ids` that is an ARN of another region than `region`, with
/// the region it names. A secret name is looked up in the region in use,
/// but an ARN is found only in its own region, and a KMS key lives in one.
pub fn arn_elsewhere<'a>(
    region: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Option<(String, String)> {
    ids.into_iter().find_map(|id| {
        let parts: Vec<&str> = id.splitn(5, ':').collect();
        match parts.as_slice() {
            ["arn", _, _, r, _] if !r.is_empty() && *r != region => {
                Some((id.to_owned(), (*r).to_owned()))
            }
            _ => None,
        }
    })
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
mod tests;
