//! The client commands: `encrypt`, `decrypt`, `status` and `rotate` talk to a
//! running server over gRPC.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use tonic::transport::Channel;

use crate::pb;

/// Largest message the CLI sends or accepts.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Where the client commands connect, and how.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// Server address (host:port, or a URL).
    #[arg(long, default_value = crate::app::config::DEFAULT_LISTEN)]
    pub addr: String,
    /// PEM CA bundle that the server's certificate chains to: connect over TLS.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate (mTLS); needs --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM client private key (mTLS).
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// The server name to verify (default: the host of --addr).
    #[arg(long)]
    pub server_name: Option<String>,
}

/// Connects to `target`: plaintext, or TLS when `--ca` is given.
pub async fn connect(target: &Target) -> anyhow::Result<Channel> {
    let addr = target.addr.as_str();
    let scheme = if target.ca.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Channel::from_shared(url.clone())
        .with_context(|| format!("bad server address {addr:?}"))?;
    if let Some(ca) = &target.ca {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&target.client_cert, &target.client_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        if let Some(name) = &target.server_name {
            tls = tls.domain_name(name);
        }
        endpoint = endpoint.tls_config(tls).context("TLS configuration")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Parses repeated `k=v` flags into a context.
pub fn parse_context(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ctx = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--context expects key=value, got {p:?}");
        };
        if ctx.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--context key {k:?} given twice");
        }
    }
    Ok(ctx)
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    if buf.len() > MAX_MESSAGE {
        bail!("input is over {MAX_MESSAGE} bytes");
    }
    Ok(buf)
}

pub(super) fn client(ch: Channel) -> pb::envelope_client::EnvelopeClient<Channel> {
    pb::envelope_client::EnvelopeClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE * 2)
        .max_encoding_message_size(MAX_MESSAGE * 2)
}

/// The server's refusal as `CODE: message`, keeping the status in the chain
/// for its fix (`report`).
pub(super) fn status_err(s: tonic::Status) -> anyhow::Error {
    let shown = format!("{:?}: {}", s.code(), s.message());
    anyhow::Error::new(s).context(shown)
}

/// `envelope encrypt`: stdin plaintext → stdout ciphertext (base64 line with `--base64`).
pub async fn encrypt(
    target: &Target,
    key: &str,
    context: &[String],
    base64: bool,
) -> anyhow::Result<()> {
    let req = pb::EncryptRequest {
        indexes: Vec::new(),
        key: key.to_owned(),
        plaintext: Bytes::from(read_stdin()?),
        context: parse_context(context)?,
    };
    let resp = client(connect(target).await?)
        .encrypt(req)
        .await
        .map_err(status_err)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if base64 {
        writeln!(out, "{}", B64.encode(&resp.ciphertext))?;
    } else {
        out.write_all(&resp.ciphertext)?;
    }
    eprintln!("key_version: {}", resp.key_version);
    Ok(())
}

/// `envelope decrypt`: stdin ciphertext (base64 with `--base64`) → stdout plaintext.
pub async fn decrypt(
    target: &Target,
    key: &str,
    context: &[String],
    base64: bool,
) -> anyhow::Result<()> {
    let input = read_stdin()?;
    let ciphertext = if base64 {
        B64.decode(input.trim_ascii())
            .context("stdin is not base64")?
    } else {
        input
    };
    let req = pb::DecryptRequest {
        key: key.to_owned(),
        ciphertext: Bytes::from(ciphertext),
        context: parse_context(context)?,
    };
    let resp = client(connect(target).await?)
        .decrypt(req)
        .await
        .map_err(status_err)?
        .into_inner();
    std::io::stdout().lock().write_all(&resp.plaintext)?;
    Ok(())
}

/// `envelope status`: prints KeyStatus as JSON.
pub async fn status(target: &Target, key: &str) -> anyhow::Result<()> {
    let resp = pb::admin_client::AdminClient::new(connect(target).await?)
        .key_status(pb::KeyStatusRequest {
            key: key.to_owned(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let keys: Vec<serde_json::Value> = resp
        .keys
        .iter()
        .map(|k| {
            let cache = k.cache.unwrap_or_default();
            serde_json::json!({
                "name": k.name,
                "secret_id": k.secret_id,
                "current_version": k.current_version,
                "last_refresh": k.last_refresh,
                "last_refresh_age_seconds": k.last_refresh_age_seconds,
                "refresh_failures": k.refresh_failures,
                "rotation_failures": k.rotation_failures,
                "pinned_versions": k.pinned_versions,
                "compromised_versions": k.compromised_versions,
                "allow_compromised_decrypts": k.allow_compromised_decrypts,
                "versions": k.versions.iter().map(|v| serde_json::json!({
                    "version": v.version, "stages": v.stages,
                    "created_at": v.created_at, "age_seconds": v.age_seconds,
                    "records_opened": v.records_opened, "last_read": v.last_read,
                    "data_key_wraps": v.data_key_wraps, "compromised": v.compromised,
                })).collect::<Vec<_>>(),
                "cache": {
                    "data_keys_generated": cache.data_keys_generated,
                    "active_data_key_records": cache.active_data_key_records,
                    "decrypt_cache_entries": cache.decrypt_cache_entries,
                    "decrypt_cache_hits": cache.decrypt_cache_hits,
                    "decrypt_cache_misses": cache.decrypt_cache_misses,
                },
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))?
    );
    Ok(())
}

/// `envelope rotate`: runs the four rotation steps on the server.
pub async fn rotate(target: &Target, key: &str) -> anyhow::Result<()> {
    let resp = pb::admin_client::AdminClient::new(connect(target).await?)
        .rotate_master_key(pb::RotateMasterKeyRequest {
            key: key.to_owned(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!(
        "previous_version: {}\ncurrent_version: {}",
        resp.previous_version, resp.current_version
    );
    Ok(())
}

/// `envelope compromise`: marks a master-key version compromised on the
/// server (MarkCompromised).
pub async fn compromise(
    target: &Target,
    key: &str,
    version: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let resp = pb::admin_client::AdminClient::new(connect(target).await?)
        .mark_compromised(pb::MarkCompromisedRequest {
            key: key.to_owned(),
            version: version.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!(
        "compromised_version: {version}\ncurrent_version: {}\n\
         next: add {version:?} to compromised_versions of key {key:?} in the configuration, \
         then re-encrypt its records (envelope migrate; docs/ROTATION.md)",
        resp.current_version
    );
    Ok(())
}

mod rewrap;
pub use rewrap::{RewrapCounts, rewrap, rewrap_file};

#[cfg(test)]
mod tests {
    /// CONFIG.md: a `--context` flag without `=`, or a key given twice, is
    /// refused by the client; a value may hold `=`.
    #[test]
    fn context_flags_are_parsed_or_refused() {
        let flags = |f: &[&str]| {
            super::parse_context(&f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        };
        let ok = flags(&["table=users", "q=a=b"]).unwrap_or_default();
        assert_eq!(ok.get("q").map(String::as_str), Some("a=b"));
        assert!(flags(&["table"]).is_err());
        assert!(flags(&["t=1", "t=2"]).is_err());
    }
}
