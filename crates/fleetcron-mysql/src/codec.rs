//! Conversions between fleetcron's records and MySQL rows: instants as `DATETIME(3)` in UTC (whole
//! milliseconds), enums by their snake_case names, JSON documents as text validated in Rust.

use chrono::{Datelike, NaiveDateTime, SubsecRound, TimeDelta};
use fleetcron_core::{RunKind, RunRecord, RunStatus, RunUpdate, StoreError, TaskState, Timestamp};
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, Row};

/// A statement being bound.
pub(crate) type MysqlQuery<'q> = Query<'q, MySql, MySqlArguments>;

/// `at` truncated to whole milliseconds, the precision the store keeps.
pub(crate) fn trunc_ms(at: Timestamp) -> Timestamp {
    at.trunc_subsecs(3)
}

/// `at` rounded up to whole milliseconds: for a whole-millisecond `n`, `at <= n` exactly when
/// `ceil_ms(at) <= n`, so a stored deadline compares with the store's now as the exact instant would.
pub(crate) fn ceil_ms(at: Timestamp) -> Timestamp {
    let floor = trunc_ms(at);
    if floor == at {
        floor
    } else {
        floor.checked_add_signed(TimeDelta::milliseconds(1)).unwrap_or(floor)
    }
}

/// Whether `at` fits a `DATETIME` column (years 1000 to 9999).
pub(crate) fn in_datetime_range(at: Timestamp) -> bool {
    (1000..=9999).contains(&at.year())
}

/// The `DATETIME(3)` value of an instant (truncated to milliseconds).
pub(crate) fn to_db(at: Timestamp, column: &str) -> Result<NaiveDateTime, StoreError> {
    if !in_datetime_range(at) {
        return Err(StoreError::Corrupt(format!(
            "{column} = {at} cannot be stored: MySQL DATETIME holds years 1000 to 9999"
        )));
    }
    Ok(trunc_ms(at).naive_utc())
}

fn opt_to_db(at: Option<Timestamp>, column: &str) -> Result<Option<NaiveDateTime>, StoreError> {
    at.map(|at| to_db(at, column)).transpose()
}

/// The instant of a stored `DATETIME` (UTC).
pub(crate) fn from_db(at: NaiveDateTime) -> Timestamp {
    at.and_utc()
}

fn opt_from_db(at: Option<NaiveDateTime>) -> Option<Timestamp> {
    at.map(from_db)
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

/// One row of the [`insert_states`](crate::sql::Sql::insert_states) and
/// [`upsert_states`](crate::sql::Sql::upsert_states) batches.
#[derive(Debug)]
pub(crate) struct StateRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) state: String,
    pub(crate) enabled: bool,
    pub(crate) attention_at: Option<NaiveDateTime>,
    pub(crate) updated_at: NaiveDateTime,
}

impl<'a> StateRow<'a> {
    /// The row for `state` of task `id`, written at `now`.
    pub(crate) fn new(id: &'a str, state: &TaskState, now: Timestamp) -> Result<Self, StoreError> {
        let attention_at = state
            .attention_at()
            .map(|at| to_db(ceil_ms(at), &format!("task {id}: attention_at")))
            .transpose()?;
        Ok(Self {
            id,
            state: encode_state(state, id)?,
            enabled: state.enabled,
            attention_at,
            updated_at: to_db(now, "updated_at")?,
        })
    }

    /// Binds the row's parameters, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: MysqlQuery<'q>) -> MysqlQuery<'q> {
        query
            .bind(self.id)
            .bind(self.state.as_str())
            .bind(self.enabled)
            .bind(self.attention_at)
            .bind(self.updated_at)
    }
}

/// One history row as written: the row of a new record ([`insert_runs`](crate::sql::Sql::insert_runs)),
/// or an existing row with its mutable columns replaced ([`upsert_runs`](crate::sql::Sql::upsert_runs)).
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub(crate) run_id: String,
    pub(crate) task_id: String,
    pub(crate) kind: String,
    pub(crate) slot: Option<NaiveDateTime>,
    pub(crate) slot_until: Option<NaiveDateTime>,
    pub(crate) slot_count: Option<u64>,
    pub(crate) attempt: u32,
    pub(crate) fence: u64,
    pub(crate) worker: Option<String>,
    pub(crate) trigger_id: Option<String>,
    pub(crate) claimed_at: Option<NaiveDateTime>,
    pub(crate) started_at: Option<NaiveDateTime>,
    pub(crate) finished_at: Option<NaiveDateTime>,
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
}

impl RunRow {
    /// The row of a history record.
    pub(crate) fn new(run: RunRecord) -> Result<Self, StoreError> {
        let what = |column: &str| format!("run {}: {column}", run.run_id);
        let result = run
            .result
            .as_ref()
            .map(|value| json_text(value, &what("result")))
            .transpose()?;
        Ok(Self {
            kind: run.kind.as_str().to_owned(),
            slot: opt_to_db(run.slot, &what("slot"))?,
            slot_until: opt_to_db(run.slot_until, &what("slot_until"))?,
            slot_count: run.slot_count,
            attempt: run.attempt,
            fence: run.fence,
            claimed_at: opt_to_db(run.claimed_at, &what("claimed_at"))?,
            started_at: opt_to_db(run.started_at, &what("started_at"))?,
            finished_at: opt_to_db(run.finished_at, &what("finished_at"))?,
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

    /// The stored row `identity` with the mutable columns of `update`.
    pub(crate) fn updated(identity: &RunIdentity, update: &UpdateRow) -> Self {
        Self {
            run_id: identity.run_id.clone(),
            task_id: identity.task_id.clone(),
            kind: identity.kind.clone(),
            slot: identity.slot,
            slot_until: identity.slot_until,
            slot_count: identity.slot_count,
            attempt: identity.attempt,
            trigger_id: identity.trigger_id.clone(),
            fence: update.fence,
            worker: update.worker.clone(),
            claimed_at: update.claimed_at,
            started_at: update.started_at,
            finished_at: update.finished_at,
            status: update.status,
            reason: update.reason.clone(),
            result: update.result.clone(),
            error: update.error.clone(),
        }
    }

    /// Binds the row's parameters, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: MysqlQuery<'q>) -> MysqlQuery<'q> {
        query
            .bind(self.run_id.as_str())
            .bind(self.task_id.as_str())
            .bind(self.kind.as_str())
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

/// The identity columns of a stored history row (what [`lock_runs`](crate::sql::Sql::lock_runs) returns).
#[derive(Debug)]
pub(crate) struct RunIdentity {
    pub(crate) run_id: String,
    pub(crate) task_id: String,
    pub(crate) kind: String,
    pub(crate) slot: Option<NaiveDateTime>,
    pub(crate) slot_until: Option<NaiveDateTime>,
    pub(crate) slot_count: Option<u64>,
    pub(crate) attempt: u32,
    pub(crate) trigger_id: Option<String>,
}

impl RunIdentity {
    /// Decodes a row of [`lock_runs`](crate::sql::Sql::lock_runs).
    pub(crate) fn decode(row: &MySqlRow) -> Result<Self, StoreError> {
        Ok(Self {
            run_id: text(row, "run_id")?,
            task_id: text(row, "task_id")?,
            kind: text(row, "kind")?,
            slot: column(row, "slot")?,
            slot_until: column(row, "slot_until")?,
            slot_count: column(row, "slot_count")?,
            attempt: column(row, "attempt")?,
            trigger_id: opt_text(row, "trigger_id")?,
        })
    }
}

/// The mutable columns of a history row, from a [`RunUpdate`] of task `task_id`.
#[derive(Debug)]
pub(crate) struct UpdateRow {
    pub(crate) task_id: String,
    pub(crate) run_id: String,
    pub(crate) status: &'static str,
    pub(crate) fence: u64,
    pub(crate) worker: Option<String>,
    pub(crate) claimed_at: Option<NaiveDateTime>,
    pub(crate) started_at: Option<NaiveDateTime>,
    pub(crate) finished_at: Option<NaiveDateTime>,
    pub(crate) reason: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<String>,
}

impl UpdateRow {
    /// The update of `update.run_id`, a run of task `task_id`.
    pub(crate) fn new(task_id: &str, update: RunUpdate) -> Result<Self, StoreError> {
        let what = |column: &str| format!("run {}: {column}", update.run_id);
        let result = update
            .result
            .as_ref()
            .map(|value| json_text(value, &what("result")))
            .transpose()?;
        Ok(Self {
            task_id: task_id.to_owned(),
            status: update.status.as_str(),
            fence: update.fence,
            claimed_at: opt_to_db(update.claimed_at, &what("claimed_at"))?,
            started_at: opt_to_db(update.started_at, &what("started_at"))?,
            finished_at: opt_to_db(update.finished_at, &what("finished_at"))?,
            result,
            run_id: update.run_id,
            worker: update.worker,
            reason: update.reason,
            error: update.error,
        })
    }
}

/// A typed column.
pub(crate) fn column<'r, T>(row: &'r MySqlRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
{
    row.try_get::<T, _>(name)
        .map_err(|error| StoreError::Corrupt(format!("column {name}: {error}")))
}

/// A text column. Read as bytes: a column with a binary collation (`utf8mb4_bin`, the store's ids)
/// comes with the protocol's BINARY flag, which sqlx refuses to decode as a string.
pub(crate) fn text(row: &MySqlRow, name: &str) -> Result<String, StoreError> {
    let bytes: Vec<u8> = column(row, name)?;
    utf8(bytes, name)
}

/// A nullable text column (see [`text`]).
pub(crate) fn opt_text(row: &MySqlRow, name: &str) -> Result<Option<String>, StoreError> {
    let bytes: Option<Vec<u8>> = column(row, name)?;
    bytes.map(|bytes| utf8(bytes, name)).transpose()
}

fn utf8(bytes: Vec<u8>, name: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|error| StoreError::Corrupt(format!("column {name} is not UTF-8: {error}")))
}

/// Decodes a history row (the columns of [`RUN_COLUMNS`](crate::sql)).
pub(crate) fn decode_run(row: &MySqlRow) -> Result<RunRecord, StoreError> {
    let run_id = text(row, "run_id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("run {run_id}: {what}"));
    let kind = text(row, "kind")?;
    let status = text(row, "status")?;
    let result = opt_text(row, "result")?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| corrupt(format!("stored result does not parse: {error}")))?;
    Ok(RunRecord {
        task_id: text(row, "task_id")?,
        kind: RunKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        slot: opt_from_db(column(row, "slot")?),
        slot_until: opt_from_db(column(row, "slot_until")?),
        slot_count: column(row, "slot_count")?,
        attempt: column(row, "attempt")?,
        fence: column(row, "fence")?,
        worker: opt_text(row, "worker")?,
        trigger_id: opt_text(row, "trigger_id")?,
        claimed_at: opt_from_db(column(row, "claimed_at")?),
        started_at: opt_from_db(column(row, "started_at")?),
        finished_at: opt_from_db(column(row, "finished_at")?),
        status: RunStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        reason: opt_text(row, "reason")?,
        result,
        error: opt_text(row, "error")?,
        run_id,
    })
}

/// Decodes an `(id, state)` row.
/// Whether a task whose stored high-water mark reads `mark` (the document's RFC 3339 text) is accounted
/// for up to `floor`: only a mark that parses and is at or after the floor says yes, so a doubt keeps
/// the task.
pub(crate) fn accounted(mark: Option<&str>, floor: Option<Timestamp>) -> bool {
    let parsed = mark.and_then(|mark| chrono::DateTime::parse_from_rfc3339(mark).ok());
    parsed
        .zip(floor)
        .is_some_and(|(mark, floor)| mark.with_timezone(&chrono::Utc) >= floor)
}

pub(crate) fn decode_state_row(row: &MySqlRow) -> Result<(String, TaskState), StoreError> {
    let id = text(row, "id")?;
    let state = decode_state(&text(row, "state")?, &id)?;
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
        assert_eq!(ceil_ms(whole), whole);
        let between = whole + Duration::microseconds(1);
        assert_eq!(trunc_ms(between), whole);
        assert_eq!(ceil_ms(between), whole + Duration::milliseconds(1));
        assert_eq!(from_db(to_db(between, "x").expect("in range")), whole);
    }

    #[test]
    fn instants_outside_datetime_are_refused() {
        let early = Utc.with_ymd_and_hms(999, 12, 31, 23, 59, 59).single().expect("valid");
        assert!(matches!(to_db(early, "slot"), Err(StoreError::Corrupt(_))));
        let late = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("valid");
        assert!(matches!(to_db(late, "slot"), Err(StoreError::Corrupt(_))));
        let fine = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid");
        assert_eq!(
            from_db(to_db(fine, "slot").expect("in range")).to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
    }
}
