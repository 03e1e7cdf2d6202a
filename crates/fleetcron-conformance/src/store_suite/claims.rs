//! Claims: which tasks a claim may skip, and bounded work per batch however large its rows or long
//! its gap.

use super::fixtures::*;
use super::{ClaimSkipping, StoreHarness, Suite};
use fleetcron_core::{
    Mutation, RunKind, RunLease, RunQuery, RunStatus, Store, StoreError, TaskDefinition, TaskState, Timestamp,
};
use std::collections::BTreeSet;
use std::time::{Duration as StdDuration, Instant};

fn at(ms: i64) -> Timestamp {
    // 2030-01-01T00:00:00Z plus `ms`.
    Timestamp::from_timestamp_millis(1_893_456_000_000 + ms).unwrap_or_default()
}

fn state(id: &str, high_water: Timestamp) -> TaskState {
    let definition = TaskDefinition {
        id: id.to_owned(),
        schedule: "* * * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        description: format!("task {id}"),
    };
    let mut state = TaskState::new(definition, at(0));
    state.high_water = high_water;
    state
}

/// [`Store::mutate_claims`] may leave out a task only when its high-water mark is at or after the
/// floor given for it; every other id (including one not stored) must reach `decide`, exactly once.
/// Checked on marks and floors on and off whole seconds. A store that skips claims leaves out exactly
/// what its [`ClaimSkipping`] says: `acc` (mark = floor) and `past` (mark a second past the floor), and
/// `frac` (mark 0.3 s past a fractional floor) only when it compares exactly.
pub async fn claims_leave_out_only_accounted_tasks<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let left_out = left_out_by(&*fresh.store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    let expected: &[&str] = match suite.capabilities.claim_skipping {
        ClaimSkipping::None => &[],
        ClaimSkipping::WholeSeconds => &["acc", "past"],
        ClaimSkipping::Exact => &["acc", "frac", "past"],
    };
    assert_eq!(left_out, expected, "the tasks left out of the claim");
}

/// The sorted ids [`Store::mutate_claims`] leaves out in the first of two rounds (see
/// [`claims_leave_out_only_accounted_tasks`]), or what went wrong.
async fn left_out_by<S: Store + ?Sized>(store: &S) -> Result<Vec<String>, String> {
    store.migrate().await.map_err(|error| format!("migrate: {error}"))?;
    let marks = [
        ("acc", at(10_000)),
        ("past", at(11_000)),
        ("half", at(10_500)),
        ("behind", at(9_000)),
        ("frac", at(10_500)),
    ];
    let ids: Vec<String> = marks.iter().map(|(id, _)| (*id).to_owned()).collect();
    store
        .mutate(&ids, &mut |_, id, _| {
            let mark = marks
                .iter()
                .find(|(known, _)| *known == id)
                .map_or(at(0), |(_, mark)| *mark);
            Mutation {
                state: Some(state(id, mark)),
                ..Mutation::none()
            }
        })
        .await
        .map_err(|error| format!("seeding the states: {error}"))?;

    let mut first = None;
    for (round, floors_ms) in [
        // acc: mark = floor; past: mark after; half: mark 0.5 s before the floor; behind: before;
        // frac: mark 10.5 s, floor 10.2 s (eligible, but a store rounding to seconds may keep it);
        // missing: never stored.
        [10_000, 10_000, 11_000, 10_000, 10_200, 10_000],
        // Floors a millisecond after each mark: nothing is eligible.
        [10_001, 11_001, 10_501, 9_001, 10_501, 10_000],
    ]
    .into_iter()
    .enumerate()
    {
        let mut ids = ids.clone();
        ids.push("missing".to_owned());
        let floors: Vec<Timestamp> = floors_ms.iter().map(|ms| at(*ms)).collect();
        let mut decided = Vec::new();
        let (_, left_out) = store
            .mutate_claims(&ids, &floors, &mut |_, id, stored| {
                decided.push((id.to_owned(), stored.is_some()));
                Mutation::none()
            })
            .await
            .map_err(|error| format!("round {round}: mutate_claims: {error}"))?;
        let decided_ids: BTreeSet<&str> = decided.iter().map(|(id, _)| id.as_str()).collect();
        if decided_ids.len() != decided.len() {
            return Err(format!("round {round}: decide called twice for an id: {decided:?}"));
        }
        let left: BTreeSet<&str> = left_out.iter().map(String::as_str).collect();
        let eligible: BTreeSet<&str> = if round == 0 {
            ["acc", "past", "frac"].into_iter().collect()
        } else {
            BTreeSet::new()
        };
        if let Some(wrong) = left.iter().find(|id| !eligible.contains(**id)) {
            return Err(format!(
                "round {round}: {wrong} was left out although its slot is not accounted for (left out: {left:?})"
            ));
        }
        for id in &ids {
            let seen = decided_ids.contains(id.as_str()) || left.contains(id.as_str());
            if !seen || (decided_ids.contains(id.as_str()) && left.contains(id.as_str())) {
                return Err(format!("round {round}: {id} must be either decided or left out, once"));
            }
        }
        if decided.iter().any(|(id, stored)| id == "missing" && *stored) {
            return Err(format!("round {round}: a task never stored was handed a state"));
        }
        if round == 0 {
            let mut sorted: Vec<String> = left_out.clone();
            sorted.sort();
            first = Some(sorted);
        }
    }
    Ok(first.unwrap_or_default())
}

/// Enabling a per-second task that was disabled for 30 days accounts for all 2,592,000 slots as
/// skipped (`disabled`) in bounded work: one range row, one transaction, well under a second — never a
/// row per slot (which on a server hits the statement timeout on every retry, so the task could never
/// be enabled again).
pub async fn enabling_after_a_long_disable_is_bounded<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let elapsed = enable_after_thirty_days(&*fresh.store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!("{}: enabling after 30 days disabled took {elapsed:?}", suite.case);
    assert!(
        elapsed < StdDuration::from_secs(5),
        "{elapsed:?}: bounded work, one row"
    );
}

/// Enables a per-second task disabled for 30 days; returns how long the enabling mutation took.
async fn enable_after_thirty_days<S: Store + ?Sized>(store: &S) -> Result<StdDuration, String> {
    use fleetcron_core::decide::{DecideConfig, Decision, REASON_DISABLED};
    store.migrate().await.map_err(|error| format!("migrate: {error}"))?;
    let now = store.now().await.map_err(|error| format!("now: {error}"))?;
    let thirty_days = chrono::Duration::days(30);
    let id = "long-disabled".to_owned();
    let config = DecideConfig {
        worker: "w1".to_owned(),
        lease: chrono::Duration::seconds(30),
        misfire_threshold: chrono::Duration::seconds(60),
    };
    // Disabled since 30 days ago, a whole second so the count is exact.
    let since = Timestamp::from_timestamp(now.timestamp() - thirty_days.num_seconds(), 0).unwrap_or(now);
    store
        .mutate(std::slice::from_ref(&id), &mut |_, id, _| {
            let mut seeded = state(id, since);
            seeded.registered_at = since;
            seeded.enabled = false;
            Mutation {
                state: Some(seeded),
                ..Mutation::none()
            }
        })
        .await
        .map_err(|error| format!("seeding the disabled task: {error}"))?;
    let started = std::time::Instant::now();
    let mut enabled_at = None;
    store
        .mutate(std::slice::from_ref(&id), &mut |now, _, stored| {
            let Some(stored) = stored else {
                return Mutation::none();
            };
            enabled_at = Some(now);
            let mut decision = Decision::new(stored.clone(), now, &config, 0x5eed);
            decision.set_enabled(true);
            decision.into_mutation().0
        })
        .await
        .map_err(|error| format!("enabling: {error}"))?;
    let elapsed = started.elapsed();
    let enabled_at = enabled_at.ok_or("the stored task did not reach decide")?;
    let runs = store
        .runs(&id, &RunQuery::default())
        .await
        .map_err(|error| format!("reading the history: {error}"))?;
    let [row] = runs.as_slice() else {
        return Err(format!("expected one range row, found {} rows", runs.len()));
    };
    let expected_count = (enabled_at.timestamp() - since.timestamp()) as u64;
    let first = since + chrono::Duration::seconds(1);
    let last = Timestamp::from_timestamp(enabled_at.timestamp(), 0).unwrap_or(enabled_at);
    if row.status != RunStatus::Skipped
        || row.reason.as_deref() != Some(REASON_DISABLED)
        || row.slot != Some(first)
        || row.slot_until != Some(last)
        || row.slot_count != Some(expected_count)
    {
        return Err(format!(
            "expected one skipped (disabled) row for {first} … {last} ({expected_count} slots), found {row:?}"
        ));
    }
    let (_, states) = store
        .load(Some(std::slice::from_ref(&id)))
        .await
        .map_err(|error| format!("load: {error}"))?;
    match states.first() {
        Some(state) if state.enabled && state.high_water >= last => Ok(elapsed),
        other => Err(format!("the task is not enabled with its mark advanced: {other:?}")),
    }
}

/// Text of exactly `bytes` bytes, different for each (`round`, `row`), with characters that JSON and SQL
/// escape (`"`, `\`, `'`, newlines) and multi-byte ones, so a mixed-up, cut or re-encoded value shows.
fn bulky_text(round: u32, row: usize, bytes: usize) -> String {
    let mut text = format!("r{round}-{row:04}|");
    let pattern = "fleetcron \"quoted\" \\ back'slash\nnew line é ü ✓ ";
    while text.len() < bytes {
        text.push_str(pattern);
    }
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// The tasks of [`large_history_rows_round_trip_in_one_batch`]'s batch.
pub const LARGE_BATCH_ROWS: usize = 300;
/// The bytes of text in each state document and each history row of that batch.
pub const LARGE_BATCH_TEXT: usize = 64 * 1024;
/// The bytes of text that batch writes in one mutation (states and rows).
pub const LARGE_BATCH_BYTES: usize = 2 * LARGE_BATCH_ROWS * LARGE_BATCH_TEXT;

/// Large history rows in large batches (bounded work per statement): `rows` tasks, each with a state
/// document whose last run carries a result and an error of `text_bytes / 2` bytes each, and one history
/// row carrying the same amount, written in ONE mutation (claim-like: new states, new rows), then all
/// finished again with new texts in ONE mutation (completion-like: updated states, updated rows); every
/// document and row must read back intact. A store that sends a batch as statements larger than its
/// server accepts (MySQL's `max_allowed_packet`) fails here. Run with [`LARGE_BATCH_ROWS`] tasks and
/// [`LARGE_BATCH_TEXT`] bytes of text in each state and each row: [`LARGE_BATCH_BYTES`] per mutation,
/// more than twice MariaDB's default 16 MiB packet.
pub async fn large_history_rows_round_trip_in_one_batch<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let started = Instant::now();
    large_rows(&*fresh.store, LARGE_BATCH_ROWS, LARGE_BATCH_TEXT)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!(
        "{}: 2 mutations of {LARGE_BATCH_BYTES} bytes took {:?}",
        suite.case,
        started.elapsed()
    );
}

/// The body of [`large_history_rows_round_trip_in_one_batch`], or what went wrong.
async fn large_rows<S: Store + ?Sized>(store: &S, rows: usize, text_bytes: usize) -> Result<(), String> {
    use fleetcron_core::{LastRun, RunRecord, RunUpdate};
    use serde_json::Value;

    store.migrate().await.map_err(|error| format!("migrate: {error}"))?;
    let half = text_bytes / 2;
    let ids: Vec<String> = (0..rows).map(|row| format!("bulk.{row:04}")).collect();
    let run_id = |row: usize| format!("bulk-run-{row:04}");
    let result = |round: u32, row: usize| Value::String(bulky_text(round, row, half));
    let error = |round: u32, row: usize| bulky_text(round + 10, row, half);
    let last_run = |round: u32, row: usize| LastRun {
        run_id: run_id(row),
        status: RunStatus::Failed,
        started_at: at(1_000),
        finished_at: at(2_000 + i64::from(round)),
        result: Some(result(round, row)),
        error: Some(error(round, row)),
    };
    let index = |id: &str| ids.iter().position(|known| known == id);

    for round in [1_u32, 2] {
        store
            .mutate(&ids, &mut |_, id, stored| {
                let Some(row) = index(id) else {
                    return Mutation::none();
                };
                let mut task = stored.cloned().unwrap_or_else(|| state(id, at(0)));
                task.last_run = Some(last_run(round, row));
                if round == 1 {
                    // Struct update from the shared fixtures: new history columns need no change here.
                    let record = RunRecord {
                        task_id: id.to_owned(),
                        slot: Some(at(1_000)),
                        claimed_at: Some(at(1_000)),
                        started_at: Some(at(1_000)),
                        finished_at: Some(at(2_001)),
                        result: Some(result(round, row)),
                        error: Some(error(round, row)),
                        ..run(id, &run_id(row), Some(0), 1, RunStatus::Failed)
                    };
                    Mutation {
                        state: Some(task),
                        insert_runs: vec![record],
                        update_runs: Vec::new(),
                    }
                } else {
                    let update = RunUpdate {
                        claimed_at: Some(at(1_000)),
                        started_at: Some(at(1_000)),
                        result: Some(result(round, row)),
                        error: Some(error(round, row)),
                        ..finish(&run_id(row), RunStatus::Failed, at(2_002))
                    };
                    Mutation {
                        state: Some(task),
                        insert_runs: Vec::new(),
                        update_runs: vec![update],
                    }
                }
            })
            .await
            .map_err(|error| {
                let text = error.to_string();
                let shown: String = text.chars().take(600).collect();
                format!("round {round}: one mutation of {rows} rows of {text_bytes} bytes: {shown}")
            })?;

        let (_, states) = store
            .load(None)
            .await
            .map_err(|error| format!("round {round}: load: {error}"))?;
        let mut seen = 0;
        for task in states {
            let Some(row) = index(&task.definition.id) else {
                continue;
            };
            seen += 1;
            if task.last_run != Some(last_run(round, row)) {
                return Err(format!(
                    "round {round}: the state of {} does not read back intact",
                    task.definition.id
                ));
            }
        }
        if seen != rows {
            return Err(format!("round {round}: {seen} of {rows} states read back"));
        }
        for (row, id) in ids.iter().enumerate() {
            let query = RunQuery {
                limit: 10,
                before: None,
            };
            let history = store
                .runs(id, &query)
                .await
                .map_err(|error| format!("round {round}: runs of {id}: {error}"))?;
            let [stored] = history.as_slice() else {
                return Err(format!("round {round}: {id} has {} history rows", history.len()));
            };
            if stored.run_id != run_id(row)
                || stored.status != RunStatus::Failed
                || stored.result != Some(result(round, row))
                || stored.error != Some(error(round, row))
                || stored.finished_at != Some(at(2_000 + i64::from(round)))
            {
                return Err(format!(
                    "round {round}: the history row of {id} does not read back intact"
                ));
            }
        }
    }
    Ok(())
}

/// The engine's batched claim as a store sees it: 1,000 new tasks registered in one mutation, then five
/// rounds of 1,000 claims (fence + 1, a lease, a `running` row) in one mutation each; a repeated claim
/// of a slot is refused as a whole. One round trip per statement, not per task: a round takes well
/// under five seconds.
pub async fn a_batch_of_1000_tasks_registers_and_claims_in_one_mutation<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    let ids: Vec<String> = (0..1_000).map(|n| format!("batch-{n:04}")).collect();
    let started = Instant::now();
    store
        .mutate(&ids, &mut |now, id, stored| {
            assert!(stored.is_none());
            Mutation {
                state: Some(new_state(id, now)),
                ..Mutation::none()
            }
        })
        .await
        .expect("register 1,000 tasks");
    let registration = started.elapsed();

    let claim = |round: i64| {
        move |now: Timestamp, id: &str, stored: Option<&TaskState>| {
            let mut state = stored.cloned().expect("registered");
            state.fence += 1;
            let mut record = run(id, &format!("{id}-{round}"), Some(round * 1_000), 1, RunStatus::Running);
            record.fence = state.fence;
            record.claimed_at = Some(now);
            state.running = vec![RunLease {
                run_id: record.run_id.clone(),
                fence: state.fence,
                worker: "w1".to_owned(),
                kind: RunKind::Scheduled,
                slot: record.slot,
                attempt: 1,
                trigger_id: None,
                started_at: now,
                lease_until: now + chrono::Duration::seconds(30),
            }];
            state.high_water = record.slot.unwrap_or(now);
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: Vec::new(),
            }
        }
    };
    let mut timings = Vec::new();
    for round in 1..=5 {
        let started = Instant::now();
        store.mutate(&ids, &mut claim(round)).await.expect("claim 1,000 slots");
        timings.push(started.elapsed());
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    println!(
        "{}: registration {registration:?}; claim (1,000 state writes + 1,000 history inserts, one mutation) \
         median {median:?} = {:.0} slots/s, best {:?}",
        suite.case,
        1_000.0 / median.as_secs_f64(),
        timings[0]
    );
    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1_000);
    assert!(states.iter().all(|state| state.fence == 5 && state.running.len() == 1));
    assert_eq!(
        store
            .runs("batch-0999", &RunQuery::default())
            .await
            .expect("runs")
            .len(),
        5
    );
    let again = store.mutate(&ids, &mut claim(1)).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    let (_, states) = store.load(None).await.expect("load");
    assert!(
        states.iter().all(|state| state.fence == 5),
        "a refused claim batch changes no task"
    );
    assert!(median < StdDuration::from_secs(5), "{median:?}");
}
