//! The AWS checks: the identity the SDK's default chain gives (or a role
//! assumed from it), the clock against AWS's, each key loaded as `serve`
//! loads it, GenerateDataKey under the key's context, and the replica
//! regions.

use std::sync::{Arc, Mutex};

use aws_sdk_sts::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_sts::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sts::error::BoxError;

use super::Check;
use crate::app::config::Settings;
use crate::app::startup::Backends;
use crate::backends::aws_sdk::{AwsSettings, Failure, NO_CREDENTIALS, classify, sdk_config};
use crate::backends::kms::aws_kms::AwsKms;
use crate::backends::store::secrets_manager::AwsStore;
use crate::backends::store::{AWSCURRENT, VersionInfo};

/// A clock this far from AWS's is a warning; past `CLOCK_FAIL_SECS`, AWS
/// refuses the signatures (SigV4 allows 5 minutes).
const CLOCK_WARN_SECS: i64 = 60;
const CLOCK_FAIL_SECS: i64 = 300;

pub(super) async fn checks(
    settings: &Settings,
    aws: &AwsSettings,
    role_arn: Option<&str>,
) -> Vec<Check> {
    let mut sdk = sdk_config(aws, None).await;
    let mut checks = vec![region(settings, aws, &sdk)];
    if let Some(role) = role_arn {
        match assume(&sdk, role).await {
            Ok(assumed) => sdk = assumed,
            Err(failed) => {
                checks.push(failed);
                return checks;
            }
        }
    }
    checks.extend(identity_and_clock(&sdk, role_arn).await);
    // The key steps ask the primary region alone: a store with replicas
    // would answer from one and hide the primary's failure. The replica
    // checks below ask each replica.
    let primary_only = AwsSettings {
        replica_regions: Vec::new(),
        ..aws.clone()
    };
    let backends = Backends {
        store: Arc::new(AwsStore::new(&primary_only, &sdk).await),
        kms: Arc::new(
            AwsKms::with_endpoint(
                &sdk,
                aws.kms_key_id.clone().unwrap_or_default(),
                aws.kms_endpoint_url.as_deref(),
            )
            .allowing(&aws.allowed_kms_keys),
        ),
    };
    let mut primary = Vec::new();
    for k in &settings.keys {
        let (key_checks, versions) = super::key::checks(settings, &backends, k).await;
        checks.extend(key_checks);
        primary.push((k.secret_id(), versions));
    }
    for region in &aws.replica_regions {
        checks.push(replica(&sdk, &primary, region).await);
    }
    checks
}

/// The region in use, and any ARN in the configuration that names another:
/// a secret name is looked up in this region, but an ARN must be in it.
fn region(settings: &Settings, aws: &AwsSettings, sdk: &aws_config::SdkConfig) -> Check {
    let ours = match crate::app::startup::region_in_use(sdk) {
        Ok(region) => region,
        Err(e) => return Check::failed("region", &e),
    };
    match crate::app::startup::same_region(aws, &settings.secret_ids(), &ours) {
        Ok(()) => Check::ok("region", ours),
        Err(e) => Check::failed("region", &e),
    }
}

/// The SDK configuration with the credentials of `role`, assumed (STS
/// AssumeRole) from the identity the default chain gives; or the failed
/// identity check, with AWS's reason.
async fn assume(sdk: &aws_config::SdkConfig, role: &str) -> Result<aws_config::SdkConfig, Check> {
    let answer = aws_sdk_sts::Client::new(sdk)
        .assume_role()
        .role_arn(role)
        .role_session_name("envelope-doctor")
        .send()
        .await;
    let refused = |failure: Failure| {
        let fix = match failure {
            Failure::AccessDenied(_) => format!(
                "let this identity assume the role: allow sts:AssumeRole on {role} in its IAM policy, \
                 and name it as a principal in the role's trust policy"
            ),
            Failure::NotFound(_) | Failure::Invalid(_) => "check the role ARN".to_owned(),
            _ => failure_fix(&failure),
        };
        Check::fail(
            "aws identity",
            format!("cannot assume {role}: {}", failure_text(&failure)),
            fix,
        )
    };
    let out = answer.map_err(|e| refused(classify(&e)))?;
    let Some(c) = out.credentials() else {
        return Err(refused(Failure::Other(
            "STS returned no credentials".into(),
        )));
    };
    let credentials = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        std::time::SystemTime::try_from(*c.expiration()).ok(),
        "envelope-doctor",
    );
    Ok(sdk
        .clone()
        .into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        )
        .build())
}

/// Captures the `Date` header of the answer.
#[derive(Debug, Default)]
struct DateOf(Arc<Mutex<Option<String>>>);

impl Intercept for DateOf {
    fn name(&self) -> &'static str {
        "DateOf"
    }

    fn read_before_deserialization(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let (Some(date), Ok(mut slot)) = (ctx.response().headers().get("date"), self.0.lock()) {
            *slot = Some(date.to_owned());
        }
        Ok(())
    }
}

async fn identity_and_clock(sdk: &aws_config::SdkConfig, role_arn: Option<&str>) -> Vec<Check> {
    let date = Arc::new(Mutex::new(None));
    let sts = aws_sdk_sts::Client::new(sdk);
    let answer = sts
        .get_caller_identity()
        .customize()
        .interceptor(DateOf(date.clone()))
        .send()
        .await;
    let identity = match answer {
        Ok(who) => Check::ok(
            "aws identity",
            format!(
                "{}{}",
                who.arn().unwrap_or("an identity without an ARN"),
                role_arn
                    .map(|r| format!(" (assumed {r})"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => {
            let failure = classify(&e);
            Check::fail(
                "aws identity",
                failure_text(&failure),
                failure_fix(&failure),
            )
        }
    };
    let mut checks = vec![identity];
    let seen = date.lock().ok().and_then(|d| d.clone());
    let Some(theirs) = seen.and_then(|d| httpdate::parse_http_date(&d).ok()) else {
        checks.push(Check::warn(
            "clock",
            "not checked: no Date header came back from AWS",
            None,
        ));
        return checks;
    };
    {
        let ours = std::time::SystemTime::now();
        let offset = match ours.duration_since(theirs) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let detail = format!("this host's clock is {offset:+} s from AWS's (its Date header)");
        checks.push(if offset.abs() > CLOCK_FAIL_SECS {
            Check::fail("clock", detail, "synchronise the clock (NTP, chrony): AWS refuses signatures more than 5 minutes off")
        } else if offset.abs() > CLOCK_WARN_SECS {
            Check::warn("clock", detail, Some("synchronise the clock (NTP, chrony)".into()))
        } else {
            Check::ok("clock", detail)
        });
    }
    checks
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::NoCredentials => format!("no usable AWS credentials: {NO_CREDENTIALS}"),
        Failure::BadCredentials(m) => format!("AWS does not accept the credentials: {m}"),
        Failure::Unreachable(m) => format!("no connection to AWS STS: {m}"),
        Failure::AccessDenied(m)
        | Failure::NotFound(m)
        | Failure::Deleted(m)
        | Failure::KeyState(m)
        | Failure::Throttled(m)
        | Failure::InvalidCiphertext(m)
        | Failure::Invalid(m)
        | Failure::Conflict(m)
        | Failure::Unavailable(m)
        | Failure::Other(m) => m.clone(),
    }
}

fn failure_fix(f: &Failure) -> String {
    match f {
        Failure::NoCredentials => crate::app::report::credentials_fix(NO_CREDENTIALS),
        Failure::BadCredentials(m) => crate::app::report::credentials_fix(m),
        _ => "check aws.region and any endpoint_url, and that this host reaches the AWS endpoints"
            .into(),
    }
}

/// Each replica region answers DescribeSecret and GetSecretValue for every
/// key's secret, as `serve` asks when the primary fails, with AWSCURRENT on
/// the same version as in the primary (`primary`: each key's secret and its
/// versions there, when DescribeSecret answered). With the primary's SDK
/// configuration (its credentials, assumed role included, and endpoint).
/// KMS is not asked in the replica: Envelope calls KMS in the primary only.
async fn replica(
    sdk: &aws_config::SdkConfig,
    primary: &[(String, Option<Vec<VersionInfo>>)],
    region: &str,
) -> Check {
    let name = format!("replica {region}");
    let config = aws_sdk_secretsmanager::config::Builder::from(sdk)
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
    let mut lagging = Vec::new();
    for (secret, versions) in primary {
        let secret = crate::backends::aws_sdk::secret_id_in_region(secret, region);
        let described = client.describe_secret().secret_id(&secret).send().await;
        let read = match described {
            Ok(d) => {
                let current = d.version_ids_to_stages().and_then(|m| {
                    m.iter()
                        .find(|(_, stages)| stages.iter().any(|s| s == AWSCURRENT))
                        .map(|(id, _)| id.clone())
                });
                let theirs = versions
                    .as_ref()
                    .and_then(|v| v.iter().find(|v| v.has(AWSCURRENT)).map(|v| v.id.clone()));
                if let (Some(here), Some(there)) = (&current, &theirs)
                    && here != there
                {
                    lagging.push(format!(
                        "{secret}: AWSCURRENT is {here} here, {there} in the primary"
                    ));
                }
                client
                    .get_secret_value()
                    .secret_id(&secret)
                    .version_stage(AWSCURRENT)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| ("GetSecretValue", classify(&e)))
            }
            Err(e) => Err(("DescribeSecret", classify(&e))),
        };
        if let Err((call, failure)) = read {
            let fix = match failure {
                Failure::NotFound(_) => "replicate the secret to this region (Secrets Manager replication), or remove the region from aws.replica_regions".to_owned(),
                Failure::AccessDenied(ref m) => crate::app::report::denial_fix(
                    m,
                    "secretsmanager:DescribeSecret and secretsmanager:GetSecretValue on the replica secret",
                    "the secret's resource policy",
                ),
                _ => failure_fix(&failure),
            };
            return Check::fail(
                name,
                format!("{call} {secret}: {}", failure_text(&failure)),
                fix,
            );
        }
    }
    match lagging.first() {
        Some(first) => Check::warn(
            name,
            format!("{first} (replication lag, or not a replica of the secret)"),
            Some("check the secret's replication status (`aws secretsmanager describe-secret`, ReplicationStatus)".into()),
        ),
        None => Check::ok(
            name,
            format!(
                "DescribeSecret and GetSecretValue answered for {} secret(s), AWSCURRENT as in the primary",
                primary.len()
            ),
        ),
    }
}
