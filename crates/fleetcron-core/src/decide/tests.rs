//! Unit tests of the decision layer: every policy on hand-made states.

use super::*;
use crate::task::{CatchUp, OnAbandon, Overlap, ScheduledTask};
use chrono::TimeZone;
use std::time::Duration as StdDuration;

fn at(second: i64) -> Timestamp {
    Utc.timestamp_opt(1_800_000_000 + second, 0)
        .single()
        .unwrap_or_default()
}

use chrono::Utc;

fn config() -> DecideConfig {
    DecideConfig {
        worker: "w1".to_owned(),
        lease: Duration::seconds(10),
        misfire_threshold: Duration::seconds(2),
    }
}

fn task(overlap: Overlap, catch_up: CatchUp, on_abandon: OnAbandon) -> ScheduledTask {
    ScheduledTask::builder("t")
        .schedule("* * * * * *")
        .overlap(overlap)
        .catch_up(catch_up)
        .on_abandon(on_abandon)
        .handler(|_| async { Ok(Value::Null) })
        .build()
        .expect("valid test task")
}

fn default_task() -> ScheduledTask {
    task(Overlap::Skip, CatchUp::default(), OnAbandon::Forget)
}

fn state() -> TaskState {
    TaskState::new(default_task().definition(), at(0))
}

fn statuses(mutation: &Mutation) -> Vec<(Option<Timestamp>, RunStatus, RunKind)> {
    mutation
        .insert_runs
        .iter()
        .map(|run| (run.slot, run.status, run.kind))
        .collect()
}

#[test]
fn on_time_slot_starts_a_run_and_bumps_the_fence() {
    let config = config();
    let mut decision = Decision::new(state(), at(1), &config, 1);
    assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
    assert_eq!(decision.state.fence, 1);
    assert_eq!(decision.state.high_water, at(1));
    assert_eq!(decision.state.running.len(), 1);
    assert_eq!(decision.state.running[0].lease_until, at(11));
    let (mutation, started, _) = decision.into_mutation();
    assert_eq!(
        statuses(&mutation),
        vec![(Some(at(1)), RunStatus::Running, RunKind::Scheduled)]
    );
    assert_eq!(started.len(), 1);
}

#[test]
fn future_and_accounted_slots_change_nothing() {
    let config = config();
    let mut decision = Decision::new(state(), at(1), &config, 2);
    assert_eq!(
        decision.claim_slot(&default_task(), at(3)),
        SlotOutcome::NotDue(Duration::seconds(2))
    );
    assert_eq!(
        decision.claim_slot(&default_task(), at(0)),
        SlotOutcome::AlreadyAccounted
    );
    assert_eq!(decision.into_mutation().0, Mutation::none());
}

#[test]
fn a_claim_accounts_for_every_earlier_slot() {
    let config = config();
    let mut decision = Decision::new(state(), at(5), &config, 3);
    assert_eq!(decision.claim_slot(&default_task(), at(5)), SlotOutcome::Started);
    let (mutation, _, _) = decision.into_mutation();
    let rows = statuses(&mutation);
    assert_eq!(rows.len(), 5);
    assert_eq!(
        &rows[..4],
        &(1..5)
            .map(|s| (Some(at(s)), RunStatus::Missed, RunKind::Scheduled))
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(rows[4], (Some(at(5)), RunStatus::Running, RunKind::Scheduled));
}

#[test]
fn catch_up_policies_for_a_late_slot() {
    let config = config();
    // Slot 5 claimed at 10: 5 s late, beyond the 2 s misfire threshold.
    let cases = [
        (CatchUp::Skip, vec![]),
        (
            CatchUp::Latest {
                within: StdDuration::from_secs(60),
            },
            vec![at(5)],
        ),
        (
            CatchUp::Latest {
                within: StdDuration::from_secs(3),
            },
            vec![],
        ),
        (
            CatchUp::All {
                within: StdDuration::from_secs(60),
                max: 2,
            },
            vec![at(4), at(5)],
        ),
        (
            CatchUp::All {
                within: StdDuration::from_secs(7),
                max: 10,
            },
            vec![at(3), at(4), at(5)],
        ),
    ];
    for (catch_up, expected_runs) in cases {
        let task = task(Overlap::Skip, catch_up, OnAbandon::Forget);
        let mut decision = Decision::new(state(), at(10), &config, 4);
        decision.claim_slot(&task, at(5));
        let mut ran: Vec<Timestamp> = decision.state.running.iter().filter_map(|run| run.slot).collect();
        ran.extend(decision.state.pending.iter().filter_map(|pending| pending.slot));
        assert_eq!(ran, expected_runs, "{catch_up:?}");
        let (mutation, _, _) = decision.into_mutation();
        let missed = mutation
            .insert_runs
            .iter()
            .filter(|run| run.status == RunStatus::Missed)
            .count();
        assert_eq!(
            missed,
            5 - expected_runs.len(),
            "{catch_up:?}: every slot is run or missed"
        );
        assert!(mutation
            .insert_runs
            .iter()
            .filter(|run| run.status == RunStatus::Running)
            .all(|run| run.kind == RunKind::CatchUp));
    }
}

fn running_state(overlap: Overlap) -> (ScheduledTask, TaskState) {
    let task = task(overlap, CatchUp::default(), OnAbandon::Forget);
    let config = config();
    let mut decision = Decision::new(state(), at(1), &config, 5);
    decision.claim_slot(&task, at(1));
    (task, decision.state)
}

#[test]
fn overlap_policies() {
    let config = config();
    let (task, busy) = running_state(Overlap::Skip);
    let mut decision = Decision::new(busy, at(2), &config, 6);
    assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Skipped(REASON_OVERLAP));

    let (task, busy) = running_state(Overlap::BufferOne);
    let mut decision = Decision::new(busy, at(2), &config, 7);
    assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Buffered);
    decision.now = at(3);
    assert_eq!(decision.claim_slot(&task, at(3)), SlotOutcome::Skipped(REASON_OVERLAP));
    assert_eq!(decision.state.pending.len(), 1);
    assert_eq!(decision.state.pending[0].slot, Some(at(2)));

    let (task, busy) = running_state(Overlap::AllowConcurrent);
    let mut decision = Decision::new(busy, at(2), &config, 8);
    assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Started);
    assert_eq!(decision.state.running.len(), 2);

    let (task, busy) = running_state(Overlap::CancelPrevious);
    let previous = busy.running[0].run_id.clone();
    let mut decision = Decision::new(busy, at(2), &config, 9);
    assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Started);
    assert_eq!(decision.state.running.len(), 1);
    assert_eq!(decision.ended, vec![previous.clone()]);
    let (mutation, _, _) = decision.into_mutation();
    assert!(mutation
        .update_runs
        .iter()
        .any(|finish| finish.run_id == previous && finish.status == RunStatus::Cancelled));
}

#[test]
fn completion_is_fenced_and_starts_pending_work() {
    let config = config();
    let (task, busy) = running_state(Overlap::BufferOne);
    let lease = busy.running[0].clone();
    let mut decision = Decision::new(busy.clone(), at(2), &config, 10);
    decision.claim_slot(&task, at(2));
    let buffered = decision.state.clone();

    let mut stale = Decision::new(buffered.clone(), at(3), &config, 11);
    let outcome = stale.finish(
        task.policy(),
        &lease.run_id,
        lease.fence + 1,
        RunStatus::Succeeded,
        None,
        None,
        None,
        true,
    );
    assert_eq!(outcome, FinishOutcome::Fenced);
    assert_eq!(
        stale.into_mutation().0,
        Mutation::none(),
        "a fenced completion writes nothing"
    );

    let mut decision = Decision::new(buffered, at(3), &config, 12);
    let outcome = decision.finish(
        task.policy(),
        &lease.run_id,
        lease.fence,
        RunStatus::Succeeded,
        None,
        Some(Value::from(7)),
        None,
        true,
    );
    assert_eq!(outcome, FinishOutcome::Recorded);
    assert_eq!(decision.state.running.len(), 1, "the buffered slot starts right away");
    assert_eq!(decision.state.running[0].slot, Some(at(2)));
    assert_eq!(
        decision.state.last_run.as_ref().map(|last| last.result.clone()),
        Some(Some(Value::from(7)))
    );
}

#[test]
fn expired_leases_are_abandoned_and_retried_up_to_the_limit() {
    let config = config();
    let task = task(Overlap::Skip, CatchUp::default(), OnAbandon::Retry { max_attempts: 2 });
    let mut decision = Decision::new(state(), at(1), &config, 13);
    decision.claim_slot(&task, at(1));
    let mut decision = Decision::new(decision.state, at(12), &config, 14);
    decision.reap_expired(task.policy());
    assert!(decision.start_pending());
    assert_eq!(decision.state.running[0].attempt, 2);
    assert_eq!(decision.state.running[0].kind, RunKind::Retry);
    assert_eq!(decision.state.running[0].slot, Some(at(1)));
    let mut decision = Decision::new(decision.state, at(30), &config, 15);
    decision.reap_expired(task.policy());
    assert!(!decision.start_pending(), "no third attempt");
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(mutation.update_runs[0].status, RunStatus::Abandoned);
}

#[test]
fn renewal_extends_live_leases_only() {
    let config = config();
    let (_, busy) = running_state(Overlap::Skip);
    let lease = busy.running[0].clone();
    let mut decision = Decision::new(busy.clone(), at(5), &config, 16);
    assert!(decision.renew(&[(lease.run_id.clone(), lease.fence)]).is_empty());
    assert_eq!(decision.state.running[0].lease_until, at(15));
    let mut late = Decision::new(busy, at(11), &config, 17);
    assert_eq!(late.renew(&[(lease.run_id.clone(), lease.fence)]), vec![lease.run_id]);
}

#[test]
fn triggers_coalesce_and_are_refused_when_disabled() {
    let config = config();
    let mut decision = Decision::new(state(), at(1), &config, 18);
    let (first, coalesced) = decision.trigger().expect("enabled");
    assert!(!coalesced);
    let (second, coalesced) = decision.trigger().expect("enabled");
    assert!(coalesced);
    assert_eq!(first, second);
    decision.set_enabled(false);
    assert!(decision.trigger().is_err());
}

#[test]
fn enabling_accounts_disabled_slots_as_skipped() {
    let config = config();
    let mut decision = Decision::new(state(), at(0), &config, 19);
    decision.set_enabled(false);
    let mut decision = Decision::new(decision.state, at(3), &config, 20);
    decision.set_enabled(true);
    assert_eq!(decision.state.high_water, at(3));
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(
        statuses(&mutation),
        (1..=3)
            .map(|s| (Some(at(s)), RunStatus::Skipped, RunKind::Scheduled))
            .collect::<Vec<_>>()
    );
}

#[test]
fn queued_work_is_in_the_history_at_once_and_starts_in_place() {
    let config = config();
    let (task, busy) = running_state(Overlap::BufferOne);
    let lease = busy.running[0].clone();
    let mut decision = Decision::new(busy, at(2), &config, 21);
    decision.claim_slot(&task, at(2));
    let (mutation, _, _) = decision.into_mutation();
    let pending = mutation
        .insert_runs
        .iter()
        .find(|run| run.slot == Some(at(2)))
        .expect("a row for slot 2");
    assert_eq!(pending.status, RunStatus::Pending);
    let buffered = mutation.state.expect("state changed");
    assert_eq!(buffered.pending[0].run_id, pending.run_id);
    let mut decision = Decision::new(buffered, at(3), &config, 22);
    decision.finish(
        task.policy(),
        &lease.run_id,
        lease.fence,
        RunStatus::Succeeded,
        None,
        None,
        None,
        true,
    );
    let (mutation, started, _) = decision.into_mutation();
    assert!(
        mutation.insert_runs.is_empty(),
        "starting pending work inserts no second row"
    );
    let starting = mutation
        .update_runs
        .iter()
        .find(|update| update.run_id == pending.run_id)
        .expect("the pending row is updated");
    assert_eq!(starting.status, RunStatus::Running);
    assert_eq!(started[0].run_id, pending.run_id);
}

#[test]
fn the_newest_definition_wins_and_the_other_is_reported() {
    let first = config();
    let mut decision = Decision::new(state(), at(1), &first, 23);
    assert!(!decision.register(&default_task().definition()));
    assert_eq!(decision.state.registered_by.as_deref(), Some("w1"));
    let mut other = default_task().definition();
    other.schedule = "*/2 * * * * *".to_owned();
    // The same worker changing its own definition (a restart with new code): no conflict.
    assert!(decision.register(&other));
    assert_eq!(decision.state.conflict, None);
    let second = DecideConfig {
        worker: "w2".to_owned(),
        ..config()
    };
    let mut decision = Decision::new(decision.state, at(2), &second, 24);
    assert!(decision.register(&default_task().definition()));
    assert_eq!(decision.state.definition.schedule, "* * * * * *");
    let conflict = decision.state.conflict.clone().expect("w1's definition differs");
    assert_eq!(
        (conflict.worker.as_str(), conflict.definition.schedule.as_str()),
        ("w1", "*/2 * * * * *")
    );
    // Claims by workers that agree clear the conflict once the evidence is old.
    let later_at = at(2 + CONFLICT_EVIDENCE_TTL_SECONDS + 1);
    let mut later = Decision::new(decision.state, later_at, &second, 25);
    later.claim_slot(&default_task(), later_at);
    assert_eq!(later.state.conflict, None);
}

#[test]
fn an_absurd_lease_saturates_instead_of_panicking() {
    let config = DecideConfig {
        lease: Duration::days(100_000_000),
        ..config()
    };
    let mut decision = Decision::new(state(), at(1), &config, 26);
    assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
    assert_eq!(decision.state.running[0].lease_until, chrono::DateTime::<Utc>::MAX_UTC);
    let lease = decision.state.running[0].clone();
    assert!(decision.renew(&[(lease.run_id, lease.fence)]).is_empty());
}

fn rows(mutation: &Mutation) -> Vec<(Option<Timestamp>, Option<Timestamp>, u64, RunStatus)> {
    mutation
        .insert_runs
        .iter()
        .map(|run| (run.slot, run.slot_until, run.slots_accounted(), run.status))
        .collect()
}

#[test]
fn enabling_after_thirty_days_writes_one_range_row() {
    let config = config();
    let mut decision = Decision::new(state(), at(0), &config, 27);
    decision.set_enabled(false);
    let thirty_days = 30 * 86_400;
    let started = std::time::Instant::now();
    let mut decision = Decision::new(decision.state, at(thirty_days), &config, 28);
    decision.set_enabled(true);
    let elapsed = started.elapsed();
    assert_eq!(decision.state.high_water, at(thirty_days));
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(
        rows(&mutation),
        vec![(
            Some(at(1)),
            Some(at(thirty_days)),
            thirty_days as u64,
            RunStatus::Skipped
        )]
    );
    assert_eq!(mutation.insert_runs[0].reason.as_deref(), Some(REASON_DISABLED));
    // Bounded work (2.6 million slots are counted, not walked); loose for unoptimised builds.
    assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn short_gaps_keep_a_row_per_slot_and_long_ones_become_ranges() {
    let config = config();
    let gap = MAX_SINGLE_ROWS as i64;
    // A gap of exactly MAX_SINGLE_ROWS late slots before an on-time one: a row each.
    let mut decision = Decision::new(state(), at(gap + 1), &config, 29);
    let task = task(Overlap::Skip, CatchUp::Skip, OnAbandon::Forget);
    assert_eq!(decision.claim_slot(&task, at(gap + 1)), SlotOutcome::Started);
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(mutation.insert_runs.len(), MAX_SINGLE_ROWS as usize + 1);
    assert!(mutation.insert_runs.iter().all(|run| run.slot_until.is_none()));
    // One more: the missed slots become one range row.
    let mut decision = Decision::new(state(), at(gap + 2), &config, 30);
    assert_eq!(decision.claim_slot(&task, at(gap + 2)), SlotOutcome::Started);
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(
        rows(&mutation),
        vec![
            (Some(at(1)), Some(at(gap + 1)), gap as u64 + 1, RunStatus::Missed),
            (Some(at(gap + 2)), None, 1, RunStatus::Running),
        ]
    );
}

#[test]
fn a_week_long_outage_is_accounted_in_a_few_rows_under_every_catch_up_policy() {
    let config = config();
    let week = 7 * 86_400;
    let cases = [
        (CatchUp::Skip, 0u64),
        (
            CatchUp::Latest {
                within: StdDuration::from_secs(3600),
            },
            0,
        ),
        (
            CatchUp::All {
                within: StdDuration::from_secs(30),
                max: 5,
            },
            5,
        ),
    ];
    for (catch_up, caught_up) in cases {
        let task = task(Overlap::AllowConcurrent, catch_up, OnAbandon::Forget);
        let mut decision = Decision::new(state(), at(week), &config, 31);
        assert_eq!(
            decision.claim_slot(&task, at(week)),
            SlotOutcome::Started,
            "{catch_up:?}"
        );
        let (mutation, started, _) = decision.into_mutation();
        assert!(mutation.insert_runs.len() <= 7, "{catch_up:?}: {:?}", rows(&mutation));
        let accounted: u64 = mutation.insert_runs.iter().map(RunRecord::slots_accounted).sum();
        assert_eq!(accounted, week as u64, "{catch_up:?}: every slot exactly once");
        assert_eq!(started.len() as u64, caught_up + 1, "{catch_up:?}");
        let covered = |slot: i64| mutation.insert_runs.iter().filter(|run| run.covers(at(slot))).count();
        for slot in [1, 2, week / 2, week - 6, week - 1, week] {
            assert_eq!(covered(slot), 1, "{catch_up:?}: slot {slot}");
        }
    }
}

#[test]
fn a_late_claim_after_a_long_disable_is_one_skipped_range() {
    let config = config();
    let mut decision = Decision::new(state(), at(0), &config, 32);
    decision.set_enabled(false);
    let day = 86_400;
    let mut decision = Decision::new(decision.state, at(day), &config, 33);
    assert_eq!(
        decision.claim_slot(&default_task(), at(day)),
        SlotOutcome::Skipped(REASON_DISABLED)
    );
    let (mutation, _, _) = decision.into_mutation();
    assert_eq!(
        rows(&mutation),
        vec![(Some(at(1)), Some(at(day)), day as u64, RunStatus::Skipped)]
    );
}

mod purity {
    //! `decide` is a pure function of its inputs (stored state, the store's now, the worker's settings,
    //! the seed): the same inputs give the same writes, the same runs to start and the same answers,
    //! whatever the machine's clock says; and every id it mints carries the store's time.

    use super::*;
    use proptest::prelude::*;

    /// One thing a worker can ask of a task's state, `after` seconds past the previous step.
    #[derive(Debug, Clone)]
    enum Step {
        Claim { slot_back: i64 },
        Trigger,
        Finish { which: usize, failed: bool },
        Renew,
        Reap,
        StartPending,
        Enable(bool),
        Register { other_schedule: bool },
    }

    fn step() -> impl Strategy<Value = (i64, Step)> {
        let step = prop_oneof![
            4 => (0i64..4).prop_map(|slot_back| Step::Claim { slot_back }),
            2 => Just(Step::Trigger),
            3 => (0usize..3, any::<bool>()).prop_map(|(which, failed)| Step::Finish { which, failed }),
            1 => Just(Step::Renew),
            1 => Just(Step::Reap),
            1 => Just(Step::StartPending),
            1 => any::<bool>().prop_map(Step::Enable),
            1 => any::<bool>().prop_map(|other_schedule| Step::Register { other_schedule }),
        ];
        (0i64..40, step)
    }

    fn policy_task(choice: u8) -> ScheduledTask {
        let overlap = [
            Overlap::Skip,
            Overlap::BufferOne,
            Overlap::AllowConcurrent,
            Overlap::CancelPrevious,
        ][usize::from(choice % 4)];
        let catch_up = [
            CatchUp::Skip,
            CatchUp::default(),
            CatchUp::All {
                within: StdDuration::from_secs(20),
                max: 3,
            },
        ][usize::from(choice / 4 % 3)];
        let on_abandon = if choice % 2 == 0 {
            OnAbandon::Forget
        } else {
            OnAbandon::Retry { max_attempts: 2 }
        };
        task(overlap, catch_up, on_abandon)
    }

    /// Applies `step` to `state` at `now` with `seed`: everything the decision produced, as comparable data.
    fn apply(
        state: &TaskState,
        now: Timestamp,
        seed: u64,
        step: &Step,
        task: &ScheduledTask,
        config: &DecideConfig,
    ) -> (Mutation, Vec<RunLease>, Vec<String>, String) {
        let mut decision = Decision::new(state.clone(), now, config, seed);
        let answer = match step {
            Step::Claim { slot_back } => {
                let slot = Timestamp::from_timestamp(now.timestamp() - slot_back, 0).unwrap_or(now);
                format!("{:?}", decision.claim_slot(task, slot))
            }
            Step::Trigger => format!("{:?}", decision.trigger()),
            Step::Finish { which, failed } => match decision.state.running.get(*which).cloned() {
                Some(lease) => format!(
                    "{:?}",
                    decision.finish(
                        task.policy(),
                        &lease.run_id,
                        lease.fence,
                        if *failed {
                            RunStatus::Failed
                        } else {
                            RunStatus::Succeeded
                        },
                        None,
                        Some(Value::from(7)),
                        None,
                        true,
                    )
                ),
                None => "nothing running".to_owned(),
            },
            Step::Renew => {
                let runs: Vec<(String, u64)> = decision
                    .state
                    .running
                    .iter()
                    .map(|run| (run.run_id.clone(), run.fence))
                    .collect();
                format!("{:?}", decision.renew(&runs))
            }
            Step::Reap => {
                decision.reap_expired(task.policy());
                String::new()
            }
            Step::StartPending => format!("{:?}", decision.start_pending()),
            Step::Enable(enabled) => {
                decision.set_enabled(*enabled);
                String::new()
            }
            Step::Register { other_schedule } => {
                let mut definition = task.definition();
                if *other_schedule {
                    definition.schedule = "*/2 * * * * *".to_owned();
                }
                format!("{:?}", decision.register(&definition))
            }
        };
        let (mutation, started, ended) = decision.into_mutation();
        (mutation, started, ended, answer)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn equal_inputs_give_equal_decisions_and_ids_carry_the_store_time(
            choice in 0u8..24,
            steps in prop::collection::vec(step(), 1..25),
            seeds in prop::collection::vec(any::<u64>(), 25),
            workers in prop::collection::vec(0u8..3, 25),
        ) {
            let task = policy_task(choice);
            let configs: Vec<DecideConfig> = (0..3)
                .map(|n| DecideConfig { worker: format!("w{n}"), ..config() })
                .collect();
            let mut state = TaskState::new(task.definition(), at(0));
            let mut now = at(0);
            for (index, (after, step)) in steps.iter().enumerate() {
                now += chrono::Duration::seconds(*after) + chrono::Duration::milliseconds(index as i64 * 7);
                let config = &configs[usize::from(workers[index])];
                let first = apply(&state, now, seeds[index], step, &task, config);
                let second = apply(&state, now, seeds[index], step, &task, config);
                prop_assert_eq!(&first, &second, "step {} {:?} at {}", index, step, now);
                let (mutation, started, _, _) = first;
                let minted = mutation
                    .insert_runs
                    .iter()
                    .map(|run| run.run_id.clone())
                    .chain(started.iter().map(|lease| lease.run_id.clone()))
                    .chain(mutation.insert_runs.iter().filter_map(|run| run.trigger_id.clone()));
                for id in minted {
                    let uuid = uuid::Uuid::parse_str(&id).map_err(|error| TestCaseError::fail(error.to_string()))?;
                    // Ids minted by earlier decisions (a pending row starting) carry their own time.
                    if let Some((seconds, nanos)) = uuid.get_timestamp().map(|stamp| stamp.to_unix()) {
                        let millis = i64::try_from(seconds).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000);
                        prop_assert!(millis <= now.timestamp_millis(), "id {} is later than the store's now", id);
                    }
                }
                for run in &mutation.insert_runs {
                    let uuid = uuid::Uuid::parse_str(&run.run_id).map_err(|error| TestCaseError::fail(error.to_string()))?;
                    let (seconds, nanos) = uuid.get_timestamp().map(|stamp| stamp.to_unix()).unwrap_or((0, 0));
                    let millis = i64::try_from(seconds).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000);
                    prop_assert_eq!(millis, now.timestamp_millis(), "a new row's id carries the store's now");
                }
                if let Some(next) = mutation.state {
                    state = next;
                }
            }
        }
    }
}

/// The ids every decision of one task wrote, in the order of its history (newest first, by run id).
fn history_order(decisions: &[Mutation]) -> Vec<String> {
    let mut ids: Vec<String> = decisions
        .iter()
        .flat_map(|mutation| mutation.insert_runs.iter().map(|run| run.run_id.clone()))
        .collect();
    ids.sort();
    ids
}

#[test]
fn ids_of_one_task_grow_across_decisions_in_the_same_millisecond() {
    let config = config();
    let mut written = Vec::new();
    let mut stored = state();
    // A claim, then two triggers, each a decision of its own at the same store time, with seeds that
    // would sort them backwards if the random part decided.
    for (step, seed) in [u64::MAX, 7, 3].into_iter().enumerate() {
        let mut decision = Decision::new(stored.clone(), at(1), &config, seed);
        if step == 0 {
            assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
        } else {
            decision.state.pending.clear();
            decision.trigger().expect("enabled");
        }
        let (mutation, _, _) = decision.into_mutation();
        stored = mutation.state.clone().expect("changed");
        written.push(mutation);
    }
    let created: Vec<String> = written
        .iter()
        .flat_map(|mutation| mutation.insert_runs.iter().map(|run| run.run_id.clone()))
        .collect();
    assert_eq!(created.len(), 3);
    assert_eq!(history_order(&written), created, "history order is creation order");
    assert_eq!(stored.last_id.as_deref(), created.last().map(String::as_str));
    // A store clock that reads earlier (another worker's) still mints after the floor.
    let mut decision = Decision::new(stored, at(0), &config, 0);
    decision.state.pending.clear();
    decision.trigger().expect("enabled");
    let (mutation, _, _) = decision.into_mutation();
    let later = &mutation.insert_runs[0].run_id;
    assert!(created.iter().all(|id| id < later), "{later} after {created:?}");
}

#[test]
fn documents_without_last_id_take_their_floor_from_known_runs() {
    let config = config();
    let mut decision = Decision::new(state(), at(1), &config, u64::MAX);
    assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
    let (mutation, _, _) = decision.into_mutation();
    let mut stored = mutation.state.expect("changed");
    let running = stored.running[0].run_id.clone();
    stored.last_id = None;
    let mut decision = Decision::new(stored, at(1), &config, 0);
    decision.trigger().expect("enabled");
    let (mutation, _, _) = decision.into_mutation();
    assert!(mutation.insert_runs[0].run_id > running);
}
