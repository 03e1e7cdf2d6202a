//! Every SQL statement the store runs, with the table prefix filled in, and the schema migrations as an
//! ordered list.
//!
//! The SQL is the common ground of MySQL 8 and MariaDB ≥ 10.6: no `RETURNING`, no CTE in an `UPDATE`, no
//! row aliases in `INSERT ... ON DUPLICATE KEY UPDATE` (the `VALUES(col)` form, deprecated but kept by
//! MySQL 8, is what both accept), no `CREATE INDEX IF NOT EXISTS` (indexes are declared inside the
//! idempotent `CREATE TABLE IF NOT EXISTS`).
//!
//! Statements over a variable number of rows or ids are multi-row texts in a few fixed chunk sizes
//! ([`MultiRow`]), so each has at most [`CHUNK_SIZES`]`.len()` texts, each prepared once per connection,
//! and the server's prepared-statement budget (`max_prepared_stmt_count`) is not eaten by one text per
//! batch size.

use fleetcron_core::HIGH_WATER_FIELD;

/// One schema version: the statements that upgrade the previous version to it.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The version this migration produces (consecutive from 1).
    pub(crate) version: i64,
    /// What it does, for logs and the schema table.
    pub(crate) description: &'static str,
    /// DDL statements, run in order. MySQL commits DDL implicitly, so each must be idempotent: a
    /// migration interrupted halfway is simply run again.
    pub(crate) statements: Vec<String>,
}

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Table options of every table: InnoDB (row locks, transactions, crash safety), utf8mb4 text, binary
/// collation (ids compare and sort byte by byte, as Rust strings do).
const TABLE_OPTIONS: &str = "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin";

/// The chunk lengths of multi-row statements, largest first. A batch is cut greedily: as many chunks of
/// each size as fit, so `n` rows take at most `n / 256 + 17` statements.
pub(crate) const CHUNK_SIZES: [usize; 4] = [256, 32, 4, 1];

/// Splits `total` rows into chunk lengths from [`CHUNK_SIZES`], largest first.
pub(crate) fn chunk_lengths(total: usize) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut rest = total;
    for size in CHUNK_SIZES {
        while rest >= size {
            lengths.push(size);
            rest -= size;
        }
    }
    lengths
}

/// A multi-row statement: `head`, then `first` and `row` (repeated) joined by `separator`, then `tail`,
/// one text per member of [`CHUNK_SIZES`].
#[derive(Debug)]
pub(crate) struct MultiRow {
    texts: Vec<String>,
}

impl MultiRow {
    fn new(head: &str, first: &str, row: &str, separator: &str, tail: &str) -> Self {
        let texts = CHUNK_SIZES
            .iter()
            .map(|&size| {
                let rows: Vec<&str> = std::iter::once(first)
                    .chain(std::iter::repeat_n(row, size - 1))
                    .collect();
                format!("{head}{}{tail}", rows.join(separator))
            })
            .collect();
        Self { texts }
    }

    /// Rows of `row`, comma-separated.
    fn values(head: &str, row: &str, tail: &str) -> Self {
        Self::new(head, row, row, ", ", tail)
    }

    /// The statement text for `rows` rows, a member of [`CHUNK_SIZES`].
    pub(crate) fn text(&self, rows: usize) -> Option<&str> {
        let index = CHUNK_SIZES.iter().position(|&size| size == rows)?;
        self.texts.get(index).map(String::as_str)
    }
}

/// Every statement of one store, for one table prefix.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The migrations, oldest first. Never edit a released migration: append a new one.
    pub(crate) migrations: Vec<Migration>,
    /// Creates the version table (idempotent; run under the migration lock).
    pub(crate) create_schema_table: String,
    /// The current schema version (fails with "no such table" before the first migration).
    pub(crate) select_schema_version: String,
    /// Records an applied migration: version, description.
    pub(crate) insert_schema_version: String,
    /// The server's clock: `UTC_TIMESTAMP(3)` does not depend on the session's time zone.
    pub(crate) select_now: String,
    /// Takes the named lock of this database's migrations: name, timeout in seconds. 1 when taken.
    pub(crate) get_lock: String,
    /// Releases it.
    pub(crate) release_lock: String,
    /// Locks the rows of the ids (sorted) and returns their states: the first statement of a mutation.
    pub(crate) lock_states: MultiRow,
    /// For claims: locks the rows of the ids (sorted) like [`Self::lock_states`] but returns only their
    /// high-water marks, so a worker that lost an instant transfers and decodes no document.
    pub(crate) lock_marks: MultiRow,
    /// The states of rows this transaction already holds locked (after [`Self::lock_marks`]).
    pub(crate) read_locked_states: MultiRow,
    /// The store's now and the states of the ids, by id (one row with a null id when none exists).
    /// Parameters: offset µs, lower bound, then the ids.
    pub(crate) load_some: MultiRow,
    /// The store's now and every state, by id. Parameters: offset µs, lower bound.
    pub(crate) load_all: String,
    /// The idle poll: the store's now and the ids wanting attention by then, by id, at most `limit`.
    /// Parameters: offset µs, lower bound, limit.
    pub(crate) due_for_attention: String,
    /// Inserts task rows that did not exist when the mutation read them. A duplicate key means another
    /// mutation created the row meanwhile.
    pub(crate) insert_states: MultiRow,
    /// Overwrites task rows the mutation holds locked.
    pub(crate) upsert_states: MultiRow,
    /// Inserts history rows; fails as a whole on a unique key.
    pub(crate) insert_runs: MultiRow,
    /// Locks the history rows a mutation updates and returns their identity columns.
    pub(crate) lock_runs: MultiRow,
    /// Overwrites the mutable columns of locked, existing history rows (identity columns are written
    /// back unchanged).
    pub(crate) upsert_runs: MultiRow,
    /// After [`Sql::insert_runs`] failed: stored rows with one of these run ids.
    pub(crate) runs_by_ids: MultiRow,
    /// After [`Sql::insert_runs`] failed: stored rows with one of these `(task_id, slot, attempt)`.
    pub(crate) runs_by_slot_keys: MultiRow,
    /// A task's newest history rows: task id, limit.
    pub(crate) runs_first_page: String,
    /// A task's history rows before a run id, newest first: task id, run id, limit.
    pub(crate) runs_before: String,
    /// Deletes finished rows that ended before a cutoff.
    pub(crate) prune_by_age: String,
    /// Deletes finished rows beyond the newest N per task.
    pub(crate) prune_by_count: String,
}

/// The columns of a history row, in [`RunRecord`](fleetcron_core::RunRecord) order.
const RUN_COLUMNS: &str = "run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence, worker, trigger_id, \
     claimed_at, started_at, finished_at, status, reason, result, error";

/// The store's now: the server's UTC clock plus the configured offset (µs, the first parameter), never
/// earlier than the store's last answer (the second parameter).
const NOW: &str = "CAST(GREATEST(UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, ?) AS DATETIME(3))";

impl Sql {
    /// The statements for tables named `<prefix>schema`, `<prefix>tasks` and `<prefix>runs`. The prefix
    /// must be validated (`[a-z_][a-z0-9_]{0,30}`): it is spliced into the text.
    pub(crate) fn new(prefix: &str) -> Self {
        let tasks = format!("{prefix}tasks");
        let runs = format!("{prefix}runs");
        let schema = format!("{prefix}schema");
        let migrations = vec![
            Migration {
                version: 1,
                description: "task state documents and run history",
                statements: vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {tasks} (
                        id           VARCHAR(128) NOT NULL,
                        state        LONGTEXT     NOT NULL,
                        enabled      BOOLEAN      NOT NULL,
                        attention_at DATETIME(3)  NULL,
                        updated_at   DATETIME(3)  NOT NULL,
                        PRIMARY KEY (id),
                        KEY attention_at (attention_at)
                    ) {TABLE_OPTIONS}"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {runs} (
                        run_id      VARCHAR(64)     NOT NULL,
                        task_id     VARCHAR(128)    NOT NULL,
                        kind        VARCHAR(16)     NOT NULL,
                        slot        DATETIME(3)     NULL,
                        attempt     INT UNSIGNED    NOT NULL,
                        fence       BIGINT UNSIGNED NOT NULL,
                        worker      VARCHAR(255)    NULL,
                        trigger_id  VARCHAR(255)    NULL,
                        claimed_at  DATETIME(3)     NULL,
                        started_at  DATETIME(3)     NULL,
                        finished_at DATETIME(3)     NULL,
                        status      VARCHAR(16)     NOT NULL,
                        reason      MEDIUMTEXT      NULL,
                        result      LONGTEXT        NULL,
                        error       MEDIUMTEXT      NULL,
                        PRIMARY KEY (run_id),
                        UNIQUE KEY slot_attempt (task_id, slot, attempt),
                        KEY task_run (task_id, run_id)
                    ) {TABLE_OPTIONS}"
                    ),
                ],
            },
            Migration {
                version: 2,
                description: "range rows: one history row may account for a range of skipped or missed slots",
                // One statement: MySQL's DDL is not transactional, and one ALTER applies whole or not at all.
                statements: vec![format!(
                    "ALTER TABLE {runs} ADD COLUMN slot_until DATETIME(3) NULL AFTER slot,
                                   ADD COLUMN slot_count BIGINT UNSIGNED NULL AFTER slot_until"
                )],
            },
        ];

        let id_list = |head: &str, tail: &str| MultiRow::values(head, "?", tail);
        let state_row = "(?, ?, ?, ?, ?)";
        let state_head = format!("INSERT INTO {tasks} (id, state, enabled, attention_at, updated_at) VALUES ");
        let run_row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let run_head = format!("INSERT INTO {runs} ({RUN_COLUMNS}) VALUES ");
        Self {
            migrations,
            create_schema_table: format!(
                "CREATE TABLE IF NOT EXISTS {schema} (
                    version     INT          NOT NULL,
                    description VARCHAR(255) NOT NULL,
                    applied_at  DATETIME(3)  NOT NULL,
                    PRIMARY KEY (version)
                ) {TABLE_OPTIONS}"
            ),
            select_schema_version: format!("SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM {schema}"),
            insert_schema_version: format!(
                "INSERT INTO {schema} (version, description, applied_at) VALUES (?, ?, UTC_TIMESTAMP(3))"
            ),
            select_now: "SELECT UTC_TIMESTAMP(3)".to_owned(),
            get_lock: "SELECT CAST(GET_LOCK(?, ?) AS SIGNED)".to_owned(),
            release_lock: "SELECT CAST(RELEASE_LOCK(?) AS SIGNED)".to_owned(),
            // FORCE INDEX: the ids are looked up (and locked) through the primary key in ascending order,
            // never by a scan that would lock or wait for other tasks' rows.
            lock_states: id_list(
                &format!("SELECT id, state FROM {tasks} FORCE INDEX (PRIMARY) WHERE id IN ("),
                ") ORDER BY id FOR UPDATE",
            ),
            lock_marks: id_list(
                &format!(
                    "SELECT id, JSON_UNQUOTE(JSON_EXTRACT(state, '$.{HIGH_WATER_FIELD}')) AS high_water \
                     FROM {tasks} FORCE INDEX (PRIMARY) WHERE id IN ("
                ),
                ") ORDER BY id FOR UPDATE",
            ),
            read_locked_states: id_list(
                &format!("SELECT id, state FROM {tasks} FORCE INDEX (PRIMARY) WHERE id IN ("),
                ")",
            ),
            load_some: id_list(
                &format!(
                    "SELECT c.now, t.id, t.state FROM (SELECT {NOW} AS now) AS c
                     LEFT JOIN {tasks} AS t FORCE INDEX (PRIMARY) ON t.id IN ("
                ),
                ") ORDER BY t.id",
            ),
            load_all: format!(
                "SELECT c.now, t.id, t.state FROM (SELECT {NOW} AS now) AS c
                 LEFT JOIN {tasks} AS t ON TRUE ORDER BY t.id"
            ),
            // FORCE INDEX: an idle fleet has no task waiting, so the poll reads nothing but the index.
            due_for_attention: format!(
                "SELECT c.now, t.id FROM (SELECT {NOW} AS now) AS c
                 LEFT JOIN {tasks} AS t FORCE INDEX (attention_at) ON t.attention_at <= c.now
                 ORDER BY t.id LIMIT ?"
            ),
            insert_states: MultiRow::values(&state_head, state_row, ""),
            upsert_states: MultiRow::values(
                &state_head,
                state_row,
                " ON DUPLICATE KEY UPDATE state = VALUES(state), enabled = VALUES(enabled),
                   attention_at = VALUES(attention_at), updated_at = VALUES(updated_at)",
            ),
            insert_runs: MultiRow::values(&run_head, run_row, ""),
            lock_runs: id_list(
                &format!(
                    "SELECT run_id, task_id, kind, slot, slot_until, slot_count, attempt, trigger_id
                     FROM {runs} FORCE INDEX (PRIMARY) WHERE run_id IN ("
                ),
                ") ORDER BY run_id FOR UPDATE",
            ),
            upsert_runs: MultiRow::values(
                &run_head,
                run_row,
                " ON DUPLICATE KEY UPDATE status = VALUES(status), fence = VALUES(fence),
                   worker = VALUES(worker), claimed_at = VALUES(claimed_at), started_at = VALUES(started_at),
                   finished_at = VALUES(finished_at), reason = VALUES(reason), result = VALUES(result),
                   error = VALUES(error)",
            ),
            runs_by_ids: id_list(
                &format!("SELECT run_id, task_id, slot, attempt FROM {runs} WHERE run_id IN ("),
                ")",
            ),
            runs_by_slot_keys: MultiRow::values(
                &format!("SELECT run_id, task_id, slot, attempt FROM {runs} WHERE (task_id, slot, attempt) IN ("),
                "(?, ?, ?)",
                ")",
            ),
            runs_first_page: format!("SELECT {RUN_COLUMNS} FROM {runs} WHERE task_id = ? ORDER BY run_id DESC LIMIT ?"),
            runs_before: format!(
                "SELECT {RUN_COLUMNS} FROM {runs} WHERE task_id = ? AND run_id < ? ORDER BY run_id DESC LIMIT ?"
            ),
            prune_by_age: format!(
                "DELETE FROM {runs}
                 WHERE status NOT IN ('running', 'pending') AND finished_at IS NOT NULL AND finished_at < ?"
            ),
            // The ranked rows are a derived table with a window function, which both servers materialise
            // before deleting (so the table may be read and deleted from in one statement).
            prune_by_count: format!(
                "DELETE r FROM {runs} AS r
                 JOIN (SELECT run_id FROM (
                         SELECT run_id,
                                ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY run_id DESC) AS recency
                         FROM {runs}
                         WHERE status NOT IN ('running', 'pending')) AS ranked
                       WHERE recency > ?) AS doomed
                   ON doomed.run_id = r.run_id"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_consecutive_from_one() {
        let sql = Sql::new("fleetcron_");
        for (index, migration) in sql.migrations.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.description);
            assert!(!migration.statements.is_empty());
            for statement in &migration.statements {
                // Idempotent statements only (an ALTER is one statement whose duplicate-column error
                // means it took effect).
                assert!(
                    statement.starts_with("CREATE TABLE IF NOT EXISTS") || statement.starts_with("ALTER TABLE"),
                    "{statement}"
                );
            }
        }
        assert_eq!(sql.migrations.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn chunks_cover_every_row_once() {
        for total in [0, 1, 2, 3, 7, 31, 32, 33, 255, 256, 257, 1000, 5000] {
            let lengths = chunk_lengths(total);
            assert_eq!(lengths.iter().sum::<usize>(), total, "{total}");
            assert!(lengths.iter().all(|len| CHUNK_SIZES.contains(len)), "{lengths:?}");
            assert!(lengths.len() <= total / 256 + 17, "{lengths:?}");
            assert!(lengths.windows(2).all(|pair| pair[0] >= pair[1]), "{lengths:?}");
        }
    }

    #[test]
    fn multi_row_texts_repeat_the_row() {
        let sql = Sql::new("p_");
        assert_eq!(
            sql.insert_runs.text(4).map(|text| text
                .matches("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .count()),
            Some(4)
        );
        assert_eq!(
            sql.upsert_states.text(256).map(|text| text.matches('?').count()),
            Some(1280)
        );
        assert_eq!(sql.lock_states.text(32).map(|text| text.matches('?').count()), Some(32));
        assert!(sql.insert_runs.text(3).is_none());
        assert!(sql.lock_states.text(1).is_some_and(|text| text.contains("p_tasks")));
        // The server's limit on bound parameters of one statement.
        assert!(CHUNK_SIZES[0] * 15 <= 65_535);
    }
}
