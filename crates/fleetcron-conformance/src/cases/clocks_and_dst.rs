//! Time: workers whose clocks disagree with the store's, and the days a DST change removes or repeats
//! an hour.

use super::{every_second, factory, must, setup, started_rows};
use crate::support::{
    align_to_second, assert_contiguous_once, count_status, fast_config, history, recorded, Recorder, Worker,
    WorkerOptions,
};
use crate::Backend;
use chrono::{DateTime, TimeZone, Utc};
use fleetcron_core::clock::OffsetClock;
use fleetcron_core::{RunStatus, Schedule};
use std::sync::Arc;
use std::time::Duration;

/// A worker whose clock runs 2.5 s ahead fires early, but the store's clock holds the slot back.
pub async fn worker_clock_ahead_cannot_start_early<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("early", &recorder, Duration::ZERO)])
    };
    let options = WorkerOptions {
        clock: Some(Arc::new(OffsetClock::new(chrono::Duration::milliseconds(2500)))),
        ..WorkerOptions::default()
    };
    align_to_second().await;
    let worker = Worker::start("fast-clock", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.stop().await;
    let events = recorder.of("early");
    assert!(events.len() >= 3);
    for event in &events {
        let slot = event.slot.unwrap_or(DateTime::<Utc>::MAX_UTC);
        assert!(
            event.started >= slot,
            "started {} before its slot {}",
            event.started,
            slot
        );
    }
    for run in started_rows(&history(&admin, "early").await) {
        assert!(run.started_at >= run.slot, "{run:?}");
    }
}

/// Workers whose clocks disagree by seconds never run a slot twice.
pub async fn worker_clock_behind_cannot_run_twice<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("skewed", &recorder, Duration::from_millis(100))])
    };
    let mut workers = Vec::new();
    for (index, skew) in [-2500i64, 0, 2500].into_iter().enumerate() {
        let options = WorkerOptions {
            clock: Some(Arc::new(OffsetClock::new(chrono::Duration::milliseconds(skew)))),
            ..WorkerOptions::default()
        };
        workers.push(Worker::start(&format!("skew{index}"), &namespace, make.clone(), options).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![]);
    let runs = history(&admin, "skewed").await;
    assert_contiguous_once("skewed", &runs);
    assert_eq!(count_status(&runs, RunStatus::Missed), 0);
}

async fn dst_case<B: Backend>(
    backend: &B,
    start: DateTime<Utc>,
    pattern: &str,
    zone: &str,
) -> Option<(Vec<DateTime<Utc>>, Vec<DateTime<Utc>>)> {
    if !backend.injectable_store_clock() {
        eprintln!("SKIPPED: this backend keeps its own clock, so the store cannot be moved to a DST date");
        return None;
    }
    let clock: fleetcron_core::SharedClock = Arc::new(OffsetClock::starting_at(start));
    let namespace = backend.namespace(clock.clone()).await;
    let admin = namespace.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let make = {
        let (recorder, pattern, zone) = (recorder.clone(), pattern.to_owned(), zone.to_owned());
        factory(move || {
            vec![must(
                recorded("dst", &recorder, Duration::ZERO)
                    .schedule(pattern.clone())
                    .timezone(zone.clone())
                    .build(),
                "valid",
            )]
        })
    };
    let options = WorkerOptions {
        clock: Some(clock),
        ..WorkerOptions::default()
    };
    let worker = Worker::start("dst", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    worker.stop().await;
    let runs = history(&admin, "dst").await;
    let ran: Vec<DateTime<Utc>> = runs.iter().filter_map(|run| run.slot).collect();
    let schedule = must(Schedule::parse(pattern, zone), "schedule");
    let last = ran.last().copied().unwrap_or(start);
    let expected = schedule.slots_between(start, last, 100);
    assert_eq!(recorder.duplicates(), vec![]);
    Some((ran, expected))
}

/// On the spring-forward day in Europe/London, local 01:xx does not exist: the fleet runs exactly
/// croner's slots, starting at 02:00 BST (01:00 UTC).
pub async fn dst_gap_day<B: Backend>(backend: &B) {
    let start = Utc
        .with_ymd_and_hms(2026, 3, 29, 0, 59, 57)
        .single()
        .unwrap_or_default();
    let Some((ran, expected)) = dst_case(backend, start, "* * 1,2 * * *", "Europe/London").await else {
        return;
    };
    assert!(!ran.is_empty());
    assert_eq!(ran, expected, "the fleet must run exactly croner's slots");
    let gap_end = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).single().unwrap_or_default();
    assert_eq!(
        ran.first().copied(),
        Some(gap_end),
        "the first slot is 02:00:00 BST = 01:00:00 UTC"
    );
}

/// On the fall-back day, local 01:xx happens twice; the fleet runs exactly croner's slots, each once.
pub async fn dst_overlap_day<B: Backend>(backend: &B) {
    let start = Utc
        .with_ymd_and_hms(2026, 10, 25, 0, 59, 57)
        .single()
        .unwrap_or_default();
    let Some((ran, expected)) = dst_case(backend, start, "* * 1 * * *", "Europe/London").await else {
        return;
    };
    assert!(ran.len() >= 2, "{ran:?}");
    assert_eq!(ran, expected, "the fleet must run exactly croner's slots");
    for pair in ran.windows(2) {
        assert!(pair[0] < pair[1]);
    }
}
