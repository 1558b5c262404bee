//! The TOML config of a server in AWS mode for the tests: plaintext on
//! loopback with the open policy, Secrets Manager and KMS at an endpoint
//! (moto, or a proxy in front of it).

/// The AWS clients' timeouts and attempts (the `[aws]` table).
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect_secs: u64,
    pub attempt_secs: u64,
    pub operation_secs: u64,
    /// `None`: the server's default.
    pub max_attempts: Option<u32>,
}

/// Fail fast, for start-up errors and outages: one-second attempts, two of them.
pub const FAIL_FAST: Timeouts = Timeouts {
    connect_secs: 1,
    attempt_secs: 1,
    operation_secs: 2,
    max_attempts: Some(2),
};

/// Room for several replicas under load, with the default attempts.
pub const UNDER_LOAD: Timeouts = Timeouts {
    connect_secs: 1,
    attempt_secs: 2,
    operation_secs: 4,
    max_attempts: None,
};

/// An AWS-mode config with the AWS APIs at `endpoint` and `kms_key` for new
/// master keys; `top` holds further top-level settings, `keys` the
/// `[[keys]]` tables.
pub fn aws_config(
    endpoint: &str,
    kms_key: &str,
    timeouts: Timeouts,
    top: &str,
    keys: &str,
) -> String {
    let Timeouts {
        connect_secs,
        attempt_secs,
        operation_secs,
        max_attempts,
    } = timeouts;
    let max_attempts = max_attempts.map_or(String::new(), |n| format!("max_attempts = {n}\n"));
    format!(
        "mode = \"aws\"\ninsecure_plaintext = true\npolicy_file = \"{}\"\n{top}\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nkms_key_id = \"{kms_key}\"\n\
         connect_timeout_secs = {connect_secs}\nattempt_timeout_secs = {attempt_secs}\n\
         operation_timeout_secs = {operation_secs}\n{max_attempts}{keys}",
        super::open_policy()
    )
}

/// A `[[keys]]` table: key `name` on the secret `secret_id`.
pub fn secret_key(name: &str, secret_id: &str) -> String {
    format!("[[keys]]\nname = \"{name}\"\nsecret_id = \"{secret_id}\"\n")
}
