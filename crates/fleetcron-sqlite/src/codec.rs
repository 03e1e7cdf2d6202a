//! Conversions between fleetcron's records and SQLite rows: instants as epoch milliseconds, enums by
//! their snake_case names, JSON documents as text.

use chrono::DateTime;
use fleetcron_core::{RunKind, RunRecord, RunStatus, RunUpdate, StoreError, TaskState, Timestamp};
use serde::Serialize;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};

/// A statement being bound.
pub(crate) type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// Epoch milliseconds, rounded down.
pub(crate) fn to_ms(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

/// Epoch milliseconds, rounded up: for an integer `n`, `at <= n` exactly when `ceil_ms(at) <= n`, so a
/// stored deadline compares with a whole-millisecond `now` as the exact instant would.
pub(crate) fn ceil_ms(at: Timestamp) -> i64 {
    let floor = at.timestamp_millis();
    if at.timestamp_subsec_nanos() % 1_000_000 == 0 {
        floor
    } else {
        floor.saturating_add(1)
    }
}

/// The instant of stored epoch milliseconds.
pub(crate) fn from_ms(ms: i64, column: &str) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} = {ms} is not a valid epoch-millisecond instant")))
}

fn opt_from_ms(ms: Option<i64>, column: &str) -> Result<Option<Timestamp>, StoreError> {
    ms.map(|ms| from_ms(ms, column)).transpose()
}

fn fence_to_i64(fence: u64, run_id: &str) -> Result<i64, StoreError> {
    i64::try_from(fence).map_err(|_| {
        StoreError::Corrupt(format!(
            "run {run_id}: fence {fence} does not fit SQLite's 64-bit signed integers"
        ))
    })
}

fn json_text(value: &serde_json::Value, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(format!("{what}: cannot encode JSON: {error}")))
}

/// Serialises a task state document.
pub(crate) fn encode_state(state: &TaskState, id: &str) -> Result<String, StoreError> {
    serde_json::to_string(state)
        .map_err(|error| StoreError::Corrupt(format!("task {id}: cannot encode the state document: {error}")))
}

/// Parses a stored task state document.
pub(crate) fn decode_state(text: &str, id: &str) -> Result<TaskState, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("task {id}: stored state document does not parse: {error}")))
}

/// One row of the [`UPSERT_STATES`](crate::sql::UPSERT_STATES) batch.
#[derive(Debug)]
pub(crate) struct StateRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) state: String,
    pub(crate) enabled: bool,
    pub(crate) attention_at: Option<i64>,
    pub(crate) updated_at: i64,
}

impl<'a> StateRow<'a> {
    /// The row for `state` of task `id`, written at `now`.
    pub(crate) fn new(id: &'a str, state: &TaskState, now: Timestamp) -> Result<Self, StoreError> {
        Ok(Self {
            id,
            state: encode_state(state, id)?,
            enabled: state.enabled,
            attention_at: state.attention_at().map(ceil_ms),
            updated_at: to_ms(now),
        })
    }

    /// Binds the row's parameters, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        query
            .bind(self.id)
            .bind(self.state.as_str())
            .bind(self.enabled)
            .bind(self.attention_at)
            .bind(self.updated_at)
    }
}

/// One row of the [`INSERT_RUNS`](crate::sql::INSERT_RUNS) batch (serialised only to name a refused
/// row after a unique-key violation).
#[derive(Debug, Serialize)]
pub(crate) struct RunRow {
    pub(crate) run_id: String,
    pub(crate) task_id: String,
    pub(crate) kind: &'static str,
    pub(crate) slot: Option<i64>,
    pub(crate) slot_until: Option<i64>,
    pub(crate) slot_count: Option<i64>,
    pub(crate) attempt: i64,
    pub(crate) fence: i64,
    pub(crate) worker: Option<String>,
    pub(crate) trigger_id: Option<String>,
    pub(crate) claimed_at: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
}

impl RunRow {
    /// The row of a history record.
    pub(crate) fn new(run: RunRecord) -> Result<Self, StoreError> {
        let result = run
            .result
            .as_ref()
            .map(|value| json_text(value, &format!("run {}: result", run.run_id)))
            .transpose()?;
        Ok(Self {
            fence: fence_to_i64(run.fence, &run.run_id)?,
            kind: run.kind.as_str(),
            slot: run.slot.map(to_ms),
            slot_until: run.slot_until.map(to_ms),
            slot_count: run.slot_count.map(|count| i64::try_from(count).unwrap_or(i64::MAX)),
            attempt: i64::from(run.attempt),
            claimed_at: run.claimed_at.map(to_ms),
            started_at: run.started_at.map(to_ms),
            finished_at: run.finished_at.map(to_ms),
            status: run.status.as_str(),
            result,
            run_id: run.run_id,
            task_id: run.task_id,
            worker: run.worker,
            trigger_id: run.trigger_id,
            reason: run.reason,
            error: run.error,
        })
    }

    /// Binds the row's parameters, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        query
            .bind(self.run_id.as_str())
            .bind(self.task_id.as_str())
            .bind(self.kind)
            .bind(self.slot)
            .bind(self.slot_until)
            .bind(self.slot_count)
            .bind(self.attempt)
            .bind(self.fence)
            .bind(self.worker.as_deref())
            .bind(self.trigger_id.as_deref())
            .bind(self.claimed_at)
            .bind(self.started_at)
            .bind(self.finished_at)
            .bind(self.status)
            .bind(self.reason.as_deref())
            .bind(self.result.as_deref())
            .bind(self.error.as_deref())
    }
}

/// One row of the [`UPDATE_RUNS`](crate::sql::UPDATE_RUNS) batch.
#[derive(Debug)]
pub(crate) struct UpdateRow {
    pub(crate) task_id: String,
    pub(crate) run_id: String,
    pub(crate) status: &'static str,
    pub(crate) fence: i64,
    pub(crate) worker: Option<String>,
    pub(crate) claimed_at: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) reason: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
}

impl UpdateRow {
    /// The update of `update.run_id`, a run of task `task_id`.
    pub(crate) fn new(task_id: &str, update: RunUpdate) -> Result<Self, StoreError> {
        let result = update
            .result
            .as_ref()
            .map(|value| json_text(value, &format!("run {}: result", update.run_id)))
            .transpose()?;
        Ok(Self {
            task_id: task_id.to_owned(),
            status: update.status.as_str(),
            fence: fence_to_i64(update.fence, &update.run_id)?,
            claimed_at: update.claimed_at.map(to_ms),
            started_at: update.started_at.map(to_ms),
            finished_at: update.finished_at.map(to_ms),
            result,
            run_id: update.run_id,
            worker: update.worker,
            reason: update.reason,
            error: update.error,
        })
    }

    /// Binds the row's parameters, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
        query
            .bind(self.task_id.as_str())
            .bind(self.run_id.as_str())
            .bind(self.status)
            .bind(self.fence)
            .bind(self.worker.as_deref())
            .bind(self.claimed_at)
            .bind(self.started_at)
            .bind(self.finished_at)
            .bind(self.reason.as_deref())
            .bind(self.result.as_deref())
            .bind(self.error.as_deref())
    }
}

fn column<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get::<T, _>(name)
        .map_err(|error| StoreError::Corrupt(format!("column {name}: {error}")))
}

/// Decodes a row of [`SELECT_RUNS`](crate::sql::SELECT_RUNS).
pub(crate) fn decode_run(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let run_id: String = column(row, "run_id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("run {run_id}: {what}"));
    let kind: String = column(row, "kind")?;
    let status: String = column(row, "status")?;
    let attempt: i64 = column(row, "attempt")?;
    let fence: i64 = column(row, "fence")?;
    let result: Option<String> = column(row, "result")?;
    let result = result
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| corrupt(format!("stored result does not parse: {error}")))?;
    Ok(RunRecord {
        task_id: column(row, "task_id")?,
        kind: RunKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        slot: opt_from_ms(column(row, "slot")?, "slot")?,
        slot_until: opt_from_ms(column(row, "slot_until")?, "slot_until")?,
        slot_count: column::<Option<i64>>(row, "slot_count")?
            .map(|count| u64::try_from(count).map_err(|_| corrupt(format!("slot count {count} out of range"))))
            .transpose()?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt(format!("attempt {attempt} out of range")))?,
        fence: u64::try_from(fence).map_err(|_| corrupt(format!("fence {fence} out of range")))?,
        worker: column(row, "worker")?,
        trigger_id: column(row, "trigger_id")?,
        claimed_at: opt_from_ms(column(row, "claimed_at")?, "claimed_at")?,
        started_at: opt_from_ms(column(row, "started_at")?, "started_at")?,
        finished_at: opt_from_ms(column(row, "finished_at")?, "finished_at")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        reason: column(row, "reason")?,
        result,
        error: column(row, "error")?,
        run_id,
    })
}

/// Decodes an `(id, state)` row.
pub(crate) fn decode_state_row(row: &SqliteRow) -> Result<(String, TaskState), StoreError> {
    let id: String = column(row, "id")?;
    let text: String = column(row, "state")?;
    let state = decode_state(&text, &id)?;
    Ok((id, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn millisecond_rounding() {
        let whole = Utc
            .timestamp_millis_opt(1_700_000_000_123)
            .single()
            .expect("valid instant");
        assert_eq!(to_ms(whole), 1_700_000_000_123);
        assert_eq!(ceil_ms(whole), 1_700_000_000_123);
        let between = whole + Duration::microseconds(1);
        assert_eq!(to_ms(between), 1_700_000_000_123);
        assert_eq!(ceil_ms(between), 1_700_000_000_124);
        assert_eq!(fleetcron_core::store::frame::truncate_to_millis(between), whole);
        let before_epoch = Utc.timestamp_millis_opt(-1_500).single().expect("valid instant");
        assert_eq!(to_ms(before_epoch), -1_500);
        assert_eq!(from_ms(-1_500, "x").expect("decodes"), before_epoch);
        assert!(from_ms(i64::MAX, "x").is_err());
    }
}
