//! `DefaultSchedulerStrategy::connect` picks the backend from the URL and refuses what it cannot serve.

use fleetcron::{DefaultSchedulerStrategy, SchedulerStrategy, StoreError, UpdateScheduledTaskInput};

#[tokio::test]
async fn unknown_and_future_schemes_are_refused_clearly() {
    for (url, expected) in [
        ("ftp://somewhere", "unknown store scheme"),
        ("no-scheme-at-all", "no scheme"),
        ("postgres://localhost/test", "not part of this build"),
        ("redis://127.0.0.1", "not part of this build"),
    ] {
        match DefaultSchedulerStrategy::connect(url).await {
            Err(StoreError::Config(message)) => assert!(message.contains(expected), "{url}: {message}"),
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }
}

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
