//! Every SQL statement the store runs, and the schema migrations as an ordered list.
//!
//! Statements name their tables with the store's schema (`"schema".fleetcron_tasks`), so each store
//! renders its texts once, at connection ([`Statements::new`]); sqlx prepares each text once per
//! connection. Batches bind one array per column and expand them with `unnest`, so a batch of any size
//! is one statement with a fixed text.
//!
//! The store's clock is the server's: [`CLOCK`] reads `clock_timestamp()` (the time when the statement
//! runs, not when the transaction began), adds the store's `clock_offset` (`$1`, microseconds),
//! truncates to whole milliseconds and never goes below the floor `$2` (the store's previous answer).

use fleetcron_core::HIGH_WATER_FIELD;

/// One schema version: the statements that upgrade the previous version to it. `{schema}` in a
/// statement stands for the quoted schema name.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The version this migration produces (consecutive from 1).
    pub(crate) version: i32,
    /// What it does, for logs and the version table.
    pub(crate) description: &'static str,
    /// DDL statements, run in order inside the migration transaction.
    pub(crate) statements: &'static [&'static str],
}

/// The migrations, oldest first. Never edit a released migration: append a new one.
///
/// Identifier columns use the `"C"` collation: ids sort by their bytes, as in every other store, and
/// the history's `run_id` order (UUIDv7: creation order) does not depend on the database's locale.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "task state documents and run history",
        statements: &[
            "CREATE TABLE {schema}.fleetcron_tasks (
            id           text COLLATE \"C\" PRIMARY KEY,
            state        jsonb       NOT NULL,
            enabled      boolean     NOT NULL,
            attention_at timestamptz NULL,
            updated_at   timestamptz NOT NULL
        )",
            // Partial: an idle fleet has almost no task waiting for attention, so the poll reads a tiny index.
            "CREATE INDEX fleetcron_tasks_attention_at
            ON {schema}.fleetcron_tasks (attention_at) WHERE attention_at IS NOT NULL",
            "CREATE TABLE {schema}.fleetcron_runs (
            run_id      text COLLATE \"C\" PRIMARY KEY,
            task_id     text COLLATE \"C\" NOT NULL,
            kind        text        NOT NULL,
            slot        timestamptz NULL,
            attempt     integer     NOT NULL,
            fence       bigint      NOT NULL,
            worker      text        NULL,
            trigger_id  text        NULL,
            claimed_at  timestamptz NULL,
            started_at  timestamptz NULL,
            finished_at timestamptz NULL,
            status      text        NOT NULL,
            reason      text        NULL,
            result      jsonb       NULL,
            error       text        NULL,
            CONSTRAINT fleetcron_runs_slot_key UNIQUE (task_id, slot, attempt)
        )",
            "CREATE INDEX fleetcron_runs_task_run ON {schema}.fleetcron_runs (task_id, run_id)",
        ],
    },
    Migration {
        version: 2,
        description: "range rows: one history row may account for a range of skipped or missed slots",
        statements: &[
            "ALTER TABLE {schema}.fleetcron_runs ADD COLUMN IF NOT EXISTS slot_until timestamptz NULL",
            "ALTER TABLE {schema}.fleetcron_runs ADD COLUMN IF NOT EXISTS slot_count bigint NULL",
        ],
    },
];

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: i32 = match MIGRATIONS.last() {
    Some(migration) => migration.version,
    None => 0,
};

/// The name of the unique key on `(task_id, slot, attempt)`.
pub(crate) const SLOT_KEY: &str = "fleetcron_runs_slot_key";

/// The store's clock as an SQL expression: `$1` offset in microseconds, `$2` floor (or `NULL`).
pub(crate) const CLOCK: &str =
    "GREATEST(date_trunc('milliseconds', clock_timestamp() + $1::int8 * interval '1 microsecond'), \
     $2::timestamptz)";

/// Whether a schema exists. `$1` schema name.
pub(crate) const SCHEMA_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)";

/// Takes the migration lock (a session-level advisory lock in the single-`bigint` key space, which
/// never overlaps the two-`int4` space of the task locks). `$1` the schema's migration key.
pub(crate) const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock($1::int8)";

/// Releases the migration lock.
pub(crate) const MIGRATION_UNLOCK: &str = "SELECT pg_advisory_unlock($1::int8)";

/// Statement texts rendered for one schema.
#[derive(Debug)]
pub(crate) struct Statements {
    /// The quoted schema name, for DDL.
    pub(crate) schema: String,
    /// `CREATE SCHEMA` (run only when the schema is missing).
    pub(crate) create_schema: String,
    /// Creates the version table.
    pub(crate) create_version_table: String,
    /// The current schema version (fails with "undefined table" before the first migration).
    pub(crate) select_version: String,
    /// Records an applied migration. `$1` version, `$2` description.
    pub(crate) insert_version: String,
    /// The store's now. `$1` offset (µs), `$2` floor.
    pub(crate) select_now: String,
    /// The store's now and the states of the tasks in `$3` (two arrays in one row, `NULL` when none).
    pub(crate) select_states_by_ids: String,
    /// [`Self::select_states_by_ids`] for claims, with `$4` the floor slot of each id in `$3`: the ids and
    /// states of tasks whose high-water mark is before their floor, then the ids of those at or after it
    /// (already accounted for: neither sent nor decoded).
    pub(crate) select_states_for_claims: String,
    /// The store's now and every state, by id.
    pub(crate) select_all_states: String,
    /// The idle poll: now, and the ids of tasks whose `attention_at` is at or before it, by id, at most
    /// `$3`. The due rows come from the partial `attention_at` index (a materialised CTE, so the planner
    /// cannot prefer walking the primary key for the `ORDER BY id`).
    pub(crate) select_due: String,
    /// Inserts or replaces task states: arrays `$1` ids, `$2` state JSON text, `$3` enabled, `$4`
    /// attention_at; `$5` updated_at.
    pub(crate) upsert_states: String,
    /// Replaces existing task states (the same parameters as [`Self::upsert_states`]); cheaper than the
    /// upsert, so the states of tasks the mutation found stored go this way.
    pub(crate) update_states: String,
    /// Inserts history rows: one array per column in [`RunRecord`](fleetcron_core::RunRecord) order.
    pub(crate) insert_runs: String,
    /// After an insert was refused by a unique key (and rolled back): the first stored row colliding
    /// with an element of the arrays `$1` run ids, `$2` task ids, `$3` slots, `$4` attempts.
    pub(crate) select_colliding_run: String,
    /// Changes existing history rows (arrays, each run id at most once): a row of another task is left
    /// alone.
    pub(crate) update_runs: String,
    /// A task's newest history rows: `$1` task id, `$2` limit.
    pub(crate) select_runs: String,
    /// A page of a task's history: `$1` task id, `$2` exclusive upper run id, `$3` limit.
    pub(crate) select_runs_before: String,
    /// Deletes history beyond retention, never an unfinished (`running` or `pending`) row. `$1`
    /// cutoff (rows that finished before it go) or `NULL`; `$2` finished rows to keep per task
    /// (newest by run id, counting only rows kept for age) or `NULL`.
    pub(crate) prune_runs: String,
    /// `NOTIFY` of a task id: `$1` channel, `$2` payload.
    pub(crate) notify: &'static str,
}

impl Statements {
    /// The statements of the (validated, lower-case) schema `schema`.
    pub(crate) fn new(schema: &str) -> Self {
        let q = format!("\"{schema}\"");
        let tasks = format!("{q}.fleetcron_tasks");
        let runs = format!("{q}.fleetcron_runs");
        let versions = format!("{q}.fleetcron_schema");
        let run_columns = "run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence, worker, trigger_id, \
                           claimed_at, started_at, finished_at, status, reason, result, error";
        let select_run_columns = "run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence, worker, \
                                  trigger_id, claimed_at, started_at, finished_at, status, reason, \
                                  result::text AS result, error";
        Self {
            create_schema: format!("CREATE SCHEMA IF NOT EXISTS {q}"),
            create_version_table: format!(
                "CREATE TABLE IF NOT EXISTS {versions} (
                    version     integer     PRIMARY KEY,
                    description text        NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
                )"
            ),
            select_version: format!("SELECT COALESCE(MAX(version), 0) FROM {versions}"),
            insert_version: format!("INSERT INTO {versions} (version, description) VALUES ($1, $2)"),
            select_now: format!("SELECT {CLOCK}"),
            select_states_by_ids: format!(
                "SELECT {CLOCK}, array_agg(id), array_agg(state::text) FROM {tasks} WHERE id = ANY($3::text[])"
            ),
            select_states_for_claims: format!(
                "SELECT {CLOCK},
                    array_agg(t.id) FILTER (WHERE NOT a.done),
                    array_agg(t.state::text) FILTER (WHERE NOT a.done),
                    array_agg(t.id) FILTER (WHERE a.done)
                FROM {tasks} AS t
                JOIN unnest($3::text[], $4::timestamptz[]) AS u (id, floor) ON t.id = u.id
                CROSS JOIN LATERAL (
                    SELECT COALESCE((t.state ->> '{HIGH_WATER_FIELD}')::timestamptz >= u.floor, false) AS done
                ) AS a"
            ),
            select_all_states: format!(
                "SELECT {CLOCK}, array_agg(id ORDER BY id), array_agg(state::text ORDER BY id) FROM {tasks}"
            ),
            select_due: format!(
                "WITH clock AS MATERIALIZED (SELECT {CLOCK} AS now),
                due AS MATERIALIZED (
                    SELECT t.id FROM {tasks} AS t, clock WHERE t.attention_at <= clock.now
                )
                SELECT clock.now, ARRAY(SELECT id FROM due ORDER BY id LIMIT $3::int8) FROM clock"
            ),
            upsert_states: format!(
                "INSERT INTO {tasks} (id, state, enabled, attention_at, updated_at)
                SELECT u.id, u.state::jsonb, u.enabled, u.attention_at, $5::timestamptz
                FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[]) AS u (id, state, enabled, attention_at)
                ON CONFLICT (id) DO UPDATE SET
                    state = excluded.state,
                    enabled = excluded.enabled,
                    attention_at = excluded.attention_at,
                    updated_at = excluded.updated_at"
            ),
            update_states: format!(
                "UPDATE {tasks} AS t SET
                    state = u.state::jsonb,
                    enabled = u.enabled,
                    attention_at = u.attention_at,
                    updated_at = $5::timestamptz
                FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[]) AS u (id, state, enabled, attention_at)
                WHERE t.id = u.id"
            ),
            insert_runs: format!(
                "INSERT INTO {runs} ({run_columns})
                SELECT run_id, task_id, kind, slot, slot_until, slot_count, attempt, fence, worker, trigger_id,
                       claimed_at, started_at, finished_at, status, reason, result::jsonb, error
                FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int8[],
                            $7::int4[], $8::int8[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
                            $13::timestamptz[], $14::text[], $15::text[], $16::text[], $17::text[])
                     AS u ({run_columns})"
            ),
            select_colliding_run: format!(
                "SELECT r.run_id, r.task_id, r.slot, r.attempt, u.run_id AS new_run_id
                FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[]) WITH ORDINALITY
                     AS u (run_id, task_id, slot, attempt, n)
                JOIN {runs} AS r
                  ON r.run_id = u.run_id
                  OR (r.task_id = u.task_id AND r.slot = u.slot AND r.attempt = u.attempt)
                ORDER BY u.n LIMIT 1"
            ),
            update_runs: format!(
                "UPDATE {runs} AS r SET
                    status = u.status,
                    fence = u.fence,
                    worker = u.worker,
                    claimed_at = u.claimed_at,
                    started_at = u.started_at,
                    finished_at = u.finished_at,
                    reason = u.reason,
                    result = u.result::jsonb,
                    error = u.error
                FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::timestamptz[],
                            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[])
                     AS u (task_id, run_id, status, fence, worker, claimed_at, started_at, finished_at, reason,
                           result, error)
                WHERE r.run_id = u.run_id AND r.task_id = u.task_id"
            ),
            select_runs: format!(
                "SELECT {select_run_columns} FROM {runs}
                WHERE task_id = $1 ORDER BY run_id DESC LIMIT $2"
            ),
            select_runs_before: format!(
                "SELECT {select_run_columns} FROM {runs}
                WHERE task_id = $1 AND run_id < $2 ORDER BY run_id DESC LIMIT $3"
            ),
            prune_runs: format!(
                "WITH finished AS (
                    SELECT run_id, task_id, COALESCE(finished_at < $1::timestamptz, false) AS too_old
                    FROM {runs}
                    WHERE status NOT IN ('running', 'pending')
                ), doomed AS (
                    SELECT run_id FROM finished WHERE too_old
                    UNION ALL
                    SELECT run_id FROM (
                        SELECT run_id, row_number() OVER (PARTITION BY task_id ORDER BY run_id DESC) AS rank
                        FROM finished WHERE NOT too_old
                    ) AS ranked
                    WHERE rank > $2::int8
                )
                DELETE FROM {runs} AS r USING doomed
                WHERE r.run_id = doomed.run_id AND r.status NOT IN ('running', 'pending')"
            ),
            notify: "SELECT pg_notify($1, $2)",
            schema: q,
        }
    }

    /// A migration statement for this schema.
    pub(crate) fn render(&self, statement: &str) -> String {
        statement.replace("{schema}", &self.schema)
    }

    /// Starts a `READ COMMITTED` transaction (whatever the server's default: each later statement must
    /// see what committed before its locks were granted) and takes the task locks of `keys` (sorted,
    /// distinct) in that order, in one round trip. The keys are integers, so they are written into the text (a simple-protocol query
    /// cannot bind parameters).
    pub(crate) fn begin_and_lock(schema_key: i32, keys: &[i32]) -> String {
        let mut list = String::with_capacity(keys.len() * 12);
        for (index, key) in keys.iter().enumerate() {
            if index > 0 {
                list.push(',');
            }
            list.push_str(&key.to_string());
        }
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; \
             SELECT pg_advisory_xact_lock({schema_key}, k) FROM unnest('{{{list}}}'::int4[]) AS k"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                i64::from(migration.version),
                index as i64 + 1,
                "{}",
                migration.description
            );
            assert!(!migration.statements.is_empty());
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn statements_name_the_schema() {
        let statements = Statements::new("my_schema");
        assert!(statements.upsert_states.contains("\"my_schema\".fleetcron_tasks"));
        assert!(statements.insert_runs.contains("\"my_schema\".fleetcron_runs"));
        assert_eq!(
            statements.render(MIGRATIONS[0].statements[3]),
            "CREATE INDEX fleetcron_runs_task_run ON \"my_schema\".fleetcron_runs (task_id, run_id)"
        );
    }

    #[test]
    fn begin_and_lock_lists_the_keys_in_order() {
        assert_eq!(
            Statements::begin_and_lock(7, &[-3, 0, 12]),
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(7, k) FROM unnest('{-3,0,12}'::int4[]) \
             AS k"
        );
    }
}
