//! Connecting: URLs, options, credentials; the migration lock. Schema versions, concurrent migrations
//! and unreachable servers are cases of the store suite.

use crate::*;
use fleetcron_mysql::SCHEMA_VERSION;

#[tokio::test]
async fn connect_does_not_migrate_and_urls_may_say_mariadb() {
    let tables = namespace_or_skip!(MysqlHarness);
    let store = tables.connect_with(tables.options()).await;
    assert_eq!(Some(store.database().to_owned()), tables.label());
    assert_eq!(store.table_prefix(), tables.prefix);
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let count: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name LIKE ?",
    )
    .bind(format!("{}%", tables.prefix.replace('_', "\\_")))
    .fetch_one(&mut tables.raw().await)
    .await
    .expect("tables");
    assert_eq!(count, 0, "connecting must not create the schema");

    let mariadb_url = server_url().replacen("mysql://", "mariadb://", 1);
    let other = MysqlStore::connect_with(&mariadb_url, tables.options())
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
    if !fleetcron_conformance::service_policy(server_available().await, "bad_urls_and_options_are_config_errors") {
        return;
    }
    let url = server_url();
    let options = || MysqlOptions::default().with_max_connections(2);
    for url in [
        "postgres://127.0.0.1/test".to_owned(),
        format!("{}/", url.rsplit_once('/').expect("a database").0),
        format!("{url}?table_prefix=Nope"),
        format!("{url}#fragment"),
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
        let result = MysqlStore::connect_with(&url, bad).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
    }
    // A database that does not exist, and a user that does not: permanent, named, no password shown.
    let missing = format!("{}/fc_no_such_database", url.rsplit_once('/').expect("a database").0);
    match MysqlStore::connect_with(&missing, options()).await {
        Err(StoreError::Config(message)) => assert!(message.contains("fc_no_such_database"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    let (scheme, rest) = url.split_once("://").expect("scheme");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_the_lock_and_gives_up_after_its_timeout() {
    let tables = namespace_or_skip!(MysqlHarness);
    let store = tables
        .connect_with(
            tables
                .options()
                .with_migration_lock_timeout(std::time::Duration::from_secs(1)),
        )
        .await;
    // Another worker holds these tables' migration lock.
    let mut holder = tables.raw().await;
    let name = format!("{}.{}migrate", store.database(), tables.prefix);
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
    holder.close().await.expect("close");
    store.migrate().await.expect("migrate");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    // The migration released the lock; a migration run again (the versions forgotten) keeps the data.
    increment(&store, "t", "w").await.expect("the schema works");
    tables.execute("DELETE FROM P_schema", None).await;
    let started = std::time::Instant::now();
    store.migrate().await.expect("migrate an existing schema again");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        final_fence(&store, "t").await,
        1,
        "re-running a migration keeps the data"
    );
}

/// A typo in a parameter is an error naming the accepted ones (it used to go to sqlx, which ignored it
/// silently), and neither it, a wrong password nor an unreachable server echoes the password.
#[tokio::test]
async fn unknown_parameters_and_failed_logins_never_echo_the_password() {
    let test = "unknown_parameters_and_failed_logins_never_echo_the_password";
    if !fleetcron_conformance::service_policy(server_available().await, test) {
        return;
    }
    let url = server_url();
    let options = || MysqlOptions::default().with_max_connections(2);
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let location = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let closed = closed_port();
    let typo = format!("{scheme}://root:S3ntinel%2F%3F%23%40%3A@{location}?Table_Prefix=x_");
    let accepted = r#"unknown parameter "Table_Prefix" in the store URL; accepted: table_prefix"#;
    assert_config_error(MysqlStore::connect_with(&typo, options()).await, accepted, "S3ntinel");
    let quick = || options().with_acquire_timeout(std::time::Duration::from_millis(800));
    for url in [
        format!("{scheme}://fc_no_user:S3ntinel%2F%3F%23%40%3A@{location}"),
        format!("{scheme}://root@{location}?password=S3ntinel"),
        format!("{scheme}://root:S3ntinel/?#@:@{location}"),
        format!("mysql://root:S3ntinel%2F%3F%23%40%3A@127.0.0.1:{closed}/test"),
    ] {
        assert_refused_without(MysqlStore::connect_with(&url, quick()).await, "S3ntinel", &url);
    }
}
