//! The audit writer under a sink slower than its callers.
#![allow(clippy::unwrap_used)]

use super::*;
use std::time::Duration;

/// A sink slower than the callers: the queue fills, callers wait for
/// room, and every line still arrives whole once the log is dropped.
struct Slow(Arc<Mutex<Vec<u8>>>);

impl Write for Slow {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(200));
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_makes_callers_wait_and_loses_nothing() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = AuditLog::with_sink(Box::new(Slow(got.clone())), OnFailure::Refuse).unwrap();
    // 64 context keys of 64 characters: lines of about 4.5 KB, so 3,000
    // of them (13 MB) overflow the 8 MiB queue.
    let keys: Vec<String> = (0..64).map(|i| format!("{i:0>64}")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    for i in 0..375 {
                        let id = format!("{t}-{i}");
                        log.record(&Event {
                            time: Timestamp::now(),
                            request_id: &id,
                            caller: None,
                            rpc: "Encrypt",
                            operation: "encrypt",
                            key: "k",
                            key_version: "",
                            index: None,
                            outcome: "ok",
                            code: "OK",
                            items: None,
                            failed_items: None,
                            context_keys: keys.iter().map(String::as_str).collect(),
                            latency_us: 1,
                            reason: None,
                            compromised_records: None,
                            compromised: None,
                        })
                        .await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(log);
    let got = got.lock().unwrap();
    let text = std::str::from_utf8(&got).unwrap();
    let mut ids = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(ids.insert(v["request_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(ids.len(), 3000);
}
