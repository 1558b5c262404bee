//! The README's commands, exactly as printed: its run command starts the
//! server, and its CLI block (the `envelope` shell function and every line
//! after it) encrypts, decrypts, rotates and reports through it. Both are
//! read from README.md, so the document and the test cannot drift apart.
//!
//! The run command builds the release binary on first use; later runs reuse
//! the target directory. It listens on the README's address, 127.0.0.1:50051.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The body of the first ```sh block after the heading `heading`.
fn sh_block(readme: &str, heading: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    rest[start..start + len].to_owned()
}

/// A shell command in its own process group, so the server that `cargo run`
/// starts stops with it.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

fn bash(script: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// A working directory inside the checkout (so `cargo run` finds the
/// manifest) that is removed afterwards, with the `envelope-data/` the run
/// command creates in it.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_readme_commands_work_as_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let run = sh_block(&readme, "## Run it (one command)");
    assert_eq!(
        run.trim(),
        "cargo run --release -- serve",
        "the run command changed"
    );
    let cli = sh_block(&readme, "## The CLI client");
    assert!(
        cli.starts_with("envelope() {"),
        "the CLI block defines `envelope` first"
    );

    let work = WorkDir(root.join(format!("target-readme-test-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).unwrap();
    let log = work.0.join("run.log");
    let mut server = bash(&run, &work.0)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(Group)
        .unwrap();
    // Bounded: a first release build takes minutes, a warm one a second.
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on ") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(1500))
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "the run command never printed `listening on` (is 127.0.0.1:50051 taken?):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        });
    assert_eq!(line, "listening on 127.0.0.1:50051");
    assert!(work.0.join("envelope-data/root.key").exists());
    // As the README says: the data directory is private, and the log warns
    // that local mode is for development.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(work.0.join("envelope-data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "envelope-data has mode {mode:o}");
    // And what it holds (CONFIG.md, "Data directory"): a first start wrote
    // the default key's first version, so the lock exists too.
    for (path, want) in [
        ("root.key", 0o600),
        ("secrets", 0o700),
        ("secrets/.lock", 0o600),
        ("secrets/default.json", 0o600),
    ] {
        let mode = std::fs::metadata(work.0.join("envelope-data").join(path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, want, "{path} has mode {mode:o}");
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("WARN")
            && logged.contains("LOCAL MODE")
            && logged.contains("for development"),
        "no local-mode warning in the log:\n{logged}"
    );

    let out = bash(&cli, &work.0).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the CLI block failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // decrypt writes the raw plaintext (no newline), then rotate and status report.
    let rest = stdout
        .strip_prefix("123.456.789-09")
        .unwrap_or_else(|| panic!("decrypt did not give the plaintext back: {stdout}"));
    assert!(rest.starts_with("previous_version: "), "{rest}");
    assert!(rest.contains("\ncurrent_version: "), "{rest}");
    assert!(rest.contains("\"default\""), "status names the key: {rest}");
    assert!(work.0.join("cpf.b64").exists());
}
