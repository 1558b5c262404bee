//! Running the `envelope` binary to completion, as a user at a shell would:
//! arguments, environment and stdin in; exit status, stdout and stderr out.

use std::process::{Command, Output};

use super::process::{BIN, output_within};

/// How long one CLI command may take before the test fails.
pub const CLI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the binary with `stdin` (or /dev/null) to completion.
fn output(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().copied());
    output_within(&mut cmd, stdin, CLI_TIMEOUT)
}

/// Runs the binary with no stdin: (success, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = output(args, env, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `config` to `path` and runs `init-keys --config <path>` with
/// `env`: (success, stdout, stderr).
pub fn init_keys(
    path: &std::path::Path,
    config: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    std::fs::write(path, config).unwrap();
    run(&["init-keys", "--config", path.to_str().unwrap()], env)
}

/// Runs the binary with `stdin` written to it: (success, stdout as bytes, stderr).
pub fn run_stdin(args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let out = output(args, &[], Some(stdin));
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `envelope migrate` of the tests' `users.email` column (context
/// `table=users, column=email`) through the server at `addr`, on the
/// database at `url`; callers add their own flags.
pub fn migrate_users(addr: &str, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "migrate",
        "--addr",
        addr,
        "--table",
        "users",
        "--id-column",
        "id",
        "--column",
        "email",
        "--context",
        "table=users",
        "--context",
        "column=email",
    ])
    .env("DATABASE_URL", url);
    c
}
