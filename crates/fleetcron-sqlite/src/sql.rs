//! Every SQL statement the store runs, and the schema migrations as an ordered list.
//!
//! Instants are stored as epoch milliseconds (`INTEGER`). Batched writes are multi-row statements in a
//! few fixed chunk sizes ([`MultiRow`]); batched reads bind one JSON array of ids expanded with
//! `json_each`. Either way each statement has a handful of fixed texts, prepared once per connection,
//! and no batch hits SQLite's bound-parameter limit.

use std::sync::OnceLock;

/// One schema version: the statements that upgrade the previous version to it.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The version this migration produces (consecutive from 1).
    pub(crate) version: i64,
    /// What it does, for logs.
    pub(crate) description: &'static str,
    /// DDL statements, run in order inside the migration transaction.
    pub(crate) statements: &'static [&'static str],
}

/// The migrations, oldest first. Never edit a released migration: append a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "task state documents and run history",
        statements: &[
            "CREATE TABLE fleetcron_tasks (
            id           TEXT    PRIMARY KEY NOT NULL,
            state        TEXT    NOT NULL,
            enabled      INTEGER NOT NULL,
            attention_at INTEGER NULL,
            updated_at   INTEGER NOT NULL
        )",
            // Partial: an idle fleet has almost no task waiting for attention, so the poll reads a tiny index.
            "CREATE INDEX fleetcron_tasks_attention_at
            ON fleetcron_tasks (attention_at) WHERE attention_at IS NOT NULL",
            "CREATE TABLE fleetcron_runs (
            run_id      TEXT    PRIMARY KEY NOT NULL,
            task_id     TEXT    NOT NULL,
            kind        TEXT    NOT NULL,
            slot        INTEGER NULL,
            attempt     INTEGER NOT NULL,
            fence       INTEGER NOT NULL,
            worker      TEXT    NULL,
            trigger_id  TEXT    NULL,
            claimed_at  INTEGER NULL,
            started_at  INTEGER NULL,
            finished_at INTEGER NULL,
            status      TEXT    NOT NULL,
            reason      TEXT    NULL,
            result      TEXT    NULL,
            error       TEXT    NULL,
            UNIQUE (task_id, slot, attempt)
        )",
            "CREATE INDEX fleetcron_runs_task_run ON fleetcron_runs (task_id, run_id)",
        ],
    },
    Migration {
        version: 2,
        description: "range rows: one history row may account for a range of skipped or missed slots",
        statements: &[
            "ALTER TABLE fleetcron_runs ADD COLUMN slot_until INTEGER NULL",
            "ALTER TABLE fleetcron_runs ADD COLUMN slot_count INTEGER NULL",
        ],
    },
];

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = match MIGRATIONS.last() {
    Some(migration) => migration.version,
    None => 0,
};

/// Starts a write transaction holding SQLite's write lock from the start, so concurrent writers queue on
/// the busy timeout instead of failing a read-to-write lock upgrade.
pub(crate) const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// Ends a write transaction.
pub(crate) const COMMIT: &str = "COMMIT";

/// Abandons a write transaction.
pub(crate) const ROLLBACK: &str = "ROLLBACK";

/// Switches the database file to WAL mode (persistent; returns the resulting mode).
pub(crate) const JOURNAL_MODE_WAL: &str = "PRAGMA journal_mode = WAL";

/// Creates the version table (first statement of a migration transaction).
pub(crate) const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS fleetcron_schema (
    version    INTEGER PRIMARY KEY NOT NULL,
    applied_at INTEGER NOT NULL
)";

/// The current schema version (fails with "no such table" on a fresh file).
pub(crate) const SELECT_SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM fleetcron_schema";

/// Records an applied migration. `?1` version, `?2` epoch ms.
pub(crate) const INSERT_SCHEMA_VERSION: &str = "INSERT INTO fleetcron_schema (version, applied_at) VALUES (?1, ?2)";

/// States of the tasks whose ids are in the JSON array `?1`, one row each.
pub(crate) const SELECT_STATES_BY_IDS: &str = "SELECT id, state FROM fleetcron_tasks
    WHERE id IN (SELECT value FROM json_each(?1))";

/// The same as one row: a JSON array of the ids found, and a JSON array of their state documents (in
/// the same order; `NULL` when none is found). The documents are concatenated, not re-encoded.
pub(crate) const SELECT_PACKED_STATES_BY_IDS: &str =
    "SELECT json_group_array(id), '[' || group_concat(state, ',') || ']'
    FROM fleetcron_tasks
    WHERE id IN (SELECT value FROM json_each(?1))";

/// For claims: a JSON array of the ids of tasks already accounted for. `?1` is a JSON array of
/// `[id, floor]` pairs, `floor` the earliest wanted slot in epoch seconds rounded up; a task is accounted
/// for when its high-water mark, rounded down to the second, is at or after it (so never wrongly: a
/// mark that does not parse compares as NULL and keeps the task).
pub(crate) const SELECT_ACCOUNTED_FOR_CLAIMS: &str = "SELECT json_group_array(t.id)
    FROM json_each(?1) AS j
    JOIN fleetcron_tasks AS t ON t.id = json_extract(j.value, '$[0]')
    WHERE CAST(strftime('%s', json_extract(t.state, '$.high_water')) AS INTEGER) >= json_extract(j.value, '$[1]')";

/// Every task state, sorted by id.
pub(crate) const SELECT_ALL_STATES: &str = "SELECT id, state FROM fleetcron_tasks ORDER BY id";

/// The idle poll: ids of tasks wanting attention at or before `?1` (epoch ms), at most `?2`, by id.
/// `INDEXED BY`: left alone, the planner walks the primary key to avoid sorting and reads every task.
pub(crate) const SELECT_DUE_FOR_ATTENTION: &str = "SELECT id FROM fleetcron_tasks
    INDEXED BY fleetcron_tasks_attention_at
    WHERE attention_at <= ?1 ORDER BY id LIMIT ?2";

/// A multi-row statement: `head`, then `row` repeated N times (comma-separated), then `tail`. Batches are
/// written in chunks whose lengths come from [`chunk_lengths`], so each such statement has at most
/// [`CHUNK_SIZES`]`.len()` texts, each prepared once per connection.
#[derive(Debug)]
pub(crate) struct MultiRow {
    head: &'static str,
    row: &'static str,
    tail: &'static str,
    texts: OnceLock<Vec<String>>,
}

/// The chunk lengths of multi-row statements, largest first (each half the previous).
pub(crate) const CHUNK_SIZES: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

impl MultiRow {
    const fn new(head: &'static str, row: &'static str, tail: &'static str) -> Self {
        Self {
            head,
            row,
            tail,
            texts: OnceLock::new(),
        }
    }

    /// The statement text for `rows` rows, a member of [`CHUNK_SIZES`].
    pub(crate) fn text(&'static self, rows: usize) -> Option<&'static str> {
        let texts = self.texts.get_or_init(|| {
            CHUNK_SIZES
                .iter()
                .map(|&size| {
                    let rows = vec![self.row; size].join(", ");
                    format!("{}{rows}{}", self.head, self.tail)
                })
                .collect()
        });
        let index = CHUNK_SIZES.iter().position(|&size| size == rows)?;
        texts.get(index).map(String::as_str)
    }
}

/// Splits `total` rows into chunk lengths from [`CHUNK_SIZES`]: full chunks of the largest size, then
/// the binary decomposition of the rest.
pub(crate) fn chunk_lengths(total: usize) -> impl Iterator<Item = usize> {
    let largest = CHUNK_SIZES[0];
    let full = std::iter::repeat_n(largest, total / largest);
    let rest = total % largest;
    full.chain(
        CHUNK_SIZES
            .into_iter()
            .filter(move |&size| size < largest && rest & size != 0),
    )
}

/// Inserts or replaces task states: rows of `(id, state JSON, enabled, attention_at, updated_at)`.
pub(crate) static UPSERT_STATES: MultiRow = MultiRow::new(
    "INSERT INTO fleetcron_tasks (id, state, enabled, attention_at, updated_at) VALUES ",
    "(?, ?, ?, ?, ?)",
    " ON CONFLICT (id) DO UPDATE SET
        state = excluded.state,
        enabled = excluded.enabled,
        attention_at = excluded.attention_at,
        updated_at = excluded.updated_at",
);

/// Inserts history rows (columns in [`RunRecord`](fleetcron_core::RunRecord) order, `result` as JSON
/// text). Fails as a whole on a unique-key violation.
pub(crate) static INSERT_RUNS: MultiRow = MultiRow::new(
    "INSERT INTO fleetcron_runs
        (run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence, worker, trigger_id,
         claimed_at, started_at, finished_at, status, reason, result, error)
     VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "",
);

/// After [`INSERT_RUNS`] failed on a unique key: the first stored row that collides with an element
/// of the JSON array `?1` of `{run_id, task_id, slot, attempt}`, by `(task_id, slot, attempt)` or by
/// run id.
pub(crate) const SELECT_COLLIDING_RUN: &str = "SELECT r.run_id, r.task_id, r.slot, r.attempt,
           json_extract(j.value, '$.run_id') AS new_run_id
    FROM json_each(?1) AS j
    JOIN fleetcron_runs AS r
      ON r.run_id = json_extract(j.value, '$.run_id')
      OR (r.task_id = json_extract(j.value, '$.task_id')
          AND r.slot = json_extract(j.value, '$.slot')
          AND r.attempt = json_extract(j.value, '$.attempt'))
    ORDER BY j.key LIMIT 1";

/// Changes existing history rows: rows of `(task_id, run_id, status, fence, worker, claimed_at,
/// started_at, finished_at, reason, result JSON, error)`, each run id at most once per statement. Every
/// mutable column is set; a row of another task is left alone.
pub(crate) static UPDATE_RUNS: MultiRow = MultiRow::new(
    "WITH u (task_id, run_id, status, fence, worker, claimed_at, started_at, finished_at, reason, result, error)
     AS (VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ")
    UPDATE fleetcron_runs SET
        status = u.status,
        fence = u.fence,
        worker = u.worker,
        claimed_at = u.claimed_at,
        started_at = u.started_at,
        finished_at = u.finished_at,
        reason = u.reason,
        result = u.result,
        error = u.error
    FROM u
    WHERE fleetcron_runs.run_id = u.run_id AND fleetcron_runs.task_id = u.task_id",
);

/// A task's history, newest first: `?1` task id, `?2` exclusive upper run id or `NULL`, `?3` limit.
pub(crate) const SELECT_RUNS: &str = "SELECT run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence,
           worker, trigger_id,
           claimed_at, started_at, finished_at, status, reason, result, error
    FROM fleetcron_runs
    WHERE task_id = ?1 AND (?2 IS NULL OR run_id < ?2)
    ORDER BY run_id DESC LIMIT ?3";

/// Deletes history beyond retention, never an unfinished (`running` or `pending`) row. `?1` cutoff
/// (epoch ms; rows that finished before it go) or `NULL`; `?2` rows to keep per task (newest by run id,
/// counting only finished rows kept for age) or `NULL`.
pub(crate) const PRUNE_RUNS: &str = "DELETE FROM fleetcron_runs
    WHERE status NOT IN ('running', 'pending')
      AND ((?1 IS NOT NULL AND finished_at IS NOT NULL AND finished_at < ?1)
           OR (?2 IS NOT NULL AND run_id IN (
                SELECT run_id FROM (
                    SELECT run_id,
                           ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY run_id DESC) AS rank
                    FROM fleetcron_runs
                    WHERE status NOT IN ('running', 'pending')
                      AND NOT (?1 IS NOT NULL AND finished_at IS NOT NULL AND finished_at < ?1))
                WHERE rank > ?2)))";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_skip_reads_the_mark_by_the_documents_field_name() {
        assert!(SELECT_ACCOUNTED_FOR_CLAIMS.contains(&format!("'$.{}'", fleetcron_core::HIGH_WATER_FIELD)));
    }

    #[test]
    fn migrations_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.description);
            assert!(!migration.statements.is_empty());
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn chunks_cover_every_row_once() {
        for total in [0, 1, 2, 3, 7, 64, 127, 128, 129, 255, 1000, 5000] {
            let lengths: Vec<usize> = chunk_lengths(total).collect();
            assert_eq!(lengths.iter().sum::<usize>(), total, "{total}");
            assert!(lengths.iter().all(|len| CHUNK_SIZES.contains(len)), "{lengths:?}");
            assert!(
                lengths.len() <= total / CHUNK_SIZES[0] + CHUNK_SIZES.len(),
                "{lengths:?}"
            );
        }
    }

    #[test]
    fn multi_row_texts_repeat_the_row() {
        assert_eq!(
            UPDATE_RUNS
                .text(2)
                .map(|text| text.matches("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").count()),
            Some(2)
        );
        assert_eq!(UPSERT_STATES.text(128).map(|text| text.matches('?').count()), Some(640));
        assert!(INSERT_RUNS.text(3).is_none());
        // SQLite's default limit on bound parameters.
        assert!(CHUNK_SIZES[0] * 15 <= 32_766);
    }
}
