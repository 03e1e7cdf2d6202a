//! Conversions between fleetcron's records and PostgreSQL values: instants as `timestamptz`, enums by
//! their snake_case names, JSON documents as `jsonb` (sent and read as text), batches as one array per
//! column. Also the advisory-lock keys, which are part of the store's protocol.

use chrono::{Duration, SubsecRound};
use fleetcron_core::{RunKind, RunRecord, RunStatus, RunUpdate, StoreError, TaskState, Timestamp};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

/// A statement being bound.
pub(crate) type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// `at` rounded up to whole milliseconds: for a whole-millisecond `now`, `at <= now` exactly when
/// `ceil_ms(at) <= now`, so a stored deadline compares with the store's clock as the exact instant would.
pub(crate) fn ceil_ms(at: Timestamp) -> Timestamp {
    let floor = at.trunc_subsecs(3);
    if floor == at {
        at
    } else {
        floor.checked_add_signed(Duration::milliseconds(1)).unwrap_or(floor)
    }
}

/// `at` rounded up to whole microseconds (PostgreSQL's precision): for a stored (whole-microsecond)
/// `t`, `t < at` exactly when `t < ceil_us(at)`.
pub(crate) fn ceil_us(at: Timestamp) -> Timestamp {
    let floor = at.trunc_subsecs(6);
    if floor == at {
        at
    } else {
        floor.checked_add_signed(Duration::microseconds(1)).unwrap_or(floor)
    }
}

/// 32-bit FNV-1a of `bytes`, as PostgreSQL's `int4`.
pub(crate) fn fnv1a_32(bytes: &[u8]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// 64-bit FNV-1a of `bytes`, as PostgreSQL's `int8`.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The first key of every task lock of a schema (two-`int4` advisory-lock space).
pub(crate) fn schema_lock_key(schema: &str) -> i32 {
    fnv1a_32(format!("fleetcron:{schema}").as_bytes())
}

/// The second key of a task's lock.
pub(crate) fn task_lock_key(id: &str) -> i32 {
    fnv1a_32(id.as_bytes())
}

/// The key of a schema's migration lock (single-`int8` advisory-lock space).
pub(crate) fn migration_lock_key(schema: &str) -> i64 {
    fnv1a_64(format!("fleetcron:migrate:{schema}").as_bytes())
}

/// The task-lock keys of `ids`: sorted and distinct, the order every transaction takes them in.
pub(crate) fn lock_keys(ids: &[String]) -> Vec<i32> {
    let mut keys: Vec<i32> = ids.iter().map(|id| task_lock_key(id)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// PostgreSQL text cannot hold NUL characters: they become U+FFFD.
pub(crate) fn clean_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

fn clean_opt(text: Option<String>) -> Option<String> {
    text.map(clean_text)
}

fn clean_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => {
            *text = text.replace('\0', "\u{fffd}");
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_value),
        serde_json::Value::Object(map) => {
            let entries: Vec<(String, serde_json::Value)> = std::mem::take(map).into_iter().collect();
            for (key, mut item) in entries {
                clean_value(&mut item);
                map.insert(clean_text(key), item);
            }
        }
        _ => {}
    }
}

/// JSON text for a `jsonb` column. `jsonb` refuses the escape `\u0000`, so NUL characters in strings
/// become U+FFFD (only when the text has the escape at all: the common case costs one scan).
fn json_text<T: serde::Serialize + ?Sized>(value: &T, what: &dyn Fn() -> String) -> Result<String, StoreError> {
    let encode_error =
        |error: serde_json::Error| StoreError::Corrupt(format!("{}: cannot encode JSON: {error}", what()));
    let text = serde_json::to_string(value).map_err(encode_error)?;
    if !text.contains("\\u0000") {
        return Ok(text);
    }
    let mut tree = serde_json::to_value(value).map_err(encode_error)?;
    clean_value(&mut tree);
    serde_json::to_string(&tree).map_err(encode_error)
}

/// Parses a stored task state document.
pub(crate) fn decode_state(text: &str, id: &str) -> Result<TaskState, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("task {id}: stored state document does not parse: {error}")))
}

fn fence_to_i64(fence: u64, run_id: &str) -> Result<i64, StoreError> {
    i64::try_from(fence)
        .map_err(|_| StoreError::Corrupt(format!("run {run_id}: fence {fence} does not fit PostgreSQL's bigint")))
}

fn attempt_to_i32(attempt: u32, run_id: &str) -> Result<i32, StoreError> {
    i32::try_from(attempt).map_err(|_| {
        StoreError::Corrupt(format!(
            "run {run_id}: attempt {attempt} does not fit PostgreSQL's integer"
        ))
    })
}

/// The rows of an [`upsert_states`](crate::sql::Statements::upsert_states) batch, one array per column.
#[derive(Debug, Default)]
pub(crate) struct StateBatch {
    ids: Vec<String>,
    states: Vec<String>,
    enabled: Vec<bool>,
    attention_at: Vec<Option<Timestamp>>,
}

impl StateBatch {
    /// Adds the new state of task `id`.
    pub(crate) fn push(&mut self, id: &str, state: &TaskState) -> Result<(), StoreError> {
        let text = json_text(state, &|| format!("task {id}: state document"))?;
        self.ids.push(id.to_owned());
        self.states.push(text);
        self.enabled.push(state.enabled);
        self.attention_at.push(state.attention_at().map(ceil_ms));
        Ok(())
    }

    /// Rows in the batch.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Binds the batch (`$1`..`$4`) and the write time (`$5`).
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>, now: Timestamp) -> PgQuery<'q> {
        query
            .bind(self.ids.as_slice())
            .bind(self.states.as_slice())
            .bind(self.enabled.as_slice())
            .bind(self.attention_at.as_slice())
            .bind(now)
    }
}

/// The rows of an [`insert_runs`](crate::sql::Statements::insert_runs) batch, one array per column.
#[derive(Debug, Default)]
pub(crate) struct RunBatch {
    pub(crate) run_id: Vec<String>,
    pub(crate) task_id: Vec<String>,
    kind: Vec<&'static str>,
    pub(crate) slot: Vec<Option<Timestamp>>,
    slot_until: Vec<Option<Timestamp>>,
    slot_count: Vec<Option<i64>>,
    pub(crate) attempt: Vec<i32>,
    fence: Vec<i64>,
    worker: Vec<Option<String>>,
    trigger_id: Vec<Option<String>>,
    claimed_at: Vec<Option<Timestamp>>,
    started_at: Vec<Option<Timestamp>>,
    finished_at: Vec<Option<Timestamp>>,
    status: Vec<&'static str>,
    reason: Vec<Option<String>>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

impl RunBatch {
    /// Adds a history row.
    pub(crate) fn push(&mut self, run: RunRecord) -> Result<(), StoreError> {
        let result = run
            .result
            .as_ref()
            .map(|value| json_text(value, &|| format!("run {}: result", run.run_id)))
            .transpose()?;
        self.fence.push(fence_to_i64(run.fence, &run.run_id)?);
        self.attempt.push(attempt_to_i32(run.attempt, &run.run_id)?);
        self.kind.push(run.kind.as_str());
        self.slot.push(run.slot);
        self.slot_until.push(run.slot_until);
        self.slot_count
            .push(run.slot_count.map(|count| i64::try_from(count).unwrap_or(i64::MAX)));
        self.worker.push(clean_opt(run.worker));
        self.trigger_id.push(clean_opt(run.trigger_id));
        self.claimed_at.push(run.claimed_at);
        self.started_at.push(run.started_at);
        self.finished_at.push(run.finished_at);
        self.status.push(run.status.as_str());
        self.reason.push(clean_opt(run.reason));
        self.result.push(result);
        self.error.push(clean_opt(run.error));
        self.task_id.push(clean_text(run.task_id));
        self.run_id.push(clean_text(run.run_id));
        Ok(())
    }

    /// Rows in the batch.
    pub(crate) fn len(&self) -> usize {
        self.run_id.len()
    }

    /// Binds the batch, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(self.run_id.as_slice())
            .bind(self.task_id.as_slice())
            .bind(self.kind.as_slice())
            .bind(self.slot.as_slice())
            .bind(self.slot_until.as_slice())
            .bind(self.slot_count.as_slice())
            .bind(self.attempt.as_slice())
            .bind(self.fence.as_slice())
            .bind(self.worker.as_slice())
            .bind(self.trigger_id.as_slice())
            .bind(self.claimed_at.as_slice())
            .bind(self.started_at.as_slice())
            .bind(self.finished_at.as_slice())
            .bind(self.status.as_slice())
            .bind(self.reason.as_slice())
            .bind(self.result.as_slice())
            .bind(self.error.as_slice())
    }

    /// Binds the identity columns for [`select_colliding_run`](crate::sql::Statements::select_colliding_run).
    pub(crate) fn bind_keys<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(self.run_id.as_slice())
            .bind(self.task_id.as_slice())
            .bind(self.slot.as_slice())
            .bind(self.attempt.as_slice())
    }
}

/// One history-row change, before batching.
#[derive(Debug)]
pub(crate) struct UpdateRow {
    pub(crate) task_id: String,
    pub(crate) run_id: String,
    status: &'static str,
    fence: i64,
    worker: Option<String>,
    claimed_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    reason: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

impl UpdateRow {
    /// The change of `update.run_id`, a run of task `task_id`.
    pub(crate) fn new(task_id: &str, update: RunUpdate) -> Result<Self, StoreError> {
        let result = update
            .result
            .as_ref()
            .map(|value| json_text(value, &|| format!("run {}: result", update.run_id)))
            .transpose()?;
        Ok(Self {
            task_id: task_id.to_owned(),
            status: update.status.as_str(),
            fence: fence_to_i64(update.fence, &update.run_id)?,
            claimed_at: update.claimed_at,
            started_at: update.started_at,
            finished_at: update.finished_at,
            result,
            run_id: update.run_id,
            worker: clean_opt(update.worker),
            reason: clean_opt(update.reason),
            error: clean_opt(update.error),
        })
    }
}

/// The rows of an [`update_runs`](crate::sql::Statements::update_runs) batch, one array per column.
#[derive(Debug, Default)]
pub(crate) struct UpdateBatch {
    task_id: Vec<String>,
    run_id: Vec<String>,
    status: Vec<&'static str>,
    fence: Vec<i64>,
    worker: Vec<Option<String>>,
    claimed_at: Vec<Option<Timestamp>>,
    started_at: Vec<Option<Timestamp>>,
    finished_at: Vec<Option<Timestamp>>,
    reason: Vec<Option<String>>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

impl UpdateBatch {
    /// Adds a change.
    pub(crate) fn push(&mut self, row: UpdateRow) {
        self.task_id.push(row.task_id);
        self.run_id.push(row.run_id);
        self.status.push(row.status);
        self.fence.push(row.fence);
        self.worker.push(row.worker);
        self.claimed_at.push(row.claimed_at);
        self.started_at.push(row.started_at);
        self.finished_at.push(row.finished_at);
        self.reason.push(row.reason);
        self.result.push(row.result);
        self.error.push(row.error);
    }

    /// Rows in the batch.
    pub(crate) fn len(&self) -> usize {
        self.run_id.len()
    }

    /// Binds the batch, in statement order.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(self.task_id.as_slice())
            .bind(self.run_id.as_slice())
            .bind(self.status.as_slice())
            .bind(self.fence.as_slice())
            .bind(self.worker.as_slice())
            .bind(self.claimed_at.as_slice())
            .bind(self.started_at.as_slice())
            .bind(self.finished_at.as_slice())
            .bind(self.reason.as_slice())
            .bind(self.result.as_slice())
            .bind(self.error.as_slice())
    }
}

fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get::<T, _>(name)
        .map_err(|error| StoreError::Corrupt(format!("column {name}: {error}")))
}

/// Decodes a row of [`select_runs`](crate::sql::Statements::select_runs).
pub(crate) fn decode_run(row: &PgRow) -> Result<RunRecord, StoreError> {
    let run_id: String = column(row, "run_id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("run {run_id}: {what}"));
    let kind: String = column(row, "kind")?;
    let status: String = column(row, "status")?;
    let attempt: i32 = column(row, "attempt")?;
    let fence: i64 = column(row, "fence")?;
    let result: Option<String> = column(row, "result")?;
    let result = result
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| corrupt(format!("stored result does not parse: {error}")))?;
    Ok(RunRecord {
        task_id: column(row, "task_id")?,
        kind: RunKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        slot: column(row, "slot")?,
        slot_until: column(row, "slot_until")?,
        slot_count: column::<Option<i64>>(row, "slot_count")?
            .map(|count| u64::try_from(count).map_err(|_| corrupt(format!("slot count {count} out of range"))))
            .transpose()?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt(format!("attempt {attempt} out of range")))?,
        fence: u64::try_from(fence).map_err(|_| corrupt(format!("fence {fence} out of range")))?,
        worker: column(row, "worker")?,
        trigger_id: column(row, "trigger_id")?,
        claimed_at: column(row, "claimed_at")?,
        started_at: column(row, "started_at")?,
        finished_at: column(row, "finished_at")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        reason: column(row, "reason")?,
        result,
        error: column(row, "error")?,
        run_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    #[test]
    fn rounding() {
        let whole = Utc
            .timestamp_millis_opt(1_700_000_000_123)
            .single()
            .expect("valid instant");
        assert_eq!(fleetcron_core::store::frame::truncate_to_millis(whole), whole);
        assert_eq!(ceil_ms(whole), whole);
        let between = whole + Duration::microseconds(1);
        assert_eq!(fleetcron_core::store::frame::truncate_to_millis(between), whole);
        assert_eq!(ceil_ms(between), whole + Duration::milliseconds(1));
        let nanos = whole + Duration::nanoseconds(1);
        assert_eq!(ceil_us(nanos), whole + Duration::microseconds(1));
        assert_eq!(ceil_us(between), between);
    }

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a_32(b""), i32::from_ne_bytes(0x811c_9dc5_u32.to_ne_bytes()));
        assert_eq!(fnv1a_32(b"a"), i32::from_ne_bytes(0xe40c_292c_u32.to_ne_bytes()));
        assert_eq!(
            fnv1a_64(b"a"),
            i64::from_ne_bytes(0xaf63_dc4c_8601_ec8c_u64.to_ne_bytes())
        );
        assert_eq!(lock_keys(&["a".to_owned(), "b".to_owned(), "a".to_owned()]).len(), 2);
        let keys = lock_keys(&["x".to_owned(), "y".to_owned(), "z".to_owned()]);
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn nul_characters_are_replaced() {
        let value = json!({"a\u{0}": ["x\u{0}y", 1, {"k": "\u{0}"}], "plain": "back\\u0000slash"});
        let text = json_text(&value, &|| "test".to_owned()).expect("encodes");
        let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(back["a\u{fffd}"][0], json!("x\u{fffd}y"));
        assert_eq!(back["a\u{fffd}"][2]["k"], json!("\u{fffd}"));
        // A literal backslash followed by u0000 is not a NUL and survives.
        assert_eq!(back["plain"], json!("back\\u0000slash"));
        assert!(!text.contains('\0'));
        assert_eq!(clean_text("a\0b".to_owned()), "a\u{fffd}b");
    }
}
