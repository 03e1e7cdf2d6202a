//! `/metrics` scraped during a multi-worker run, and its counters against the run history: runs
//! started and finished by status, slots skipped by reason and missed (range rows count their
//! `slot_count`), triggers by outcome.

use crate::support::*;
use fleetcron::{DefaultSchedulerStrategy, Overlap, RunQuery, RunStatus, ScheduledTask, Scheduler, SchedulerStrategy};
use fleetcron_admin::AdminOptions;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

/// The process-wide recorder of this test binary (installed once; tests use task ids of their own).
fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| fleetcron_admin::install_prometheus().expect("the only recorder of this test binary"))
        .clone()
}

type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text format lines `name{a="b",…} value`.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once("=\"").expect("label");
            map.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
        }
        samples.push((name.to_owned(), map, value));
    }
    samples
}

/// The sum of `name` over samples whose labels include every pair of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, value)| value)
        .sum()
}

fn tasks() -> Vec<ScheduledTask> {
    vec![
        // Runs 1.5 s every second: overlapping slots are skipped (`overlap`).
        ScheduledTask::builder("metrics-slow")
            .schedule("* * * * * *")
            .overlap(Overlap::Skip)
            .handler(|_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(serde_json::json!("slow"))
            })
            .build()
            .expect("valid"),
        ScheduledTask::builder("metrics-fast")
            .schedule("* * * * * *")
            .handler(|_| async { Ok(serde_json::json!("fast")) })
            .build()
            .expect("valid"),
    ]
}

struct Worker {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

async fn worker(url: &str, id: &str) -> Worker {
    let strategy = DefaultSchedulerStrategy::connect(url).await.expect("connect");
    let scheduler = Scheduler::builder()
        .strategy(strategy)
        .tasks(tasks())
        .worker_id(id)
        .build()
        .expect("scheduler");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = scheduler.clone();
    let handle = tokio::spawn(async move {
        runner.run_until(stopped).await.expect("the worker runs");
    });
    tokio::time::timeout(Duration::from_secs(30), scheduler.ready())
        .await
        .expect("ready");
    Worker { stop, handle }
}

async fn stop(workers: Vec<Worker>) {
    let mut handles = Vec::new();
    for worker in workers {
        let _ = worker.stop.send(());
        handles.push(worker.handle);
    }
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the worker stops")
            .expect("cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_agree_with_the_history_of_a_multi_worker_run() {
    let handle = recorder();
    let store = TestStore::new(Backend::Sqlite);
    let mut workers = vec![
        worker(&store.url, "metrics-w1").await,
        worker(&store.url, "metrics-w2").await,
        worker(&store.url, "metrics-w3").await,
    ];
    let admin = DefaultSchedulerStrategy::connect(&store.url).await.expect("connect");
    let served = Served::serve(
        std::sync::Arc::new(admin.clone()),
        AdminOptions::new(auth()).metrics(handle),
    )
    .await;
    let client = Client::new(&served.base);

    // A trigger accepted, one refused (unknown: counted without its id), a disable/enable stretch.
    assert_eq!(
        client
            .post("/api/tasks/metrics-fast/trigger", Some(ADMIN), None)
            .await
            .0,
        202
    );
    assert_eq!(
        client
            .post("/api/tasks/metrics-unknown-task/trigger", Some(ADMIN), None)
            .await
            .0,
        404
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        client
            .post("/api/tasks/metrics-fast/disable", Some(ADMIN), None)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        client.post("/api/tasks/metrics-fast/enable", Some(ADMIN), None).await.0,
        200
    );

    // Scrape during the run.
    let (code, _, text) = client.send("GET", "/metrics", Some(READ), None, &[]).await;
    assert_eq!(code, 200);
    let during = parse(&text);
    assert!(
        sum(&during, "fleetcron_runs_started_total", &[("task", "metrics-fast")]) >= 1.0,
        "{text}"
    );
    assert!(
        sum(&during, "fleetcron_claim_batch_size_count", &[("store", "sqlite")]) >= 1.0,
        "{text}"
    );
    assert!(text.contains("fleetcron_store_clock_offset_seconds"), "{text}");

    // No worker for a few seconds (slots missed), then two new ones (the catch-up policy runs the latest).
    stop(std::mem::take(&mut workers)).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    workers.push(worker(&store.url, "metrics-w4").await);
    workers.push(worker(&store.url, "metrics-w5").await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop(workers).await;
    // An hour disabled: one range row of ~3,600 slots, counted as its `slot_count`.
    assert_eq!(
        client
            .post("/api/tasks/metrics-fast/disable", Some(ADMIN), None)
            .await
            .0,
        200
    );
    store.rewind("metrics-fast", chrono::Duration::hours(1)).await;
    assert_eq!(
        client.post("/api/tasks/metrics-fast/enable", Some(ADMIN), None).await.0,
        200
    );

    let (code, _, text) = client.send("GET", "/metrics", Some(READ), None, &[]).await;
    assert_eq!(code, 200);
    let after = parse(&text);
    let mut workers_seen = std::collections::BTreeSet::new();
    for task in ["metrics-slow", "metrics-fast"] {
        let history = admin
            .runs(
                task,
                RunQuery {
                    limit: 100_000,
                    before: None,
                },
            )
            .await
            .expect("history");
        let started = history.iter().filter(|run| run.status.started()).count() as f64;
        assert!(started >= 3.0, "{task}: {started} runs");
        assert_eq!(
            sum(&after, "fleetcron_runs_started_total", &[("task", task)]),
            started,
            "{task}: runs started"
        );
        for status in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Abandoned,
            RunStatus::TimedOut,
        ] {
            let rows = history.iter().filter(|run| run.status == status).count() as f64;
            assert_eq!(
                sum(
                    &after,
                    "fleetcron_runs_finished_total",
                    &[("task", task), ("status", status.as_str())]
                ),
                rows,
                "{task}: runs {status}"
            );
        }
        let mut slots: HashMap<(RunStatus, String), u64> = HashMap::new();
        for run in history
            .iter()
            .filter(|run| matches!(run.status, RunStatus::Skipped | RunStatus::Missed))
        {
            *slots
                .entry((run.status, run.reason.clone().unwrap_or_default()))
                .or_default() += run.slots_accounted();
        }
        let count = |status, reason: &str| slots.get(&(status, reason.to_owned())).copied().unwrap_or(0) as f64;
        assert_eq!(
            sum(
                &after,
                "fleetcron_slots_skipped_total",
                &[("task", task), ("reason", "overlap")]
            ),
            count(RunStatus::Skipped, fleetcron::decide::REASON_OVERLAP),
            "{task}: skipped (overlap)"
        );
        assert_eq!(
            sum(
                &after,
                "fleetcron_slots_skipped_total",
                &[("task", task), ("reason", "disabled")]
            ),
            count(RunStatus::Skipped, fleetcron::decide::REASON_DISABLED),
            "{task}: skipped (disabled)"
        );
        assert_eq!(
            sum(
                &after,
                "fleetcron_slots_missed_total",
                &[("task", task), ("reason", "no_worker")]
            ),
            count(RunStatus::Missed, fleetcron::decide::REASON_MISSED),
            "{task}: missed"
        );
        // Nothing runs any more.
        assert_eq!(
            sum(&after, "fleetcron_runs_running", &[("task", task)]),
            0.0,
            "{task}: running gauge"
        );
        workers_seen.extend(
            history
                .iter()
                .filter(|run| run.status.started())
                .filter_map(|run| run.worker.clone()),
        );
    }
    // The run exercised what it meant to.
    let slow_overlaps = sum(
        &after,
        "fleetcron_slots_skipped_total",
        &[("task", "metrics-slow"), ("reason", "overlap")],
    );
    let fast_disabled = sum(
        &after,
        "fleetcron_slots_skipped_total",
        &[("task", "metrics-fast"), ("reason", "disabled")],
    );
    let missed = sum(
        &after,
        "fleetcron_slots_missed_total",
        &[("reason", "no_worker"), ("task", "metrics-fast")],
    );
    assert!(
        slow_overlaps >= 1.0 && fast_disabled >= 3600.0 && missed >= 1.0,
        "{slow_overlaps} {fast_disabled} {missed}"
    );
    assert!(workers_seen.len() >= 2, "runs on several workers: {workers_seen:?}");
    assert_eq!(
        sum(
            &after,
            "fleetcron_triggers_total",
            &[("task", "metrics-fast"), ("outcome", "accepted")]
        ),
        1.0
    );
    assert!(
        sum(
            &after,
            "fleetcron_triggers_total",
            &[("task", ""), ("outcome", "refused_unknown")]
        ) >= 1.0
    );
    assert!(
        !text.contains("metrics-unknown-task"),
        "an unknown id never becomes a label"
    );
    assert!(sum(&after, "fleetcron_start_lag_seconds_count", &[("task", "metrics-fast")]) >= 1.0);
    assert!(
        sum(
            &after,
            "fleetcron_run_duration_seconds_count",
            &[("task", "metrics-slow")]
        ) >= 1.0
    );
    served.stop().await;
}
