//! Owner-only files for local mode: written atomically, created once, and
//! checked before use (owned by the running user, not readable by group or
//! others), like ssh does with its keys.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a new file at `path` with mode 0600 (owner only), via a
/// temporary file and a rename so that readers never see half a file.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per write, not only per process: two writes never share a
    // temporary file, whatever their order.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    write_temp(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes `bytes` to `tmp` (mode 0600) and syncs it, before it is moved
/// into place.
fn write_temp(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `bytes` to `path` only if `path` does not exist yet (a hard link
/// from a fully written temporary file, so no reader sees half a file and
/// no concurrent creator is overwritten). Returns whether it was written.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    write_temp(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir` (and parents) with mode 0700 if absent.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Refuses a path (the data directory, the secrets directory, the root key
/// file) that is not owned by the running user or that group or others may
/// access, as ssh does. The message names the path and the fix.
pub fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "{} is owned by uid {}, not by the user running Envelope (uid {me}); chown it to that user",
                path.display(),
                meta.uid()
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            let fix = if meta.is_dir() {
                "chmod 700"
            } else {
                "chmod 600"
            };
            return Err(format!(
                "{} is accessible by group or others (mode {mode:o}); run {fix} on it",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_only_paths_pass() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("root.key");
        write_private(&key, b"k").unwrap();
        assert_eq!(check_private(&key), Ok(()));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&key).unwrap_err();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        let data = dir.path().join("data");
        create_private_dir(&data).unwrap();
        assert_eq!(check_private(&data), Ok(()));
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_private(&data).unwrap_err().contains("chmod 700"));
        // Another owner (as root, the tests' user here, a chown works).
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        if std::os::unix::fs::chown(&data, Some(65534), None).is_ok() {
            let e = check_private(&data).unwrap_err();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }
}
