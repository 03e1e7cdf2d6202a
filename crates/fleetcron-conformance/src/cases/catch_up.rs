//! `CatchUp`: what runs of the slots missed while every worker was down.

use super::{factory, must, setup};
use crate::support::{
    align_to_second, assert_contiguous_once, count_status, history, recorded, Recorder, Worker, WorkerOptions,
};
use crate::Backend;
use fleetcron_core::{CatchUp, RunKind, RunStatus};
use std::time::Duration;

/// Runs a task, stops every worker for 3.5 s, then starts one again half a second past a slot.
async fn run_outage_case<B: Backend>(backend: &B, catch_up: CatchUp) -> (Vec<fleetcron_core::RunRecord>, Recorder) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("outage", &recorder, Duration::from_millis(100))
                    .catch_up(catch_up)
                    .build(),
                "valid",
            )]
        })
    };
    let mut options = WorkerOptions::default();
    options.config.misfire_threshold = Duration::from_millis(300);
    align_to_second().await;
    let first = Worker::start("before", &namespace, make.clone(), options.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.stop().await;
    align_to_second().await;
    tokio::time::sleep(Duration::from_millis(3400)).await;
    let second = Worker::start("after", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    second.stop().await;
    let runs = history(&admin, "outage").await;
    assert_contiguous_once("outage", &runs);
    assert_eq!(recorder.duplicates(), vec![]);
    (runs, recorder)
}

/// `CatchUp::Skip`: slots missed during an outage are recorded `missed`; none runs late.
pub async fn catch_up_skip<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(backend, CatchUp::Skip).await;
    assert!(count_status(&runs, RunStatus::Missed) >= 3, "{runs:?}");
    assert!(runs.iter().all(|run| run.kind != RunKind::CatchUp));
    assert!(runs
        .iter()
        .filter(|run| run.status == RunStatus::Missed)
        .all(|run| run.reason.is_some()));
}

/// `CatchUp::Latest`: the newest missed slot runs once; the older ones are `missed`.
pub async fn catch_up_latest<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::Latest {
            within: Duration::from_secs(3600),
        },
    )
    .await;
    let caught: Vec<_> = runs.iter().filter(|run| run.kind == RunKind::CatchUp).collect();
    assert_eq!(caught.len(), 1, "exactly one catch-up run: {runs:?}");
    assert!(caught[0].status.started());
    assert!(count_status(&runs, RunStatus::Missed) >= 2);
    let newest_missed = runs
        .iter()
        .filter(|run| run.status == RunStatus::Missed)
        .filter_map(|run| run.slot)
        .max();
    assert!(
        caught[0].slot > newest_missed,
        "the caught-up slot is the newest missed one"
    );
}

/// `CatchUp::Latest` with a short window: a missed slot older than `within` does not run.
pub async fn catch_up_latest_too_old<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::Latest {
            within: Duration::from_millis(200),
        },
    )
    .await;
    assert!(runs.iter().all(|run| run.kind != RunKind::CatchUp), "{runs:?}");
    assert!(count_status(&runs, RunStatus::Missed) >= 3);
}

/// `CatchUp::All`: the newest `max` missed slots run in order, one after another.
pub async fn catch_up_all<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::All {
            within: Duration::from_secs(3600),
            max: 2,
        },
    )
    .await;
    let caught: Vec<_> = runs.iter().filter(|run| run.kind == RunKind::CatchUp).collect();
    assert_eq!(caught.len(), 2, "two catch-up runs: {runs:?}");
    assert!(caught[0].slot < caught[1].slot);
    assert!(
        caught[1].started_at >= caught[0].finished_at,
        "catch-up runs go one after another"
    );
    assert!(count_status(&runs, RunStatus::Missed) >= 1);
}
