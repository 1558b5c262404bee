//! The local store against Secrets Manager's rules, and its locks.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::backends::store::AWSPENDING;

#[tokio::test]
async fn stages_follow_secrets_manager_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(&dir.path().join("secrets")).unwrap();
    assert!(matches!(
        s.describe("k").await,
        Err(StoreError::SecretNotFound { .. })
    ));
    s.put("k", "v1", "one", &[]).await.unwrap();
    s.put("k", "v1", "one", &[]).await.unwrap(); // idempotent
    assert!(matches!(
        s.put("k", "v1", "other", &[]).await,
        Err(StoreError::Conflict { .. })
    ));
    s.put("k", "v2", "two", &[AWSPENDING]).await.unwrap();
    // Moving AWSCURRENT without naming its holder is refused.
    assert!(
        s.update_stage("k", AWSCURRENT, Some("v2"), None)
            .await
            .is_err()
    );
    s.update_stage("k", AWSCURRENT, Some("v2"), Some("v1"))
        .await
        .unwrap();
    s.update_stage("k", AWSPENDING, None, Some("v2"))
        .await
        .unwrap();
    let d = s.describe("k").await.unwrap();
    assert_eq!(d[0].stages, vec![AWSPREVIOUS.to_string()]);
    assert_eq!(d[1].stages, vec![AWSCURRENT.to_string()]);
    assert_eq!(s.get("k", "v1").await.unwrap().value.as_str(), "one");
    assert!(matches!(
        s.get("k", "v9").await,
        Err(StoreError::VersionNotFound { .. })
    ));
    assert!(s.describe("../etc").await.is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets").join("k.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// CONFIG.md, `secret_id`: the local store takes 1–128 letters, digits,
/// `-`, `_` and `.`, not starting with `.`, so an id never leaves the
/// directory or names a hidden file.
#[test]
fn secret_ids_are_plain_file_names() {
    for good in ["k", "envelope-pii", "a.b_c", &"s".repeat(128)] {
        assert!(valid_secret_id(good), "{good}");
    }
    for bad in ["", ".hidden", "../x", "a/b", "a b", "é", &"s".repeat(129)] {
        assert!(!valid_secret_id(bad), "{bad}");
    }
}

/// FORMAT.md, "Local mode's files": a secret is written through a temporary
/// file renamed into place, so a reader sees the old file or the new one,
/// never a torn one. A hard link to the old file keeps the old content (a
/// write in place would change it), and no temporary file is left.
#[tokio::test]
async fn a_secret_is_replaced_by_a_rename_not_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let s = LocalStore::open(&secrets).unwrap();
    s.put("k", "v1", "one", &[]).await.unwrap();
    let file = secrets.join("k.json");
    let before = std::fs::read(&file).unwrap();
    let link = dir.path().join("old.json");
    std::fs::hard_link(&file, &link).unwrap();
    s.put("k", "v2", "two", &[]).await.unwrap();
    assert_eq!(std::fs::read(&link).unwrap(), before, "written in place");
    assert_ne!(std::fs::read(&file).unwrap(), before);
    let mut names: Vec<String> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".lock", "k.json"]);
}
