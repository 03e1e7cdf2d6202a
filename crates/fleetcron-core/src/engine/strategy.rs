//! The engine as the seed's `SchedulerStrategy`: init and shutdown, registration, firings, admin calls.

use super::*;

#[async_trait]
impl<S: Store> SchedulerStrategy for EngineStrategy<S> {
    async fn init(&self, worker_id: &str) -> Result<(), SchedulerError> {
        let engine = &self.engine;
        if engine.started.swap(true, Ordering::SeqCst) {
            return Err(SchedulerError::Config(crate::error::ConfigError::Invalid(
                "this strategy was already initialised; create one strategy per scheduler".to_owned(),
            )));
        }
        engine.config.validate()?;
        engine.store.migrate().await.map_err(store_error)?;
        let _ = engine.decide.set(DecideConfig {
            worker: worker_id.to_owned(),
            lease: to_chrono(engine.config.lease),
            misfire_threshold: to_chrono(engine.config.misfire_threshold),
        });
        let claims = engine
            .claims_receiver
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take());
        let finishes = engine
            .finishes_receiver
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take());
        let mut starters = engine.starters.lock().map_err(|_| SchedulerError::NotRunning)?;
        let mut servants = engine.servants.lock().map_err(|_| SchedulerError::NotRunning)?;
        if let Some(receiver) = claims {
            // Claims of a big instant go out in parallel batches; completions, whose latency nobody
            // waits for, in one batch at a time (fewer, larger transactions).
            let parallelism = engine
                .config
                .claim_parallelism
                .unwrap_or_else(|| engine.store.preferred_parallelism());
            starters.push(engine.supervise("claim", engine.clone().claim_loop(receiver, parallelism)));
        }
        // Completions are written until every handler has ended, shutdown included.
        if let Some(receiver) = finishes {
            servants.push(
                engine.supervise(
                    "completion",
                    engine
                        .clone()
                        .batch_loop(receiver, false, 1, |engine, batch| async move {
                            engine.finish_batch(batch).await;
                        }),
                ),
            );
        }
        starters.push(engine.supervise("poll", engine.clone().poll_loop()));
        servants.push(engine.supervise("heartbeat", engine.clone().heartbeat_loop()));
        Ok(())
    }

    fn store_time(&self) -> Option<StoreTime> {
        self.engine.store_time.lock().ok().and_then(|reading| *reading)
    }

    async fn failed(&self) -> SchedulerError {
        let mut failure = self.engine.failure.subscribe();
        let message = failure
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|message| message.clone());
        match message {
            Some(message) => SchedulerError::EngineFailed(message),
            // The engine is gone, so it cannot fail any more.
            None => std::future::pending().await,
        }
    }

    async fn destroy(&self) -> Result<(), SchedulerError> {
        let engine = &self.engine;
        engine.stopping.cancel();
        // The claim and poll loops end after their current step; a claim that commits in that step still
        // gets its handler, which the wait below then covers. Nothing starts a run after this.
        let starters: Vec<JoinHandle<()>> = engine
            .starters
            .lock()
            .map(|mut handles| handles.drain(..).collect())
            .unwrap_or_default();
        for handle in starters {
            let _ = handle.await;
        }
        engine.handlers.close();
        if tokio::time::timeout(engine.config.shutdown_grace, engine.handlers.wait())
            .await
            .is_err()
        {
            let running: Vec<Arc<LocalRun>> = engine
                .local_runs
                .lock()
                .map(|runs| runs.values().cloned().collect())
                .unwrap_or_default();
            tracing::info!(
                runs = running.len(),
                "shutdown grace elapsed; cancelling running handlers"
            );
            for run in running {
                run.stop(StopReason::Shutdown);
            }
            let _ = tokio::time::timeout(
                engine
                    .config
                    .cancel_grace
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(1)),
                engine.handlers.wait(),
            )
            .await;
        }
        let servants: Vec<JoinHandle<()>> = engine
            .servants
            .lock()
            .map(|mut handles| handles.drain(..).collect())
            .unwrap_or_default();
        for handle in servants {
            handle.abort();
            let _ = handle.await;
        }
        Ok(())
    }

    async fn register_task(&self, task: ScheduledTask) -> Result<Registration, SchedulerError> {
        let mut registrations = self.register_tasks(vec![task]).await?;
        registrations.pop().ok_or(SchedulerError::NotRunning)
    }

    async fn register_tasks(&self, tasks: Vec<ScheduledTask>) -> Result<Vec<Registration>, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let mut registrations = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(engine.config.claim_batch.max(1)) {
            let definitions: HashMap<String, crate::task::TaskDefinition> = chunk
                .iter()
                .map(|task| (task.id().to_owned(), task.definition()))
                .collect();
            let ids: Vec<String> = chunk.iter().map(|task| task.id().to_owned()).collect();
            let (_, results) = engine
                .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                    let Some(definition) = definitions.get(id) else {
                        return (Mutation::none(), (None, false));
                    };
                    let mut decision = match state {
                        Some(state) => Decision::new(state.clone(), now, &config, fresh_seed()),
                        None => Decision::create(TaskState::new(definition.clone(), now), now, &config, fresh_seed()),
                    };
                    let conflict = decision.register(definition) && decision.state.conflict.is_some();
                    let high_water = decision.state.high_water;
                    (decision.into_mutation().0, (Some(high_water), conflict))
                })
                .await
                .map_err(store_error)?;
            for task in chunk {
                let (accounted_until, conflict) = results.get(task.id()).cloned().unwrap_or((None, false));
                if conflict {
                    tracing::warn!(
                        task = task.id(),
                        schedule = task.schedule().pattern(),
                        "this worker's definition differs from the stored one; the report shows the conflict"
                    );
                }
                registrations.push(Registration { accounted_until });
            }
            if let Ok(mut registry) = engine.tasks.write() {
                for task in chunk {
                    registry.insert(task.id().to_owned(), Arc::new(task.clone()));
                }
            }
        }
        // Work that waited for a worker able to run these tasks can start now.
        engine.wake.notify_one();
        Ok(registrations)
    }

    async fn execute_task(&self, task: &ScheduledTask, firing: Firing) -> Result<ExecuteOutcome, SchedulerError> {
        let engine = &self.engine;
        let registered = engine
            .task(task.id())
            .ok_or_else(|| SchedulerError::UnknownTask(task.id().to_owned()))?;
        match firing {
            Firing::Scheduled { slot } => engine
                .claim_many(vec![(registered, slot)])
                .await
                .pop()
                .unwrap_or(Err(SchedulerError::NotRunning))
                .map(execute_outcome),
            Firing::Manual { trigger } => {
                let started = engine.attend(vec![task.id().to_owned()]).await.map_err(store_error)?;
                // The run of this trigger if it started; else whatever pending work started first in line
                // (a retry or a buffered slot waits ahead of a trigger).
                let lease = started
                    .iter()
                    .find(|(_, lease)| lease.trigger_id.as_deref() == Some(trigger.as_str()))
                    .or_else(|| started.first());
                Ok(match lease {
                    Some((_, lease)) => ExecuteOutcome::Started {
                        run_id: lease.run_id.clone(),
                        fence: lease.fence,
                    },
                    None => ExecuteOutcome::NothingToRun,
                })
            }
        }
    }

    /// An instant's scheduled firings go to the claim loop as one request (one channel message and one
    /// answer for the instant); manual firings run through [`Self::execute_task`].
    async fn execute_many(
        &self,
        firings: Vec<(Arc<ScheduledTask>, Firing)>,
    ) -> Vec<Result<ExecuteOutcome, SchedulerError>> {
        let engine = &self.engine;
        let mut outcomes: Vec<Option<Result<ExecuteOutcome, SchedulerError>>> = Vec::with_capacity(firings.len());
        let mut scheduled = Vec::with_capacity(firings.len());
        let mut positions = Vec::with_capacity(firings.len());
        for (task, firing) in &firings {
            match firing {
                Firing::Scheduled { slot } => match engine.task(task.id()) {
                    Some(registered) => {
                        positions.push(outcomes.len());
                        scheduled.push((registered, *slot));
                        outcomes.push(None);
                    }
                    None => outcomes.push(Some(Err(SchedulerError::UnknownTask(task.id().to_owned())))),
                },
                Firing::Manual { .. } => outcomes.push(Some(self.execute_task(task, firing.clone()).await)),
            }
        }
        for (position, answer) in positions.into_iter().zip(engine.claim_many(scheduled).await) {
            if let Some(outcome) = outcomes.get_mut(position) {
                *outcome = Some(answer.map(execute_outcome));
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Err(SchedulerError::NotRunning)))
            .collect()
    }

    async fn get_tasks(&self) -> Result<Vec<TaskReport>, SchedulerError> {
        let (now, states) = self.engine.store.load(None).await.map_err(store_error)?;
        Ok(states.iter().map(|state| TaskReport::from_state(state, now)).collect())
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskReport>, SchedulerError> {
        let ids = [id.to_owned()];
        let (now, states) = self.engine.store.load(Some(&ids)).await.map_err(store_error)?;
        Ok(states.first().map(|state| TaskReport::from_state(state, now)))
    }

    async fn trigger_task(&self, id: &str) -> Result<TriggerReceipt, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let ids = [id.to_owned()];
        let (_, mut results) = engine
            .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                let Some(state) = state else {
                    return (Mutation::none(), Err(SchedulerError::UnknownTask(id.to_owned())));
                };
                let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                match decision.trigger() {
                    Ok((trigger_id, coalesced)) => {
                        (decision.into_mutation().0, Ok(TriggerReceipt { trigger_id, coalesced }))
                    }
                    Err(crate::decide::TriggerRefused::Disabled) => {
                        (Mutation::none(), Err(SchedulerError::TaskDisabled(id.to_owned())))
                    }
                }
            })
            .await
            .map_err(store_error)?;
        let receipt = results
            .remove(id)
            .unwrap_or_else(|| Err(SchedulerError::UnknownTask(id.to_owned())));
        crate::metrics::trigger(engine.metrics_store, id, crate::metrics::TriggerOutcome::of(&receipt));
        let receipt = receipt?;
        if let Err(error) = engine.store.notify(id).await {
            tracing::debug!(%error, "trigger notification failed; workers will see it at their next poll");
        }
        engine.wake.notify_one();
        Ok(receipt)
    }

    async fn update_task(&self, input: UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError> {
        self.update_task_noted(input, None).await
    }

    async fn update_task_noted(
        &self,
        input: UpdateScheduledTaskInput,
        note: Option<String>,
    ) -> Result<TaskReport, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let ids = [input.id.clone()];
        let (_, mut results) = engine
            .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                let Some(state) = state else {
                    return (Mutation::none(), Err(SchedulerError::UnknownTask(id.to_owned())));
                };
                let mut decision = Decision::new(state.clone(), now, &config, fresh_seed());
                if let Some(enabled) = input.enabled {
                    decision.set_enabled(enabled);
                }
                if note.is_some() || input.enabled.is_some_and(|enabled| enabled != state.enabled) {
                    decision.set_note(note.as_deref());
                }
                let report = TaskReport::from_state(&decision.state, now);
                (decision.into_mutation().0, Ok(report))
            })
            .await
            .map_err(store_error)?;
        results
            .remove(&input.id)
            .unwrap_or_else(|| Err(SchedulerError::UnknownTask(input.id.clone())))
    }

    async fn runs(&self, id: &str, query: RunQuery) -> Result<Vec<RunRecord>, SchedulerError> {
        let ids = [id.to_owned()];
        let (_, states) = self.engine.store.load(Some(&ids)).await.map_err(store_error)?;
        if states.is_empty() {
            return Err(SchedulerError::UnknownTask(id.to_owned()));
        }
        self.engine.store.runs(id, &query).await.map_err(store_error)
    }

    async fn prune_history(&self) -> Result<u64, SchedulerError> {
        let store = &self.engine.store;
        let now = store.now().await.map_err(store_error)?;
        let plan = crate::decide::prune_plan(&self.engine.config.retention, now);
        if plan.is_empty() {
            return Ok(0);
        }
        store.prune_runs(&plan).await.map_err(store_error)
    }
}

/// What a claim's answer means to the caller of `execute_task`.
fn execute_outcome((outcome, lease): batch::ClaimAnswer) -> ExecuteOutcome {
    match (outcome, lease) {
        (SlotOutcome::Started, Some((run_id, fence))) => ExecuteOutcome::Started { run_id, fence },
        (SlotOutcome::Started, None) => ExecuteOutcome::AlreadyAccounted,
        (SlotOutcome::Skipped(reason), _) => ExecuteOutcome::Skipped {
            reason: reason.to_owned(),
        },
        (SlotOutcome::Buffered, _) => ExecuteOutcome::Buffered,
        (SlotOutcome::Missed, _) => ExecuteOutcome::Missed,
        (SlotOutcome::AlreadyAccounted | SlotOutcome::NotDue(_), _) => ExecuteOutcome::AlreadyAccounted,
    }
}
