//! The operator endpoints: /metrics series move as calls, refusals and
//! rotations happen; /healthz and /readyz answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::requests::{dec, enc, key_status, rotate};
use common::{Server, http_get};

/// The value of `series` (name and labels, exactly); a series that is
/// absent fails the test rather than reading as 0.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in {metrics}"))
}

#[tokio::test]
async fn metrics_and_health_endpoints_follow_the_service() {
    let dir = tempfile::tempdir().unwrap();
    // Two keys, configured out of name order.
    let server = Server::start(
        &dir.path().join("data"),
        Some(
            "metrics_listen = \"127.0.0.1:0\"\n[[keys]]\nname = \"zeta\"\n[[keys]]\nname = \"default\"\n",
        ),
    );
    let m = server.metrics.clone().expect("metrics address");
    assert_eq!(http_get(&m, "/healthz"), (200, "ok\n".to_owned()));
    let (code, body) = http_get(&m, "/readyz");
    assert_eq!(code, 200);
    // OPERATIONS.md's /readyz: every field, sorted on the wire.
    assert!(
        body.starts_with(
            "{\"checks\":{\"audit\":\"ok\",\"keys\":{\"default\":{\"current_version\":"
        ),
        "{body}"
    );
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    let checks = &ready["checks"];
    assert_eq!(checks["keys_loaded"], "ok");
    assert_eq!(checks["max_staleness_seconds"], 3600);
    let first = key_status(&server).await;
    for name in ["default", "zeta"] {
        let k = &checks["keys"][name];
        assert_eq!(k["status"], "ok", "{k}");
        assert_eq!(
            (&k["loaded"], &k["refresh_failures"]),
            (&true.into(), &0.into())
        );
        assert!(
            k["last_refresh_error"].is_null() && k["staleness_seconds"].is_u64(),
            "{k}"
        );
    }
    assert_eq!(
        checks["keys"]["default"]["current_version"],
        first.current_version.as_str()
    );

    let mut c = server.client().await;
    for _ in 0..3 {
        c.encrypt(enc("", b"x", &[])).await.unwrap();
    }
    let _ = c.decrypt(dec("", b"bad", &[])).await;
    let _ = c.encrypt(enc("nope", b"", &[])).await;
    let before = http_get(&m, "/metrics").1;
    // Local mode's first start looks for each key's secret and finds none:
    // a "not found" answer counts as an error call (OPERATIONS.md, `outcome`).
    assert_eq!(
        value(
            &before,
            "envelope_backend_calls_total{service=\"secretsmanager\",op=\"DescribeSecret\",outcome=\"error\"}"
        ),
        2.0,
        "{before}"
    );
    let rotated = rotate(&server, "").await;
    // KeyStatus: keys sorted by name, versions newest first (API.md).
    let status = server
        .admin()
        .await
        .key_status(envelope::pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = status.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["default", "zeta"]);
    let versions: Vec<&str> = status.keys[0]
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(
        versions,
        [&rotated.current_version, &rotated.previous_version]
    );
    let ready: serde_json::Value = serde_json::from_str(&http_get(&m, "/readyz").1).unwrap();
    assert_eq!(
        ready["checks"]["keys"]["default"]["current_version"],
        rotated.current_version.as_str()
    );
    let (code, after) = http_get(&m, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        value(
            &after,
            "envelope_requests_total{rpc=\"Encrypt\",key=\"default\",code=\"OK\"}"
        ),
        3.0,
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "envelope_requests_total{rpc=\"Decrypt\",key=\"default\",code=\"INVALID_ARGUMENT\"}"
        ),
        1.0
    );
    // Unknown key names never become label values.
    assert_eq!(
        value(
            &after,
            "envelope_requests_total{rpc=\"Encrypt\",key=\"unknown\",code=\"NOT_FOUND\"}"
        ),
        1.0
    );
    assert!(!after.contains("nope"));
    // Created at zero before any event (docs/OPERATIONS.md, "First events
    // are seen"), so increase() sees the first one.
    let refusals = [
        "unauthenticated",
        "permission_denied",
        "max_connections",
        "tls_handshake",
        "tls_handshake_timeout",
        "preface_timeout",
        "request_bytes_budget",
        "message_read_timeout",
        "max_streams",
        "max_streams_per_caller",
        "stream_idle_timeout",
        "index_not_granted",
        "index_quota",
        "audit_line_not_queued",
    ]
    .map(|r| format!("envelope_refused_calls_total{{reason=\"{r}\"}}"));
    let rotations = ["ok", "failed"]
        .map(|o| format!("envelope_rotations_total{{key=\"default\",outcome=\"{o}\"}}"));
    for series in rotations.iter().chain(&refusals) {
        assert_eq!(value(&before, series), 0.0, "{series}");
    }
    assert_eq!(
        value(
            &after,
            "envelope_rotations_total{key=\"default\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "envelope_backend_calls_total{service=\"kms\",op=\"GenerateDataKey\",outcome=\"ok\"}"
        ) >= 2.0
    );
    assert!(
        value(
            &after,
            "envelope_backend_calls_total{service=\"secretsmanager\",op=\"PutSecretValue\",outcome=\"ok\"}"
        ) >= 1.0
    );
    // The other op names of OPERATIONS.md's `service`, `op` row: finishSecret
    // moves the stage, and loading the new version decrypts its key.
    for series in [
        "envelope_backend_calls_total{service=\"secretsmanager\",op=\"UpdateSecretVersionStage\",outcome=\"ok\"}",
        "envelope_backend_calls_total{service=\"kms\",op=\"Decrypt\",outcome=\"ok\"}",
    ] {
        assert!(value(&after, series) >= 1.0, "{series}");
    }
    let ages = after
        .lines()
        .filter(|l| l.starts_with("envelope_master_key_age_seconds{key=\"default\""))
        .count();
    assert_eq!(ages, 2, "two versions after one rotation: {after}");
    assert!(
        after.contains("stage=\"AWSCURRENT\"") && after.contains("stage=\"AWSPREVIOUS\""),
        "{after}"
    );
    assert!(after.contains("envelope_request_duration_seconds_bucket{"));
    // Per-key cumulative counts are counters (the keyring's atomics, read at scrape time).
    assert_eq!(
        value(
            &after,
            "envelope_data_keys_generated_total{key=\"default\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(after.contains("# TYPE envelope_data_key_cache_hits counter"));
    assert!(after.contains("envelope_key_refresh_failures_total{key=\"default\"} 0"));
    assert!(after.contains("envelope_data_key_cache_entries{key=\"default\"}"));
    assert!(after.contains("envelope_key_staleness_seconds{key=\"default\"}"));
    let ready: serde_json::Value = serde_json::from_str(&http_get(&m, "/readyz").1).unwrap();
    assert_eq!(ready["checks"]["kms"], "ok", "{ready}");
    assert_eq!(ready["checks"]["secret_store"], "ok", "{ready}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    // SIGINT (Ctrl-C) is taken the same way (CONFIG.md, "Shutdown").
    for signal in ["-TERM", "-INT"] {
        drains_and_exits_zero(signal).await;
    }
}

async fn drains_and_exits_zero(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut server = Server::start(&dir.path().join("data"), None);
    let startup = started.elapsed();
    let c = server.client().await;
    // 500 calls, then SIGTERM at once: their audit lines are still waiting
    // in the writer's block, and the exit must write every one.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    c.encrypt(enc("", b"x", &[])).await.unwrap();
                }
            })
        })
        .collect();
    for t in calls {
        t.await.unwrap();
    }
    let stopping = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args([signal, &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = server
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("exited");
    let shutdown = stopping.elapsed();
    eprintln!("start-up to listening {startup:?}; {signal} to exit {shutdown:?}");
    assert_eq!(code, Some(0));
    assert!(
        server.logs().contains("shutting down") && server.logs().contains("stopped"),
        "{}",
        server.logs()
    );
    let audit = server.audit_with(&[]).await;
    let mut lines = audit.matches("\"rpc\":\"Encrypt\"").count();
    // The test's own reader copies the closed pipe to a file: let it finish.
    for _ in 0..100 {
        if lines == 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        lines = server.stdout().matches("\"rpc\":\"Encrypt\"").count();
    }
    assert_eq!(lines, 500, "every audit line is written before exit");
}

/// A configuration file in `dir` asking for `lock_memory`.
fn lock_memory_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlock_memory = true\n",
            dir.join("data")
        ),
    )
    .unwrap();
    config
}

/// Whether this system lets a process lock all of its memory: it holds
/// CAP_IPC_LOCK, or its RLIMIT_MEMLOCK is unlimited. (A server's address
/// space is far above any finite limit met in practice.)
fn may_lock_all() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_IPC_LOCK: u32 = 14;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let unlimited = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .is_some_and(|l| l.split_whitespace().nth(3) == Some("unlimited"));
    cap_eff & (1 << CAP_IPC_LOCK) != 0 || unlimited
}

/// `lock_memory = true`: where the system allows mlockall, the server serves
/// with its pages locked as touched, not with every reservation made
/// resident; where it refuses, start-up fails with the documented message.
/// Which of the two happens is predicted from the system, so each branch
/// is held to its own outcome.
#[tokio::test]
async fn lock_memory_locks_touched_pages_or_fails_clearly() {
    use std::io::BufRead;
    let expect_locked = may_lock_all();
    let dir = tempfile::tempdir().unwrap();
    let config = lock_memory_config(dir.path());
    let err = dir.path().join("err");
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let first = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next();
    match first {
        Some(Ok(line)) if line.starts_with("listening on ") => {
            assert!(expect_locked, "served although mlockall should be refused");
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
            let kb = |field: &str| -> u64 {
                status
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap()
            };
            let _ = child.kill();
            let _ = child.wait();
            assert!(kb("VmLck:") > 0, "memory is locked: {status}");
            // Locked on touch: the reservations are not all resident.
            assert!(kb("VmRSS:") < 256 * 1024, "{status}");
        }
        _ => {
            let _ = child.wait();
            let log = std::fs::read_to_string(&err).unwrap();
            assert!(!expect_locked, "mlockall should have been allowed: {log}");
            assert!(
                log.contains("lock_memory: mlockall refused"),
                "start-up failed otherwise: {log}"
            );
        }
    }
}

/// SECURITY.md, "Memory locking": the refusal branch, whatever the machine
/// allows. The server runs with RLIMIT_MEMLOCK at 0 and, as root, without
/// CAP_IPC_LOCK in its bounding set (`setpriv`), so mlockall is refused and
/// start-up stops with the documented message, before listening.
#[test]
fn a_refused_mlockall_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = lock_memory_config(dir.path());
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--memlock=0:0");
    if root {
        cmd.args(["setpriv", "--bounding-set=-ipc_lock", "--"]);
    }
    cmd.args([common::BIN, "serve", "--config"]).arg(&config);
    let out = common::process::output_within(&mut cmd, None, std::time::Duration::from_secs(30));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !out.status.success() && stdout.is_empty(),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("lock_memory: mlockall refused (")
            && stderr
                .contains("); raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK, or turn lock_memory off"),
        "{stderr}"
    );
}

/// The tests' own process runner (tests/common/process.rs): a command past
/// its limit fails the test with what it printed, and a command whose
/// daemon keeps the pipe open after it exits does not hang the test.
#[test]
fn the_test_runner_bounds_every_command() {
    use std::process::Command;
    use std::time::{Duration, Instant};
    let mut slow = Command::new("bash");
    slow.args(["-c", "echo begun; sleep 30"]);
    let started = Instant::now();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        common::process::output_within(&mut slow, None, Duration::from_secs(1))
    }))
    .expect_err("a command past its limit fails");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("did not finish within 1s") && message.contains("begun"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The child exits at once; its background sleep holds stdout 30 s.
    let mut daemon = Command::new("bash");
    daemon.args(["-c", "sleep 30 & echo started"]);
    let started = Instant::now();
    let out = common::process::output_within(&mut daemon, None, Duration::from_secs(5));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert!(started.elapsed() < Duration::from_secs(25));
}

/// CONFIG.md, "The data directory": processes that start together on an
/// empty directory agree on one root key (the second uses the first's),
/// and the store's flock keeps their writes from interleaving: eight
/// `init-keys` at once leave one root key and one first version, which a
/// server then serves.
#[tokio::test]
async fn processes_starting_together_share_one_root_key_and_one_first_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let children: Vec<std::process::Child> = (0..8)
        .map(|_| {
            std::process::Command::new(common::BIN)
                .args(["init-keys", "--data-dir", data])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = std::path::Path::new(data).join("root.key");
    assert_eq!(std::fs::read(&root).unwrap().len(), 32);
    // No temporary file left behind by the losers of the race.
    let left: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("root."))
        .collect();
    assert_eq!(left, ["root.key"]);
    let server = Server::start(std::path::Path::new(data), None);
    let status = server
        .admin()
        .await
        .key_status(envelope::pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<&envelope::pb::MasterKeyVersion> =
        status.keys.iter().flat_map(|k| &k.versions).collect();
    assert_eq!(versions.len(), 1, "{status:?}");
    assert!(versions[0].stages.iter().any(|s| s == "AWSCURRENT"));
    let mut c = server.client().await;
    let sealed = c.encrypt(enc("", b"x", &[])).await.unwrap().into_inner();
    c.decrypt(dec("", &sealed.ciphertext, &[])).await.unwrap();
}

/// The value of the `le` labels of `series`' buckets, in order.
fn buckets(metrics: &str, series: &str, labels: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{series}_bucket{{")) && l.contains(labels))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

/// OPERATIONS.md, "Metrics": the content type, the histograms' buckets,
/// the per-version series (stage `none` for a version no stage names),
/// `key="*"` for a KeyStatus of every key, and a batch with a failed item
/// counted as `OK`.
#[tokio::test]
async fn metrics_have_the_documented_shape() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some(concat!(
            "metrics_listen = \"127.0.0.1:0\"\n[[keys]]\nname = \"default\"\n",
            "[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 32\n"
        )),
    );
    let m = server.metrics.clone().unwrap();
    let mut c = server.client().await;
    // ComputeIndex counts its values as a batch's items (OPERATIONS.md).
    c.compute_index(envelope::pb::ComputeIndexRequest {
        key: String::new(),
        index: "email".into(),
        values: vec![bytes::Bytes::from_static(b"a@example.com"); 5],
        context: Default::default(),
    })
    .await
    .unwrap();
    let sealed = c
        .encrypt_batch(common::requests::batch("", 0, 3))
        .await
        .unwrap()
        .into_inner();
    let Some(envelope::pb::encrypt_result::Result::Ciphertext(good)) =
        sealed.results[0].result.clone()
    else {
        panic!("{sealed:?}")
    };
    let item = |ct: &[u8]| envelope::pb::DecryptItem {
        ciphertext: bytes::Bytes::copy_from_slice(ct),
        context: common::ctx(&[("row", "0")]),
    };
    let opened = c
        .decrypt_batch(envelope::pb::DecryptBatchRequest {
            key: String::new(),
            items: vec![item(&good), item(b"not a record")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(opened.results[1].result.is_some());
    let mut admin = server.admin().await;
    let first = admin
        .key_status(envelope::pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .current_version
        .clone();
    for _ in 0..2 {
        rotate(&server, "").await;
    }
    admin
        .refresh_keys(envelope::pb::RefreshKeysRequest::default())
        .await
        .unwrap();

    let mut http = std::net::TcpStream::connect(&m).unwrap();
    http.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        http,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    http.read_to_string(&mut raw).unwrap();
    let (head, metrics) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.lines().any(|l| l.eq_ignore_ascii_case(
            "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        "{head}"
    );
    let requests = buckets(
        metrics,
        "envelope_request_duration_seconds",
        "rpc=\"Encrypt",
    );
    let want: Vec<f64> = (0..=17).map(|n| 50e-6 * f64::from(1u32 << n)).collect();
    assert_eq!(requests.len(), want.len() + 1, "{requests:?}");
    for (got, want) in requests.iter().zip(&want) {
        assert!((got / want - 1.0).abs() < 1e-9, "{requests:?}");
    }
    let backend = buckets(
        metrics,
        "envelope_backend_call_duration_seconds",
        "op=\"GenerateDataKey\"",
    );
    // The same buckets as requests (OPERATIONS.md), then +Inf.
    assert_eq!(backend.len(), want.len() + 1, "{backend:?}");
    for (got, want) in backend.iter().zip(&want) {
        assert!((got / want - 1.0).abs() < 1e-9, "{backend:?}");
    }
    let items = buckets(metrics, "envelope_batch_items", "");
    let powers: Vec<f64> = (0..=8).map(|n| f64::from(1u32 << (2 * n))).collect();
    assert_eq!(items[..powers.len()], powers[..], "{items:?}");
    assert_eq!(items.len(), powers.len() + 1, "{items:?}");
    assert_eq!(
        value(metrics, "envelope_batch_items_count"),
        3.0,
        "ComputeIndex, EncryptBatch and DecryptBatch"
    );
    assert_eq!(
        value(metrics, "envelope_batch_items_sum"),
        10.0,
        "5 + 3 + 2"
    );
    assert_eq!(
        value(
            metrics,
            "envelope_requests_total{rpc=\"DecryptBatch\",key=\"default\",code=\"OK\"}"
        ),
        1.0,
        "a batch with a failed item is OK"
    );
    assert_eq!(
        value(
            metrics,
            "envelope_requests_total{rpc=\"KeyStatus\",key=\"*\",code=\"OK\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            metrics,
            "envelope_requests_total{rpc=\"RefreshKeys\",key=\"*\",code=\"OK\"}"
        ),
        1.0
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "envelope_master_key_age_seconds{{key=\"default\",version=\"{first}\",stage=\"none\"}}"
        ))),
        "the first version, no longer staged"
    );
    let checks: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("envelope_master_key_check{key=\"default\""))
        .collect();
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(
        checks
            .iter()
            .all(|l| l.contains("check_value=\"") && l.ends_with(" 1"))
    );
    assert_eq!(
        value(metrics, "envelope_compromised_versions{key=\"default\"}"),
        0.0
    );
}

/// CONFIG.md, `log_level`: the level comes from the configuration only;
/// `RUST_LOG` is not read.
#[tokio::test]
async fn rust_log_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), None, &[("RUST_LOG", "trace")]);
    common::requests::round_trip(&server, "", "x").await;
    let logs = server.logs();
    assert!(logs.contains(" INFO "), "{logs}");
    assert!(
        !logs.contains(" DEBUG ") && !logs.contains(" TRACE "),
        "{logs}"
    );
}

/// OPERATIONS.md, `envelope_rotations_total`: a rotation by `envelope
/// rotate --data-dir` (no server) is not counted by a running server,
/// which takes the new version at its next refresh.
#[tokio::test]
async fn a_direct_rotation_is_not_counted_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some("metrics_listen = \"127.0.0.1:0\"\n"));
    let before = key_status(&server).await.current_version;
    let rotate = |step: &[&str]| {
        let mut args = vec![
            "rotate",
            "--data-dir",
            data.to_str().unwrap(),
            "--key",
            "default",
        ];
        args.extend_from_slice(step);
        common::cli::run(&args, &[])
    };
    let (ok, _, err) = rotate(&[]);
    assert!(ok, "{err}");
    // A direct step that fails is not counted either.
    let token = uuid::Uuid::new_v4().to_string();
    let (ok, _, _) = rotate(&["--step", "setSecret", "--token", &token]);
    assert!(!ok, "setSecret of a token with no version must fail");
    // Nor is one by `rotate --config`.
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).unwrap();
    let (ok, out, err) = common::cli::run(
        &[
            "rotate",
            "--config",
            config.to_str().unwrap(),
            "--key",
            "default",
        ],
        &[],
    );
    assert!(ok, "{err}");
    server
        .admin()
        .await
        .refresh_keys(envelope::pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    let after = key_status(&server).await;
    assert_ne!(after.current_version, before);
    assert!(
        out.contains(&format!("current_version: {}", after.current_version)),
        "{out}"
    );
    assert_eq!(after.rotation_failures, 0);
    let (_, metrics) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    for outcome in ["ok", "failed"] {
        let series =
            format!("envelope_rotations_total{{key=\"default\",outcome=\"{outcome}\"}} 0\n");
        assert!(metrics.contains(&series), "{metrics}");
    }
}

/// OPERATIONS.md, `outcome` label: a "not found" answer counts as an
/// `error` backend call, here an on-demand fetch of a version the store
/// lacks (the record's version id replaced).
#[tokio::test]
async fn a_version_the_store_lacks_counts_as_a_failed_backend_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n"),
    );
    let mut c = server.client().await;
    let sealed = c.encrypt(enc("", b"x", &[])).await.unwrap().into_inner();
    let mut forged = sealed.ciphertext.to_vec();
    // Format, kind, 4-byte key id, the UUID form byte, then 16 id bytes.
    forged[7..23].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let series = "envelope_backend_calls_total{service=\"secretsmanager\",op=\"GetSecretValue\",outcome=\"error\"}";
    let errors = || {
        let (_, m) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = errors();
    let refused = c.decrypt(dec("", &forged, &[])).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(errors() - before, 1.0);
    // ... while /readyz says the store answered (OPERATIONS.md, `checks`).
    let (_, body) = http_get(server.metrics.as_deref().unwrap(), "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["secret_store"], "ok", "{body}");
}

/// CONFIG.md, `log_format = "json"`: every stderr line is one JSON object
/// with its level, target and message.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some("log_format = \"json\"\n"));
    server
        .client()
        .await
        .encrypt(enc("", b"x", &[]))
        .await
        .unwrap();
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["target"] == "envelope::app::startup"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("LOCAL MODE"))),
        "{logs}"
    );
}

/// OPERATIONS.md, the decryption-cache counters: with room for one data
/// key, opening records of two data keys in turn misses and evicts; the
/// same record twice hits.
#[tokio::test]
async fn the_decryption_cache_counters_follow_its_hits_misses_and_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n[limits]\ndecrypt_cache_entries = 1\n"),
    );
    let mut c = server.client().await;
    // Two records under two data keys (a rotation between them).
    let a = c
        .encrypt(enc("", b"a", &[]))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    rotate(&server, "").await;
    let b = c
        .encrypt(enc("", b"b", &[]))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let counters = || {
        let (_, m) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
        ["hits", "misses", "evictions"].map(|n| {
            value(
                &m,
                &format!("envelope_data_key_cache_{n}_total{{key=\"default\"}}"),
            )
        })
    };
    let before = counters();
    for ct in [&a, &b, &a, &a] {
        c.decrypt(dec("", ct, &[])).await.unwrap();
    }
    let after = counters();
    let delta: Vec<f64> = after.iter().zip(before).map(|(x, y)| x - y).collect();
    // Sealing b left b's data key cached. a misses and evicts it, b misses
    // and evicts a, a misses and evicts b, a hits.
    assert_eq!(delta, [1.0, 3.0, 3.0], "before {before:?}, after {after:?}");
}
