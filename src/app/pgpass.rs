//! libpq's password file for `envelope migrate`: `~/.pgpass`, or the file
//! `PGPASSFILE` names. Lines are `host:port:database:user:password`; `*`
//! matches anything, `\:` and `\\` escape; the first matching line wins.
//! As libpq does, a file that its group or others can read is ignored.

use std::path::{Path, PathBuf};

/// Where the password file is: `PGPASSFILE`, else `~/.pgpass`.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))
}

/// The password for a connection, from the file at `path`.
pub fn lookup(path: &Path, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "ignoring {}: it must not be readable by group or others (chmod 600)",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(fields)
        .find(|f| {
            [host, port.as_str(), database, user]
                .iter()
                .zip(f)
                .all(|(want, field)| field.as_deref().is_none_or(|v| v == *want))
        })
        .and_then(|mut f| f.pop().flatten())
}

/// A line's five fields, unescaped, a bare `*` as `None` (a wildcard; an
/// escaped `\*` is a literal star); `None` if it does not have five.
fn fields(line: &str) -> Option<Vec<Option<String>>> {
    let mut out = vec![(String::new(), false)];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == ':' && out.len() < 5 {
            out.push((String::new(), false));
            continue;
        }
        let (field, escaped) = out.last_mut()?;
        if c == '\\' {
            if let Some(next) = chars.next() {
                field.push(next);
                *escaped = true;
            }
        } else {
            field.push(c);
        }
    }
    (out.len() == 5).then(|| {
        // The password (the fifth field) is never a pattern.
        out.into_iter()
            .enumerate()
            .map(|(i, (f, escaped))| (i == 4 || escaped || f != "*").then_some(f))
            .collect()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(
            &path,
            "# comment\n\
             db.internal:5432:app:migrator:s3cr\\:et\n\
             \\*:*:*:starry:literal\n\
             *:*:*:migrator:fallback\n\
             short:line\n",
        )
        .unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let get = |host, port, db, user| lookup(&path, host, port, db, user);
        assert_eq!(
            get("db.internal", 5432, "app", "migrator").as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(
            get("db.internal", 5433, "app", "migrator").as_deref(),
            Some("fallback")
        );
        assert_eq!(get("db.internal", 5432, "app", "other"), None);
        // An escaped star is a literal host name, not a wildcard.
        assert_eq!(get("db.internal", 5432, "app", "starry"), None);
        assert_eq!(get("*", 5432, "app", "starry").as_deref(), Some("literal"));
        // Readable by others: ignored, as libpq ignores it.
        #[cfg(unix)]
        {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            assert_eq!(get("db.internal", 5432, "app", "migrator"), None);
        }
    }
}
