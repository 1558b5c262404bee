//! One key, step by step, so a failure names the step: the secret
//! (DescribeSecret), its stages, the AWSCURRENT value (GetSecretValue), its
//! shape, unwrapping it (KMS Decrypt), every staged version loaded as
//! `serve` loads them, and GenerateDataKey under the records' data-key
//! context. A step that cannot run after a failure is shown as skipped.

use super::Check;
use crate::app::config::{KeyConfig, Settings};
use crate::app::startup::{Backends, kdf_params, load_keyring};
use crate::backends::store::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, VersionInfo};
use crate::keys::master_key::{self, Shape, UNWRAPPED_REFUSED};

/// The steps, in order: a failure skips the rest.
const STEPS: [&str; 7] = [
    "secret", "stages", "value", "shape", "decrypt", "versions", "generate",
];

/// The checks of key `k`, and the versions of its secret (for the replica
/// checks) when DescribeSecret answered.
pub(super) async fn checks(
    settings: &Settings,
    backends: &Backends,
    k: &KeyConfig,
) -> (Vec<Check>, Option<Vec<VersionInfo>>) {
    let mut out = Vec::new();
    let described = steps(settings, backends, k, &mut out).await;
    let done = out.len();
    for step in STEPS.iter().skip(done) {
        out.push(Check::skip(
            format!("{} {step}", k.name),
            "not checked: an earlier step failed",
        ));
    }
    (out, described)
}

/// Runs the steps until one fails, pushing a check for each that ran.
async fn steps(
    settings: &Settings,
    backends: &Backends,
    k: &KeyConfig,
    out: &mut Vec<Check>,
) -> Option<Vec<VersionInfo>> {
    let name = |step: &str| format!("{} {step}", k.name);
    let secret = k.secret_id();

    let versions = match backends.store.describe(&secret).await {
        Ok(v) => v,
        Err(e) => {
            out.push(Check::failed(name("secret"), &e));
            return None;
        }
    };
    out.push(Check::ok(
        name("secret"),
        format!("DescribeSecret {secret}: {} version(s)", versions.len()),
    ));

    let staged = |stage: &str| versions.iter().find(|v| v.has(stage));
    let Some(current) = staged(AWSCURRENT) else {
        out.push(Check::fail(
            name("stages"),
            "no version carries AWSCURRENT",
            "create the first version with `envelope init-keys --config FILE`, or stage a version AWSCURRENT",
        ));
        return Some(versions);
    };
    let listed: Vec<String> = [AWSCURRENT, AWSPREVIOUS, AWSPENDING]
        .iter()
        .filter_map(|s| staged(s).map(|v| format!("{s} {}", v.id)))
        .collect();
    out.push(match staged(AWSPENDING) {
        Some(_) => Check::warn(
            name("stages"),
            format!("{}: a rotation has not finished", listed.join(", ")),
            Some("let the rotation finish (`aws secretsmanager describe-secret` shows its state), or cancel it".into()),
        ),
        None => Check::ok(name("stages"), listed.join(", ")),
    });

    let value = match backends.store.get_stage(&secret, AWSCURRENT).await {
        Ok(v) => v,
        Err(e) => {
            out.push(Check::failed(name("value"), &e));
            return Some(versions);
        }
    };
    out.push(Check::ok(
        name("value"),
        format!("GetSecretValue of AWSCURRENT ({}) permitted", current.id),
    ));

    let kdf = match kdf_params(k, backends).await {
        Ok(kdf) => kdf,
        Err(e) => {
            out.push(Check::failed(name("shape"), &e));
            return Some(versions);
        }
    };
    match master_key::shape(&value.value, &kdf) {
        Ok(Shape::Wrapped { kms_key_id }) => out.push(Check::ok(
            name("shape"),
            format!("Envelope's document, wrapped by KMS key {kms_key_id}; allow_unwrapped_master_keys not needed"),
        )),
        Ok(Shape::Unwrapped(what)) if kdf.unwrapped.allows(&current.id) => out.push(Check::warn(
            name("shape"),
            format!("{what}, accepted by allow_unwrapped_master_keys or unwrapped_versions: whoever may write the secret chooses the key"),
            Some("rotate (`envelope rotate`) to a version in Envelope's shape, then remove the setting".into()),
        )),
        Ok(Shape::Unwrapped(what)) => {
            out.push(Check::fail(
                name("shape"),
                format!("{what}: {UNWRAPPED_REFUSED}"),
                "set allow_unwrapped_master_keys on the key only if this seed-shaped secret is meant; see docs/FORMAT.md",
            ));
            return Some(versions);
        }
        Err(reason) => {
            out.push(Check::fail(
                name("shape"),
                format!("AWSCURRENT ({}): {reason}", current.id),
                "write the secret in a shape Envelope reads (docs/FORMAT.md), or let `envelope init-keys` create it",
            ));
            return Some(versions);
        }
    }

    let wrapped = master_key::is_envelope_shape(&value.value);
    match master_key::load(
        &k.name,
        &secret,
        value.info.clone(),
        &value.value,
        backends.kms.as_ref(),
        &kdf,
    )
    .await
    {
        Ok(key) => out.push(Check::ok(
            name("decrypt"),
            if wrapped {
                format!(
                    "KMS Decrypt of AWSCURRENT permitted; key check value {}",
                    hex::encode(key.check_value)
                )
            } else {
                format!(
                    "no KMS call (a seed shape, stretched with PBKDF2); key check value {}",
                    hex::encode(key.check_value)
                )
            },
        )),
        Err(e) => {
            out.push(Check::failed(name("decrypt"), &e));
            return Some(versions);
        }
    }

    let mut one = settings.clone();
    one.keys = vec![k.clone()];
    let keyring = match load_keyring(&one, backends).await {
        Ok(r) => r,
        Err(e) => {
            out.push(Check::failed(name("versions"), &e));
            return Some(versions);
        }
    };
    let Ok(loaded) = keyring.get(&k.name) else {
        out.push(Check::fail(
            name("versions"),
            "not in the keyring after loading",
            "report this",
        ));
        return Some(versions);
    };
    out.push(Check::ok(
        name("versions"),
        format!(
            "{} version(s) loaded as `serve` loads them",
            loaded.snapshot().versions.len()
        ),
    ));

    let mut ctx = master_key::kms_context(&k.name, &current.id);
    ctx.insert("envelope:purpose".into(), "record-data-key".into());
    out.push(match backends.kms.generate_data_key(&ctx).await {
        // The key is zeroized as it drops here.
        Ok(_) => Check::ok(
            name("generate"),
            format!("KMS GenerateDataKey permitted on {}", backends.kms.key_id()),
        ),
        Err(e) => Check::failed(name("generate"), &e),
    });
    Some(versions)
}
