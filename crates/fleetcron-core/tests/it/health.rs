//! A worker never stops silently or runs nothing while looking healthy: a dead engine loop ends
//! `run_until` with an error, absurd settings are refused at start, a worker whose clock is an hour off
//! still starts slots on time (its timers run on the store's clock), and a store slower than the load
//! makes the worker warn with figures while every slot stays accounted exactly once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetcron_core::{
    ConfigError, Decide, EngineConfig, EngineStrategy, MemoryStore, OffsetClock, PrunePlan, Retention, RunQuery,
    RunRecord, ScheduledTask, Scheduler, SchedulerError, Store, StoreError, TaskState, Timestamp,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// (slot, the store's time when its handler started) of every run.
type Starts = Arc<Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>>;

/// The memory store with two faults to inject: a poll that panics (a bug in a loop), and a delay on
/// every mutation (a slow store).
#[derive(Default)]
struct FaultyStore {
    inner: MemoryStore,
    panic_on_poll: AtomicBool,
    mutate_delay_ms: AtomicU64,
}

#[async_trait]
impl Store for FaultyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        self.inner.now().await
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        let delay = self.mutate_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.mutate(ids, decide).await
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        self.inner.load(ids).await
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        assert!(
            !self.panic_on_poll.load(Ordering::SeqCst),
            "injected bug: the poll panics"
        );
        self.inner.due_for_attention(limit).await
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.runs(task_id, query).await
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        self.inner.prune_runs(plan).await
    }
}

fn fast() -> EngineConfig {
    EngineConfig::default()
        .lease(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(50))
        .shutdown_grace(Duration::from_millis(500))
}

/// A per-second task that records (slot, the store's time when its handler started).
fn recorded(id: &str, store: &Arc<FaultyStore>, starts: &Starts) -> ScheduledTask {
    let (store, starts) = (store.clone(), starts.clone());
    ScheduledTask::builder(id)
        .schedule("* * * * * *")
        .handler(move |context| {
            let (store, starts) = (store.clone(), starts.clone());
            async move {
                let now = store.inner.now().await.map_err(fleetcron_core::TaskError::new)?;
                if let (Some(slot), Ok(mut starts)) = (context.slot, starts.lock()) {
                    starts.push((slot, now));
                }
                Ok(serde_json::Value::Null)
            }
        })
        .build()
        .expect("valid task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_loop_stops_the_scheduler_with_an_error() {
    let store = Arc::new(FaultyStore::default());
    let strategy = EngineStrategy::with_config(store.clone(), fast());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let scheduler = Scheduler::builder()
        .strategy(strategy)
        .task(recorded("t", &store, &starts))
        .retention_schedule(None)
        .build()
        .expect("valid scheduler");
    let running = scheduler.clone();
    let run = tokio::spawn(async move { running.run_until(std::future::pending::<()>()).await });
    scheduler.ready().await;
    store.panic_on_poll.store(true, Ordering::SeqCst);
    let outcome = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run_until must return once a loop died, not stay up idle")
        .expect("no panic escapes run_until");
    match outcome {
        Err(SchedulerError::EngineFailed(message)) => {
            assert!(message.contains("poll loop panicked"), "{message}");
            assert!(message.contains("injected bug"), "{message}");
        }
        other => panic!("expected EngineFailed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_engine_settings_are_refused_at_start() {
    let cases: Vec<(EngineConfig, &str)> = vec![
        (fast().lease(Duration::from_secs(100_000_000 * 86_400)), "engine.lease"),
        (
            {
                let mut config = fast();
                config.heartbeat_interval = Some(Duration::from_secs(2));
                config
            },
            "cannot keep engine.lease",
        ),
        (fast().poll_interval(Duration::ZERO), "engine.poll_interval"),
        (
            fast().cancel_grace(Duration::from_secs(10_000_000)),
            "engine.cancel_grace",
        ),
        (
            fast().retention(Retention {
                keep_last: Some(0),
                max_age: None,
            }),
            "keep_last",
        ),
    ];
    for (config, field) in cases {
        assert!(
            matches!(
                config.validate(),
                Err(ConfigError::OutOfRange { .. } | ConfigError::Invalid(_))
            ),
            "{field}"
        );
        let store = Arc::new(FaultyStore::default());
        let scheduler = Scheduler::builder()
            .strategy(EngineStrategy::with_config(store.clone(), config))
            .task(recorded("t", &store, &Arc::new(Mutex::new(Vec::new()))))
            .build()
            .expect("the builder does not see the engine settings");
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            scheduler.run_until(std::future::pending::<()>()),
        )
        .await
        .expect("refused at once");
        match outcome {
            Err(SchedulerError::Config(error)) => assert!(error.to_string().contains(field), "{error}"),
            other => panic!("{field}: expected a configuration error, got {other:?}"),
        }
    }
}

/// Runs one worker whose own clock is `skew` off the store's for about three seconds; returns the
/// (slot, start by the store's clock) of every run.
async fn run_skewed(skew: chrono::Duration) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let store = Arc::new(FaultyStore::default());
    let starts = Arc::new(Mutex::new(Vec::new()));
    let scheduler = Scheduler::builder()
        .strategy(EngineStrategy::with_config(store.clone(), fast()))
        .task(recorded("t", &store, &starts))
        .clock(Arc::new(OffsetClock::new(skew)))
        .retention_schedule(None)
        .build()
        .expect("valid scheduler");
    let _ = scheduler
        .run_until(tokio::time::sleep(Duration::from_millis(3500)))
        .await;
    let starts = starts.lock().map(|starts| starts.clone()).unwrap_or_default();
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_is_an_hour_off_starts_slots_on_time() {
    for skew in [chrono::Duration::hours(1), chrono::Duration::hours(-1)] {
        let starts = run_skewed(skew).await;
        assert!(
            starts.len() >= 2,
            "skew {skew}: a worker an hour off must still run its every-second task: {starts:?}"
        );
        for (slot, started) in &starts {
            let lag = *started - *slot;
            assert!(
                lag >= chrono::Duration::zero() && lag < chrono::Duration::milliseconds(500),
                "skew {skew}: slot {slot} started {lag} after its instant by the store's clock"
            );
        }
    }
}

/// Log lines written while the tests of this binary run (the subscriber is process-wide).
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = captured().lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_the_load_is_warned_about_and_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Capture)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let store = Arc::new(FaultyStore::default());
    let starts = Arc::new(Mutex::new(Vec::new()));
    // 40 every-second tasks claimed 10 per mutation, each mutation taking 400 ms: an instant needs
    // 1.6 s of store time per second.
    let ids: Vec<String> = (0..40).map(|n| format!("slow-{n:02}")).collect();
    let scheduler = Scheduler::builder()
        .strategy(EngineStrategy::with_config(
            store.clone(),
            fast().claim_batch(10).claim_parallelism(1),
        ))
        .tasks(ids.iter().map(|id| recorded(id, &store, &starts)))
        .retention_schedule(None)
        .build()
        .expect("valid scheduler");
    let running = scheduler.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move { running.run_until(stopped).await });
    scheduler.ready().await;
    store.mutate_delay_ms.store(400, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The store recovers; the backlog drains.
    store.mutate_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    let outcome = run.await.expect("no panic");
    assert!(outcome.is_ok(), "{outcome:?}");
    let log = captured()
        .lock()
        .map(|log| String::from_utf8_lossy(&log).into_owned())
        .unwrap_or_default();
    assert!(
        log.contains("claims are falling behind") && log.contains("oldest_lag_ms"),
        "the worker must say it falls behind, with figures:\n{log}"
    );
    // Every slot from each task's first row to its last is accounted for exactly once.
    for id in &ids {
        let runs = scheduler
            .runs(
                id,
                RunQuery {
                    limit: 10_000,
                    before: None,
                },
            )
            .await
            .expect("history");
        let schedule = fleetcron_core::Schedule::parse("* * * * * *", "UTC").expect("valid");
        let mut covered: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
        for run in &runs {
            let (Some(first), last) = (run.slot, run.slot_until.or(run.slot)) else {
                continue;
            };
            let last = last.unwrap_or(first);
            *covered.entry(first).or_default() += 1;
            for slot in schedule.slots_between(first, last, 100_000) {
                *covered.entry(slot).or_default() += 1;
            }
        }
        let (Some(&first), Some(&last)) = (covered.keys().next(), covered.keys().next_back()) else {
            panic!("{id}: no history");
        };
        let expected: Vec<DateTime<Utc>> = std::iter::once(first)
            .chain(schedule.slots_between(first, last, 100_000))
            .collect();
        let twice: HashMap<_, _> = covered.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "{id}: slots accounted twice: {twice:?}");
        assert_eq!(
            covered.len(),
            expected.len(),
            "{id}: every slot from first to last is accounted"
        );
    }
}
