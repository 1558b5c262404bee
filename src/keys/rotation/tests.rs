//! The four steps against a real local store and root key.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use crate::backends::kms::local::LocalKms;
use crate::backends::store::AWSPREVIOUS;
use crate::backends::store::local::LocalStore;

/// A local store and root key whose secret "k" has its first version.
/// The rotator of key "k" on secret "k".
fn rotator<'a>(store: &'a LocalStore, kms: &'a LocalKms) -> Rotator<'a> {
    Rotator {
        store,
        kms,
        key_name: "k",
        secret_id: "k",
    }
}

async fn with_first_version() -> (tempfile::TempDir, LocalStore, LocalKms) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("s")).unwrap();
    let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
    ensure_initial_version(&store, &kms, "k", "k")
        .await
        .unwrap();
    (dir, store, kms)
}

#[tokio::test]
async fn four_steps_are_idempotent_and_move_the_stages() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("s")).unwrap();
    let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
    assert!(
        ensure_initial_version(&store, &kms, "k", "k")
            .await
            .unwrap()
    );
    assert!(
        !ensure_initial_version(&store, &kms, "k", "k")
            .await
            .unwrap()
    );
    let r = rotator(&store, &kms);
    let first = r.current().await.unwrap().id;
    let token = "11111111-2222-4333-8444-555555555555";
    // Finishing before creating fails and leaves AWSCURRENT alone.
    assert!(r.step(Step::FinishSecret, token).await.is_err());
    assert_eq!(r.current().await.unwrap().id, first);
    for step in [
        "createSecret",
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
        "finishSecret",
    ] {
        r.step(step.parse().unwrap(), token).await.unwrap();
    }
    let v = store.describe("k").await.unwrap();
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .any(|v| v.id == first && v.has(AWSPREVIOUS) && v.has(&pin_label(&first)))
    );
    assert!(v.iter().any(|v| v.id == token
        && v.has(AWSCURRENT)
        && !v.has(AWSPENDING)
        && v.has(&pin_label(token))));
    assert!("bogus".parse::<Step>().is_err());
    // Once finishSecret is done, replaying any step succeeds and changes nothing.
    for step in [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ] {
        r.step(step, token).await.unwrap();
    }
    assert_eq!(store.describe("k").await.unwrap(), v);
}

#[tokio::test]
async fn failed_test_step_leaves_current_unchanged() {
    let (_dir, store, kms) = with_first_version().await;
    let r = rotator(&store, &kms);
    let first = r.current().await.unwrap().id;
    // A pending version that is not a master-key document fails testSecret.
    store
        .put(
            "k",
            "bad-token-000000000000000000000000",
            "{}",
            &[AWSPENDING],
        )
        .await
        .unwrap();
    assert!(
        r.step(Step::TestSecret, "bad-token-000000000000000000000000")
            .await
            .is_err()
    );
    assert_eq!(r.current().await.unwrap().id, first);
    // Run alone, finishSecret repeats the probe and does not promote it.
    assert!(
        r.step(Step::FinishSecret, "bad-token-000000000000000000000000")
            .await
            .is_err()
    );
    assert_eq!(r.current().await.unwrap().id, first);
    // A good version marked compromised is refused by every step after
    // createSecret, with the table's message: never tested, never promoted.
    let token = "22222222-3333-4444-8555-666666666666";
    r.step(Step::CreateSecret, token).await.unwrap();
    let label = crate::backends::store::compromised_label(token);
    store
        .update_stage("k", &label, Some(token), None)
        .await
        .unwrap();
    for step in [Step::SetSecret, Step::TestSecret, Step::FinishSecret] {
        assert_eq!(
            r.step(step, token).await.unwrap_err().to_string(),
            format!(
                "version {token} of secret k is marked compromised; no rotation step tests or promotes it"
            )
        );
    }
    assert_eq!(r.current().await.unwrap().id, first);
}

/// ROTATION.md's error table, each message as written there; and a
/// finishSecret that stopped between its two calls (AWSCURRENT moved,
/// AWSPENDING still on the version) is completed by a replay.
#[tokio::test]
async fn errors_say_what_the_table_says_and_a_split_finish_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("s")).unwrap();
    let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
    let r = rotator(&store, &kms);
    let token = "11111111-2222-4333-8444-555555555555";
    let err = |e: RotationError| e.to_string();
    // A secret with a version but no AWSCURRENT.
    store
        .put(
            "k",
            "old-0000-0000-0000-000000000000",
            "{}",
            &["envelope-pin-x"],
        )
        .await
        .unwrap();
    assert_eq!(
        err(r.step(Step::CreateSecret, token).await.unwrap_err()),
        "secret k has no AWSCURRENT version"
    );
    ensure_initial_version(&store, &kms, "k", "k")
        .await
        .unwrap();
    let first = r.current().await.unwrap().id;
    assert_eq!(
        err(r.step(Step::SetSecret, token).await.unwrap_err()),
        format!("secret k has no version {token}; run createSecret first")
    );
    // A version that is neither AWSPENDING nor AWSCURRENT.
    assert_eq!(
        err(r
            .step(Step::TestSecret, "old-0000-0000-0000-000000000000")
            .await
            .unwrap_err()),
        "version old-0000-0000-0000-000000000000 of secret k is not AWSPENDING"
    );
    assert_eq!(
        err("rollback".parse::<Step>().unwrap_err()),
        "unknown rotation step \"rollback\"; expected createSecret, setSecret, testSecret or finishSecret"
    );

    // finishSecret's first call (AWSCURRENT moved) without its second
    // (AWSPENDING removed): a replay completes it.
    r.step(Step::CreateSecret, token).await.unwrap();
    store
        .update_stage("k", AWSCURRENT, Some(token), Some(&first))
        .await
        .unwrap();
    let staged = |id: &str, stage: &str| {
        let store = &store;
        let (id, stage) = (id.to_owned(), stage.to_owned());
        async move {
            store
                .describe("k")
                .await
                .unwrap()
                .iter()
                .any(|v| v.id == id && v.has(&stage))
        }
    };
    assert!(staged(token, AWSPENDING).await && staged(token, AWSCURRENT).await);
    r.step(Step::FinishSecret, token).await.unwrap();
    assert!(staged(token, AWSCURRENT).await);
    assert!(!staged(token, AWSPENDING).await);
    assert!(staged(&first, AWSPREVIOUS).await);
}

/// ROTATION.md, `createSecret`: AWSPENDING leaves any other version that
/// held it (an abandoned rotation's); its pin label stays.
#[tokio::test]
async fn a_new_create_secret_takes_awspending_from_an_abandoned_one() {
    let (_dir, store, kms) = with_first_version().await;
    let r = rotator(&store, &kms);
    let abandoned = "11111111-2222-4333-8444-555555555555";
    let next = "66666666-7777-4888-9999-aaaaaaaaaaaa";
    r.step(Step::CreateSecret, abandoned).await.unwrap();
    r.step(Step::CreateSecret, next).await.unwrap();
    let v = store.describe("k").await.unwrap();
    let stages = |id: &str| v.iter().find(|v| v.id == id).unwrap().stages.clone();
    assert_eq!(stages(abandoned), [pin_label(abandoned)]);
    assert!(stages(next).contains(&AWSPENDING.to_owned()));
}

/// ROTATION.md's table, fifth row: rotating a secret under the wrong key
/// name stops at testSecret, whose message names AWSCURRENT, the key name
/// and the loader's own error.
#[tokio::test]
async fn a_secret_of_another_key_name_fails_the_probe_with_the_documented_text() {
    let (_dir, store, kms) = with_first_version().await;
    let current = rotator(&store, &kms).current().await.unwrap().id;
    let wrong = Rotator {
        store: &store,
        kms: &kms,
        key_name: "other",
        secret_id: "k",
    };
    let token = "11111111-2222-4333-8444-555555555555";
    wrong.step(Step::CreateSecret, token).await.unwrap();
    let text = wrong
        .step(Step::TestSecret, token)
        .await
        .unwrap_err()
        .to_string();
    let want = format!(
        "testSecret failed for version {current} of secret k: AWSCURRENT does not load as key \"other\"; \
         is that the right key name? ("
    );
    assert!(text.starts_with(&want) && text.ends_with(')'), "{text}");
}

/// ROTATION.md, "The four steps": a token given by hand that cannot be a
/// version id (FORMAT.md: printable ASCII, no spaces) fails testSecret, so
/// it is never promoted.
#[tokio::test]
async fn a_token_that_cannot_be_a_version_id_fails_test_secret() {
    let (_dir, store, kms) = with_first_version().await;
    let r = rotator(&store, &kms);
    let current = r.current().await.unwrap().id;
    let token = "has space";
    r.step(Step::CreateSecret, token).await.unwrap();
    let e = r.step(Step::TestSecret, token).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "secret k version has space: malformed master-key version id field"
    );
    assert!(r.step(Step::FinishSecret, token).await.is_err());
    assert_eq!(r.current().await.unwrap().id, current);
}
