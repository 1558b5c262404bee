//! What the binary prints when an error ends it: at most three lines, for
//! a person. The first says what failed and why, naming the setting, file,
//! secret or key (the errors' own messages, which never carry the SDK's
//! Debug output); the second, when one is known, what to do. `--verbose`
//! adds the chain of causes and the SDK's full errors in the debug log.
//! docs/OPERATIONS.md ("Start-up errors") tabulates the same fixes.

use std::error::Error as StdError;

use crate::app::config::ConfigError;
use crate::app::config::{POLICY_FORMAT, POLICY_PATH};
use crate::app::startup::ServeError;
use crate::backends::kms::KmsError;
use crate::backends::store::StoreError;
use crate::edge::tls::TlsError;
use crate::keys::Error as KeyError;
use crate::keys::master_key::MasterKeyError;
use crate::keys::rotation::RotationError;
use backends::{kms_fix, master_fix, store_fix};

/// Where the first deployment's checks are explained.
const FIRST_DEPLOYMENT: &str = "docs/OPERATIONS.md, \"First deployment\"";

/// The longest first line: a message longer than this is cut.
const LINE_MAX: usize = 600;

/// The text printed for `err`, ending in a newline: `error: …`, then
/// `fix: …` when a fix is known, then a pointer to `--verbose` (or, with
/// `verbose`, every cause on its own line).
pub fn render(err: &anyhow::Error, verbose: bool) -> String {
    let mut out = format!("error: {}\n", first_line(err));
    if let Some(fix) = fix(err.as_ref()) {
        out.push_str(&format!("fix: {fix}\n"));
    }
    if verbose {
        for (i, cause) in err.chain().enumerate().skip(1) {
            out.push_str(&format!("  cause {i}: {}\n", one_line(&cause.to_string())));
        }
    } else {
        out.push_str("(--verbose shows every cause and logs the AWS SDK's full errors)\n");
    }
    out
}

/// What failed and why: every error of the chain, outermost first, each
/// left out when an outer one already says it (our errors name their
/// source in their own message; a context such as "cannot open FILE" does
/// not), on one bounded line.
fn first_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<tonic::Status>() {
            // Its Display carries the metadata map.
            Some(status) => format!("{:?}: {}", status.code(), status.message()),
            None => cause.to_string(),
        };
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    one_line(&line)
}

/// `text` on one line, at most [`LINE_MAX`] bytes.
pub(crate) fn one_line(text: &str) -> String {
    crate::backends::aws_sdk::one_line(text, LINE_MAX)
}

/// What to do about `err`: the fix of the first error in its chain that has
/// one, most specific (deepest) first.
pub fn fix(err: &(dyn StdError + 'static)) -> Option<String> {
    let chain: Vec<&(dyn StdError + 'static)> =
        std::iter::successors(Some(err), |&e| e.source()).collect();
    chain
        .iter()
        .find_map(|e| outer_fix(*e))
        .or_else(|| chain.iter().rev().find_map(|e| fix_one(*e)))
        .or_else(|| chain.iter().rev().find_map(|e| generic_fix(*e)))
}

/// Fixes an outer error knows better than its source: a salt secret not
/// found is no key secret to create with init-keys.
fn outer_fix(err: &(dyn StdError + 'static)) -> Option<String> {
    match err.downcast_ref::<ServeError>()? {
        ServeError::Salt {
            source: StoreError::SecretNotFound { .. },
            ..
        } => {
            Some("correct the key's salt_secret_id, or create that secret (seed 004's salt)".into())
        }
        _ => None,
    }
}

/// Fixes for errors that say less than the error around them (an I/O or
/// database error under a context): used only when no error of the chain
/// has its own.
fn generic_fix(err: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(e) = err.downcast_ref::<std::io::Error>() {
        return match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                Some("choose a free --listen address, or stop what holds it".into())
            }
            std::io::ErrorKind::NotFound => Some("check the path".into()),
            std::io::ErrorKind::PermissionDenied => {
                Some("check that this user may read (or write) the path".into())
            }
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<tokio_postgres::error::DbError>() {
        use tokio_postgres::error::SqlState;
        let code = e.code();
        return Some(
            if *code == SqlState::UNDEFINED_TABLE {
                "check --table: no such table for this database user (schema and search_path)"
            } else if *code == SqlState::UNDEFINED_COLUMN {
                "check --column and --id-column"
            } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                "grant the database user SELECT and UPDATE on the table, and CREATE for the \
                 checkpoint table (docs/ROTATION.md)"
            } else if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                "check the user in the database URL and its password (PGPASSWORD or ~/.pgpass)"
            } else {
                return None;
            }
            .into(),
        );
    }
    if let Some(e) = err.downcast_ref::<tokio_postgres::Error>()
        && e.as_db_error().is_none()
        && e.to_string().contains("connect")
    {
        return Some(
            "check that PostgreSQL listens at the database URL's host and port, and sslmode".into(),
        );
    }
    None
}

fn fix_one(err: &(dyn StdError + 'static)) -> Option<String> {
    // A transparent variant hands on its inner error's source, skipping the
    // inner error itself in the chain.
    if let Some(e) = err.downcast_ref::<RotationError>() {
        return match e {
            RotationError::Store(e) => store_fix(e),
            RotationError::Kms(e) => kms_fix(e),
            RotationError::MasterKey(e) => master_fix(e),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<StoreError>() {
        return store_fix(e);
    }
    if let Some(e) = err.downcast_ref::<KmsError>() {
        return kms_fix(e);
    }
    if let Some(e) = err.downcast_ref::<MasterKeyError>() {
        return master_fix(e);
    }
    if let Some(e) = err.downcast_ref::<KeyError>() {
        return match e {
            KeyError::NoCurrent(_) => Some(
                "create the key's first version with `envelope init-keys --config FILE`, \
                 or stage an existing version AWSCURRENT"
                    .into(),
            ),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<ConfigError>() {
        return Some(match e {
            ConfigError::Read { .. } => "give --config a readable file".into(),
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => {
                "correct the setting; every setting and its range is in docs/CONFIG.md".into()
            }
        });
    }
    if let Some(e) = err.downcast_ref::<TlsError>() {
        return Some(match e {
            TlsError::Read { .. } => "check the path and that the service's user can read it \
                                      (tls.cert, tls.key, tls.client_ca)"
                .into(),
            TlsError::Pem { what, .. } if what.contains("is not valid before") => {
                "check this host's clock, or issue a certificate valid now".into()
            }
            TlsError::Pem { what, .. } if what.contains("expired on") => {
                "renew the certificate (cert-manager, or your CA); the server reloads tls.cert \
                 without a restart"
                    .into()
            }
            _ => "check that tls.cert and tls.key hold a PEM certificate chain and \
                  its own private key"
                .into(),
        });
    }
    if let Some(e) = err.downcast_ref::<ServeError>() {
        return match e {
            ServeError::Policy(m) if m.starts_with("cannot read policy") => {
                Some(POLICY_PATH.into())
            }
            ServeError::Policy(_) => Some(POLICY_FORMAT.into()),
            ServeError::Audit(_) => {
                Some("check [audit] output: its directory must exist and be writable".into())
            }
            ServeError::NoRegion => Some("set aws.region (or AWS_REGION)".into()),
            ServeError::DataDir { .. } => Some(
                "fix data_dir (--data-dir): its parent must be a directory this user may write"
                    .into(),
            ),
            ServeError::DataDirUnsafe(_) => {
                Some("make the data directory this user's and owner-only: chmod 700 <dir>".into())
            }
            ServeError::WrongRegion { theirs, .. } => Some(format!(
                "set aws.region = \"{theirs}\" if the service runs there, or name the secret and KMS key \
                 of the region in use (a replica secret, a multi-Region key's replica)"
            )),
            ServeError::MetricsListen { .. } => {
                Some("choose a free metrics_listen address, or stop what holds it".into())
            }
            _ => None,
        };
    }
    // An io::Error's source skips its own inner error, so look inside it.
    let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
        err.downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<rustls::Error>()
    });
    if let Some(e) = tls {
        use rustls::CertificateError as C;
        return match e {
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Some(
                "give --server-name with a name the server's certificate holds (without it, the \
                 host of --addr is checked)"
                    .into(),
            ),
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
                Some("give --ca the CA bundle that signed the server's certificate".into())
            }
            _ => None,
        };
    }
    if err.downcast_ref::<tonic::transport::Error>().is_some() {
        return Some(
            "check that a server listens at --addr (`envelope serve` starts one), and give \
             --ca (and --client-cert, --client-key) for a TLS server"
                .into(),
        );
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        use tonic::Code;
        return match status.code() {
            Code::PermissionDenied | Code::Unauthenticated => Some(
                "the server's policy does not grant this caller this operation on this key \
                 (docs/CONFIG.md, \"Policy\"); with mTLS, check --client-cert"
                    .into(),
            ),
            Code::NotFound => Some("check --key (and --index): the server has no such name".into()),
            Code::Unavailable => {
                Some("the server cannot serve now (its keys or audit log): see its log".into())
            }
            _ => None,
        };
    }
    None
}

/// The fix for an access denial, from AWS's message, which says which
/// kind of policy is missing ("because no identity-based policy allows …",
/// "… no resource-based policy allows …") or which denies ("with an
/// explicit deny in a service control policy", …).
pub(crate) fn denial_fix(message: &str, allow: &str, resource_policy: &str) -> String {
    // The action AWS names ("… is not authorized to perform: kms:DescribeKey
    // on resource …"), when the usual list lacks it.
    let named = message
        .split("perform: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|action| !allow.contains(action));
    let allow = &match named {
        Some(action) => format!("{action} ({allow} too)"),
        None => allow.to_owned(),
    };
    if message.contains("explicit deny") {
        format!(
            "a Deny statement overrides every Allow: find it where AWS's message says (a service \
             control policy, a permissions boundary, the role's policies or {resource_policy}) and \
             exempt the service's role"
        )
    } else if message.contains("resource-based policy") {
        format!(
            "the role's IAM policy is not enough here: add a statement to {resource_policy} \
             allowing the service's role {allow}; see {FIRST_DEPLOYMENT}"
        )
    } else if message.contains("identity-based policy") {
        format!("allow {allow} in the service's IAM role policy; see {FIRST_DEPLOYMENT}")
    } else {
        format!(
            "allow {allow} for the service's IAM role, in its IAM policy and, if one restricts \
             it, in {resource_policy}; see {FIRST_DEPLOYMENT}"
        )
    }
}

pub(crate) fn credentials_fix(reason: &str) -> String {
    if [
        "Signature expired",
        "RequestExpired",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
    ]
    .iter()
    .any(|m| reason.contains(m))
    {
        "AWS refused the request's signature: check this host's clock (NTP, chrony; AWS allows \
         5 minutes), then the credentials"
            .into()
    } else if reason == crate::backends::aws_sdk::PROVIDER_FAILED {
        "check the credential source the service uses: on EKS, the role ARN and token file of \
         IRSA (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE) and that the role trusts the cluster's \
         OIDC provider, or the Pod Identity association; and that STS is reachable (a VPC \
         endpoint, AWS_STS_REGIONAL_ENDPOINTS); --verbose shows the provider's own error"
            .into()
    } else if reason.contains("Expired") {
        "the credentials have expired: renew them (a new session, `aws sso login`); a pod's \
         web identity token is renewed by Kubernetes, so check its projected token volume"
            .into()
    } else if reason.contains("found no credentials") {
        format!(
            "give the service an identity: on EKS, an IAM role on its service account (IRSA or \
             EKS Pod Identity); on EC2, an instance profile; elsewhere AWS_PROFILE; see {FIRST_DEPLOYMENT}"
        )
    } else {
        "AWS does not accept these credentials: check which identity the SDK picked up \
         (`aws sts get-caller-identity` as the same user) and the region"
            .into()
    }
}

mod backends;
#[cfg(test)]
mod tests;
