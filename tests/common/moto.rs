//! A real AWS-API server for the AWS tests: moto's server (PyPI `moto[server]`),
//! started once per test binary on a free loopback port, plus a per-test
//! proxy in front of it that counts API calls by `X-Amz-Target` and can
//! play an outage; and what the tests make on it (KMS keys, secrets).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use envelope::backends::kms::aws_kms::AwsKms;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Static test credentials, used by the harness only; the server under test
/// gets them through the SDK's default chain (environment variables).
pub const TEST_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/dev/null"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
];

pub struct Moto {
    _child: Child,
    pub addr: SocketAddr,
}

fn moto_binary() -> String {
    if let Ok(p) = std::env::var("ENVELOPE_MOTO_SERVER") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = format!("{home}/.cache/envelope/venv/bin/moto_server");
    assert!(
        std::path::Path::new(&p).exists(),
        "moto_server not found at {p}: run ./scripts/test, which installs moto[server] there, or set ENVELOPE_MOTO_SERVER"
    );
    p
}

/// The moto server of this test binary, started on first use. A watchdog
/// shell stops it when this process exits.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| start(&[]))
}

/// Starts a moto server with `env` added to its environment.
fn start(env: &[(&str, &str)]) -> Moto {
    // Port 0: the server binds a free port itself and prints it, so no
    // other process can take it between a probe and the bind.
    let log = std::env::temp_dir().join(format!(
        "envelope-moto-{}-{}.log",
        std::process::id(),
        env.len()
    ));
    // A file left by an earlier process of the same pid must not be read.
    let _ = std::fs::remove_file(&log);
    let script = format!(
        "'{}' -H 127.0.0.1 -p 0 >'{log}' 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; kill $m 2>/dev/null",
        moto_binary(),
        log = log.display(),
        parent = std::process::id()
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .expect("start moto watchdog");
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = loop {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = out
            .split("Running on http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            break format!("127.0.0.1:{port}").parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not start: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Ready when it answers HTTP, not merely accepts connections.
    while super::process::try_http_get(&addr.to_string(), "/").is_none() {
        assert!(
            Instant::now() < deadline,
            "moto_server on {addr} does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        _child: child,
        addr,
    }
}

/// A second moto server that enforces IAM: its first calls (moto's
/// `INITIAL_NO_AUTH_ACTION_COUNT`), unauthenticated, make an
/// administrator; every later call is checked against the caller's
/// identity-based policies, and a denial is AWS's `AccessDenied`.
pub struct IamMoto {
    pub moto: Moto,
    /// The administrator's access key id and secret key.
    pub admin: (String, String),
}

/// The IAM-enforcing moto of this test binary, started on first use.
pub fn iam_moto() -> &'static IamMoto {
    static MOTO: OnceLock<IamMoto> = OnceLock::new();
    MOTO.get_or_init(|| {
        // Four: the readiness probe's GET, then the administrator's three.
        let moto = start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
        let admin = iam_user(&moto.url(), ("testing", "testing"), "admin", &["*"]);
        IamMoto { moto, admin }
    })
}

/// Makes IAM user `name` allowed `actions` on every resource, through
/// boto3 (moto's own dependency, in the same virtualenv), signed by `by`:
/// its access key id and secret key.
fn iam_user(url: &str, by: (&str, &str), name: &str, actions: &[&str]) -> (String, String) {
    let python = std::path::Path::new(&moto_binary()).with_file_name("python");
    let script = r#"
import boto3, json, sys
url, key, secret, name = sys.argv[1:5]
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
iam.create_user(UserName=name)
made = iam.create_access_key(UserName=name)["AccessKey"]
policy = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": sys.argv[5:], "Resource": "*"}]}
iam.put_user_policy(UserName=name, PolicyName="envelope-test", PolicyDocument=json.dumps(policy))
print(made["AccessKeyId"], made["SecretAccessKey"])
"#;
    let out = Command::new(python)
        .args(["-c", script, url, by.0, by.1, name])
        .args(actions)
        .output()
        .expect("run the virtualenv's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut words = stdout.split_whitespace();
    match (out.status.success(), words.next(), words.next()) {
        (true, Some(k), Some(s)) => (k.to_owned(), s.to_owned()),
        _ => panic!(
            "making IAM user {name} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

impl IamMoto {
    pub fn url(&self) -> String {
        self.moto.url()
    }

    /// The administrator's SDK configuration.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.url())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                self.admin.0.clone(),
                self.admin.1.clone(),
                None,
                None,
                "test",
            )))
            .build()
    }

    /// A new IAM user allowed `actions` only: its access key id and secret key.
    pub fn user(&self, actions: &[&str]) -> (String, String) {
        let admin = (self.admin.0.as_str(), self.admin.1.as_str());
        iam_user(&self.url(), admin, &unique("svc"), actions)
    }
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.url())
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
    }

    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }
}

pub fn sdk_config_for(url: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        )))
        .build()
}

/// A new KMS key on moto: its id.
pub async fn kms_key() -> String {
    kms_key_on(&moto().sdk_config()).await
}

/// A new KMS key on the server of `sdk`: its id.
pub async fn kms_key_on(sdk: &aws_config::SdkConfig) -> String {
    aws_sdk_kms::Client::new(sdk)
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

/// Puts `value` as version `version` of `secret` on moto, with `stage`.
pub async fn put_version(secret: &str, version: &str, value: String, stage: &str) {
    moto()
        .secrets()
        .put_secret_value()
        .secret_id(secret)
        .client_request_token(version)
        .secret_string(value)
        .version_stages(stage)
        .send()
        .await
        .unwrap();
}

/// `prefix` and a random suffix: a secret or alias name no other test uses.
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    envelope::primitives::crypto::fill_random(&mut b).unwrap();
    format!("{prefix}-{}", hex::encode(b))
}

/// A new version id (client request token).
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An Envelope-shape secret value for (name, version), made with moto's KMS.
pub async fn envelope_doc(kms_key: &str, name: &str, version: &str) -> String {
    let kms = AwsKms::new(&moto().sdk_config(), kms_key.to_owned());
    envelope::keys::master_key::new_secret_value(name, version, &kms)
        .await
        .unwrap()
}

/// Creates `secret` with one Envelope-shape version `version` (AWSCURRENT).
pub async fn create_envelope_secret(secret: &str, kms_key: &str, name: &str, version: &str) {
    moto()
        .secrets()
        .create_secret()
        .name(secret)
        .client_request_token(version)
        .secret_string(envelope_doc(kms_key, name, version).await)
        .send()
        .await
        .unwrap();
}

/// A TCP proxy to moto on its own thread and runtime, so it outlives any
/// one test's runtime. It counts requests per `X-Amz-Target` and, while
/// "down", reads each new connection's request (for up to 1 s), counts it
/// as refused, and drops the connection unanswered.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    refused: Arc<Mutex<HashMap<String, u64>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    faults: Arc<Faults>,
}

/// What the proxy plays besides a whole outage: one region unreachable,
/// and a clock of its own.
#[derive(Default)]
struct Faults {
    /// Requests signed for this region (SigV4's credential scope) are dropped unanswered.
    region_down: Mutex<Option<String>>,
    /// Seconds added to each answer's `Date` header.
    clock_offset: std::sync::atomic::AtomicI64,
    /// Each forwarded request's target and body, in order.
    bodies: Mutex<Vec<(String, String)>>,
    /// Requests for this target pass while the count lasts; then each is
    /// dropped unanswered.
    fail_after: Mutex<Option<(String, u64)>>,
}

impl Faults {
    /// Whether a connection that has just sent requests for `targets` is
    /// to be dropped, taking one pass per request let through.
    fn drops(&self, targets: &[String]) -> bool {
        let mut fail = self.fail_after.lock().unwrap();
        let Some((target, passes)) = fail.as_mut() else {
            return false;
        };
        for _ in targets.iter().filter(|t| *t == target) {
            if *passes == 0 {
                return true;
            }
            *passes -= 1;
        }
        false
    }
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let down = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let refused = Arc::new(Mutex::new(HashMap::new()));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (d, c, r, w, f) = (
            down.clone(),
            counts.clone(),
            refused.clone(),
            delay_ms.clone(),
            faults.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if d.load(Ordering::SeqCst) {
                        tokio::spawn(refuse(client, r.clone()));
                        continue;
                    }
                    let link = Link {
                        down: d.clone(),
                        counts: c.clone(),
                        delay_ms: w.clone(),
                        faults: f.clone(),
                    };
                    tokio::spawn(forward(client, upstream, link));
                }
            });
        });
        Proxy {
            addr: rx.recv().unwrap(),
            down,
            counts,
            refused,
            delay_ms,
            faults,
        }
    }

    /// Drops, unanswered, every request signed for `region` (one region's
    /// endpoint unreachable), until `None`.
    pub fn set_region_down(&self, region: Option<&str>) {
        *self.faults.region_down.lock().unwrap() = region.map(str::to_owned);
    }

    /// Every forwarded request's target, in order.
    pub fn targets(&self) -> Vec<String> {
        let bodies = self.faults.bodies.lock().unwrap();
        bodies.iter().map(|(t, _)| t.clone()).collect()
    }

    /// The bodies of the requests forwarded for `target` (such as
    /// `TrentService.GenerateDataKey`), in order.
    pub fn bodies(&self, target: &str) -> Vec<String> {
        self.faults
            .bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Lets `passes` more requests for `target` (such as
    /// `TrentService.Decrypt`) through, then drops each one unanswered,
    /// until `None`.
    pub fn fail_after(&self, fault: Option<(&str, u64)>) {
        *self.faults.fail_after.lock().unwrap() = fault.map(|(t, n)| (t.to_owned(), n));
    }

    /// Shifts the `Date` of every answer by `secs`: an AWS endpoint whose
    /// clock is that far from this host's.
    pub fn set_clock_offset(&self, secs: i64) {
        self.faults.clock_offset.store(secs, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection (existing ones within 50 ms) until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Holds each request for `delay` (after counting it) before passing it
    /// on: a slow AWS API.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests for an `X-Amz-Target` read and left unanswered while down.
    pub fn refused(&self, target: &str) -> u64 {
        self.refused
            .lock()
            .unwrap()
            .get(target)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen for an `X-Amz-Target` such as `secretsmanager.GetSecretValue`.
    pub fn count(&self, target: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(target)
            .copied()
            .unwrap_or(0)
    }
}

/// What one forwarded connection shares with its proxy.
struct Link {
    down: Arc<AtomicBool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    faults: Arc<Faults>,
}

async fn forward(client: TcpStream, upstream: SocketAddr, link: Link) {
    let Link {
        down,
        counts,
        delay_ms,
        faults,
    } = link;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let d = down.clone();
    let offset = faults.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match tokio::time::timeout(Duration::from_millis(50), cr.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_) if d.load(Ordering::SeqCst) => return,
                Err(_) => continue,
            };
            if d.load(Ordering::SeqCst) {
                return;
            }
            pending.extend_from_slice(&buf[..n]);
            let blocked = faults.region_down.lock().unwrap().clone();
            if let Some(region) = blocked
                && String::from_utf8_lossy(&pending).contains(&format!("/{region}/"))
            {
                return;
            }
            let sent = count_requests(&mut pending, &counts, Some(&faults.bodies));
            if faults.drops(&sent) {
                return;
            }
            let delay = delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down2 = down.clone();
    let back = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match tokio::time::timeout(Duration::from_millis(50), sr.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
                Err(_) if down2.load(Ordering::SeqCst) => return,
                Err(_) => continue,
            };
            shift_date(&mut buf[..n], offset.clock_offset.load(Ordering::SeqCst));
            if down2.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = back => {}
    }
}

/// Moves the `Date` header in `chunk` (an answer's head: IMF-fixdate, 29
/// bytes, rewritten in place) by `secs`.
fn shift_date(chunk: &mut [u8], secs: i64) {
    if secs == 0 {
        return;
    }
    let lower = chunk.to_ascii_lowercase();
    let Some(at) = lower.windows(8).position(|w| w == b"\r\ndate: ") else {
        return;
    };
    let start = at + 8;
    let Some(field) = chunk.get(start..start + 29) else {
        return;
    };
    let Ok(date) = httpdate::parse_http_date(&String::from_utf8_lossy(field)) else {
        return;
    };
    let step = Duration::from_secs(secs.unsigned_abs());
    let moved = if secs > 0 { date + step } else { date - step };
    chunk[start..start + 29].copy_from_slice(httpdate::fmt_http_date(moved).as_bytes());
}

/// Reads what a client sends on a connection made while the proxy is down
/// (for up to 1 s), counts its requests as refused, and drops it.
async fn refuse(mut client: TcpStream, refused: Arc<Mutex<HashMap<String, u64>>>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, client.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let _ = count_requests(&mut pending, &refused, None);
        if pending.is_empty() {
            break;
        }
    }
}

/// Consumes complete HTTP/1.1 requests from `pending`, counting their
/// targets and, with `bodies`, keeping each target's body; returns the
/// targets consumed.
fn count_requests(
    pending: &mut Vec<u8>,
    counts: &Mutex<HashMap<String, u64>>,
    bodies: Option<&Mutex<Vec<(String, String)>>>,
) -> Vec<String> {
    let mut sent = Vec::new();
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            return sent;
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let mut target = None;
        let mut length = 0usize;
        for line in head.split("\r\n") {
            if let Some(v) = line.strip_prefix("x-amz-target:") {
                target = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let total = end + 4 + length;
        if pending.len() < total {
            return sent;
        }
        if let Some(t) = target {
            // Targets are case-sensitive names; recover the original spelling.
            let original = String::from_utf8_lossy(&pending[..end]).to_string();
            let name = original
                .split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-amz-target")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or(t);
            if let Some(bodies) = bodies {
                let body = String::from_utf8_lossy(&pending[end + 4..total]).into_owned();
                bodies.lock().unwrap().push((name.clone(), body));
            }
            *counts.lock().unwrap().entry(name.clone()).or_default() += 1;
            sent.push(name);
        }
        pending.drain(..total);
    }
}
