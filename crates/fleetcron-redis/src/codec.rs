//! Conversions between fleetcron's records and Redis values: instants as epoch milliseconds, enums by
//! their snake_case names, JSON documents as text, one hash field per history column (an absent field
//! is `None`).

use chrono::DateTime;
use fleetcron_core::{RunKind, RunRecord, RunStatus, RunUpdate, StoreError, TaskState, Timestamp};
use redis::Value;

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
pub(crate) fn from_ms(ms: i64, what: &str) -> Result<Timestamp, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} = {ms} is not a valid epoch-millisecond instant")))
}

/// Serialises a task state document.
pub(crate) fn encode_state(state: &TaskState, id: &str) -> Result<String, StoreError> {
    serde_json::to_string(state)
        .map_err(|error| StoreError::Corrupt(format!("task {id}: cannot encode the state document: {error}")))
}

/// Parses a stored task state document.
pub(crate) fn decode_state(text: &[u8], id: &str) -> Result<TaskState, StoreError> {
    serde_json::from_slice(text)
        .map_err(|error| StoreError::Corrupt(format!("task {id}: stored state document does not parse: {error}")))
}

fn json_text(value: &serde_json::Value, run_id: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Corrupt(format!("run {run_id}: cannot encode the result as JSON: {error}")))
}

/// A history row as hash fields, ready for the commit script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedRun {
    pub(crate) run_id: String,
    /// `<slot_ms>:<attempt>`, or `None` for a run without a slot.
    pub(crate) slot_key: Option<String>,
    pub(crate) fields: Vec<(&'static str, String)>,
}

impl EncodedRun {
    /// The fields of `run`; `None` columns are left out.
    pub(crate) fn new(run: RunRecord) -> Result<Self, StoreError> {
        let slot_ms = run.slot.map(to_ms);
        let mut fields = vec![
            ("run_id", run.run_id.clone()),
            ("task_id", run.task_id),
            ("kind", run.kind.as_str().to_owned()),
            ("attempt", run.attempt.to_string()),
        ];
        if let Some(slot) = slot_ms {
            fields.push(("slot", slot.to_string()));
        }
        if let Some(until) = run.slot_until {
            fields.push(("slot_until", to_ms(until).to_string()));
        }
        if let Some(count) = run.slot_count {
            fields.push(("slot_count", count.to_string()));
        }
        let (set, _) = mutable_fields(
            &run.run_id,
            MutableColumns {
                status: run.status,
                fence: run.fence,
                worker: run.worker,
                claimed_at: run.claimed_at,
                started_at: run.started_at,
                finished_at: run.finished_at,
                reason: run.reason,
                result: run.result,
                error: run.error,
            },
        )?;
        fields.extend(set);
        if let Some(trigger) = run.trigger_id {
            fields.push(("trigger_id", trigger));
        }
        Ok(Self {
            slot_key: slot_ms.map(|slot| crate::keys::slot_key(slot, run.attempt)),
            run_id: run.run_id,
            fields,
        })
    }
}

/// A change of a history row: fields to set and fields to delete (columns that became `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedUpdate {
    pub(crate) run_id: String,
    pub(crate) set: Vec<(&'static str, String)>,
    pub(crate) delete: Vec<&'static str>,
}

impl EncodedUpdate {
    /// The change `update` makes; every mutable column is set or deleted.
    pub(crate) fn new(update: RunUpdate) -> Result<Self, StoreError> {
        let (set, delete) = mutable_fields(
            &update.run_id,
            MutableColumns {
                status: update.status,
                fence: update.fence,
                worker: update.worker,
                claimed_at: update.claimed_at,
                started_at: update.started_at,
                finished_at: update.finished_at,
                reason: update.reason,
                result: update.result,
                error: update.error,
            },
        )?;
        Ok(Self {
            run_id: update.run_id,
            set,
            delete,
        })
    }
}

struct MutableColumns {
    status: RunStatus,
    fence: u64,
    worker: Option<String>,
    claimed_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    reason: Option<String>,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

type FieldChanges = (Vec<(&'static str, String)>, Vec<&'static str>);

fn mutable_fields(run_id: &str, columns: MutableColumns) -> Result<FieldChanges, StoreError> {
    let mut set = vec![
        ("status", columns.status.as_str().to_owned()),
        ("fence", columns.fence.to_string()),
    ];
    let mut delete = Vec::new();
    let mut optional = |name: &'static str, value: Option<String>| match value {
        Some(value) => set.push((name, value)),
        None => delete.push(name),
    };
    optional("worker", columns.worker);
    optional("claimed_at", columns.claimed_at.map(|at| to_ms(at).to_string()));
    optional("started_at", columns.started_at.map(|at| to_ms(at).to_string()));
    optional("finished_at", columns.finished_at.map(|at| to_ms(at).to_string()));
    optional("reason", columns.reason);
    optional(
        "result",
        columns
            .result
            .as_ref()
            .map(|value| json_text(value, run_id))
            .transpose()?,
    );
    optional("error", columns.error);
    Ok((set, delete))
}

/// The text of a bulk or simple string reply; `None` for nil.
pub(crate) fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// An integer reply, or a string holding one; `None` for nil.
pub(crate) fn integer(value: &Value, what: &str) -> Result<Option<i64>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::Int(n) => Ok(Some(*n)),
        other => {
            let bytes = text(other).ok_or_else(|| unexpected(what, other))?;
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("{what}: {:?} is not an integer", lossy(bytes))))
        }
    }
}

/// The server's `TIME` reply (seconds, microseconds) as epoch milliseconds.
pub(crate) fn time_ms(seconds: &Value, micros: &Value) -> Result<i64, StoreError> {
    let seconds = integer(seconds, "TIME seconds")?.ok_or_else(|| unexpected("TIME seconds", seconds))?;
    let micros = integer(micros, "TIME microseconds")?.ok_or_else(|| unexpected("TIME microseconds", micros))?;
    Ok(seconds.saturating_mul(1000).saturating_add(micros / 1000))
}

/// An owned UTF-8 string reply.
pub(crate) fn string(value: &Value, what: &str) -> Result<String, StoreError> {
    let bytes = text(value).ok_or_else(|| unexpected(what, value))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

/// The elements of an array reply.
pub(crate) fn array<'v>(value: &'v Value, what: &str) -> Result<&'v [Value], StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(what, other)),
    }
}

/// A reply of the wrong shape: a bug or a key that another program wrote.
pub(crate) fn unexpected(what: &str, value: &Value) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply for {what}: {value:?}"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes a run hash from its `HGETALL` reply (a flat field/value array, or a map under RESP3).
pub(crate) fn decode_run(value: &Value) -> Result<RunRecord, StoreError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    match value {
        Value::Map(pairs) => {
            for (name, value) in pairs {
                fields.push((string(name, "run field name")?, string(value, "run field")?));
            }
        }
        other => {
            let items = array(other, "a history row")?;
            for pair in items.chunks(2) {
                if let [name, value] = pair {
                    fields.push((string(name, "run field name")?, string(value, "run field")?));
                }
            }
        }
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
    };
    let run_id = get("run_id").ok_or_else(|| StoreError::Corrupt("a history row has no run_id field".to_owned()))?;
    let corrupt = |what: String| StoreError::Corrupt(format!("run {run_id}: {what}"));
    let required = |name: &str| get(name).ok_or_else(|| corrupt(format!("the {name} field is missing")));
    let number = |name: &str| -> Result<Option<i64>, StoreError> {
        get(name)
            .map(|text| {
                text.parse::<i64>()
                    .map_err(|_| corrupt(format!("{name} = {text:?} is not an integer")))
            })
            .transpose()
    };
    let instant = |name: &str| -> Result<Option<Timestamp>, StoreError> {
        number(name)?
            .map(|ms| from_ms(ms, &format!("run {run_id}: {name}")))
            .transpose()
    };
    let kind = required("kind")?;
    let status = required("status")?;
    let attempt = required("attempt")?;
    let fence = required("fence")?;
    let result = get("result")
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| corrupt(format!("stored result does not parse: {error}")))?;
    Ok(RunRecord {
        task_id: required("task_id")?,
        kind: RunKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        slot: instant("slot")?,
        slot_until: instant("slot_until")?,
        slot_count: get("slot_count")
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| corrupt(format!("slot_count = {text:?} is not a count")))
            })
            .transpose()?,
        attempt: attempt
            .parse()
            .map_err(|_| corrupt(format!("attempt {attempt:?} out of range")))?,
        fence: fence
            .parse()
            .map_err(|_| corrupt(format!("fence {fence:?} out of range")))?,
        worker: get("worker"),
        trigger_id: get("trigger_id"),
        claimed_at: instant("claimed_at")?,
        started_at: instant("started_at")?,
        finished_at: instant("finished_at")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        reason: get("reason"),
        result,
        error: get("error"),
        run_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use serde_json::json;

    fn flat(fields: &[(&'static str, String)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(name, value)| {
                    [
                        Value::BulkString(name.as_bytes().to_vec()),
                        Value::BulkString(value.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        )
    }

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
        assert!(from_ms(i64::MAX, "x").is_err());
        let time = time_ms(
            &Value::BulkString(b"1700000000".to_vec()),
            &Value::BulkString(b"123999".to_vec()),
        )
        .expect("TIME");
        assert_eq!(time, 1_700_000_000_123);
    }

    #[test]
    fn a_run_round_trips_through_hash_fields() {
        let at = Utc.timestamp_millis_opt(1_900_000_000_000).single().expect("valid");
        let run = RunRecord {
            run_id: "r1".to_owned(),
            task_id: "t".to_owned(),
            kind: RunKind::CatchUp,
            slot: Some(at),
            slot_until: Some(at + Duration::seconds(60)),
            slot_count: Some(61),
            attempt: 3,
            fence: u64::MAX,
            worker: Some("w".to_owned()),
            trigger_id: Some("tr".to_owned()),
            claimed_at: Some(at),
            started_at: Some(at + Duration::milliseconds(1)),
            finished_at: None,
            status: RunStatus::Running,
            reason: None,
            result: Some(json!({"a": [1, "b", null]})),
            error: Some("e".to_owned()),
        };
        let encoded = EncodedRun::new(run.clone()).expect("encode");
        assert_eq!(encoded.slot_key.as_deref(), Some("1900000000000:3"));
        assert_eq!(decode_run(&flat(&encoded.fields)).expect("decode"), run);

        let bare = RunRecord {
            slot: None,
            slot_until: None,
            slot_count: None,
            worker: None,
            trigger_id: None,
            claimed_at: None,
            started_at: None,
            result: None,
            error: None,
            ..run
        };
        let encoded = EncodedRun::new(bare.clone()).expect("encode");
        assert_eq!(encoded.slot_key, None);
        assert_eq!(decode_run(&flat(&encoded.fields)).expect("decode"), bare);
    }

    #[test]
    fn an_update_sets_or_deletes_every_mutable_column() {
        let update = RunUpdate {
            run_id: "r1".to_owned(),
            status: RunStatus::Failed,
            fence: 2,
            worker: None,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            reason: Some("why".to_owned()),
            result: None,
            error: None,
        };
        let encoded = EncodedUpdate::new(update).expect("encode");
        let mut all: Vec<&str> = encoded
            .set
            .iter()
            .map(|(name, _)| *name)
            .chain(encoded.delete.iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            [
                "claimed_at",
                "error",
                "fence",
                "finished_at",
                "reason",
                "result",
                "started_at",
                "status",
                "worker"
            ]
        );
    }

    #[test]
    fn corrupt_rows_are_named() {
        let row = flat(&[("run_id", "r9".to_owned()), ("kind", "weird".to_owned())]);
        match decode_run(&row) {
            Err(StoreError::Corrupt(message)) => assert!(message.contains("r9"), "{message}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
