//! Connecting: URLs, options, credentials, unreachable servers; schema migrations and their races.

use crate::*;
use fleetcron_core::StoreError;
use fleetcron_mysql::SCHEMA_VERSION;
use std::sync::Arc;

#[tokio::test]
async fn connect_does_not_migrate_and_urls_may_say_mariadb() {
    let Some(db) = TestDb::create("connect_does_not_migrate_and_urls_may_say_mariadb").await else {
        return;
    };
    let store = MysqlStore::connect_with(&db.url, options()).await.expect("connect");
    assert_eq!(store.database(), db.name);
    assert_eq!(store.table_prefix(), "fleetcron_");
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let mut conn = db.raw().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("tables");
    assert_eq!(tables, 0, "connecting must not create the schema");

    let mariadb_url = db.url.replacen("mysql://", "mariadb://", 1);
    let other = MysqlStore::connect_with(&mariadb_url, options())
        .await
        .expect("mariadb://");
    other.migrate().await.expect("migrate");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    assert!(!other.url().contains('?'));
    store.close().await;
    assert!(matches!(store.now().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn bad_urls_and_options_are_config_errors() {
    let Some(db) = TestDb::create("bad_urls_and_options_are_config_errors").await else {
        return;
    };
    for url in [
        "postgres://127.0.0.1/test".to_owned(),
        url_with(&server_url(), None, ""),
        format!("{}?table_prefix=Nope", db.url),
        format!("{}#fragment", db.url),
    ] {
        let result = MysqlStore::connect_with(&url, options()).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{url}: {result:?}");
    }
    for bad in [
        options().with_max_connections(0),
        options().with_table_prefix("1st"),
        options().with_lock_timeout(std::time::Duration::from_millis(10)),
        options().with_operation_timeout(std::time::Duration::ZERO),
    ] {
        let result = MysqlStore::connect_with(&db.url, bad).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
    }
    // A database that does not exist, and a user that does not: permanent, named, no password shown.
    let missing = url_with(&server_url(), None, &format!("{}_missing", db.name));
    match MysqlStore::connect_with(&missing, options()).await {
        Err(StoreError::Config(message)) => assert!(message.contains("_missing"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    let (scheme, rest) = db.url.split_once("://").expect("scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let stranger = format!("{scheme}://no_such_user_fc:hunter2@{host}");
    match MysqlStore::connect_with(&stranger, options()).await {
        Err(StoreError::Config(message)) => {
            assert!(message.contains("no_such_user_fc"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_acquire_timeout() {
    // A port nobody listens on: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let url = format!("mysql://root@127.0.0.1:{port}/test");
    let started = std::time::Instant::now();
    let result = MysqlStore::connect_with(
        &url,
        options().with_acquire_timeout(std::time::Duration::from_millis(800)),
    )
    .await;
    match result {
        Err(error @ StoreError::Unavailable(_)) => {
            assert!(error.is_transient());
            assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "{error}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(db) = TestDb::create("a_schema_newer_than_this_build_is_refused").await else {
        return;
    };
    let store = store(&db).await;
    let mut conn = db.raw().await;
    sqlx::query("INSERT INTO fleetcron_schema (version, description, applied_at) VALUES (?, 'future', NOW(3))")
        .bind(SCHEMA_VERSION + 5)
        .execute(&mut conn)
        .await
        .expect("bump the version");
    let fresh = MysqlStore::connect_with(&db.url, options()).await.expect("connect");
    for store in [store, fresh] {
        match store.migrate().await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, SCHEMA_VERSION + 5);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_stores_migrate_a_fresh_database_at_once() {
    let Some(db) = TestDb::create("eight_stores_migrate_a_fresh_database_at_once").await else {
        return;
    };
    let connecting: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { MysqlStore::connect_with(&url, options().with_max_connections(2)).await })
        })
        .collect();
    let mut stores = Vec::new();
    for handle in connecting {
        stores.push(Arc::new(handle.await.expect("task").expect("connect concurrently")));
    }
    let migrating: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for handle in migrating {
        handle.await.expect("task").expect("every concurrent migrate succeeds");
    }
    for store in &stores {
        assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    }
    let mut conn = db.raw().await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT CAST(version AS SIGNED) FROM fleetcron_schema ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("versions");
    assert_eq!(
        versions,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration applied once"
    );
    increment(stores[7].as_ref(), "t", "w").await.expect("the schema works");
    // The migration lock was released: another migrate (after a version reset) takes it at once.
    sqlx::query("DELETE FROM fleetcron_schema")
        .execute(&mut conn)
        .await
        .expect("forget the version");
    let started = std::time::Instant::now();
    stores[0].migrate().await.expect("migrate an existing schema again");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        final_fence(stores[0].as_ref(), "t").await,
        1,
        "re-running a migration keeps the data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_the_lock_and_gives_up_after_its_timeout() {
    let Some(db) = TestDb::create("migrate_waits_for_the_lock_and_gives_up_after_its_timeout").await else {
        return;
    };
    let store = MysqlStore::connect_with(
        &db.url,
        options().with_migration_lock_timeout(std::time::Duration::from_secs(1)),
    )
    .await
    .expect("connect");
    // Another worker holds this database's migration lock.
    let mut holder = db.raw().await;
    let name = format!("{}.fleetcron_migrate", db.name);
    let taken: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, 1) AS SIGNED)")
        .bind(&name)
        .fetch_one(&mut holder)
        .await
        .expect("take the lock");
    assert_eq!(taken, Some(1));
    let started = std::time::Instant::now();
    match store.migrate().await {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.to_string().contains("migration lock"), "{error}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(store.schema_version().await.expect("version"), 0);
    // Released (here by closing the holder's session): migrate goes through.
    use sqlx::Connection;
    holder.close().await.expect("close");
    store.migrate().await.expect("migrate");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
}

/// A typo in a parameter is an error naming the accepted ones (it used to go to sqlx, which ignored it
/// silently), and neither it, a wrong password nor an unreachable server echoes the password.
#[tokio::test]
async fn unknown_parameters_and_failed_logins_never_echo_the_password() {
    let Some(db) = TestDb::create("unknown_parameters_and_failed_logins_never_echo_the_password").await else {
        return;
    };
    let (scheme, rest) = db.url.split_once("://").expect("scheme");
    let location = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let typo = format!("{scheme}://root:S3ntinel%2F%3F%23%40%3A@{location}?Table_Prefix=x_");
    match MysqlStore::connect_with(&typo, options()).await {
        Err(StoreError::Config(message)) => {
            assert!(
                message.contains(r#"unknown parameter "Table_Prefix" in the store URL; accepted: table_prefix"#),
                "{message}"
            );
            assert!(!message.contains("S3ntinel"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
    for url in [
        format!("{scheme}://fc_no_user:S3ntinel%2F%3F%23%40%3A@{location}"),
        format!("{scheme}://root@{location}?password=S3ntinel"),
        format!("{scheme}://root:S3ntinel/?#@:@{location}"),
        format!("mysql://root:S3ntinel%2F%3F%23%40%3A@127.0.0.1:{closed}/test"),
    ] {
        let result = MysqlStore::connect_with(
            &url,
            options().with_acquire_timeout(std::time::Duration::from_millis(800)),
        )
        .await;
        match result {
            Err(error) => {
                let text = format!("{error} {error:?}");
                assert!(!text.contains("S3ntinel"), "{text}");
            }
            Ok(_) => panic!("{url}: connected"),
        }
    }
}
