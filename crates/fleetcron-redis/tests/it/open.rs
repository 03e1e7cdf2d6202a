//! Connecting: URLs, options, the prefix parameter, credentials. Schema versions, concurrent migrations
//! and unreachable servers are cases of the store suite.

use crate::*;
use fleetcron_redis::SCHEMA_VERSION;
use std::time::Duration as StdDuration;

#[tokio::test]
async fn the_prefix_parameter_overrides_the_option_and_is_not_passed_on() {
    let ns = namespace_or_skip!(RedisHarness);
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
    let other = migrated(&ns).await;
    assert_eq!(
        state_of(&*other, "t").await.map(|s| s.definition.id),
        Some("t".to_owned())
    );
    assert!(format!("{store:?}").contains(&ns.prefix));
}

#[tokio::test]
async fn invalid_urls_and_options_are_config_errors() {
    let _ns = namespace_or_skip!(RedisHarness);
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

/// A schema key that is not a number is corrupt data, not an outage to retry.
#[tokio::test]
async fn a_schema_key_that_is_not_a_number_is_corrupt() {
    let ns = namespace_or_skip!(RedisHarness);
    migrated(&ns).await;
    ns.command(redis::cmd("SET").arg(format!("{{{}}}:schema", ns.prefix)).arg("banana"))
        .await;
    let result = ns.open_with(ns.options()).await.migrate().await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// A typo in a parameter is an error naming the accepted ones (redis-rs ignored it silently, so
/// `Prefix=` used to fall back to the default prefix), and neither it, a refused login nor an
/// unreachable server echoes the password.
#[tokio::test]
async fn unknown_parameters_and_failed_logins_never_echo_the_password() {
    let _ns = namespace_or_skip!(RedisHarness);
    let base = redis_url();
    let (_, location) = base.split_once("://").expect("scheme");
    let location = location.rsplit_once('@').map_or(location, |(_, host)| host);
    let closed = closed_port();
    let typo = RedisStore::connect(&format!("redis://:S3ntinel%2F%3F%23%40%3A@{location}?Prefix=jobs")).await;
    let accepted = r#"unknown parameter "Prefix" in the store URL; accepted: prefix, protocol"#;
    assert_config_error(typo, accepted, "S3ntinel");
    let options = RedisOptions::default()
        .with_response_timeout(StdDuration::from_millis(1000))
        .with_connection_timeout(StdDuration::from_millis(500));
    for url in [
        format!("redis://fc_no_such_user:S3ntinel%2F%3F%23%40%3A@{location}"),
        format!("redis://{location}?password=S3ntinel"),
        format!("redis://:S3ntinel/?#@:@{location}"),
        format!("redis://:S3ntinel%2F%3F%23%40%3A@127.0.0.1:{closed}"),
    ] {
        assert_refused_without(RedisStore::connect_with(&url, options.clone()).await, "S3ntinel", &url);
    }
}
