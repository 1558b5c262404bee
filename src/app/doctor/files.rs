//! The checks of local files: TLS material, the policy, and local mode's
//! data directory and keys.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Check;
use crate::app::config::{POLICY_FORMAT, POLICY_PATH, Settings};
use crate::backends::store::StoreError;
use crate::edge::authz::Policy;
use crate::edge::tls::TlsSettings;

/// A certificate this close to its end is a warning.
const WARN_DAYS: i64 = 30;

/// The server certificate (readable, in its validity period, days left),
/// its key (matching), and the client CA bundle.
pub(super) fn tls(tls: &TlsSettings) -> Vec<Check> {
    let cert = certificate(tls);
    // The key is checked against a certificate the server would take.
    let usable = cert.outcome != super::Outcome::Fail;
    let mut checks = vec![cert];
    checks.extend(usable.then(|| {
        // Without the client CA, which has its own check below.
        let own = TlsSettings {
            client_ca: None,
            ..tls.clone()
        };
        match crate::edge::tls::server_config(&own, false) {
            Ok(_) => Check::ok(
                "tls key",
                format!("{}: matches the certificate", tls.key.display()),
            ),
            Err(e) => Check::failed("tls key", &e),
        }
    }));
    if let Some(ca) = &tls.client_ca {
        checks.push(match crate::edge::tls::client_roots(ca) {
            Ok(roots) => Check::ok(
                "tls client CA",
                format!("{}: {} CA certificate(s)", ca.display(), roots.len()),
            ),
            Err(e) => Check::fail(
                "tls client CA",
                super::super::report::one_line(&e.to_string()),
                "give tls.client_ca a readable PEM bundle of the CAs that sign client certificates",
            ),
        });
    }
    checks
}

fn certificate(tls: &TlsSettings) -> Check {
    const NAME: &str = "tls certificate";
    let path = tls.cert.display();
    let pem = match std::fs::read(&tls.cert) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read {path}: {e}"),
                "check tls.cert and that the service's user can read it",
            );
        }
    };
    let leaf = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE");
    let Some(leaf) = leaf else {
        return Check::fail(
            NAME,
            format!("{path}: no CERTIFICATE in it"),
            "give tls.cert a PEM certificate chain, leaf first",
        );
    };
    let Ok(cert) = leaf.parse_x509() else {
        return Check::fail(
            NAME,
            format!("{path}: the first certificate does not parse"),
            "give tls.cert a PEM certificate chain, leaf first",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let days_left = until.saturating_sub(now) / 86_400;
    let subject = cert.subject().to_string();
    let ends = validity.not_after.to_string();
    if now > until {
        Check::fail(
            NAME,
            format!("{path} ({subject}) expired on {ends}"),
            "renew the certificate (cert-manager, or your CA); the server reloads tls.cert without a restart",
        )
    } else if now < from {
        Check::fail(
            NAME,
            format!(
                "{path} ({subject}) is not valid before {}",
                validity.not_before
            ),
            "check this host's clock, or issue a certificate valid now",
        )
    } else if days_left < WARN_DAYS {
        Check::warn(
            NAME,
            format!("{path} ({subject}) expires on {ends}: {days_left} days left"),
            Some("renew it soon; the server reloads tls.cert without a restart".into()),
        )
    } else {
        Check::ok(
            NAME,
            format!("{path} ({subject}), expires on {ends}: {days_left} days left"),
        )
    }
}

/// The policy file parses, with who may do what; no policy in AWS mode
/// (or off loopback) denies every call.
pub(super) fn policy(settings: &Settings) -> Check {
    const NAME: &str = "policy";
    let Some(path) = &settings.policy_file else {
        let denies = settings.reachable_from_network();
        return if denies {
            Check::fail(
                NAME,
                "no policy_file: every Envelope and Admin call will be denied",
                "set policy_file to a policy that grants the callers (docs/CONFIG.md, \"Policy\")",
            )
        } else {
            Check::ok(
                NAME,
                "no policy_file: local mode on loopback allows every call",
            )
        };
    };
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it: {e}"))
        .and_then(|text| Policy::parse(&text));
    match parsed {
        Ok(p) => Check::ok(NAME, format!("{}: {}", path.display(), summary(&p))),
        // Unreadable (most often a wrong path) is not malformed.
        Err(why) if why.starts_with("cannot read it") => {
            Check::fail(NAME, format!("{}: {why}", path.display()), POLICY_PATH)
        }
        Err(why) => Check::fail(NAME, format!("{}: {why}", path.display()), POLICY_FORMAT),
    }
}

/// Who may do what, on one line.
fn summary(p: &Policy) -> String {
    let grants: Vec<String> = p
        .allow
        .iter()
        .map(|g| {
            let mut who = g.callers.join(", ");
            if g.anonymous {
                who = if who.is_empty() {
                    "anonymous".into()
                } else {
                    format!("{who}, anonymous")
                };
            }
            let ops: Vec<&str> = g.operations.iter().map(|o| o.as_str()).collect();
            let scoped = if g.context.is_empty() {
                ""
            } else {
                " (context-scoped)"
            };
            format!(
                "{who} may {} on {}{scoped}",
                ops.join("/"),
                g.keys.join(", ")
            )
        })
        .collect();
    let text = format!("{} grant(s): {}", grants.len(), grants.join("; "));
    crate::app::report::one_line(&text)
}

/// Local mode: the data directory is private, and each key loads (or
/// `serve` would create its first version).
pub(super) async fn local_keys(settings: &Settings) -> Vec<Check> {
    let dir = &settings.data_dir;
    if !dir.join("root.key").exists() {
        return vec![Check::warn(
            "data directory",
            format!(
                "{}: no root.key yet; `serve` creates it and each key's first version",
                dir.display()
            ),
            None,
        )];
    }
    if let Err(why) = crate::backends::private_files::check_private(dir) {
        return vec![Check::fail(
            "data directory",
            why,
            format!("chmod 700 {}", dir.display()),
        )];
    }
    let mut checks = vec![Check::ok(
        "data directory",
        format!("{}: private", dir.display()),
    )];
    let backends = match crate::app::startup::open_backends(settings).await {
        Ok(b) => b,
        Err(e) => {
            checks.push(Check::failed("data directory", &e));
            return checks;
        }
    };
    for k in &settings.keys {
        let mut one = settings.clone();
        one.keys = vec![k.clone()];
        let name = format!("key {}", k.name);
        checks.push(
            match crate::app::startup::load_keyring(&one, &backends).await {
                Ok(_) => Check::ok(name, "loads"),
                Err(crate::app::startup::ServeError::Key {
                    source:
                        crate::keys::Error::NoCurrent(_)
                        | crate::keys::Error::Store(StoreError::SecretNotFound { .. }),
                    ..
                }) => Check::warn(name, "no version yet; `serve` creates the first", None),
                Err(e) => Check::failed(name, &e),
            },
        );
    }
    checks
}

/// The audit output `serve` would open: stdout, or a file it may append to
/// (or create, in a directory that exists). Opens nothing for writing.
pub(super) fn audit(settings: &Settings) -> Check {
    use crate::edge::audit::Output;
    let path = match &settings.audit {
        None => return Check::ok("audit", "off"),
        Some(Output::Stdout) => return Check::ok("audit", "stdout"),
        Some(Output::File(p)) => p,
    };
    let fix =
        "set [audit] output to a file in a directory that exists and the service's user may write";
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            Check::fail("audit", format!("{} is a directory", path.display()), fix)
        }
        Ok(m) if m.permissions().readonly() => {
            Check::fail("audit", format!("{} is read-only", path.display()), fix)
        }
        Ok(_) => Check::ok("audit", format!("{}: appended to", path.display())),
        Err(_) => match path.parent().map(std::fs::metadata) {
            Some(Ok(d)) if d.is_dir() => Check::ok(
                "audit",
                format!("{}: created at start, mode 0600", path.display()),
            ),
            _ => Check::fail(
                "audit",
                format!("{}: its directory does not exist", path.display()),
                fix,
            ),
        },
    }
}
