//! Bounded statements: a run whose error text is too large for one packet is still recorded `failed`
//! (its text cut to fit), never left to be reaped as `abandoned`. (That no statement outgrows
//! `max_allowed_packet` however many large rows a batch holds is the store suite's
//! `large_history_rows_round_trip_in_one_batch`, whose batch is more than two packets here.)

use crate::*;
use fleetcron_core::{
    EngineStrategy, Mutation, RunQuery, RunRecord, RunStatus, ScheduledTask, Scheduler, SchedulerStrategy, TaskError,
};
use std::sync::Arc;

/// The server's `max_allowed_packet`, in bytes.
async fn max_allowed_packet(tables: &Tables) -> usize {
    let mut conn = tables.raw().await;
    let bytes: u64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS UNSIGNED)")
        .fetch_one(&mut conn)
        .await
        .expect("read max_allowed_packet");
    usize::try_from(bytes).expect("a packet size fits usize")
}

/// The store suite's large batch (`large_history_rows_round_trip_in_one_batch`) outgrows two of this
/// server's packets, so it shows that the store cuts its statements to fit.
#[tokio::test]
async fn the_suites_large_batch_is_larger_than_two_packets() {
    let tables = namespace_or_skip!(MysqlHarness);
    let packet = max_allowed_packet(&tables).await;
    let batch = fleetcron_conformance::store_suite::LARGE_BATCH_BYTES;
    assert!(
        batch > 2 * packet,
        "{batch} bytes per mutation, max_allowed_packet {packet}"
    );
}

/// The server's packet limit, and an error text of `line`s ending `THE-END` that is larger.
async fn more_than_a_packet(tables: &Tables, line: &str) -> (usize, String) {
    let packet = max_allowed_packet(tables).await;
    let text = format!("{}THE-END", line.repeat(packet / line.len() + 1024));
    assert!(text.len() > packet);
    (packet, text)
}

/// A handler that fails with an error larger than the server's whole packet limit: the run is recorded
/// `failed`, promptly, with a bounded error — whatever bound the engine puts on error texts, the store
/// makes the row fit.
#[tokio::test]
async fn a_failure_with_an_error_larger_than_a_packet_is_recorded_failed() {
    let tables = namespace_or_skip!(MysqlHarness);
    let store = migrated(&tables).await;
    let (packet, error_text) = more_than_a_packet(&tables, "output line\n").await;
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
    let tables = namespace_or_skip!(MysqlHarness);
    let store = migrated(&tables).await;
    let (packet, error_text) = more_than_a_packet(&tables, "é and more\n").await;
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
