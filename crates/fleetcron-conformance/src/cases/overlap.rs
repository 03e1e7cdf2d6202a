//! `Overlap`: what happens to a slot that falls due while the previous run is still running.

use super::{factory, must, setup, started_rows};
use crate::support::{
    align_to_second, assert_contiguous_once, count_status, history, recorded, Recorder, Worker, WorkerOptions,
};
use crate::Backend;
use chrono::{DateTime, Utc};
use fleetcron_core::{Overlap, RunStatus, SchedulerStrategy};
use std::sync::Arc;
use std::time::Duration;

async fn run_overlap_case<B: Backend>(
    backend: &B,
    overlap: Overlap,
    seconds: u64,
) -> (Arc<dyn SchedulerStrategy>, Vec<fleetcron_core::RunRecord>, Recorder) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("overlap", &recorder, Duration::from_millis(2500))
                    .overlap(overlap)
                    .build(),
                "valid",
            )]
        })
    };
    align_to_second().await;
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    worker.stop().await;
    let runs = history(&admin, "overlap").await;
    assert_contiguous_once("overlap", &runs);
    (admin, runs, recorder)
}

/// `Overlap::Skip`: slots due during a run are recorded skipped (`overlap`).
pub async fn overlap_skip<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::Skip, 6).await;
    let skipped = count_status(&runs, RunStatus::Skipped);
    let started = started_rows(&runs).len();
    assert!(
        skipped >= 2 * started.saturating_sub(1),
        "expected about two skipped slots per 2.5 s run: {skipped} skipped, {started} started"
    );
    assert!(runs
        .iter()
        .filter(|run| run.status == RunStatus::Skipped)
        .all(|run| run.reason.as_deref() == Some("overlap")));
}

/// `Overlap::BufferOne`: one slot waits and starts right after the run ends; further ones are skipped.
pub async fn overlap_buffer_one<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::BufferOne, 7).await;
    let started = started_rows(&runs);
    assert!(started.len() >= 2, "the buffered slot must run: {runs:?}");
    let buffered = started.windows(2).find(|pair| {
        let late = pair[1]
            .started_at
            .zip(pair[1].slot)
            .map(|(started, slot)| (started - slot).num_milliseconds())
            .unwrap_or(0);
        late > 1000
    });
    let Some(pair) = buffered else {
        panic!("no run started late from the buffer: {started:?}")
    };
    let gap = pair[1]
        .started_at
        .zip(pair[0].finished_at)
        .map(|(start, end)| (start - end).num_milliseconds());
    assert!(
        gap.is_some_and(|gap| (0..500).contains(&gap)),
        "the buffered slot must start right after the previous run ended, gap {gap:?} ms"
    );
    assert!(
        count_status(&runs, RunStatus::Skipped) >= 1,
        "slots beyond the buffer of one are skipped"
    );
}

/// `Overlap::AllowConcurrent`: runs overlap; nothing is skipped.
pub async fn overlap_allow_concurrent<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::AllowConcurrent, 4).await;
    assert_eq!(count_status(&runs, RunStatus::Skipped), 0);
    let started = started_rows(&runs);
    assert!(started.len() >= 3);
    let overlapped = started
        .windows(2)
        .any(|pair| pair[1].started_at < pair[0].finished_at.or(Some(DateTime::<Utc>::MAX_UTC)));
    assert!(overlapped, "runs must overlap: {started:?}");
}

/// `Overlap::CancelPrevious`: each new slot cancels the running run, recorded `cancelled`.
pub async fn overlap_cancel_previous<B: Backend>(backend: &B) {
    let (_, runs, recorder) = run_overlap_case(backend, Overlap::CancelPrevious, 5).await;
    let cancelled: Vec<_> = runs
        .iter()
        .filter(|run| {
            run.status == RunStatus::Cancelled && run.reason.as_deref().is_some_and(|r| r.starts_with("superseded"))
        })
        .collect();
    assert!(cancelled.len() >= 2, "expected superseded runs: {runs:?}");
    assert_eq!(count_status(&runs, RunStatus::Skipped), 0);
    assert_eq!(started_rows(&runs).len(), recorder.of("overlap").len());
}
