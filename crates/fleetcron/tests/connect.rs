//! `DefaultSchedulerStrategy::connect` picks the backend from the URL and refuses what it cannot serve:
//! an unknown scheme, and the scheme of a backend whose cargo feature is off in this build. Each
//! backend's test runs when its feature is on; each "feature off" test when it is off (`.ci/run` builds
//! the facade alone with every single feature).

use fleetcron::{DefaultSchedulerStrategy, SchedulerStrategy, StoreError, UpdateScheduledTaskInput};

#[tokio::test]
async fn unknown_and_future_schemes_are_refused_clearly() {
    for (url, expected) in [
        ("ftp://somewhere", "unknown store scheme"),
        ("no-scheme-at-all", "no scheme"),
    ] {
        match DefaultSchedulerStrategy::connect(url).await {
            Err(StoreError::Config(message)) => assert!(message.contains(expected), "{url}: {message}"),
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_urls_open_a_file_and_bad_paths_fail_with_the_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.db");
    let strategy = DefaultSchedulerStrategy::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    strategy.init("w").await.expect("migrate");
    assert!(path.exists());
    assert!(strategy.get_tasks().await.expect("empty store").is_empty());
    strategy.destroy().await.expect("destroy");
    let missing = dir.path().join("no-such-dir").join("store.db");
    match DefaultSchedulerStrategy::connect(&format!("sqlite://{}", missing.display())).await {
        Err(error) => assert!(error.to_string().contains("no-such-dir"), "{error}"),
        Ok(_) => panic!("a path under a missing directory must fail"),
    }
}

#[tokio::test]
async fn named_memory_stores_are_shared_within_the_process() {
    let first = DefaultSchedulerStrategy::connect("memory://shared-test")
        .await
        .expect("memory");
    let second = DefaultSchedulerStrategy::connect("memory://shared-test")
        .await
        .expect("memory");
    let private = DefaultSchedulerStrategy::connect("memory://").await.expect("memory");
    let task = fleetcron::ScheduledTask::builder("shared")
        .schedule("0 0 1 1 *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build()
        .expect("valid task");
    first.register_task(task).await.expect("register");
    let report = second
        .update_task(UpdateScheduledTaskInput {
            id: "shared".into(),
            enabled: Some(false),
        })
        .await
        .expect("the second strategy sees the first one's task");
    assert!(!report.enabled);
    assert!(
        private.get_task("shared").await.expect("query").is_none(),
        "memory:// is private"
    );
}

/// Connects to the test server at `env` (default `default`), or reports why not: a failure when
/// `FLEETCRON_REQUIRE_SERVICES=1` (CI), a loud skip otherwise.
#[cfg(feature = "redis")]
async fn server(env: &str, default: &str, prefix: &str) -> Option<DefaultSchedulerStrategy> {
    let base = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    let url = format!("{base}?prefix={prefix}");
    match DefaultSchedulerStrategy::connect(&url).await {
        Ok(strategy) => Some(strategy),
        Err(error) if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") => {
            panic!("{url} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}")
        }
        Err(error) => {
            eprintln!("\n*** SKIPPED: {url} is unreachable: {error}\n");
            None
        }
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_urls_select_the_redis_backend() {
    let prefix = format!("fc_facade_{}", uuid_like());
    let Some(strategy) = server("FLEETCRON_TEST_REDIS_URL", "redis://127.0.0.1:6379", &prefix).await else {
        return;
    };
    strategy.init("facade-test").await.expect("migrate");
    let task = fleetcron::ScheduledTask::builder("facade.redis")
        .schedule("0 0 1 1 *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build()
        .expect("valid task");
    strategy.register_task(task).await.expect("register");
    let report = strategy
        .get_task("facade.redis")
        .await
        .expect("query")
        .expect("registered");
    assert_eq!(report.schedule, "0 0 1 1 *");
    let disabled = strategy
        .update_task(UpdateScheduledTaskInput {
            id: "facade.redis".into(),
            enabled: Some(false),
        })
        .await
        .expect("disable");
    assert!(!disabled.enabled);
    strategy.destroy().await.expect("destroy");
    // Leave nothing behind on the shared server.
    let url = std::env::var("FLEETCRON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let deleted = std::process::Command::new("redis-cli")
        .args(["-u", url.as_str(), "EVAL"])
        .arg("local keys = redis.call('KEYS', ARGV[1]) for _, key in ipairs(keys) do redis.call('DEL', key) end return #keys")
        .args(["0", &format!("*{prefix}*")])
        .output();
    if !deleted.is_ok_and(|output| output.status.success()) {
        eprintln!("note: could not delete the test keys *{prefix}*");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls_select_the_postgres_backend() {
    let schema = format!("fc_facade_{}", uuid_like());
    let base = std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let url = format!("{base}?schema={schema}");
    let strategy = match DefaultSchedulerStrategy::connect(&url).await {
        Ok(strategy) => strategy,
        Err(error) if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") => {
            panic!("{url} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}")
        }
        Err(error) => {
            eprintln!("\n*** SKIPPED: {url} is unreachable: {error}\n");
            return;
        }
    };
    strategy.init("facade-test").await.expect("migrate");
    let task = fleetcron::ScheduledTask::builder("facade.pg")
        .schedule("0 0 1 1 *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build()
        .expect("valid task");
    strategy.register_task(task).await.expect("register");
    let receipt = strategy.trigger_task("facade.pg").await.expect("trigger");
    assert!(!receipt.coalesced);
    let report = strategy
        .get_task("facade.pg")
        .await
        .expect("query")
        .expect("registered");
    assert!(report.pending_trigger.is_some());
    strategy.destroy().await.expect("destroy");
    let drop = std::process::Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE"),
        ])
        .status();
    if !drop.is_ok_and(|status| status.success()) {
        eprintln!("note: could not drop test schema {schema}");
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_urls_select_the_mysql_backend() {
    let prefix = format!("fc_facade_{}_", std::process::id());
    let base =
        std::env::var("FLEETCRON_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let url = format!("{}?table_prefix={prefix}", base.replacen("mysql://", "mariadb://", 1));
    let strategy = match DefaultSchedulerStrategy::connect(&url).await {
        Ok(strategy) => strategy,
        Err(error) if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") => {
            panic!("{url} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}")
        }
        Err(error) => {
            eprintln!("\n*** SKIPPED: {url} is unreachable: {error}\n");
            return;
        }
    };
    strategy.init("facade-test").await.expect("migrate");
    let task = fleetcron::ScheduledTask::builder("facade.mysql")
        .schedule("0 0 1 1 *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build()
        .expect("valid task");
    strategy.register_task(task).await.expect("register");
    let report = strategy
        .get_task("facade.mysql")
        .await
        .expect("query")
        .expect("registered");
    assert_eq!(report.schedule, "0 0 1 1 *");
    strategy.destroy().await.expect("destroy");
    let dropped = std::process::Command::new("mysql")
        .args(["-h", "127.0.0.1", "-u", "root", "test", "-e"])
        .arg(format!(
            "DROP TABLE IF EXISTS {prefix}runs, {prefix}tasks, {prefix}schema"
        ))
        .status();
    if !dropped.is_ok_and(|status| status.success()) {
        eprintln!("note: could not drop the test tables {prefix}*");
    }
}

/// The facade hands the engine's health and clock through: its timers run on the store's clock, and a
/// refused setting stops it at start.
#[tokio::test]
async fn the_facade_passes_the_store_clock_and_failures_through() {
    let strategy = DefaultSchedulerStrategy::connect("memory://").await.expect("memory");
    assert!(
        strategy.store_time().is_none(),
        "no reading before the first store call"
    );
    strategy.init("w").await.expect("init");
    strategy
        .register_tasks(Vec::new())
        .await
        .expect("an empty registration still reads the store");
    strategy.trigger_task("missing").await.ok();
    let reading = strategy.store_time().expect("a reading of the store's clock");
    assert!((reading.now() - chrono::Utc::now()).num_milliseconds().abs() < 1000);
    strategy.destroy().await.expect("destroy");

    let refused = DefaultSchedulerStrategy::connect_with(
        "memory://",
        fleetcron::EngineConfig::default().lease(std::time::Duration::from_secs(10 * 86_400)),
    )
    .await
    .expect("connect");
    match refused.init("w").await {
        Err(fleetcron::SchedulerError::Config(error)) => assert!(error.to_string().contains("engine.lease"), "{error}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

const SENTINEL: &str = "S3ntinel";

/// The facade never shows the URL it was given: not in `Debug`, not in its label, not in the errors of
/// connecting to a server that refuses or is missing, for every scheme.
#[tokio::test]
async fn the_password_is_in_no_debug_label_or_error() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let encoded = "S3ntinel%2F%3F%23%40%3A";
    let mut attempts = Vec::new();
    for url in [
        format!("postgres://u:{encoded}@127.0.0.1:{closed}/test"),
        format!("postgresql://u@127.0.0.1:{closed}/test?password={SENTINEL}"),
        format!("mysql://u:{encoded}@127.0.0.1:{closed}/test"),
        format!("mariadb://u:S3ntinel/?#@:@127.0.0.1:{closed}/test"),
        format!("redis://:{encoded}@127.0.0.1:{closed}"),
        format!("rediss://:{encoded}@127.0.0.1:{closed}"),
        format!("redis://127.0.0.1:{closed}?Prefix=x&password={SENTINEL}"),
        format!("ftp://u:{SENTINEL}@host"),
        format!("u:{SENTINEL}@host"),
        format!("sqlite://u:{SENTINEL}@/nonexistent-dir/x.db"),
    ] {
        // At once: an unreachable MySQL server takes the pool's whole acquire timeout.
        attempts.push(tokio::spawn(async move {
            match DefaultSchedulerStrategy::connect(&url).await {
                Err(error) => {
                    let text = format!("{error} {error:?}");
                    assert!(!text.contains(SENTINEL), "{url}: {text}");
                }
                Ok(strategy) => panic!("{url}: connected to {strategy:?}"),
            }
        }));
    }
    for attempt in attempts {
        attempt.await.expect("no leak");
    }
    // Connected: the label and Debug show no password.
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let strategy = DefaultSchedulerStrategy::connect(&url).await.expect("sqlite");
        assert_eq!(strategy.label(), url);
    }
    #[cfg(feature = "postgres")]
    postgres_label_has_no_password(encoded).await;
}

#[cfg(feature = "postgres")]
async fn postgres_label_has_no_password(encoded: &str) {
    let base = std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let with_password = base.replacen("postgres@", &format!("postgres:{encoded}@"), 1);
    match DefaultSchedulerStrategy::connect(&format!("{with_password}?password={SENTINEL}")).await {
        Ok(strategy) => {
            let text = format!("{strategy:?} {}", strategy.label());
            assert!(!text.contains(SENTINEL), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        Err(error) if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") => {
            panic!("PostgreSQL is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}")
        }
        Err(error) => eprintln!("\n*** SKIPPED the PostgreSQL part: {error}\n"),
    }
}

/// With a backend's feature off, its schemes are refused with an error naming the feature to enable —
/// never a panic, never "unknown scheme" — and `check_url` (the daemon's `--check`) agrees.
#[cfg(any(
    not(feature = "sqlite"),
    not(feature = "postgres"),
    not(feature = "mysql"),
    not(feature = "redis")
))]
#[tokio::test]
async fn a_scheme_whose_feature_is_off_names_the_feature() {
    let mut cases: Vec<(&str, &str)> = Vec::new();
    #[cfg(not(feature = "sqlite"))]
    cases.extend([
        ("sqlite:///tmp/never-created.db", "sqlite"),
        ("SQLITE://x.db", "sqlite"),
    ]);
    #[cfg(not(feature = "postgres"))]
    cases.extend([
        ("postgres://u:S3ntinel@127.0.0.1:1/db", "postgres"),
        ("postgresql://u@127.0.0.1:1/db", "postgres"),
    ]);
    #[cfg(not(feature = "mysql"))]
    cases.extend([
        ("mysql://u:S3ntinel@127.0.0.1:1/db", "mysql"),
        ("mariadb://u@127.0.0.1:1/db", "mysql"),
    ]);
    #[cfg(not(feature = "redis"))]
    cases.extend([
        ("redis://:S3ntinel@127.0.0.1:1", "redis"),
        ("rediss://127.0.0.1:1", "redis"),
    ]);
    assert!(!cases.is_empty());
    for (url, feature) in cases {
        let scheme = url.split("://").next().unwrap_or_default().to_ascii_lowercase();
        let expected = format!("{scheme}:// needs the fleetcron crate's `{feature}` feature");
        let connected = DefaultSchedulerStrategy::connect(url).await;
        let checked = DefaultSchedulerStrategy::check_url(url);
        for (what, result) in [("connect", connected.map(|_| ())), ("check_url", checked)] {
            match result {
                Err(StoreError::Config(message)) => {
                    assert!(message.contains(&expected), "{what}({url}): {message}");
                    assert!(message.contains("`full`"), "{what}({url}): {message}");
                    assert!(!message.contains(SENTINEL), "{what}({url}): {message}");
                }
                other => panic!("{what}({url}): expected a configuration error, got {other:?}"),
            }
        }
    }
    // The in-memory store needs no feature.
    DefaultSchedulerStrategy::connect("memory://").await.expect("memory");
}
