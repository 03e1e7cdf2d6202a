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

/// The scheduled firings of one instant (or of one `execute_task`), sent to the claim loop whole: one
/// channel message and one answer per instant, not per slot.
pub(super) struct ClaimRequest {
    pub(super) firings: Vec<(Arc<ScheduledTask>, Timestamp)>,
    pub(super) reply: oneshot::Sender<Vec<Result<ClaimAnswer, SchedulerError>>>,
}

/// One firing of a request, waiting for (or in) a claim batch: which request and which of its firings.
pub(super) struct ClaimItem {
    task: Arc<ScheduledTask>,
    slot: Timestamp,
    request: u64,
    index: usize,
}

/// A request whose firings are being claimed: the answers so far and how many are still out.
struct Answering {
    answers: Vec<Option<Result<ClaimAnswer, SchedulerError>>>,
    outstanding: usize,
    reply: oneshot::Sender<Vec<Result<ClaimAnswer, SchedulerError>>>,
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

    /// Claims the firings of the requests it receives: every firing already queued is split evenly over
    /// at most `parallelism` store mutations in flight (each of at least [`MIN_PARALLEL_BATCH`] and at
    /// most `claim_batch` firings), and each request is answered once, when all of its firings are.
    /// Stops taking work when the engine stops; mutations already sent finish and answer first.
    pub(super) async fn claim_loop(self: Arc<Self>, mut receiver: mpsc::Receiver<ClaimRequest>, parallelism: usize) {
        let limit = self.config.claim_batch.max(1);
        let parallelism = parallelism.max(1);
        let mut queue: std::collections::VecDeque<ClaimItem> = std::collections::VecDeque::new();
        let mut answering: HashMap<u64, Answering> = HashMap::new();
        let mut next_request = 0u64;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut admit = |request: ClaimRequest, queue: &mut std::collections::VecDeque<ClaimItem>| {
            let key = next_request;
            next_request = next_request.wrapping_add(1);
            let count = request.firings.len();
            if count == 0 {
                let _ = request.reply.send(Vec::new());
                return None;
            }
            for (index, (task, slot)) in request.firings.into_iter().enumerate() {
                queue.push_back(ClaimItem {
                    task,
                    slot,
                    request: key,
                    index,
                });
            }
            Some((
                key,
                Answering {
                    answers: (0..count).map(|_| None).collect(),
                    outstanding: count,
                    reply: request.reply,
                },
            ))
        };
        loop {
            if self.stopping.is_cancelled() {
                break;
            }
            while let Ok(request) = receiver.try_recv() {
                if let Some((key, request)) = admit(request, &mut queue) {
                    answering.insert(key, request);
                }
            }
            while in_flight.len() < parallelism && !queue.is_empty() {
                let free = parallelism - in_flight.len();
                let size = if parallelism > 1 {
                    queue.len().div_ceil(free).max(MIN_PARALLEL_BATCH).min(limit)
                } else {
                    limit
                };
                let batch: Vec<ClaimItem> = queue.drain(..size.min(queue.len())).collect();
                in_flight.push(self.clone().claim_batch(batch));
            }
            tokio::select! {
                request = receiver.recv() => match request {
                    Some(request) => {
                        if let Some((key, request)) = admit(request, &mut queue) {
                            answering.insert(key, request);
                        }
                    }
                    None => break,
                },
                Some(answers) = in_flight.next(), if !in_flight.is_empty() => {
                    Self::answer(&mut answering, answers);
                }
                () = self.stopping.cancelled() => break,
            }
        }
        // Let the mutations already sent finish: their callers are waiting for the answers. Firings not
        // yet sent are dropped with their requests (the callers see the engine stopping).
        while let Some(answers) = in_flight.next().await {
            Self::answer(&mut answering, answers);
        }
    }

    fn answer(
        answering: &mut HashMap<u64, Answering>,
        answers: Vec<(u64, usize, Result<ClaimAnswer, SchedulerError>)>,
    ) {
        for (key, index, answer) in answers {
            let Some(request) = answering.get_mut(&key) else {
                continue;
            };
            if let Some(slot) = request.answers.get_mut(index) {
                if slot.replace(answer).is_none() {
                    request.outstanding -= 1;
                }
            }
            if request.outstanding == 0 {
                if let Some(request) = answering.remove(&key) {
                    let answers = request
                        .answers
                        .into_iter()
                        .map(|answer| answer.unwrap_or(Err(SchedulerError::NotRunning)))
                        .collect();
                    let _ = request.reply.send(answers);
                }
            }
        }
    }

    /// Claims one batch of firings in one store mutation; answers each firing by its request and index.
    pub(super) async fn claim_batch(
        self: Arc<Self>,
        batch: Vec<ClaimItem>,
    ) -> Vec<(u64, usize, Result<ClaimAnswer, SchedulerError>)> {
        let _timer = crate::metrics::ClaimBatchTimer::start(self.metrics_store, batch.len());
        let config = self.decide_config();
        let mut by_task: HashMap<String, Vec<ClaimItem>> = HashMap::new();
        let mut ids = Vec::new();
        for item in batch {
            let id = item.task.id().to_owned();
            if !by_task.contains_key(&id) {
                ids.push(id.clone());
            }
            by_task.entry(id).or_default().push(item);
        }
        // The earliest slot each task wants: a store may skip tasks already claimed up to there.
        let floors: Vec<Timestamp> = ids
            .iter()
            .map(|id| {
                by_task
                    .get(id)
                    .and_then(|items| items.iter().map(|item| item.slot).min())
                    .unwrap_or(Timestamp::MIN_UTC)
            })
            .collect();
        let outcome = self
            .transact_with_floors(&ids, Some(&floors), None, |now, id, state| {
                let items = by_task.get(id).map(Vec::as_slice).unwrap_or_default();
                let Some(state) = state else {
                    return (Mutation::none(), None);
                };
                let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                let outcomes: Vec<ClaimAnswer> = items
                    .iter()
                    .map(|item| {
                        let before = decision.started.len();
                        let outcome = decision.claim_slot(&item.task, item.slot);
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
        let mut answers = Vec::new();
        match outcome {
            Ok((_, mut results, left_out)) => {
                for id in left_out {
                    // Another worker claimed (or accounted for) every slot this one asked for.
                    for item in by_task.remove(&id).unwrap_or_default() {
                        answers.push((item.request, item.index, Ok((SlotOutcome::AlreadyAccounted, None))));
                    }
                }
                for (id, items) in by_task {
                    let Some(task) = items.first().map(|item| item.task.clone()) else {
                        continue;
                    };
                    match results.remove(&id).flatten() {
                        Some((outcomes, started, ended)) => {
                            self.stop_local(&ended, StopReason::Superseded);
                            self.spawn_runs(&task, started);
                            for (item, outcome) in items.into_iter().zip(outcomes) {
                                answers.push((item.request, item.index, Ok(outcome)));
                            }
                        }
                        None => {
                            for item in items {
                                answers.push((item.request, item.index, Err(SchedulerError::UnknownTask(id.clone()))));
                            }
                        }
                    }
                }
            }
            Err(StoreError::Duplicate(message)) if ids.len() > 1 => {
                // Isolate the task whose unique key fired; the others go through one by one.
                tracing::error!(%message, "a batch claim hit the unique key; retrying the batch one task at a time");
                for (_, items) in by_task {
                    answers.extend(Box::pin(self.clone().claim_batch(items)).await);
                }
            }
            Err(error) => {
                for item in by_task.into_values().flatten() {
                    answers.push((item.request, item.index, Err(store_error(error.clone()))));
                }
            }
        }
        answers
    }

    /// Claims scheduled firings (one instant's, usually) through the claim loop and returns one answer
    /// per firing, in order. A firing the store finds not yet due (this worker's clock runs fast) is
    /// asked again once it is.
    pub(super) async fn claim_many(
        &self,
        firings: Vec<(Arc<ScheduledTask>, Timestamp)>,
    ) -> Vec<Result<ClaimAnswer, SchedulerError>> {
        let mut answers: Vec<Option<Result<ClaimAnswer, SchedulerError>>> = (0..firings.len()).map(|_| None).collect();
        let mut asking: Vec<usize> = (0..firings.len()).collect();
        while !asking.is_empty() {
            if self.stopping.is_cancelled() {
                break;
            }
            let (reply, answered) = oneshot::channel();
            let request = ClaimRequest {
                firings: asking.iter().filter_map(|&index| firings.get(index).cloned()).collect(),
                reply,
            };
            let sent = tokio::select! {
                sent = self.claims.send(request) => sent.is_ok(),
                () = self.stopping.cancelled() => false,
            };
            if !sent {
                break;
            }
            let Ok(replies) = answered.await else {
                break;
            };
            let mut wait = None;
            let mut again = Vec::new();
            for (index, answer) in asking.into_iter().zip(replies) {
                match answer {
                    // The store's clock says the slot is still ahead: this worker's clock runs fast.
                    Ok((SlotOutcome::NotDue(until), _)) => {
                        wait = wait.max(Some(until));
                        again.push(index);
                    }
                    other => {
                        if let Some(answer) = answers.get_mut(index) {
                            *answer = Some(other);
                        }
                    }
                }
            }
            asking = again;
            if let Some(wait) = wait {
                let wait = wait.to_std().unwrap_or_default() + Duration::from_millis(1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.stopping.cancelled() => break,
                }
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Err(SchedulerError::NotRunning)))
            .collect()
    }
}
