//! ComputeIndex: tokens/s of 1,000 values of 32 bytes per call (4 callers),
//! with one active master-key version and then, after a rotation, two
//! (every value gets a token per version), beside HMAC-SHA256 in-process on
//! one core: the token ceiling.

use std::time::Instant;

use bytes::Bytes;
use envelope::pb;

use super::Run;
use crate::driver::drive;
use crate::process::envelope_client;
use crate::report::Report;
use crate::{BATCH, BATCH_CALLERS};

/// 1,000 distinct 32-byte e-mail addresses.
fn values() -> Vec<Bytes> {
    (0..BATCH)
        .map(|i| Bytes::from(format!("user{i:06}@example-domain.test")))
        .collect()
}

/// HMAC-SHA256 of 32-byte values with a precomputed key, for `secs`.
fn hmac_ceiling(secs: f64) -> f64 {
    let key = envelope::primitives::crypto::MacKey::new(&[7u8; 32]);
    let values = values();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for v in &values {
            std::hint::black_box(key.sign(v));
        }
        n += values.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

impl Run {
    /// ComputeIndex with one version, then with two.
    pub async fn index(&mut self) {
        if !(self.only.is_empty() || self.only == "index") {
            return;
        }
        Report::header(
            &format!("ComputeIndex of {BATCH} values of 32 bytes ({BATCH_CALLERS} callers)"),
            "callers",
        );
        let ceiling = hmac_ceiling(self.secs.min(1.0));
        self.report
            .in_process("HMAC-SHA256 of a 32-byte value", 32, ceiling);
        let req = pb::ComputeIndexRequest {
            key: String::new(),
            index: "email".into(),
            values: values(),
            context: Default::default(),
        };
        for versions in [1usize, 2] {
            if versions == 2 {
                envelope::pb::admin_client::AdminClient::new(self.channels[0].clone())
                    .rotate_master_key(pb::RotateMasterKeyRequest::default())
                    .await
                    .unwrap();
                self.count(1, 0);
            }
            let r = req.clone();
            let o = drive(&self.channels, BATCH_CALLERS, self.secs, move |ch| {
                let r = r.clone();
                async move {
                    let resp = envelope_client(ch)
                        .compute_index(r)
                        .await
                        .unwrap()
                        .into_inner();
                    let tokens: usize = resp.results.iter().map(|t| t.tokens.len()).sum();
                    assert_eq!(tokens, BATCH * versions, "every value, every version");
                    tokens as u64
                }
            })
            .await;
            self.report.row(
                "index",
                &format!("ComputeIndex, {versions} version(s), tokens/s"),
                32,
                BATCH_CALLERS,
                &o,
                &[("in-process HMAC", ceiling)],
            );
            // Calls and values, for the audit count (records: the values).
            self.count(o.calls, o.calls * BATCH as u64);
        }
    }
}
