//! Claims: one winner per slot among many workers, parallel claim batches, a restart that runs no
//! slot twice, and every slot accounted under a handler slower than its interval.

use super::{every_second, factory, setup, started_rows};
use crate::support::{align_to_second, assert_contiguous_once, count_status, history, Recorder, Worker, WorkerOptions};
use crate::Backend;
use chrono::{DateTime, Utc};
use fleetcron_core::RunStatus;
use std::time::Duration;

/// Many workers race for every slot of three tasks; each slot runs once, and the history agrees with
/// the handlers' own log.
pub async fn single_winner_per_slot<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let mut workers = Vec::new();
    align_to_second().await;
    for index in 0..4 {
        let recorder = recorder.clone();
        let tasks = factory(move || {
            (0..3)
                .map(|t| every_second(&format!("race-{t}"), &recorder, Duration::from_millis(50)))
                .collect()
        });
        workers.push(Worker::start(&format!("w{index}"), &namespace, tasks, WorkerOptions::default()).await);
    }
    tokio::time::sleep(Duration::from_millis(4200)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    for t in 0..3 {
        let id = format!("race-{t}");
        let runs = history(&admin, &id).await;
        let slots = assert_contiguous_once(&id, &runs);
        assert!(slots >= 3, "task {id}: only {slots} slots accounted in 4 s");
        let events = recorder.of(&id);
        let started = started_rows(&runs);
        assert_eq!(
            started.len(),
            events.len(),
            "task {id}: history and handler log disagree"
        );
        for event in &events {
            assert!(
                started
                    .iter()
                    .any(|run| run.run_id == event.run_id && run.slot == event.slot),
                "task {id}: run {} missing from history",
                event.run_id
            );
        }
        assert_eq!(
            count_status(&runs, RunStatus::Missed),
            0,
            "task {id}: a live fleet misses nothing"
        );
    }
}

/// Many tasks due at one instant, split into small batches claimed four at a time by each of four
/// workers that start at different places: still one run per slot, every slot accounted, none missed.
pub async fn parallel_batches_claim_each_slot_once<B: Backend>(backend: &B) {
    const TASKS: usize = 240;
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let mut workers = Vec::new();
    for index in 0..4 {
        let recorder = recorder.clone();
        let tasks = factory(move || {
            (0..TASKS)
                .map(|t| every_second(&format!("wide-{t:03}"), &recorder, Duration::from_millis(10)))
                .collect()
        });
        let options = WorkerOptions {
            config: crate::support::fast_config().claim_batch(70).claim_parallelism(4),
            ..WorkerOptions::default()
        };
        workers.push(Worker::start(&format!("w{index}"), &namespace, tasks, options).await);
    }
    align_to_second().await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    let mut ran = 0;
    for t in 0..TASKS {
        let id = format!("wide-{t:03}");
        let runs = history(&admin, &id).await;
        let slots = assert_contiguous_once(&id, &runs);
        assert!(slots >= 2, "task {id}: only {slots} slots accounted in 3 s");
        assert_eq!(
            count_status(&runs, RunStatus::Missed),
            0,
            "task {id}: a live fleet misses nothing"
        );
        ran += started_rows(&runs).len();
    }
    assert_eq!(ran, recorder.events().len(), "history and handler log disagree");
}

/// A worker stops and starts again (same id); no slot runs twice and none is missed.
pub async fn no_slot_twice_after_restart<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("restart", &recorder, Duration::ZERO)])
    };
    align_to_second().await;
    for _ in 0..3 {
        let worker = Worker::start("same-worker", &namespace, make.clone(), WorkerOptions::default()).await;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![]);
    let runs = history(&admin, "restart").await;
    let slots = assert_contiguous_once("restart", &runs);
    assert!(slots >= 4, "only {slots} slots");
    assert_eq!(
        count_status(&runs, RunStatus::Missed),
        0,
        "restarts within the misfire threshold lose nothing"
    );
    assert_eq!(started_rows(&runs).len(), recorder.of("restart").len());
}

/// A handler slower than its interval: every slot is still accounted for exactly once, runs never
/// overlap, and the skipped ones say why.
pub async fn every_slot_accounted_with_slow_handler<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    align_to_second().await;
    let mut workers = Vec::new();
    for index in 0..2 {
        let recorder = recorder.clone();
        workers.push(
            Worker::start(
                &format!("w{index}"),
                &namespace,
                factory(move || vec![every_second("slow", &recorder, Duration::from_millis(1500))]),
                WorkerOptions::default(),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(5200)).await;
    for worker in workers {
        worker.stop().await;
    }
    let runs = history(&admin, "slow").await;
    assert_contiguous_once("slow", &runs);
    let skipped: Vec<_> = runs.iter().filter(|run| run.status == RunStatus::Skipped).collect();
    assert!(!skipped.is_empty(), "a 1.5 s handler every second must skip slots");
    assert!(skipped.iter().all(|run| run.reason.as_deref() == Some("overlap")));
    let started = started_rows(&runs);
    for pair in started.windows(2) {
        let previous_end = pair[0].finished_at.unwrap_or(DateTime::<Utc>::MAX_UTC);
        assert!(
            pair[1].started_at >= Some(previous_end),
            "runs overlapped under Overlap::Skip: {:?} / {:?}",
            pair[0],
            pair[1]
        );
    }
}
