//! `envelope migrate`'s PostgreSQL connection: the URL without a password
//! on the command line, the password from `PGPASSWORD` or the password
//! file, and TLS as `sslmode` asks, with the server's certificate always
//! verified (libpq's `require` does not verify; here it does, as
//! `verify-full`).

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_postgres::config::SslMode;

use super::MigrateArgs;

/// Connects to the database `args` names.
pub(super) async fn database(args: &MigrateArgs) -> anyhow::Result<tokio_postgres::Client> {
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => std::env::var("DATABASE_URL")
            .context("no --database-url and no DATABASE_URL in the environment")?,
    };
    // tokio-postgres knows disable, prefer and require; every TLS
    // connection here verifies the certificate and host name, so libpq's
    // verify-ca and verify-full are require.
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut config: tokio_postgres::Config = url.parse().context("the database URL")?;
    // Names the migrator's session, so its writes can be told apart.
    config.application_name("envelope migrate");
    if config.get_password().is_none() {
        if let Ok(p) = std::env::var("PGPASSWORD") {
            config.password(p);
        } else if let Some(p) = pgpass_for(&config) {
            config.password(p);
        }
    }
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("cannot connect to PostgreSQL")?;
        spawn_connection(conn);
        client
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(args)?);
        let (client, conn) = config
            .connect(tls)
            .await
            .context("cannot connect to PostgreSQL (TLS as sslmode asks, verified against --db-ca-file or the system CAs)")?;
        spawn_connection(conn);
        client
    };
    Ok(client)
}

fn spawn_connection<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("PostgreSQL connection: {e}");
        }
    });
}

/// The client TLS settings: the CAs of `--db-ca-file` (or `PGSSLROOTCERT`),
/// else the system's roots.
fn tls_config(args: &MigrateArgs) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &args.db_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --db-ca-file {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("{}: not PEM", path.display()))?;
                roots.add(cert).context("an unusable CA certificate")?;
            }
            if roots.is_empty() {
                anyhow::bail!("{}: no CERTIFICATE found", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // An unusable system root is skipped, as every client does.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Ok(rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The password file's entry for `config`'s first host, if any.
fn pgpass_for(config: &tokio_postgres::Config) -> Option<String> {
    let host = match config.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user()?;
    let database = config.get_dbname().unwrap_or(user);
    crate::app::pgpass::lookup(
        &crate::app::pgpass::default_path()?,
        &host,
        port,
        database,
        user,
    )
}
