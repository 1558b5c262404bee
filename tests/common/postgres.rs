//! A throwaway PostgreSQL for the tests: initdb into a temporary directory,
//! started on a free loopback port with its socket in that directory, and
//! stopped and removed on drop. The binaries come from the OS packages
//! (`scripts/test` installs Debian's `postgresql` where it is missing). As
//! root, the server runs as the `postgres` user, as PostgreSQL requires.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust on loopback).
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run scripts/test, or apt-get install postgresql")
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs `program args` as the server's user (postgres when we are root).
fn run_as(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    super::process::output_within(&mut cmd, None, std::time::Duration::from_secs(120))
}

/// Makes `path` the server's own, readable by it alone (as PostgreSQL
/// requires of its key file).
fn own(path: &Path) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {} to postgres", path.display());
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// A server that takes TLS connections only (`hostssl` in pg_hba.conf)
    /// with this certificate chain and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> Postgres {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the data directory to postgres");
        }
        let data = dir.path().join("data");
        let out = run_as(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            dir.path().display()
        );
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            own(&cert_path);
            own(&key_path);
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            ));
            // TCP connections must use TLS; the socket in the directory stays plain.
            let hba = data.join("pg_hba.conf");
            let conf = std::fs::read_to_string(&hba).unwrap();
            let conf: String = conf
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, conf).unwrap();
        }
        let log = dir.path().join("log");
        let out = run_as(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
        }
    }

    /// A client connected to it (over TCP; see [`Self::socket_client`]
    /// for a server started with [`Self::start_tls`]).
    pub async fn client(&self) -> tokio_postgres::Client {
        Self::connect(&self.url).await
    }

    /// A client connected through the server's Unix socket.
    pub async fn socket_client(&self) -> tokio_postgres::Client {
        let port = self
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let conf = format!(
            "host={} port={port} user=postgres dbname=postgres",
            self.dir.path().display()
        );
        Self::connect(&conf).await
    }

    async fn connect(conf: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(conf, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = run_as(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}
