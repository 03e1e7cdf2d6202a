//! Push: `notify` on one store reaches the subscribers of every store of the schema through
//! `LISTEN`/`NOTIFY`, within milliseconds.

use crate::*;
use tokio::sync::broadcast;

/// Waits for the next payload that is not a wake-up (`""`), at most `limit`.
pub(crate) async fn next_task_id(
    receiver: &mut broadcast::Receiver<String>,
    limit: std::time::Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Ok(payload)) if payload.is_empty() => continue,
            Ok(Ok(payload)) => return Some(payload),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Waits for a wake-up (`""`: the listener is connected and listening), at most `limit`.
pub(crate) async fn wake_up(receiver: &mut broadcast::Receiver<String>, limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Ok(payload)) if payload.is_empty() => return true,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_every_subscriber_of_the_schema_only() {
    require_server!("a_notification_reaches_every_subscriber_of_the_schema_only");
    let schema = TestSchema::new();
    let other_schema = TestSchema::new();
    let listening = schema.store().await;
    let also_listening = schema.connect().await;
    let elsewhere = other_schema.store().await;
    let notifier = schema.connect().await;

    let mut first = listening.subscribe().expect("PostgreSQL pushes");
    let mut second = also_listening.subscribe().expect("PostgreSQL pushes");
    let mut unrelated = elsewhere.subscribe().expect("PostgreSQL pushes");
    let second_time = std::time::Duration::from_secs(10);
    assert!(
        wake_up(&mut first, second_time).await,
        "the listener connects and wakes its subscribers"
    );
    assert!(wake_up(&mut second, second_time).await);
    assert!(wake_up(&mut unrelated, second_time).await);

    notifier.notify("job-1").await.expect("notify");
    assert_eq!(next_task_id(&mut first, second_time).await.as_deref(), Some("job-1"));
    assert_eq!(next_task_id(&mut second, second_time).await.as_deref(), Some("job-1"));
    assert_eq!(
        next_task_id(&mut unrelated, std::time::Duration::from_millis(300)).await,
        None,
        "another schema's channel hears nothing"
    );
    // A second subscriber of the same store shares the one listener.
    let mut third = listening.subscribe().expect("PostgreSQL pushes");
    notifier.notify("job-2").await.expect("notify");
    assert_eq!(next_task_id(&mut third, second_time).await.as_deref(), Some("job-2"));
    assert_eq!(next_task_id(&mut first, second_time).await.as_deref(), Some("job-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_latency_over_100_notifications() {
    require_server!("notify_latency_over_100_notifications");
    let schema = TestSchema::new();
    let listening = schema.store().await;
    let notifier = schema.connect().await;
    let mut receiver = listening.subscribe().expect("PostgreSQL pushes");
    assert!(wake_up(&mut receiver, std::time::Duration::from_secs(10)).await);
    // Warm the notifier's connection.
    notifier.notify("warm-up").await.expect("notify");
    assert!(next_task_id(&mut receiver, std::time::Duration::from_secs(5))
        .await
        .is_some());

    let mut latencies = Vec::new();
    for n in 0..100 {
        let id = format!("task-{n}");
        let started = std::time::Instant::now();
        notifier.notify(&id).await.expect("notify");
        let received = next_task_id(&mut receiver, std::time::Duration::from_secs(5)).await;
        latencies.push(started.elapsed());
        assert_eq!(received.as_deref(), Some(id.as_str()));
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    println!(
        "NOTIFY latency (notify() call to subscriber receipt, 100 notifications): p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies[latencies.len() - 1]
    );
    assert!(p99 < std::time::Duration::from_millis(100), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_trigger_wakes_another_worker_through_notify() {
    use fleetcron_conformance::support::{eventually, fast_config, Recorder};
    use fleetcron_core::{EngineConfig, ScheduledTask, Scheduler, TaskContext};
    require_server!("a_manual_trigger_wakes_another_worker_through_notify");
    let schema = TestSchema::new();
    // Polling every minute: only a push can start the triggered run promptly.
    let config: EngineConfig = fast_config().poll_interval(std::time::Duration::from_secs(60));
    let recorder = Recorder::new();
    let task = {
        let recorder = recorder.clone();
        ScheduledTask::builder("manual")
            .schedule("0 0 1 1 *")
            .handler(move |context: TaskContext| {
                recorder.record(&context);
                async { Ok(serde_json::json!("ran")) }
            })
            .build()
            .expect("valid task")
    };
    let worker_strategy =
        fleetcron_postgres::PostgresStrategy::with_config(Arc::new(schema.connect().await), config.clone());
    let worker = Scheduler::builder()
        .strategy(worker_strategy)
        .worker_id("worker")
        .task(task)
        .retention_schedule(None)
        .build()
        .expect("scheduler");
    let running = worker.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        running
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    worker.ready().await;
    // Give the worker's listener its first connection.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let admin = fleetcron_postgres::PostgresStrategy::with_config(Arc::new(schema.connect().await), config);
    let started = std::time::Instant::now();
    fleetcron_core::SchedulerStrategy::trigger_task(&admin, "manual")
        .await
        .expect("trigger");
    assert!(
        eventually(std::time::Duration::from_secs(10), || {
            let recorder = recorder.clone();
            async move { !recorder.of("manual").is_empty() }
        })
        .await,
        "the triggered run starts"
    );
    let lag = started.elapsed();
    println!("manual trigger (other worker, poll interval 60 s) to handler start: {lag:?}");
    assert!(lag < std::time::Duration::from_secs(5), "{lag:?}: pushed, not polled");
    let _ = stop.send(());
    run.await.expect("join").expect("the worker stops cleanly");
}
