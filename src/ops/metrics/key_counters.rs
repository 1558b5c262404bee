//! The figures the keyring keeps as atomics (cache and refresh counts, and
//! the reads per master-key version), encoded at scrape time: no metrics
//! work on the request path.

use std::sync::Arc;

use super::Labels;
use crate::keys::Keyring;
use crate::keys::usage::Outcome;

/// Per-key counts that the keyring keeps as atomics, exported as counters
/// at scrape time (no metrics work on the request path).
#[derive(Debug)]
pub(super) struct KeyCounters(pub(super) Arc<arc_swap::ArcSwapOption<Keyring>>);

type Pick = fn(&crate::keys::CacheFigures) -> u64;

const KEY_COUNTERS: [(&str, &str, Pick); 5] = [
    (
        "key_refresh_failures",
        "Failed refreshes from the secret store, per key",
        |f| f.refresh_failures,
    ),
    (
        "data_key_cache_hits",
        "Decryption data-key cache hits, per key",
        |f| f.hits,
    ),
    (
        "data_key_cache_misses",
        "Decryption data-key cache misses, per key",
        |f| f.misses,
    ),
    (
        "data_key_cache_evictions",
        "Decryption data-key cache evictions, per key",
        |f| f.evictions,
    ),
    (
        "data_keys_generated",
        "Data keys generated for encryption, per key",
        |f| f.data_keys_generated,
    ),
];

impl prometheus_client::collector::Collector for KeyCounters {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(keyring) = self.0.load_full() else {
            return Ok(());
        };
        let figures: Vec<(String, crate::keys::CacheFigures)> = keyring
            .all()
            .map(|k| (k.name().to_owned(), k.figures()))
            .collect();
        for (name, help, pick) in KEY_COUNTERS {
            let counter_type =
                prometheus_client::metrics::counter::ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(name, help, None, counter_type)?;
            for (key, f) in &figures {
                let labels: Labels = vec![("key", key.clone())];
                let metric = family.encode_family(&labels)?;
                prometheus_client::metrics::counter::ConstCounter::new(pick(f)).encode(metric)?;
            }
        }
        // Re-encryption debt: reads per master-key version.
        let uses: Vec<(String, Vec<crate::keys::usage::UseFigures>)> = keyring
            .all()
            .map(|k| (k.name().to_owned(), k.version_use()))
            .collect();
        let counter_type =
            prometheus_client::metrics::counter::ConstCounter::new(0u64).metric_type();
        let mut family = encoder.encode_descriptor(
            "records_opened",
            "Records and data-key blobs opened, per key and master-key version",
            None,
            counter_type,
        )?;
        for (key, versions) in &uses {
            for v in versions {
                let labels: Labels = vec![("key", key.clone()), ("version", v.version.clone())];
                prometheus_client::metrics::counter::ConstCounter::new(v.opened)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "data_key_wraps",
            "Data keys wrapped under each master-key version by this process (budget: 2^32 per version)",
            None,
            counter_type,
        )?;
        for (key, versions) in &uses {
            for v in versions.iter().filter(|v| v.wraps > 0) {
                let labels: Labels = vec![("key", key.clone()), ("version", v.version.clone())];
                prometheus_client::metrics::counter::ConstCounter::new(v.wraps)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "compromised_records",
            "Records under compromised master-key versions the server was asked to open, per key, version and outcome (refused, decrypted, reencrypted)",
            None,
            counter_type,
        )?;
        let outcomes = [Outcome::Refused, Outcome::Decrypted, Outcome::Reencrypted];
        for (key, versions) in &uses {
            for v in versions
                .iter()
                .filter(|v| v.compromised.iter().any(|n| *n > 0))
            {
                for (outcome, n) in outcomes.iter().zip(v.compromised) {
                    let labels: Labels = vec![
                        ("key", key.clone()),
                        ("version", v.version.clone()),
                        ("outcome", outcome.label().to_owned()),
                    ];
                    prometheus_client::metrics::counter::ConstCounter::new(n)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let gauge_type = prometheus_client::metrics::gauge::ConstGauge::new(0i64).metric_type();
        let mut family = encoder.encode_descriptor(
            "compromised_records_recent",
            "Records under compromised master-key versions the server was asked to open in the last one to two limits.compromised_window_secs windows, per key and version",
            None,
            gauge_type,
        )?;
        for (key, versions) in &uses {
            for v in versions
                .iter()
                .filter(|v| v.compromised.iter().any(|n| *n > 0))
            {
                let labels: Labels = vec![("key", key.clone()), ("version", v.version.clone())];
                let n = i64::try_from(v.compromised_recent).unwrap_or(i64::MAX);
                prometheus_client::metrics::gauge::ConstGauge::new(n)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "compromised_versions",
            "Master-key versions marked compromised, per key",
            None,
            gauge_type,
        )?;
        for k in keyring.all() {
            let labels: Labels = vec![("key", k.name().to_owned())];
            let n = i64::try_from(k.snapshot().compromised.len()).unwrap_or(i64::MAX);
            prometheus_client::metrics::gauge::ConstGauge::new(n)
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "version_last_read_timestamp_seconds",
            "When a master-key version last opened a record or blob (Unix time), per key and version",
            None,
            gauge_type,
        )?;
        for (key, versions) in &uses {
            for v in versions {
                if let Some(t) = v.last_read {
                    let labels: Labels = vec![("key", key.clone()), ("version", v.version.clone())];
                    prometheus_client::metrics::gauge::ConstGauge::new(t)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
