//! Connecting: URLs, schemas, options, credentials; the migration lock. Schema versions, concurrent
//! migrations and unreachable servers are cases of the store suite.

use crate::*;
use fleetcron_core::StoreError;
use fleetcron_postgres::SCHEMA_VERSION;

async fn schema_exists(name: &str) -> bool {
    let mut conn = raw_connection().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("look for the schema")
}

#[tokio::test]
async fn connecting_does_not_migrate() {
    let schema = namespace_or_skip!(PostgresHarness);
    let store = schema.connect().await;
    assert_eq!(store.schema(), schema.name);
    assert_eq!(store.channel(), format!("fleetcron_{}", schema.name));
    assert_eq!(store.schema_version().await.expect("version"), 0);
    assert!(
        !schema_exists(&schema.name).await,
        "connecting must not create the schema"
    );
    store.migrate().await.expect("migrate");
    assert!(schema_exists(&schema.name).await);
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
}

#[tokio::test]
async fn the_url_selects_the_schema_and_overrides_the_option() {
    let schema = namespace_or_skip!(PostgresHarness);
    let store = PostgresStore::connect(&schema.url()).await.expect("connect by URL");
    assert_eq!(store.schema(), schema.name);
    store.migrate().await.expect("migrate");
    let overridden = PostgresStore::connect_with(
        &schema.url(),
        PostgresOptions::default().with_schema("some_other_schema"),
    )
    .await
    .expect("connect");
    assert_eq!(overridden.schema(), schema.name);
    assert_eq!(overridden.schema_version().await.expect("version"), SCHEMA_VERSION);
    // postgresql:// is the same thing.
    let url = schema.url().replacen("postgres://", "postgresql://", 1);
    let other = PostgresStore::connect(&url).await.expect("postgresql://");
    assert_eq!(other.schema_version().await.expect("version"), SCHEMA_VERSION);
    // Without a schema parameter, the default schema.
    let default = PostgresStore::connect(&server_url()).await.expect("connect");
    assert_eq!(default.schema(), fleetcron_postgres::DEFAULT_SCHEMA);
}

#[tokio::test]
async fn invalid_urls_schemas_and_options_are_config_errors() {
    require_server!("invalid_urls_schemas_and_options_are_config_errors");
    for url in [
        "mysql://root@127.0.0.1/test".to_owned(),
        "127.0.0.1:5432/test".to_owned(),
        with_schema(&server_url(), "Bad-Name"),
        with_schema(&server_url(), "pg_catalog"),
        with_schema(&server_url(), &"x".repeat(64)),
    ] {
        match PostgresStore::connect(&url).await {
            Err(StoreError::Config(message)) => assert!(!message.is_empty()),
            other => panic!("{url}: expected Config, got {other:?}"),
        }
    }
    for options in [
        PostgresOptions::default().with_max_connections(0),
        PostgresOptions::default().with_schema(""),
        PostgresOptions::default().with_statement_timeout(std::time::Duration::ZERO),
        PostgresOptions::default().with_acquire_timeout(std::time::Duration::from_secs(u64::MAX / 4)),
        PostgresOptions::default().with_clock_offset(chrono::Duration::days(365 * 200)),
    ] {
        let result = PostgresStore::connect_with(&server_url(), options.clone()).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{options:?}: {result:?}");
    }
}

#[tokio::test]
async fn a_long_schema_name_gets_a_hashed_channel() {
    require_server!("a_long_schema_name_gets_a_hashed_channel");
    let name = format!("fc_t_{}", "l".repeat(58));
    let store = PostgresStore::connect_with(&server_url(), PostgresOptions::default().with_schema(name.clone()))
        .await
        .expect("a 63-character schema name is valid");
    assert!(store.channel().len() <= 63, "{}", store.channel());
    assert!(store.channel().starts_with("fleetcron_"));
    drop_schema_blocking(&name);
}

#[tokio::test]
async fn missing_databases_and_roles_are_config_errors() {
    require_server!("missing_databases_and_roles_are_config_errors");
    let base = server_url();
    let (head, _) = base.rsplit_once('/').expect("the URL names a database");
    let missing_database = format!("{head}/fleetcron_no_such_database");
    match PostgresStore::connect(&missing_database).await {
        Err(StoreError::Config(message)) => assert!(message.contains("does not exist"), "{message}"),
        other => panic!("expected Config for a missing database, got {other:?}"),
    }
    let (_, rest) = base.split_once("://").expect("the URL has a scheme");
    let host_and_database = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let missing_role = format!("postgres://fleetcron_no_such_role@{host_and_database}");
    match PostgresStore::connect(&missing_role).await {
        Err(StoreError::Config(message)) => assert!(message.contains("fleetcron_no_such_role"), "{message}"),
        other => panic!("expected Config for an unknown role, got {other:?}"),
    }
}

/// The documented migration-lock key: FNV-1a-64 of `fleetcron:migrate:<schema>`.
fn migration_lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("fleetcron:migrate:{schema}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// How many sessions hold the migration lock of `schema`.
async fn migration_locks_held(conn: &mut sqlx::PgConnection, schema: &str) -> i64 {
    let key = migration_lock_key(schema);
    let statement = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
                       AND classid::int8 = $1 AND objid::int8 = $2";
    let query = sqlx::query_scalar(statement)
        .bind((key >> 32) & 0xffff_ffff)
        .bind(key & 0xffff_ffff);
    query.fetch_one(conn).await.expect("locks")
}

#[tokio::test]
async fn migrate_waits_for_the_migration_lock() {
    let schema = namespace_or_skip!(PostgresHarness);
    let store = schema.connect().await;
    let mut holder = raw_connection().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(migration_lock_key(&schema.name))
        .execute(&mut holder)
        .await
        .expect("take the migration lock");
    let migrating = tokio::spawn(async move { store.migrate().await.map(|()| store) });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!migrating.is_finished(), "migrate must wait for the lock");
    assert!(!schema_exists(&schema.name).await);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(migration_lock_key(&schema.name))
        .execute(&mut holder)
        .await
        .expect("release");
    let store = migrating.await.expect("task").expect("migrates once the lock is free");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    let held = migration_locks_held(&mut holder, &schema.name).await;
    assert_eq!(held, 0, "the migration released its session lock");
}

/// A typo in a parameter is an error naming the accepted ones (it used to fall back silently to the
/// default schema), and neither it nor a failed connection echoes the password.
#[tokio::test]
async fn unknown_parameters_and_unreachable_servers_never_echo_the_password() {
    let closed = closed_port();
    let typo = PostgresStore::connect("postgres://u:S3ntinel%2F%3F%23%40%3A@127.0.0.1:5432/test?Schema=jobs").await;
    let accepted = r#"unknown parameter "Schema" in the store URL; accepted: schema, sslmode"#;
    assert_config_error(typo, accepted, "S3ntinel");
    for url in [
        "postgres://u@127.0.0.1:5432/test?schema=jobs&password=S3ntinel".to_owned(),
        "postgres://u:S3ntinel/?#@:@127.0.0.1:5432/test".to_owned(),
        format!("postgres://u:S3ntinel%2F%3F%23%40%3A@127.0.0.1:{closed}/test?password=S3ntinel2"),
    ] {
        assert_refused_without(PostgresStore::connect(&url).await, "S3ntinel", &url);
    }
}
