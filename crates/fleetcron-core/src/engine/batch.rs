//! Claims and completions in batches: requests queue (bounded), a batcher gathers those of one instant
//! into one store mutation (several in flight for a big instant), and hands each caller its answer.

use super::*;

/// Most claims (and completions) queued for the store at once per worker.
pub(super) const QUEUE_CAPACITY: usize = 1 << 16;

/// Smallest batch worth a mutation of its own when an instant is split over parallel mutations.
pub(super) const MIN_PARALLEL_BATCH: usize = 64;

/// A claim's outcome and, when it started a run, that run's id and fence.
pub(super) type ClaimAnswer = (SlotOutcome, Option<(String, u64)>);

/// A run's end, waiting to be written with others.
pub(super) struct FinishRequest {
    pub(super) task: Arc<ScheduledTask>,
    pub(super) lease: RunLease,
    pub(super) status: RunStatus,
    pub(super) reason: Option<String>,
    pub(super) result: Option<Value>,
    pub(super) error: Option<String>,
    pub(super) reply: oneshot::Sender<()>,
}

/// A slot claim, waiting to join a batch.
pub(super) struct ClaimRequest {
    pub(super) task: Arc<ScheduledTask>,
    pub(super) slot: Timestamp,
    pub(super) reply: oneshot::Sender<Result<ClaimAnswer, SchedulerError>>,
}

impl<S: Store> Engine<S> {
    /// Writes the ends of many runs in one store mutation: completions that arrive together (the runs of
    /// one instant) cost one transaction, not one each.
    pub(super) async fn finish_batch(self: &Arc<Self>, batch: Vec<FinishRequest>) {
        let config = self.decide_config();
        let start_next = !self.stopping.is_cancelled();
        let mut by_task: HashMap<String, Vec<FinishRequest>> = HashMap::new();
        let mut ids = Vec::new();
        for request in batch {
            let id = request.task.id().to_owned();
            if !by_task.contains_key(&id) {
                ids.push(id.clone());
            }
            by_task.entry(id).or_default().push(request);
        }
        // Retry for as long as the lease could still be ours; after that another worker owns the truth.
        let retry_for = self.config.lease.saturating_mul(2);
        let outcome = self
            .transact(&ids, Some(retry_for), |now, id, state| {
                let requests = by_task.get(id).map(Vec::as_slice).unwrap_or_default();
                let Some(state) = state else {
                    return (
                        Mutation::none(),
                        (vec![FinishOutcome::Fenced; requests.len()], Vec::new(), Vec::new()),
                    );
                };
                let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                let outcomes = requests
                    .iter()
                    .map(|request| {
                        decision.finish(
                            request.task.policy(),
                            &request.lease.run_id,
                            request.lease.fence,
                            request.status,
                            request.reason.clone(),
                            request.result.clone(),
                            request.error.clone(),
                            start_next,
                        )
                    })
                    .collect::<Vec<_>>();
                let (mutation, started, ended) = decision.into_mutation();
                (mutation, (outcomes, started, ended))
            })
            .await;
        match outcome {
            Ok((_, mut results)) => {
                for (id, requests) in by_task {
                    let Some((outcomes, started, ended)) = results.remove(&id) else {
                        continue;
                    };
                    for (request, outcome) in requests.iter().zip(outcomes) {
                        if outcome == FinishOutcome::Fenced {
                            tracing::warn!(task = %id, run = %request.lease.run_id, fence = request.lease.fence, "completion refused by the fence: the run no longer holds the lease");
                        } else {
                            tracing::debug!(task = %id, run = %request.lease.run_id, status = %request.status, "run finished");
                        }
                    }
                    self.stop_local(&ended, StopReason::LeaseLost);
                    if let Some(task) = requests.first().map(|request| request.task.clone()) {
                        self.spawn_runs(&task, started);
                    }
                    for request in requests {
                        let _ = request.reply.send(());
                    }
                }
            }
            Err(error) => {
                for request in by_task.into_values().flatten() {
                    tracing::error!(task = request.task.id(), run = %request.lease.run_id, %error, "could not record the run's end; its lease will expire and it will be marked abandoned");
                    let _ = request.reply.send(());
                }
            }
        }
    }

    /// Drains a request channel into batches: waits for one request, lets the others of the same instant
    /// arrive, takes up to the batch limit, and hands the batch to `handle`. Returns when the channel
    /// closes or, if `until_stopping`, when the engine stops.
    pub(super) async fn batch_loop<R, F, Fut>(
        self: Arc<Self>,
        mut receiver: mpsc::Receiver<R>,
        until_stopping: bool,
        parallelism: usize,
        handle: F,
    ) where
        F: Fn(Arc<Self>, Vec<R>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let limit = self.config.claim_batch.max(1);
        let parallelism = parallelism.max(1);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            if in_flight.len() >= parallelism {
                let _ = in_flight.next().await;
                continue;
            }
            let first = tokio::select! {
                request = receiver.recv() => match request { Some(request) => request, None => break },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                () = self.stopping.cancelled(), if until_stopping => break,
            };
            tokio::task::yield_now().await;
            // Split what is queued evenly over the batches that may run at once.
            let queued = receiver.len() + 1;
            let share = queued.div_ceil(parallelism).max(MIN_PARALLEL_BATCH);
            let size = if parallelism > 1 { share.min(limit) } else { limit };
            let mut batch = vec![first];
            while batch.len() < size {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            in_flight.push(handle(self.clone(), batch));
        }
        // Let the mutations already sent finish: their callers are waiting for the answers.
        while in_flight.next().await.is_some() {}
    }

    pub(super) async fn claim_batch(self: &Arc<Self>, batch: Vec<ClaimRequest>) {
        let _timer = crate::metrics::ClaimBatchTimer::start(self.metrics_store, batch.len());
        let config = self.decide_config();
        let mut by_task: HashMap<String, Vec<ClaimRequest>> = HashMap::new();
        let mut ids = Vec::new();
        for request in batch {
            let id = request.task.id().to_owned();
            if !by_task.contains_key(&id) {
                ids.push(id.clone());
            }
            by_task.entry(id).or_default().push(request);
        }
        // The earliest slot each task wants: a store may skip tasks already claimed up to there.
        let floors: Vec<Timestamp> = ids
            .iter()
            .map(|id| {
                by_task
                    .get(id)
                    .and_then(|requests| requests.iter().map(|request| request.slot).min())
                    .unwrap_or(Timestamp::MIN_UTC)
            })
            .collect();
        let outcome = self
            .transact_with_floors(&ids, Some(&floors), None, |now, id, state| {
                let requests = by_task.get(id).map(Vec::as_slice).unwrap_or_default();
                let Some(state) = state else {
                    return (Mutation::none(), None);
                };
                let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                let outcomes: Vec<(SlotOutcome, Option<(String, u64)>)> = requests
                    .iter()
                    .map(|request| {
                        let before = decision.started.len();
                        let outcome = decision.claim_slot(&request.task, request.slot);
                        let lease = decision.started[before..]
                            .last()
                            .map(|lease| (lease.run_id.clone(), lease.fence));
                        (outcome, lease)
                    })
                    .collect();
                let (mutation, started, ended) = decision.into_mutation();
                (mutation, Some((outcomes, started, ended)))
            })
            .await;
        match outcome {
            Ok((_, mut results, left_out)) => {
                for id in left_out {
                    // Another worker claimed (or accounted for) every slot this one asked for.
                    for request in by_task.remove(&id).unwrap_or_default() {
                        let _ = request.reply.send(Ok((SlotOutcome::AlreadyAccounted, None)));
                    }
                }
                for (id, requests) in by_task {
                    let Some(task) = requests.first().map(|request| request.task.clone()) else {
                        continue;
                    };
                    match results.remove(&id).flatten() {
                        Some((outcomes, started, ended)) => {
                            self.stop_local(&ended, StopReason::Superseded);
                            self.spawn_runs(&task, started);
                            for (request, outcome) in requests.into_iter().zip(outcomes) {
                                let _ = request.reply.send(Ok(outcome));
                            }
                        }
                        None => {
                            for request in requests {
                                let _ = request.reply.send(Err(SchedulerError::UnknownTask(id.clone())));
                            }
                        }
                    }
                }
            }
            Err(StoreError::Duplicate(message)) if ids.len() > 1 => {
                // Isolate the task whose unique key fired; the others go through one by one.
                tracing::error!(%message, "a batch claim hit the unique key; retrying the batch one task at a time");
                for (_, requests) in by_task {
                    Box::pin(self.claim_batch(requests)).await;
                }
            }
            Err(error) => {
                for requests in by_task.into_values() {
                    for request in requests {
                        let _ = request.reply.send(Err(store_error(error.clone())));
                    }
                }
            }
        }
    }

    pub(super) async fn claim(
        &self,
        task: Arc<ScheduledTask>,
        slot: Timestamp,
    ) -> Result<(SlotOutcome, Option<(String, u64)>), SchedulerError> {
        loop {
            if self.stopping.is_cancelled() {
                return Err(SchedulerError::NotRunning);
            }
            let (reply, answer) = oneshot::channel();
            let request = ClaimRequest {
                task: task.clone(),
                slot,
                reply,
            };
            tokio::select! {
                sent = self.claims.send(request) => sent.map_err(|_| SchedulerError::NotRunning)?,
                () = self.stopping.cancelled() => return Err(SchedulerError::NotRunning),
            }
            let (outcome, lease) = answer.await.map_err(|_| SchedulerError::NotRunning)??;
            match outcome {
                // The store's clock says the slot is still ahead: this worker's clock runs fast.
                SlotOutcome::NotDue(wait) => {
                    let wait = wait.to_std().unwrap_or_default() + Duration::from_millis(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stopping.cancelled() => return Err(SchedulerError::NotRunning),
                    }
                }
                other => return Ok((other, lease)),
            }
        }
    }
}
