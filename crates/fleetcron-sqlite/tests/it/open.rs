//! Opening: URLs, bad paths, options. Schema versions and concurrent migrations are cases of the store
//! suite.

use crate::*;
use fleetcron_core::StoreError;
use fleetcron_sqlite::SCHEMA_VERSION;

fn assert_names_path(error: &StoreError, path: &Path) {
    let shown = path.display().to_string();
    assert!(error.to_string().contains(&shown), "{error} does not name {shown}");
}

#[tokio::test]
async fn open_creates_a_missing_file_in_wal_mode_without_migrating() {
    let db = test_db();
    let store = SqliteStore::open(&db.path).await.expect("open");
    assert!(db.path.exists());
    assert_eq!(store.path(), db.path.as_path());
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let mut conn = raw_connection(&db.path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'fleetcron_%'")
        .fetch_one(&mut conn)
        .await
        .expect("tables");
    assert_eq!(tables, 0, "opening must not create the schema");
}

#[tokio::test]
async fn a_path_under_a_missing_directory_is_a_clear_error() {
    let db = test_db();
    let path = db.path.with_file_name("no-such-dir").join("deeper").join("f.db");
    let error = SqliteStore::open(&path).await.expect_err("cannot create");
    assert!(matches!(error, StoreError::ReadOnly(_)), "{error:?}");
    assert_names_path(&error, &path);
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_directory_is_not_a_database() {
    let db = test_db();
    let path = db.path.with_file_name("a-directory");
    std::fs::create_dir(&path).expect("mkdir");
    let error = SqliteStore::open(&path).await.expect_err("a directory");
    assert!(matches!(error, StoreError::ReadOnly(_)), "{error:?}");
    assert_names_path(&error, &path);
}

#[tokio::test]
async fn a_file_under_a_regular_file_is_a_clear_error() {
    let db = test_db();
    let file = db.path.with_file_name("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let path = file.join("f.db");
    let error = SqliteStore::open(&path).await.expect_err("parent is a file");
    assert!(matches!(error, StoreError::ReadOnly(_)), "{error:?}");
    assert_names_path(&error, &path);
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_corrupt() {
    let db = test_db();
    std::fs::write(&db.path, vec![b'z'; 8192]).expect("write");
    let error = SqliteStore::open(&db.path).await.expect_err("not a database");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert_names_path(&error, &db.path);
}

#[tokio::test]
async fn urls_open_the_named_file_and_refuse_query_strings() {
    let db = test_db();
    let url = format!("sqlite://{}", db.path.display());
    assert!(db.path.is_absolute());
    let store = SqliteStore::from_url(&url).await.expect("sqlite:///abs");
    store.migrate().await.expect("migrate");
    let other = SqliteStore::from_url(&format!("sqlite:{}", db.path.display()))
        .await
        .expect("sqlite:/abs");
    assert_eq!(other.schema_version().await.expect("version"), SCHEMA_VERSION);

    let error = SqliteStore::from_url(&format!("{url}?mode=ro"))
        .await
        .expect_err("query");
    match error {
        StoreError::Config(message) => assert!(message.contains("mode=ro"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    assert!(matches!(
        SqliteStore::from_url("postgres://localhost/test").await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn invalid_options_are_config_errors() {
    let db = test_db();
    for options in [
        SqliteOptions::default().with_max_connections(0),
        SqliteOptions::default().with_busy_timeout(std::time::Duration::from_secs(u64::MAX / 4)),
    ] {
        let result = SqliteStore::open_with(&db.path, options).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
    }
}
