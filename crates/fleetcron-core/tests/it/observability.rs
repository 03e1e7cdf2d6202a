//! Every event a handler logs carries its run's span: task id, slot, run id, fence, attempt, worker.

use fleetcron_core::{MemoryStore, MemoryStrategy, ScheduledTask, Scheduler};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the subscriber set for this test sees the engine's and the handler's tasks.
#[tokio::test(flavor = "current_thread")]
async fn a_handlers_events_carry_the_run_span() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let strategy = MemoryStrategy::new(Arc::new(MemoryStore::new()));
    let scheduler = Scheduler::builder()
        .strategy(strategy)
        .worker_id("span-worker")
        .task(
            ScheduledTask::builder("spanned")
                .schedule("* * * * * *")
                .handler(|_| async {
                    tracing::info!("inside the handler");
                    Ok(serde_json::Value::Null)
                })
                .build()
                .expect("valid task"),
        )
        .build()
        .expect("scheduler");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = scheduler.clone();
    let running = tokio::spawn(async move { runner.run_until(stopped).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = String::from_utf8_lossy(&buffer.0.lock().expect("buffer")).into_owned();
        if let Some(line) = text.lines().find(|line| line.contains("inside the handler")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handler event within 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    let _ = running.await;
    let run = scheduler
        .strategy()
        .runs("spanned", fleetcron_core::RunQuery::default())
        .await
        .expect("history")
        .into_iter()
        .last()
        .expect("a run");
    for part in [
        "run{".to_owned(),
        "task=spanned".to_owned(),
        format!("run_id={}", run.run_id),
        "fence=".to_owned(),
        "attempt=1".to_owned(),
        "worker=span-worker".to_owned(),
        "slot=".to_owned(),
    ] {
        assert!(line.contains(&part), "{part} missing from {line}");
    }
}
