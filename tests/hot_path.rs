//! "The hot path makes no syscall per record once keys are warm"
//! (docs/ARCHITECTURE.md, docs/FORMAT.md): the real server is traced with
//! strace while it answers a batch of 1 record and a batch of 1,000, and
//! the 999 extra records may cost only what their extra bytes cost on the
//! socket, far less than one syscall each.
//!
//! The server makes itself non-dumpable, so attaching needs root or
//! CAP_SYS_PTRACE, as `./scripts/test` on CI has.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use common::requests::{batch, ctx};
use envelope::pb;

/// Records in the large batch, and the syscalls they may add over a batch
/// of one: one per 20 records. Reading 30 KB more request and writing 80 KB
/// more answer takes a few dozen reads and writes; a syscall per record
/// would add 1,000.
const RECORDS: usize = 1000;
const EXTRA_ALLOWED: usize = RECORDS / 20;

/// The server's syscalls while `call` runs, counted by strace attached to
/// every thread of it.
async fn syscalls_during<F: std::future::Future<Output = ()>>(
    server: &Server,
    out: &Path,
    call: F,
) -> usize {
    let pid = server.pid();
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (apt-get install strace; ./scripts/test installs it)");
    wait_traced(pid, &mut strace);
    call.await;
    // strace detaches on SIGINT, writing every line it has.
    let ok = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = strace.wait().unwrap();
    // It detaches, then ends by the signal.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(2),
        "strace: {status}"
    );
    let log = std::fs::read_to_string(out).unwrap();
    // A syscall interrupted by another thread's is written as an
    // "<unfinished ...>" line and a "<... resumed>" line: counted once.
    log.lines()
        .filter(|l| !l.contains("resumed>") && !l.contains("+++") && !l.contains("---"))
        .count()
}

/// Waits until strace is attached to every thread of `pid`.
fn wait_traced(pid: u32, strace: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all = tasks.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
                })
                .unwrap_or(true)
        });
        if all {
            return;
        }
        if let Ok(Some(status)) = strace.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            strace.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("strace ended before it attached ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "strace did not attach within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_makes_no_syscall_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    // Warm: the data key is made and the connection is up.
    let warm = c
        .encrypt_batch(batch("", 0, RECORDS))
        .await
        .unwrap()
        .into_inner();
    let sealed: Vec<_> = warm
        .results
        .iter()
        .map(|r| match &r.result {
            Some(pb::encrypt_result::Result::Ciphertext(ct)) => ct.clone(),
            other => panic!("warm-up item failed: {other:?}"),
        })
        .collect();
    let decrypt = |from: usize, n: usize| pb::DecryptBatchRequest {
        key: String::new(),
        items: (from..from + n)
            .map(|i| pb::DecryptItem {
                ciphertext: sealed[i].clone(),
                context: ctx(&[("row", &i.to_string())]),
            })
            .collect(),
    };
    c.decrypt_batch(decrypt(0, RECORDS)).await.unwrap();

    let mut seen = Vec::new();
    for (what, n) in [
        ("encrypt", 1),
        ("encrypt", RECORDS),
        ("decrypt", 1),
        ("decrypt", RECORDS),
    ] {
        // The least of three runs: a timer firing during one run is not the
        // records' doing.
        let mut least = usize::MAX;
        for run in 0..3 {
            let out = dir.path().join(format!("strace-{what}-{n}-{run}"));
            let mut c = c.clone();
            let count = if what == "encrypt" {
                syscalls_during(&server, &out, async move {
                    let r = c.encrypt_batch(batch("", 0, n)).await.unwrap().into_inner();
                    assert_eq!(r.results.len(), n);
                })
                .await
            } else {
                let req = decrypt(0, n);
                syscalls_during(&server, &out, async move {
                    let r = c.decrypt_batch(req).await.unwrap().into_inner();
                    assert_eq!(r.results.len(), n);
                })
                .await
            };
            least = least.min(count);
        }
        seen.push((what, n, least));
    }
    println!("syscalls (least of 3 runs): {seen:?}");
    for pair in seen.chunks(2) {
        let [(what, _, one), (_, n, many)] = pair else {
            unreachable!()
        };
        assert!(
            *many <= one + EXTRA_ALLOWED,
            "{what}: a batch of {n} records made {many} syscalls, one of 1 made {one}: \
             more than {EXTRA_ALLOWED} extra for {} extra records\n{seen:?}",
            n - 1
        );
    }
}
