//! Bounded statements: no statement the store sends exceeds the server's `max_allowed_packet`, however
//! many large rows a batch holds, and a run whose error text is too large for one packet is still
//! recorded `failed` (its text cut to fit), never left to be reaped as `abandoned`.

use crate::*;
use fleetcron_core::{EngineStrategy, RunQuery, ScheduledTask, Scheduler, SchedulerStrategy, TaskError};
use std::sync::Arc;

/// The server's `max_allowed_packet`, in bytes.
async fn max_allowed_packet(db: &TestDb) -> usize {
    let mut conn = db.raw().await;
    let bytes: u64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS UNSIGNED)")
        .fetch_one(&mut conn)
        .await
        .expect("read max_allowed_packet");
    usize::try_from(bytes).expect("a packet size fits usize")
}

/// 300 tasks whose state documents and history rows carry 128 KiB of result and error text each:
/// 75 MiB per mutation, more than four times MariaDB's default 16 MiB packet, written claim-like (new
/// states, new rows) and completion-like (updated states, updated rows), and read back intact.
#[tokio::test]
async fn large_history_rows_commit_in_one_batch_and_read_back_intact() {
    let Some(db) = TestDb::create("large_history_rows_commit_in_one_batch_and_read_back_intact").await else {
        return;
    };
    // About what fits, not how fast: a debug build on a loaded machine may need more than the default
    // 10 s for a mutation of 75 MiB.
    let store = store_with(&db, options().with_operation_timeout(StdDuration::from_secs(120))).await;
    let packet = max_allowed_packet(&db).await;
    assert!(
        300 * 256 * 1024 > 2 * packet,
        "the test must send more than two packets' worth (max_allowed_packet is {packet})"
    );
    fleetcron_conformance::store_cases::large_history_rows_round_trip_in_one_batch(&store, 300, 128 * 1024)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
}

/// A handler that fails with an error larger than the server's whole packet limit: the run is recorded
/// `failed`, promptly, with a bounded error — whatever bound the engine puts on error texts, the store
/// makes the row fit.
#[tokio::test]
async fn a_failure_with_an_error_larger_than_a_packet_is_recorded_failed() {
    let Some(db) = TestDb::create("a_failure_with_an_error_larger_than_a_packet_is_recorded_failed").await else {
        return;
    };
    let store = Arc::new(store(&db).await);
    let packet = max_allowed_packet(&db).await;
    let error_text = format!("{}THE-END", "output line\n".repeat(packet / 12 + 1024));
    assert!(error_text.len() > packet);
    let config = fleetcron_conformance::support::fast_config();
    let strategy: Arc<dyn SchedulerStrategy> = Arc::new(EngineStrategy::with_config(store.clone(), config));
    let message = error_text.clone();
    let scheduler = Scheduler::builder()
        .shared_strategy(strategy.clone())
        .task(
            ScheduledTask::builder("loud")
                .schedule("0 0 1 1 *")
                .handler(move |_| {
                    let message = message.clone();
                    async move { Err::<serde_json::Value, _>(TaskError::new(message)) }
                })
                .build()
                .expect("a valid task"),
        )
        .retention_schedule(None)
        .build()
        .expect("a scheduler");
    let running = scheduler.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        running
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    scheduler.ready().await;
    strategy.trigger_task("loud").await.expect("trigger");
    let query = RunQuery {
        limit: 10,
        before: None,
    };
    let mut recorded = None;
    for _ in 0..200 {
        let runs = store.runs("loud", &query).await.expect("runs");
        if let Some(run) = runs
            .into_iter()
            .find(|run| !matches!(run.status, RunStatus::Running | RunStatus::Pending))
        {
            recorded = Some(run);
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let _ = stop.send(());
    worker.await.expect("the worker task").expect("the worker");
    let run = recorded.expect("the run ends within 10 s");
    assert_eq!(run.status, RunStatus::Failed, "{:?}", run.reason);
    let error = run.error.expect("the failure keeps its error");
    assert!(
        !error.is_empty() && error.len() < packet,
        "{} bytes stored",
        error.len()
    );
}

/// At the store level: a history row and a state document too large for one packet are stored with
/// the end of their error (the most recent output), led by a note saying how much was cut.
#[tokio::test]
async fn a_row_larger_than_a_packet_keeps_the_end_of_its_error() {
    let Some(db) = TestDb::create("a_row_larger_than_a_packet_keeps_the_end_of_its_error").await else {
        return;
    };
    let store = store(&db).await;
    let packet = max_allowed_packet(&db).await;
    let error_text = format!("{}THE-END", "é and more\n".repeat(packet / 12 + 1024));
    assert!(error_text.len() > packet);
    let now = store.now().await.expect("now");
    let mut state = new_state("loud", now);
    state.last_run = Some(fleetcron_core::LastRun {
        run_id: "r1".to_owned(),
        status: RunStatus::Failed,
        started_at: now,
        finished_at: now,
        result: Some(serde_json::json!({"rows": 3})),
        error: Some(error_text.clone()),
    });
    let record = RunRecord {
        error: Some(error_text.clone()),
        result: Some(serde_json::json!({"rows": 3})),
        ..run("loud", "r1", Some(0), 1, RunStatus::Failed)
    };
    store
        .mutate(&["loud".to_owned()], &mut |_, _, _| Mutation {
            state: Some(state.clone()),
            insert_runs: vec![record.clone()],
            update_runs: Vec::new(),
        })
        .await
        .expect("a row larger than a packet is written, cut to fit");
    let query = RunQuery {
        limit: 10,
        before: None,
    };
    let stored = store.runs("loud", &query).await.expect("runs");
    let error = stored[0].error.clone().expect("an error");
    assert!(error.len() < packet, "{} bytes stored", error.len());
    assert!(error.starts_with("[fleetcron: the first "), "{}", &error[..100]);
    assert!(error.ends_with("THE-END"));
    assert_eq!(
        stored[0].result,
        Some(serde_json::json!({"rows": 3})),
        "the small result is kept"
    );
    let (_, states) = store.load(Some(&["loud".to_owned()])).await.expect("load");
    let summary = states[0].last_run.clone().expect("the last run");
    let error = summary.error.expect("an error");
    assert!(
        error.len() < packet / 2 && error.ends_with("THE-END"),
        "{} bytes",
        error.len()
    );
}
