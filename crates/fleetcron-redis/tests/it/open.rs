//! Connecting: URLs, options, schema versions.

use crate::*;
use fleetcron_core::StoreError;
use fleetcron_redis::SCHEMA_VERSION;
use std::time::{Duration as StdDuration, Instant};

#[tokio::test]
async fn the_prefix_parameter_overrides_the_option_and_is_not_passed_on() {
    let Some(ns) = Namespace::new("the_prefix_parameter_overrides_the_option_and_is_not_passed_on").await else {
        return;
    };
    let url = format!("{}?prefix={}", redis_url(), ns.prefix);
    let store = RedisStore::connect_with(&url, RedisOptions::default().with_key_prefix("ignored"))
        .await
        .expect("connect with a prefix parameter");
    assert_eq!(store.key_prefix(), ns.prefix);
    assert_eq!(store.schema_version().await.expect("version"), 0);
    assert!(ns.keys().await.is_empty(), "connecting writes nothing");
    store.migrate().await.expect("migrate");
    assert_eq!(store.schema_version().await.expect("version"), SCHEMA_VERSION);
    put_state(&store, new_state("t", epoch())).await;
    // A store with the namespace's prefix as an option sees the same task.
    let other = ns.store().await;
    assert_eq!(
        state_of(&other, "t").await.map(|s| s.definition.id),
        Some("t".to_owned())
    );
    assert!(format!("{store:?}").contains(&ns.prefix));
}

#[tokio::test]
async fn invalid_urls_and_options_are_config_errors() {
    if !redis_ready("invalid_urls_and_options_are_config_errors").await {
        return;
    }
    for url in [
        "postgres://localhost/test".to_owned(),
        "redis://127.0.0.1:6379?prefix=a%7Bb".to_owned(),
        "redis://127.0.0.1:6379?prefix=".to_owned(),
        format!("{}?prefix=a&prefix=b", redis_url()),
    ] {
        let result = RedisStore::connect(&url).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{url}: {result:?}");
    }
    for options in [
        RedisOptions::default().with_key_prefix(""),
        RedisOptions::default().with_key_prefix("a}b"),
        RedisOptions::default().with_response_timeout(StdDuration::ZERO),
        RedisOptions::default().with_connection_timeout(StdDuration::ZERO),
    ] {
        let result = RedisStore::connect_with(&redis_url(), options).await;
        assert!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
    }
    // This build has no TLS: a rediss:// URL says so instead of failing obscurely.
    match RedisStore::connect("rediss://user:secret@127.0.0.1:6379").await {
        Err(StoreError::Config(message)) => {
            assert!(message.contains("TLS"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_timeouts() {
    // A port nothing listens on: the connection is refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let options = RedisOptions::default()
        .with_response_timeout(StdDuration::from_millis(500))
        .with_connection_timeout(StdDuration::from_millis(200));
    let started = Instant::now();
    let error = RedisStore::connect_with(&format!("redis://{address}"), options)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&address.to_string()), "{error}");
    assert!(started.elapsed() < StdDuration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(ns) = Namespace::new("a_schema_newer_than_this_build_is_refused").await else {
        return;
    };
    let store = ns.store().await;
    let mut conn = ns.raw().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:schema", ns.prefix))
        .arg(SCHEMA_VERSION + 5)
        .query_async(&mut conn)
        .await
        .expect("bump the version");
    for store in [store, ns.open_with(ns.options()).await] {
        match store.migrate().await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, SCHEMA_VERSION + 5);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
    // The newer version is left as it is.
    let stored: i64 = redis::cmd("GET")
        .arg(format!("{{{}}}:schema", ns.prefix))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(stored, SCHEMA_VERSION + 5);

    // A schema key that is not a number is corrupt.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:schema", ns.prefix))
        .arg("banana")
        .query_async(&mut conn)
        .await
        .expect("tamper");
    let result = ns.open_with(ns.options()).await.migrate().await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_stores_migrate_at_once() {
    let Some(ns) = Namespace::new("eight_stores_migrate_at_once").await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(Arc::new(ns.open_with(ns.options()).await));
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
        store.migrate().await.expect("migrating again is a no-op");
    }
    increment(stores[7].as_ref(), "t", "w").await.expect("the layout works");
}

/// A typo in a parameter is an error naming the accepted ones (redis-rs ignored it silently, so
/// `Prefix=` used to fall back to the default prefix), and neither it, a refused login nor an
/// unreachable server echoes the password.
#[tokio::test]
async fn unknown_parameters_and_failed_logins_never_echo_the_password() {
    if !redis_ready("unknown_parameters_and_failed_logins_never_echo_the_password").await {
        return;
    }
    let base = redis_url();
    let (_, location) = base.split_once("://").expect("scheme");
    let location = location.rsplit_once('@').map_or(location, |(_, host)| host);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    match RedisStore::connect(&format!("redis://:S3ntinel%2F%3F%23%40%3A@{location}?Prefix=jobs")).await {
        Err(StoreError::Config(message)) => {
            assert!(
                message.contains(r#"unknown parameter "Prefix" in the store URL; accepted: prefix, protocol"#),
                "{message}"
            );
            assert!(!message.contains("S3ntinel"), "{message}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    let options = RedisOptions::default()
        .with_response_timeout(StdDuration::from_millis(1000))
        .with_connection_timeout(StdDuration::from_millis(500));
    for url in [
        format!("redis://fc_no_such_user:S3ntinel%2F%3F%23%40%3A@{location}"),
        format!("redis://{location}?password=S3ntinel"),
        format!("redis://:S3ntinel/?#@:@{location}"),
        format!("redis://:S3ntinel%2F%3F%23%40%3A@127.0.0.1:{closed}"),
    ] {
        match RedisStore::connect_with(&url, options.clone()).await {
            Err(error) => {
                let text = format!("{error} {error:?}");
                assert!(!text.contains("S3ntinel"), "{text}");
            }
            Ok(_) => panic!("{url}: connected"),
        }
    }
}
