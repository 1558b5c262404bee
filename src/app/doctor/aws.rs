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
use crate::app::startup::{Backends, load_keyring};
use crate::backends::aws_sdk::{AwsSettings, Failure, NO_CREDENTIALS, classify, sdk_config};
use crate::backends::kms::aws_kms::AwsKms;
use crate::backends::store::secrets_manager::AwsStore;

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
    if let Some(role) = role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("envelope-doctor")
            .configure(&sdk)
            .build()
            .await;
        sdk = sdk
            .into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
    }
    let mut checks = vec![region(settings, aws, &sdk)];
    checks.extend(identity_and_clock(&sdk, role_arn).await);
    let backends = Backends {
        store: Arc::new(AwsStore::new(aws, &sdk).await),
        kms: Arc::new(
            AwsKms::with_endpoint(
                &sdk,
                aws.kms_key_id.clone().unwrap_or_default(),
                aws.kms_endpoint_url.as_deref(),
            )
            .allowing(&aws.allowed_kms_keys),
        ),
    };
    for k in &settings.keys {
        checks.extend(key(settings, &backends, k).await);
    }
    for region in &aws.replica_regions {
        checks.push(replica(&sdk, settings, region).await);
    }
    checks
}

/// The region in use, and any ARN in the configuration that names another:
/// a secret name is looked up in this region, but an ARN must be in it.
fn region(settings: &Settings, aws: &AwsSettings, sdk: &aws_config::SdkConfig) -> Check {
    let Some(ours) = sdk.region().map(ToString::to_string) else {
        return Check::fail(
            "region",
            "no region: neither aws.region nor the SDK's region chain (AWS_REGION, the profile) gives one",
            "set aws.region",
        );
    };
    let arns = aws
        .kms_key_id
        .iter()
        .cloned()
        .chain(aws.allowed_kms_keys.iter().cloned())
        .chain(
            settings
                .keys
                .iter()
                .flat_map(|k| std::iter::once(k.secret_id()).chain(k.salt_secret_id.clone())),
        );
    let elsewhere: Vec<String> = arns
        .filter(|id| {
            let parts: Vec<&str> = id.splitn(5, ':').collect();
            matches!(parts.as_slice(), ["arn", _, _, r, _] if !r.is_empty() && *r != ours)
        })
        .collect();
    match elsewhere.first() {
        None => Check::ok("region", ours),
        Some(id) => Check::fail(
            "region",
            format!("{id} names another region than {ours}, the one in use"),
            "set aws.region to the region of the secrets and the KMS key, or name resources of this region",
        ),
    }
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

/// One key: loaded as `serve` loads it (the secret, its staged versions,
/// KMS Decrypt or the seed shape's derivation), then GenerateDataKey under
/// the context its records' data keys use.
async fn key(
    settings: &Settings,
    backends: &Backends,
    k: &crate::app::config::KeyConfig,
) -> Vec<Check> {
    let name = format!("key {}", k.name);
    let mut one = settings.clone();
    one.keys = vec![k.clone()];
    let keyring = match load_keyring(&one, backends).await {
        Ok(r) => r,
        Err(e) => return vec![Check::failed(name, &e)],
    };
    let Ok(loaded) = keyring.get(&k.name) else {
        return vec![Check::fail(
            name,
            "not in the keyring after loading",
            "report this",
        )];
    };
    let set = loaded.snapshot();
    let mut stages: Vec<String> = set
        .versions
        .values()
        .flat_map(|l| {
            l.stages
                .iter()
                .map(move |s| format!("{s} {}", l.master.version.as_str()))
        })
        .filter(|s| s.starts_with("AWS"))
        .collect();
    stages.sort();
    let mut checks = vec![Check::ok(
        name,
        format!(
            "secret {}: {} version(s) loaded; {}",
            k.secret_id(),
            set.versions.len(),
            stages.join(", ")
        ),
    )];
    let current = set.current.version.as_str().to_owned();
    let mut ctx = crate::keys::master_key::kms_context(&k.name, &current);
    ctx.insert("envelope:purpose".into(), "record-data-key".into());
    let check = format!("generate {}", k.name);
    checks.push(match backends.kms.generate_data_key(&ctx).await {
        // The key is zeroized as it drops here.
        Ok(_) => Check::ok(
            check,
            format!("KMS GenerateDataKey permitted on {}", backends.kms.key_id()),
        ),
        Err(e) => Check::failed(check, &e),
    });
    checks
}

/// A replica region answers DescribeSecret for the first key's secret.
/// With the primary's SDK configuration (its credentials, assumed role
/// included, and endpoint) in `region`.
async fn replica(sdk: &aws_config::SdkConfig, settings: &Settings, region: &str) -> Check {
    let name = format!("replica {region}");
    let Some(secret) = settings
        .keys
        .first()
        .map(crate::app::config::KeyConfig::secret_id)
    else {
        return Check::ok(name, "no key to look up");
    };
    let secret = crate::backends::aws_sdk::secret_id_in_region(&secret, region);
    let config = aws_sdk_secretsmanager::config::Builder::from(sdk)
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
    match client.describe_secret().secret_id(&secret).send().await {
        Ok(_) => Check::ok(name, format!("DescribeSecret {secret} answered")),
        Err(e) => {
            let failure = classify(&e);
            let fix = match failure {
                Failure::NotFound(_) => "replicate the secret to this region (Secrets Manager replication), or remove the region from aws.replica_regions".to_owned(),
                _ => failure_fix(&failure),
            };
            Check::fail(
                name,
                format!("DescribeSecret {secret}: {}", failure_text(&failure)),
                fix,
            )
        }
    }
}
