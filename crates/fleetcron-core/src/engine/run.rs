//! One run on this worker: the handler in its own task, its timeout and cancellation, its bounded
//! result and error, and the hand-over of its end to the completion writer.

use super::*;

/// Why a local run was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    /// The lease is gone (abandoned by others, fence moved, or renewal impossible): write nothing.
    LeaseLost,
    /// A newer run superseded it (already recorded `cancelled`): write nothing.
    Superseded,
    /// This worker is shutting down: record `cancelled`.
    Shutdown,
}

/// A run this worker drives: what its heartbeats renew and how it is told to stop.
pub(super) struct LocalRun {
    pub(super) task_id: String,
    pub(super) fence: u64,
    pub(super) token: CancellationToken,
    stop: Mutex<Option<StopReason>>,
    pub(super) renewed_at: Mutex<Instant>,
}

impl LocalRun {
    pub(super) fn stop(&self, reason: StopReason) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(reason);
        }
        self.token.cancel();
    }

    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().ok().and_then(|stop| *stop)
    }
}

/// An error text of at most `limit` bytes: a longer one keeps its beginning and its end (where
/// command output usually says what went wrong), cut at character boundaries, with the number of
/// bytes left out in between. Like results, errors are bounded so no history row, statement or
/// packet grows with a handler's output.
pub fn bound_text(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let marker_room = 64;
    let keep = limit.saturating_sub(marker_room);
    let mut head_end = keep / 2;
    while head_end > 0 && !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - (keep - head_end);
    while tail_start < text.len() && !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let head = text.get(..head_end).unwrap_or_default();
    let tail = text.get(tail_start..).unwrap_or_default();
    let omitted = tail_start - head_end;
    format!("{head} […{omitted} bytes omitted…] {tail}")
}

impl<S: Store> Engine<S> {
    pub(super) fn spawn_runs(self: &Arc<Self>, task: &Arc<ScheduledTask>, leases: Vec<RunLease>) {
        for lease in leases {
            let local = Arc::new(LocalRun {
                task_id: task.id().to_owned(),
                fence: lease.fence,
                token: CancellationToken::new(),
                stop: Mutex::new(None),
                renewed_at: Mutex::new(Instant::now()),
            });
            if let Ok(mut runs) = self.local_runs.lock() {
                runs.insert(lease.run_id.clone(), local.clone());
            }
            let engine = self.clone();
            let task = task.clone();
            let span = crate::metrics::run_span(
                task.id(),
                lease.slot,
                &lease.run_id,
                lease.fence,
                lease.attempt,
                &lease.worker,
            );
            self.handlers.spawn(tracing::Instrument::instrument(
                async move {
                    let supervisor = engine.clone();
                    // The handler's own panics are caught inside (they are the run's failure); a panic
                    // here is the engine's own, and leaves a lease nobody ends: fatal.
                    let driven = std::panic::AssertUnwindSafe(engine.drive_run(task, lease, local))
                        .catch_unwind()
                        .await;
                    if let Err(panic) = driven {
                        supervisor.fail(format!("a run driver panicked: {}", panic_message(panic)));
                    }
                },
                span,
            ));
        }
    }

    pub(super) fn stop_local(&self, run_ids: &[String], reason: StopReason) {
        if run_ids.is_empty() {
            return;
        }
        if let Ok(runs) = self.local_runs.lock() {
            for run_id in run_ids {
                if let Some(run) = runs.get(run_id) {
                    run.stop(reason);
                }
            }
        }
    }

    pub(super) async fn drive_run(self: Arc<Self>, task: Arc<ScheduledTask>, lease: RunLease, local: Arc<LocalRun>) {
        let worker = self.decide_config().worker;
        let context = TaskContext {
            task_id: task.id().to_owned(),
            slot: lease.slot,
            run_id: lease.run_id.clone(),
            fence: lease.fence,
            attempt: lease.attempt,
            params: task.shared_params(),
            worker_id: worker,
            cancellation: local.token.clone(),
        };
        tracing::debug!(task = task.id(), run = %lease.run_id, slot = ?lease.slot, fence = lease.fence, "run started");
        // Start lag by the store's clock (the best reading, extrapolated), for runs with a slot.
        let store_now = self
            .store_time
            .lock()
            .ok()
            .and_then(|reading| reading.map(|reading| reading.now()))
            .unwrap_or(lease.started_at);
        let lag = lease.slot.map(|slot| store_now - slot);
        crate::metrics::run_started(self.metrics_store, task.id(), lease.kind, lag);
        let handler_started = Instant::now();
        // The handler runs inside this driver (one task per run, in the run's span); its panics are
        // caught here and become the run's failure.
        let mut handler = std::panic::AssertUnwindSafe((task.handler())(context)).catch_unwind();
        let timeout = task.policy().timeout;
        let (status, reason, result, error) = tokio::select! {
            joined = &mut handler => Self::joined(joined),
            () = tokio::time::sleep(timeout) => {
                local.token.cancel();
                self.wait_or_abort(&mut handler).await;
                (RunStatus::TimedOut, Some("timeout".to_owned()), None,
                 Some(format!("the handler exceeded its timeout of {} ms and was cancelled", timeout.as_millis())))
            }
            () = local.token.cancelled() => {
                self.wait_or_abort(&mut handler).await;
                (RunStatus::Cancelled, Some("scheduler shutdown".to_owned()), None, Some("cancelled: the worker is shutting down".to_owned()))
            }
        };
        // A handler still running here overran its grace: dropping it aborts it before its end is written.
        drop(handler);
        crate::metrics::run_ended(self.metrics_store, task.id(), status, handler_started.elapsed());
        match local.stop_reason() {
            Some(StopReason::LeaseLost) => {
                tracing::warn!(task = task.id(), run = %lease.run_id, "lease lost; the run's end is not recorded by this worker");
            }
            Some(StopReason::Superseded) => {
                tracing::info!(task = task.id(), run = %lease.run_id, "run superseded by a newer run");
            }
            // A run that succeeded despite shutdown's cancellation keeps its outcome; one that ended
            // because of it (an error or an abort after the token fired) was cancelled.
            Some(StopReason::Shutdown) if status != RunStatus::Succeeded => {
                let error = error
                    .map(|text| bound_text(text, self.config.max_result_bytes))
                    .or_else(|| Some("cancelled: the worker is shutting down".to_owned()));
                self.record_finish(
                    &task,
                    &lease,
                    RunStatus::Cancelled,
                    Some("scheduler shutdown".to_owned()),
                    None,
                    error,
                )
                .await;
            }
            Some(StopReason::Shutdown) | None => {
                let result = result.map(|value| self.bound_result(value));
                let error = error.map(|text| bound_text(text, self.config.max_result_bytes));
                self.record_finish(&task, &lease, status, reason, result, error).await;
            }
        }
        if let Ok(mut runs) = self.local_runs.lock() {
            runs.remove(&lease.run_id);
        }
    }

    pub(super) fn joined(
        joined: Result<Result<Value, crate::task::TaskError>, Box<dyn std::any::Any + Send>>,
    ) -> (RunStatus, Option<String>, Option<Value>, Option<String>) {
        match joined {
            Ok(Ok(value)) => (RunStatus::Succeeded, None, Some(value), None),
            Ok(Err(error)) => (RunStatus::Failed, None, None, Some(error.to_string())),
            Err(panic) => (
                RunStatus::Failed,
                Some("panic".to_owned()),
                None,
                Some(format!("the handler panicked: {}", panic_message(panic))),
            ),
        }
    }

    /// Gives a cancelled handler `cancel_grace` to stop on its own; after that it is dropped (aborted):
    /// the caller drops the future when this returns.
    pub(super) async fn wait_or_abort<F: std::future::Future + Unpin>(&self, handler: &mut F) {
        let _ = tokio::time::timeout(self.config.cancel_grace, handler).await;
    }

    pub(super) fn bound_result(&self, value: Value) -> Value {
        match serde_json::to_string(&value) {
            Ok(text) if text.len() <= self.config.max_result_bytes => value,
            Ok(text) => {
                tracing::warn!(
                    bytes = text.len(),
                    limit = self.config.max_result_bytes,
                    "handler result too large; storing a note instead"
                );
                serde_json::json!({
                    "truncated": true,
                    "bytes": text.len(),
                    "limit": self.config.max_result_bytes,
                    "note": "the handler's result exceeded max_result_bytes and was not stored",
                })
            }
            Err(error) => serde_json::json!({ "unserializable": error.to_string() }),
        }
    }

    /// Hands the run's end to the completion batcher and waits until it is written (or refused).
    pub(super) async fn record_finish(
        self: &Arc<Self>,
        task: &Arc<ScheduledTask>,
        lease: &RunLease,
        status: RunStatus,
        reason: Option<String>,
        result: Option<Value>,
        error: Option<String>,
    ) {
        let (reply, written) = oneshot::channel();
        let request = FinishRequest {
            task: task.clone(),
            lease: lease.clone(),
            status,
            reason,
            result,
            error,
            reply,
        };
        if self.finishes.send(request).await.is_err() {
            tracing::error!(task = task.id(), run = %lease.run_id, "the completion writer is gone; the run's lease will expire and it will be marked abandoned");
            return;
        }
        let _ = written.await;
    }
}
