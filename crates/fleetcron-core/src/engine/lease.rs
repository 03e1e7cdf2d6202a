//! Leases and attention: heartbeats renew the leases of this worker's runs; the poll loop (and push
//! wake-ups) finds tasks whose leases expired or whose pending work can start, and attends to them.

use super::*;

impl<S: Store> Engine<S> {
    /// Reaps expired leases and starts pending work of these tasks on this worker.
    /// Reaps the expired leases of these tasks and starts their pending work on this worker; returns
    /// the leases of the runs it started, by task id (what `execute_task` reports for a manual firing).
    pub(super) async fn attend(self: &Arc<Self>, ids: Vec<String>) -> Result<Vec<(String, RunLease)>, StoreError> {
        let ids: Vec<String> = ids.into_iter().filter(|id| self.task(id).is_some()).collect();
        if ids.is_empty() || self.stopping.is_cancelled() {
            return Ok(Vec::new());
        }
        let config = self.decide_config();
        let (_, results) = self
            .transact(
                &ids,
                Some(self.config.poll_interval.saturating_mul(5)),
                |now, id, state| {
                    let (Some(state), Some(task)) = (state, self.task(id)) else {
                        return (Mutation::none(), (Vec::new(), Vec::new()));
                    };
                    let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                    decision.reap_expired(task.policy());
                    decision.start_pending();
                    let (mutation, started, ended) = decision.into_mutation();
                    (mutation, (started, ended))
                },
            )
            .await?;
        let mut leases = Vec::new();
        for (id, (started, ended)) in results {
            self.stop_local(&ended, StopReason::LeaseLost);
            if let Some(task) = self.task(&id) {
                leases.extend(started.iter().map(|lease| (id.clone(), lease.clone())));
                self.spawn_runs(&task, started);
            }
        }
        Ok(leases)
    }

    pub(super) async fn poll_loop(self: Arc<Self>) {
        let mut subscription = self.store.subscribe();
        loop {
            let pushed = async {
                match subscription.as_mut() {
                    Some(receiver) => match receiver.recv().await {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                    },
                    None => std::future::pending::<bool>().await,
                }
            };
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = self.wake.notified() => {}
                open = pushed => {
                    if !open {
                        // The push channel is gone; polling alone still finds everything.
                        subscription = None;
                    }
                }
            }
            let sent = std::time::Instant::now();
            let polled = self.store.due_for_attention(1000).await;
            if let Ok((now, _)) = &polled {
                self.observe(sent, *now);
            }
            match polled {
                Ok((_, ids)) if !ids.is_empty() => {
                    if let Err(error) = self.attend(ids).await {
                        tracing::warn!(%error, "could not attend to due tasks");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "poll for due work failed; retrying at the next interval"),
            }
        }
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let interval = self.config.heartbeat();
        // Leases are renewed during the shutdown grace period too; destroy() stops this loop once every
        // handler has ended.
        loop {
            tokio::time::sleep(interval).await;
            let mut by_task: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            let local: Vec<(String, Arc<LocalRun>)> = match self.local_runs.lock() {
                Ok(runs) => runs.iter().map(|(id, run)| (id.clone(), run.clone())).collect(),
                Err(_) => Vec::new(),
            };
            for (run_id, run) in &local {
                if run.stop_reason().is_none() {
                    by_task
                        .entry(run.task_id.clone())
                        .or_default()
                        .push((run_id.clone(), run.fence));
                }
            }
            if by_task.is_empty() {
                continue;
            }
            let ids: Vec<String> = by_task.keys().cloned().collect();
            let config = self.decide_config();
            let attempt_started = Instant::now();
            let renewal = self
                .transact(&ids, Some(interval), |now, id, state| {
                    let runs = by_task.get(id).cloned().unwrap_or_default();
                    let Some(state) = state else {
                        return (Mutation::none(), runs.into_iter().map(|(run_id, _)| run_id).collect());
                    };
                    let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                    let lost = decision.renew(&runs);
                    (decision.into_mutation().0, lost)
                })
                .await;
            match renewal {
                Ok((_, results)) => {
                    // A run that ended normally while the renewal was in flight is not lost.
                    let still_local: Vec<String> = self
                        .local_runs
                        .lock()
                        .map(|runs| runs.keys().cloned().collect())
                        .unwrap_or_default();
                    let lost: Vec<String> = results
                        .into_values()
                        .flatten()
                        .filter(|run_id| still_local.contains(run_id))
                        .collect();
                    for (run_id, run) in &local {
                        if !lost.contains(run_id) {
                            if let Ok(mut renewed) = run.renewed_at.lock() {
                                *renewed = attempt_started;
                            }
                        }
                    }
                    if !lost.is_empty() {
                        tracing::warn!(runs = ?lost, "leases lost; cancelling those handlers");
                    }
                    for (run_id, run) in &local {
                        if lost.contains(run_id) && run.stop_reason().is_none() {
                            crate::metrics::lease_lost(self.metrics_store, &run.task_id);
                        }
                    }
                    self.stop_local(&lost, StopReason::LeaseLost);
                }
                Err(error) => {
                    tracing::warn!(%error, "lease renewal failed");
                    // Without a renewal, a lease is presumed lost once its full duration has passed.
                    for (_, run) in &local {
                        let expired = run
                            .renewed_at
                            .lock()
                            .map(|at| at.elapsed() >= self.config.lease)
                            .unwrap_or(true);
                        if expired && run.stop_reason().is_none() {
                            crate::metrics::lease_lost(self.metrics_store, &run.task_id);
                        }
                        if expired {
                            run.stop(StopReason::LeaseLost);
                        }
                    }
                }
            }
        }
    }
}
