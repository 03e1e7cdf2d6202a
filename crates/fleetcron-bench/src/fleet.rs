//! In-process workers (each its own strategy, so its own connection pool, and its own scheduler) and the
//! recorder their handlers write slot starts into.

use crate::Error;
use chrono::{DateTime, Utc};
use fleetcron::{DefaultSchedulerStrategy, EngineConfig, ScheduledTask, Scheduler, TaskContext, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Workers running in this process until [`Fleet::stop`].
pub struct Fleet {
    schedulers: Vec<Scheduler>,
    handles: Vec<JoinHandle<()>>,
    failures: mpsc::UnboundedReceiver<String>,
    shutdown: watch::Sender<bool>,
}

impl Fleet {
    /// Connects `workers` strategies to `url` and starts one scheduler per strategy, each with `tasks`.
    pub async fn start(url: &str, tasks: &[ScheduledTask], workers: usize, name: &str) -> Result<Self, Error> {
        let (shutdown, _) = watch::channel(false);
        let (failure_sender, failures) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            schedulers: Vec::with_capacity(workers),
            handles: Vec::with_capacity(workers),
            failures,
            shutdown,
        };
        for index in 0..workers {
            let started = async {
                let strategy = DefaultSchedulerStrategy::connect_with(url, EngineConfig::default())
                    .await
                    .map_err(|error| format!("worker {index}: cannot connect to {url}: {error}"))?;
                Scheduler::builder()
                    .strategy(strategy)
                    .tasks(tasks.iter().cloned())
                    .worker_id(format!("{name}-w{index}"))
                    .retention_schedule(None)
                    .build()
                    .map_err(|error| format!("worker {index}: invalid scheduler: {error}"))
            };
            let scheduler = match started.await {
                Ok(scheduler) => scheduler,
                Err(error) => {
                    let _ = fleet.stop().await;
                    return Err(error.into());
                }
            };
            let mut stop = fleet.shutdown.subscribe();
            let running = scheduler.clone();
            let failure_sender = failure_sender.clone();
            fleet.handles.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                if let Err(error) = running.run_until(shutdown).await {
                    let _ = failure_sender.send(format!("worker {index} stopped: {error}"));
                }
            }));
            fleet.schedulers.push(scheduler);
        }
        Ok(fleet)
    }

    /// Waits until every worker has registered its tasks (fails if one stops or `limit` passes).
    pub async fn ready(&mut self, limit: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        for (index, scheduler) in self.schedulers.iter().enumerate() {
            tokio::select! {
                () = scheduler.ready() => {}
                failure = self.failures.recv() => {
                    return Err(failure.unwrap_or_else(|| format!("worker {index} stopped before it was ready")).into());
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!("worker {index} was not ready (tasks registered) within {limit:?}").into());
                }
            }
        }
        Ok(())
    }

    /// A failure reported by a worker since the last call, if any.
    pub fn failure(&mut self) -> Option<String> {
        self.failures.try_recv().ok()
    }

    /// Stops every worker gracefully and waits for them (at most a minute each).
    pub async fn stop(mut self) -> Result<(), Error> {
        self.shutdown.send_replace(true);
        let mut problems = Vec::new();
        for (index, handle) in self.handles.drain(..).enumerate() {
            match tokio::time::timeout(Duration::from_secs(60), handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => problems.push(format!("worker {index} panicked: {error}")),
                Err(_) => problems.push(format!("worker {index} did not stop within 60 s")),
            }
        }
        while let Ok(failure) = self.failures.try_recv() {
            problems.push(failure);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; ").into())
        }
    }
}

/// One handler start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Task index.
    pub task: u32,
    /// The slot, epoch µs.
    pub slot_us: i64,
    /// When the handler started (host clock), epoch µs.
    pub at_us: i64,
}

const SHARDS: usize = 64;

/// Where handlers record their starts: sharded by task so concurrent handlers rarely share a lock.
pub struct Recorder {
    shards: Vec<Mutex<Vec<Start>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }
}

impl Recorder {
    /// Records that `task` started `slot` at `at`.
    pub fn record(&self, task: u32, slot: DateTime<Utc>, at: DateTime<Utc>) {
        let start = Start {
            task,
            slot_us: slot.timestamp_micros(),
            at_us: at.timestamp_micros(),
        };
        if let Some(shard) = self.shards.get(task as usize % SHARDS) {
            if let Ok(mut starts) = shard.lock() {
                starts.push(start);
            }
        }
    }

    /// Every start so far.
    pub fn starts(&self) -> Vec<Start> {
        let mut all = Vec::new();
        for shard in &self.shards {
            if let Ok(starts) = shard.lock() {
                all.extend_from_slice(&starts);
            }
        }
        all
    }

    /// Starts of slots in `[from_us, to_us)`.
    pub fn count_slots_in(&self, from_us: i64, to_us: i64) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok())
            .map(|starts| {
                starts
                    .iter()
                    .filter(|start| start.slot_us >= from_us && start.slot_us < to_us)
                    .count()
            })
            .sum()
    }
}

/// Number of starts beyond the first for the same `(task, slot)`: any is an exactly-once violation.
pub fn duplicates(starts: &[Start]) -> u64 {
    let mut keys: Vec<(u32, i64)> = starts.iter().map(|start| (start.task, start.slot_us)).collect();
    keys.sort_unstable();
    keys.windows(2).filter(|pair| pair[0] == pair[1]).count() as u64
}

/// `count` tasks `"{prefix}.{index}"` on `pattern` whose handlers record scheduled starts in `recorder`.
pub fn recording_tasks(
    prefix: &str,
    count: usize,
    pattern: &str,
    recorder: &Arc<Recorder>,
) -> Result<Vec<ScheduledTask>, Error> {
    (0..count)
        .map(|index| {
            let recorder = recorder.clone();
            let task = index as u32;
            ScheduledTask::builder(format!("{prefix}.{index:06}"))
                .schedule(pattern)
                .handler(move |context: TaskContext| {
                    let recorder = recorder.clone();
                    async move {
                        let at = Utc::now();
                        if let Some(slot) = context.slot {
                            recorder.record(task, slot, at);
                        }
                        Ok(Value::Null)
                    }
                })
                .build()
                .map_err(|error| format!("invalid benchmark task: {error}").into())
        })
        .collect()
}

/// `count` tasks `"{prefix}.{index}"` on `pattern` whose handlers do nothing.
pub fn idle_tasks(prefix: &str, count: usize, pattern: &str) -> Result<Vec<ScheduledTask>, Error> {
    (0..count)
        .map(|index| {
            ScheduledTask::builder(format!("{prefix}.{index:06}"))
                .schedule(pattern)
                .handler(|_context: TaskContext| async { Ok(Value::Null) })
                .build()
                .map_err(|error| format!("invalid benchmark task: {error}").into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn duplicates_count_repeated_task_slots_only() {
        let start = |task, slot_us, at_us| Start { task, slot_us, at_us };
        let starts = [
            start(1, 10, 11),
            start(2, 10, 12),
            start(1, 20, 21),
            start(1, 10, 15),
            start(1, 10, 16),
        ];
        assert_eq!(duplicates(&starts), 2);
        assert_eq!(duplicates(&starts[..3]), 0);
    }

    #[test]
    fn the_recorder_counts_slots_in_a_window() {
        let recorder = Recorder::default();
        let second = |s| Utc.timestamp_opt(s, 0).single().expect("valid");
        for task in 0..100 {
            recorder.record(task, second(10), second(10));
            recorder.record(task, second(11), second(11));
        }
        assert_eq!(recorder.starts().len(), 200);
        assert_eq!(recorder.count_slots_in(10_000_000, 11_000_000), 100);
        assert_eq!(recorder.count_slots_in(0, 20_000_000), 200);
    }
}
