//! Bad configuration is refused when the scheduler is built, with a clear message.

use fleetcron_core::{ConfigError, MemoryStore, MemoryStrategy, ScheduledTask, Scheduler};
use std::sync::Arc;

fn task(id: &str) -> ScheduledTask {
    ScheduledTask::builder(id)
        .schedule("* * * * *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build()
        .expect("valid test task")
}

#[test]
fn duplicate_ids_and_missing_strategy_are_refused() {
    let strategy = MemoryStrategy::new(Arc::new(MemoryStore::new()));
    let duplicate = Scheduler::builder()
        .strategy(strategy)
        .task(task("a"))
        .task(task("a"))
        .build();
    match duplicate {
        Err(error @ ConfigError::DuplicateTaskId(_)) => assert!(error.to_string().contains("\"a\"")),
        other => panic!("expected a duplicate id error, got {other:?}"),
    }
    assert!(matches!(
        Scheduler::builder().task(task("a")).build(),
        Err(ConfigError::MissingStrategy)
    ));
    let strategy = MemoryStrategy::new(Arc::new(MemoryStore::new()));
    let reserved = Scheduler::builder()
        .strategy(strategy)
        .task(task("fleetcron.retention"))
        .build();
    assert!(matches!(reserved, Err(ConfigError::ReservedTaskId(_))));
    let strategy = MemoryStrategy::new(Arc::new(MemoryStore::new()));
    let bad_worker = Scheduler::builder().strategy(strategy).worker_id("has space").build();
    assert!(matches!(bad_worker, Err(ConfigError::Invalid(_))));
}

#[test]
fn task_errors_name_the_problem() {
    let empty = ScheduledTask::builder("")
        .schedule("* * * * *")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build();
    assert!(empty.is_err_and(|error| error.to_string().contains("must not be empty")));
    let zone = ScheduledTask::builder("t")
        .schedule("* * * * *")
        .timezone("Europe/Atlantis")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build();
    assert!(zone.is_err_and(|error| error.to_string().contains("Europe/Atlantis")));
    let pattern = ScheduledTask::builder("t")
        .schedule("every day")
        .handler(|_| async { Ok(serde_json::Value::Null) })
        .build();
    assert!(pattern.is_err_and(|error| error.to_string().contains("every day")));
}
