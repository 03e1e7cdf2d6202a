//! [`MysqlStore`]: the [`Store`] contract over MySQL 8 or MariaDB ≥ 10.6.

use crate::codec::{self, MysqlQuery, RunIdentity, RunRow, StateRow, UpdateRow};
use crate::error::{self, breaks_connection, is_deadlock, is_duplicate, is_missing_table};
use crate::packet::{self, PacketLimits};
use crate::sql::{self, MultiRow, Sql};
use async_trait::async_trait;
use chrono::{NaiveDateTime, TimeDelta};
use fleetcron_core::store::frame::{collect_writes, duplicate_run_id, duplicate_slot, MonotonicClock};
use fleetcron_core::store::{Decide, Store};
use fleetcron_core::{PrunePlan, RunQuery, RunRecord, StoreError, StoreLabel, TaskState, Timestamp};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions, Connection, Executor, MySql, MySqlConnection};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The newest schema version this build of the MySQL store writes and understands.
pub const SCHEMA_VERSION: i64 = sql::SCHEMA_VERSION;

/// How often one mutation is tried again at once when the server rolled it back for a reason that
/// a fresh attempt resolves (a deadlock victim; a task row another worker created meanwhile).
const MAX_ATTEMPTS: u32 = 8;

/// Settings of a [`MysqlStore`]. Build with `MysqlOptions::default()` and the `with_*` methods (or
/// struct update syntax).
#[derive(Debug, Clone)]
pub struct MysqlOptions {
    /// Prefix of the store's tables (`<prefix>tasks`, `<prefix>runs`, `<prefix>schema`): 1 to 31
    /// characters of `a-z 0-9 _`, not starting with a digit. Default: `fleetcron_`. A `table_prefix`
    /// parameter of the URL overrides it.
    pub table_prefix: String,
    /// Connections in this store's pool. Default: 8. At least 1.
    pub max_connections: u32,
    /// Added to the server's clock to make the store's clock. Default: zero. Only tests (and skew
    /// simulations) set it; every store of one fleet must use the same offset. Kept to whole milliseconds.
    pub clock_offset: chrono::Duration,
    /// How long an operation waits for a pooled connection, including (re)connecting to the server,
    /// before failing with [`StoreError::Unavailable`]. Default: 10 s.
    pub acquire_timeout: Duration,
    /// How long one operation may take once it has a connection (a stalled network, a hung server)
    /// before it fails with [`StoreError::Unavailable`]; its connection is then discarded. Default: 10 s.
    /// Keep it longer than `lock_timeout`.
    pub operation_timeout: Duration,
    /// How long a statement waits for row locks held by another transaction (InnoDB's
    /// `innodb_lock_wait_timeout`, and `lock_wait_timeout` for metadata locks) before failing with
    /// [`StoreError::Unavailable`]. Whole seconds, at least 1. Default: 5 s.
    pub lock_timeout: Duration,
    /// The server closes a session idle for longer (MySQL's `wait_timeout`): this bounds how long a
    /// worker that vanished in the middle of a transaction keeps its row locks. The pool closes idle
    /// connections after half of it. Whole seconds, at least 2. Default: 60 s.
    pub server_idle_timeout: Duration,
    /// How long [`Store::migrate`] waits for another worker's migration to finish. Default: 60 s.
    pub migration_lock_timeout: Duration,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        Self {
            table_prefix: "fleetcron_".to_owned(),
            max_connections: 8,
            clock_offset: chrono::Duration::zero(),
            acquire_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(5),
            server_idle_timeout: Duration::from_secs(60),
            migration_lock_timeout: Duration::from_secs(60),
        }
    }
}

impl MysqlOptions {
    /// Sets the table prefix.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Sets the pool size.
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets the offset added to the server's clock.
    pub fn with_clock_offset(mut self, offset: chrono::Duration) -> Self {
        self.clock_offset = offset;
        self
    }

    /// Sets how long an operation waits for a connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets how long one operation may take once it has a connection.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets how long a statement waits for another transaction's locks.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets the server's idle-session timeout.
    pub fn with_server_idle_timeout(mut self, timeout: Duration) -> Self {
        self.server_idle_timeout = timeout;
        self
    }

    /// Sets how long a migration waits for another worker's.
    pub fn with_migration_lock_timeout(mut self, timeout: Duration) -> Self {
        self.migration_lock_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        crate::url::validate_prefix(&self.table_prefix)?;
        let invalid = |reason: String| Err(StoreError::Config(format!("MysqlOptions::{reason}")));
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".to_owned());
        }
        for (name, value, least) in [
            ("acquire_timeout", self.acquire_timeout, Duration::from_millis(1)),
            ("operation_timeout", self.operation_timeout, Duration::from_millis(1)),
            ("lock_timeout", self.lock_timeout, Duration::from_secs(1)),
            ("server_idle_timeout", self.server_idle_timeout, Duration::from_secs(2)),
            (
                "migration_lock_timeout",
                self.migration_lock_timeout,
                Duration::from_secs(1),
            ),
        ] {
            if value < least {
                return invalid(format!("{name} {value:?} is too short: at least {least:?}"));
            }
            if value > Duration::from_secs(365 * 24 * 3600) {
                return invalid(format!("{name} {value:?} is too long: at most a year"));
            }
        }
        if self.clock_offset.num_milliseconds().checked_mul(1000).is_none() {
            return invalid(format!("clock_offset {} is out of range", self.clock_offset));
        }
        Ok(())
    }
}

/// A failure inside an operation: the error, and whether the connection must be thrown away.
#[derive(Debug)]
struct Failure {
    error: StoreError,
    /// The connection's state is unknown (socket error, protocol error, timeout): never reuse it.
    discard: bool,
    /// The server rolled the whole transaction back (a deadlock victim): trying again at once is safe.
    retry: bool,
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            discard: false,
            retry: false,
        }
    }
}

/// How one attempt of a mutation ended.
enum Attempt {
    /// Committed (or nothing to write) at this store time; the ids a claim left out.
    Done(Timestamp, Vec<String>),
    /// Rolled back; try again (why, for logs).
    Again(String),
}

/// fleetcron's MySQL / MariaDB store: task state documents and run history in two InnoDB tables,
/// shared by any number of workers on any number of hosts.
///
/// # Concurrency
/// Every [`Store::mutate`] is one transaction in `READ COMMITTED`:
/// 1. `SELECT id, state ... WHERE id IN (...) ORDER BY id FOR UPDATE` through the primary key locks
///    the rows of the batch's existing tasks in ascending id order (so two batches never deadlock on
///    them) and reads their latest committed states;
/// 2. the store's clock is read (`UTC_TIMESTAMP(3)`), after the locks are held;
/// 3. `decide` runs per id;
/// 4. the tasks that did not exist are created with a plain multi-row `INSERT`. If another mutation
///    created one of them meanwhile, the primary key refuses the insert (a concurrent insert of the same
///    key waits for the other transaction, then fails), the transaction is rolled back and the whole
///    mutation runs again, now locking the row that exists. So two workers registering one new task
///    serialise: the second decides on the first one's state, never overwrites it;
/// 5. existing tasks are overwritten (`INSERT ... ON DUPLICATE KEY UPDATE` on rows this transaction
///    holds locked), history rows inserted (the unique `(task_id, slot, attempt)` key refuses a
///    duplicate run with [`StoreError::Duplicate`], rolling back the whole batch), updated history rows
///    locked and overwritten; then `COMMIT`.
///
/// `READ COMMITTED` takes no gap locks, so a lookup of a missing id locks nothing that another
/// worker's insert would wait for, and the only lock waits are on the batch's own rows. A deadlock
/// (possible with history pruning) rolls the transaction back on the server and is retried at once a
/// few times; lock waits beyond [`MysqlOptions::lock_timeout`] fail with [`StoreError::Unavailable`],
/// which the engine retries with backoff.
///
/// # Clock
/// The store's clock is the server's `UTC_TIMESTAMP(3)` plus [`MysqlOptions::clock_offset`], in whole
/// milliseconds, never earlier than a previous answer of this store.
///
/// # Faults
/// A lost connection, a restarted server, a stalled network or a pool without a free connection fail
/// the operation with [`StoreError::Unavailable`] within the configured timeouts; the connection is
/// discarded and the pool opens a new one on the next operation.
///
/// Connecting does not create the schema: call [`Store::migrate`] (the engine does on `init`; the CLI
/// has `fleetcron migrate`).
pub struct MysqlStore {
    pool: MySqlPool,
    connect_options: MySqlConnectOptions,
    session_setup: Arc<Vec<String>>,
    sql: Sql,
    clock: StoreClock,
    label: StoreLabel,
    database: String,
    table_prefix: String,
    operation_timeout: Duration,
    acquire_timeout: Duration,
    migration_lock_timeout: Duration,
    /// How large one statement and one row may be (from the server's `max_allowed_packet`).
    packet: PacketLimits,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("url", &self.label)
            .field("table_prefix", &self.table_prefix)
            .field("clock_offset", &self.clock.offset)
            .finish_non_exhaustive()
    }
}

impl MysqlStore {
    /// Connects to the database a `mysql://` or `mariadb://` URL names, with default options:
    /// `mysql://user:password@host:3306/database`. A `table_prefix=...` query parameter sets the table
    /// prefix; other parameters (`ssl-mode`, `ssl-ca`, ...) go to the driver.
    ///
    /// One connection is opened at once, so a wrong URL, password or database fails here with
    /// [`StoreError::Config`], and an unreachable server with [`StoreError::Unavailable`] after the
    /// acquire timeout.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, MysqlOptions::default()).await
    }

    /// Checks a URL as [`Self::connect`] would, without connecting: scheme, parameters, table prefix,
    /// database.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let parsed = crate::url::parse(url)?;
        if let Some(prefix) = &parsed.table_prefix {
            crate::url::validate_prefix(prefix)?;
        }
        let label = StoreLabel::new(&parsed.label, url);
        let connect_options = MySqlConnectOptions::from_str(&parsed.sqlx_url)
            .map_err(|error| error::map(&label, "reading the URL", error))?;
        if connect_options.get_database().is_none() {
            return Err(StoreError::Config(format!("MySQL URL {label} names no database")));
        }
        Ok(())
    }

    /// Connects to the database `url` names (see [`Self::connect`]) with `options`.
    pub async fn connect_with(url: &str, mut options: MysqlOptions) -> Result<Self, StoreError> {
        let parsed = crate::url::parse(url)?;
        if let Some(prefix) = parsed.table_prefix {
            options.table_prefix = prefix;
        }
        options.validate()?;
        let label = StoreLabel::new(&parsed.label, url);
        let connect_options = MySqlConnectOptions::from_str(&parsed.sqlx_url)
            .map_err(|error| error::map(&label, "reading the URL", error))?
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_owned()))
            .statement_cache_capacity(128)
            .disable_statement_logging();
        let database = connect_options
            .get_database()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Config(format!("MySQL URL {label} names no database")))?;

        let lock_seconds = whole_seconds(options.lock_timeout);
        let session_setup = Arc::new(vec![
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
            format!(
                "SET SESSION innodb_lock_wait_timeout = {lock_seconds}, SESSION lock_wait_timeout = {lock_seconds}, \
                 SESSION wait_timeout = {}, SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                whole_seconds(options.server_idle_timeout)
            ),
        ]);
        let setup = Arc::clone(&session_setup);
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Some(options.server_idle_timeout / 2))
            .test_before_acquire(true)
            .after_connect(move |conn, _| {
                let setup = Arc::clone(&setup);
                Box::pin(async move { set_up_session(conn, &setup).await })
            })
            .connect_with(connect_options.clone())
            .await
            .map_err(|error| error::map(&label, "connecting", error))?;
        // Every statement must fit one packet: read the server's limit once (new sessions copy the
        // global value, so this is what the pool's connections get).
        let max_allowed_packet = tokio::time::timeout(
            options.operation_timeout,
            sqlx::query_scalar::<_, u64>("SELECT CAST(@@max_allowed_packet AS UNSIGNED)").fetch_one(&pool),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "MySQL store {label}: reading max_allowed_packet: no answer within {:?}",
                options.operation_timeout
            ))
        })?
        .map_err(|error| error::map(&label, "reading max_allowed_packet", error))?;
        let packet = PacketLimits::new(usize::try_from(max_allowed_packet).unwrap_or(usize::MAX));

        Ok(Self {
            pool,
            connect_options,
            session_setup,
            sql: Sql::new(&options.table_prefix),
            clock: StoreClock::new(options.clock_offset),
            label,
            database,
            table_prefix: options.table_prefix,
            operation_timeout: options.operation_timeout,
            acquire_timeout: options.acquire_timeout,
            migration_lock_timeout: options.migration_lock_timeout,
            packet,
        })
    }

    /// The store's URL, without password or query string.
    pub fn url(&self) -> &str {
        self.label.as_str()
    }

    /// The database the store's tables live in.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The prefix of the store's tables.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// The schema version stored in the database (0 before the first [`Store::migrate`]).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let what = "reading the schema version";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, async {
            match sqlx::query_scalar::<_, i64>(&self.sql.select_schema_version)
                .fetch_one(&mut *conn)
                .await
            {
                Ok(version) => Ok(version),
                Err(error) if is_missing_table(&error) => Ok(0),
                Err(error) => Err(self.fail(what, error)),
            }
        })
        .await;
        self.settle(conn, what, outcome)
    }

    /// Closes every connection of this store; later operations fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn err(&self, what: &str, error: sqlx::Error) -> StoreError {
        error::map(&self.label, what, error)
    }

    fn fail(&self, what: &str, error: sqlx::Error) -> Failure {
        Failure {
            discard: breaks_connection(&error),
            retry: is_deadlock(&error),
            error: self.err(what, error),
        }
    }

    async fn acquire(&self, what: &str) -> Result<PoolConnection<MySql>, StoreError> {
        self.pool.acquire().await.map_err(|error| self.err(what, error))
    }

    /// Ends an operation run under the operation timeout on `conn`: a connection whose state is unknown
    /// (timed out mid-statement, socket error) is thrown away instead of going back to the pool.
    fn settle<T>(
        &self,
        conn: PoolConnection<MySql>,
        what: &str,
        outcome: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => {
                if failure.discard {
                    drop(conn.detach());
                }
                Err(failure.error)
            }
            Err(_) => {
                drop(conn.detach());
                Err(StoreError::Unavailable(format!(
                    "MySQL store {}: {what}: no answer within the operation timeout of {:?} (network stalled or \
                     server hung); the connection was dropped, so the server rolls back whatever it had not \
                     committed",
                    self.label, self.operation_timeout
                )))
            }
        }
    }

    async fn server_now(&self, conn: &mut MySqlConnection, what: &str) -> Result<Timestamp, Failure> {
        let server: NaiveDateTime = sqlx::query_scalar(&self.sql.select_now)
            .fetch_one(conn)
            .await
            .map_err(|error| self.fail(what, error))?;
        Ok(self.clock.observe_server(server))
    }

    /// One attempt of a mutation, in one transaction (see the type's documentation).
    async fn mutate_once(
        &self,
        conn: &mut MySqlConnection,
        ids: &[String],
        sorted: &[&str],
        floors: Option<&HashMap<&str, Timestamp>>,
        decide: &mut Decide<'_>,
    ) -> Result<Attempt, Failure> {
        let mut tx = conn
            .begin()
            .await
            .map_err(|error| self.fail("starting a mutation", error))?;
        let mut left_out = Vec::new();
        let rows = match floors {
            None => fetch_chunks(&mut tx, &self.sql.lock_states, sorted, bind_str)
                .await
                .map_err(|error| self.fail("locking task states", error))?,
            Some(floors) => {
                // Claims: lock every row but read only the marks; the documents of tasks still wanting
                // a slot are read next, under the same locks.
                let marks = fetch_chunks(&mut tx, &self.sql.lock_marks, sorted, bind_str)
                    .await
                    .map_err(|error| self.fail("locking task states", error))?;
                let mut wanted: Vec<&str> = Vec::with_capacity(marks.len());
                for row in &marks {
                    let id = codec::text(row, "id")?;
                    let mark = codec::opt_text(row, "high_water")?;
                    match floors.get_key_value(id.as_str()) {
                        Some((_, floor)) if codec::accounted(mark.as_deref(), Some(*floor)) => left_out.push(id),
                        Some((known, _)) => wanted.push(known),
                        None => {}
                    }
                }
                if wanted.is_empty() {
                    Vec::new()
                } else {
                    fetch_chunks(&mut tx, &self.sql.read_locked_states, &wanted, bind_str)
                        .await
                        .map_err(|error| self.fail("reading task states", error))?
                }
            }
        };
        let stored = rows
            .iter()
            .map(codec::decode_state_row)
            .collect::<Result<HashMap<_, _>, _>>()?;
        // Read the clock once the locks are ours: a wait for them must not age the decisions.
        let now = self.server_now(&mut tx, "reading the clock").await?;

        let skip: HashSet<&str> = left_out.iter().map(String::as_str).collect();
        let writes = collect_writes(
            ids.iter().filter(|id| !skip.contains(id.as_str())),
            |id| stored.get(id),
            now,
            decide,
        );
        let mut new_states = Vec::new();
        let mut states = Vec::new();
        for write in &writes.states {
            let mut row = StateRow::new(&write.id, &write.state, now)?;
            if let Some(fitted) = packet::fit_state(&write.state, row.state.len(), &self.packet) {
                row = StateRow::new(&write.id, &fitted, now)?;
            }
            if write.existed {
                states.push(row);
            } else {
                new_states.push(row);
            }
        }
        let mut runs = Vec::with_capacity(writes.inserts.len());
        for run in writes.inserts {
            let mut row = RunRow::new(run)?;
            packet::fit_run_row(&mut row, &self.packet);
            runs.push(row);
        }
        let updates = writes
            .updates
            .into_iter()
            .map(|(id, update)| UpdateRow::new(&id, update))
            .collect::<Result<Vec<_>, _>>()?;

        if new_states.is_empty() && states.is_empty() && runs.is_empty() && updates.is_empty() {
            // Nothing to write: release the locks.
            tx.rollback()
                .await
                .map_err(|error| self.fail("ending a read-only mutation", error))?;
            return Ok(Attempt::Done(now, left_out));
        }

        // Rows in id order: two transactions inserting the same new ids meet on the first of them.
        new_states.sort_by(|a, b| a.id.cmp(b.id));
        states.sort_by(|a, b| a.id.cmp(b.id));
        if let Err(error) = execute_chunks(
            &mut tx,
            &self.sql.insert_states,
            &new_states,
            StateRow::bind,
            packet::state_row_bytes,
            self.packet.statement_budget,
        )
        .await
        {
            if is_duplicate(&error) {
                tx.rollback()
                    .await
                    .map_err(|error| self.fail("rolling back a mutation", error))?;
                return Ok(Attempt::Again(format!(
                    "another worker created one of the tasks meanwhile ({})",
                    error
                )));
            }
            return Err(self.fail("creating task states", error));
        }
        execute_chunks(
            &mut tx,
            &self.sql.upsert_states,
            &states,
            StateRow::bind,
            packet::state_row_bytes,
            self.packet.statement_budget,
        )
        .await
        .map_err(|error| self.fail("writing task states", error))?;

        self.check_batch_duplicates(&runs)?;
        if let Err(error) = execute_chunks(
            &mut tx,
            &self.sql.insert_runs,
            &runs,
            RunRow::bind,
            packet::run_row_bytes,
            self.packet.statement_budget,
        )
        .await
        {
            if is_duplicate(&error) {
                // Roll back first: the rows of earlier chunks of this batch must not be mistaken for
                // stored ones.
                tx.rollback()
                    .await
                    .map_err(|error| self.fail("rolling back a refused mutation", error))?;
                return Err(self.describe_duplicate(conn, &runs, error).await);
            }
            return Err(self.fail("inserting history rows", error));
        }

        if !updates.is_empty() {
            self.write_updates(&mut tx, updates).await?;
        }
        tx.commit()
            .await
            .map_err(|error| self.fail("committing a mutation", error))?;
        Ok(Attempt::Done(now, left_out))
    }

    /// Locks the history rows `updates` change and overwrites their mutable columns (a run of another
    /// task, or a run that does not exist, is left alone).
    async fn write_updates(&self, conn: &mut MySqlConnection, mut updates: Vec<UpdateRow>) -> Result<(), Failure> {
        updates.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let mut run_ids: Vec<&str> = updates.iter().map(|update| update.run_id.as_str()).collect();
        run_ids.dedup();
        let rows = fetch_chunks(conn, &self.sql.lock_runs, &run_ids, bind_str)
            .await
            .map_err(|error| self.fail("locking history rows", error))?;
        let identities = rows
            .iter()
            .map(|row| RunIdentity::decode(row).map(|identity| (identity.run_id.clone(), identity)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        let rows: Vec<RunRow> = updates
            .iter()
            .filter_map(|update| {
                identities
                    .get(&update.run_id)
                    .filter(|identity| identity.task_id == update.task_id)
                    .map(|identity| {
                        let mut row = RunRow::updated(identity, update);
                        packet::fit_run_row(&mut row, &self.packet);
                        row
                    })
            })
            .collect();
        execute_chunks(
            conn,
            &self.sql.upsert_runs,
            &rows,
            RunRow::bind,
            packet::run_row_bytes,
            self.packet.statement_budget,
        )
        .await
        .map_err(|error| self.fail("updating history rows", error))?;
        Ok(())
    }

    /// Refuses a batch that holds one run id, or one `(task_id, slot, attempt)`, twice.
    fn check_batch_duplicates(&self, runs: &[RunRow]) -> Result<(), StoreError> {
        let mut run_ids = HashSet::new();
        let mut slot_keys = HashSet::new();
        for run in runs {
            if !run_ids.insert(run.run_id.as_str()) {
                return Err(StoreError::Duplicate(format!(
                    "run id {} appears twice in one mutation (MySQL store {})",
                    run.run_id, self.label
                )));
            }
            if let Some(slot) = run.slot {
                if !slot_keys.insert((run.task_id.as_str(), slot, run.attempt)) {
                    return Err(self.slot_duplicate(&run.task_id, slot, run.attempt));
                }
            }
        }
        Ok(())
    }

    fn slot_duplicate(&self, task_id: &str, slot: NaiveDateTime, attempt: u32) -> StoreError {
        duplicate_slot(
            task_id,
            codec::from_db(slot),
            attempt,
            &format!("MySQL store {}", self.label),
        )
    }

    /// Names the stored history row a unique key refused the batch for (after the rollback).
    async fn describe_duplicate(&self, conn: &mut MySqlConnection, runs: &[RunRow], error: sqlx::Error) -> Failure {
        let fallback = |store: &Self, error| store.fail("inserting history rows", error);
        let run_ids: Vec<&str> = runs.iter().map(|run| run.run_id.as_str()).collect();
        let slot_keys: Vec<(&str, NaiveDateTime, u32)> = runs
            .iter()
            .filter_map(|run| run.slot.map(|slot| (run.task_id.as_str(), slot, run.attempt)))
            .collect();
        let by_id = fetch_chunks(conn, &self.sql.runs_by_ids, &run_ids, bind_str).await;
        let by_slot = fetch_chunks(conn, &self.sql.runs_by_slot_keys, &slot_keys, bind_slot_key).await;
        let (Ok(by_id), Ok(by_slot)) = (by_id, by_slot) else {
            return fallback(self, error);
        };
        let mut stored_ids = HashSet::new();
        let mut stored_keys = HashSet::new();
        for row in by_id.iter().chain(&by_slot) {
            let decoded = (
                codec::text(row, "run_id"),
                codec::text(row, "task_id"),
                codec::column::<Option<NaiveDateTime>>(row, "slot"),
                codec::column::<u32>(row, "attempt"),
            );
            if let (Ok(run_id), Ok(task_id), Ok(slot), Ok(attempt)) = decoded {
                stored_ids.insert(run_id);
                if let Some(slot) = slot {
                    stored_keys.insert((task_id, slot, attempt));
                }
            }
        }
        for run in runs {
            if stored_ids.contains(&run.run_id) {
                return duplicate_run_id(&run.run_id, &format!("MySQL store {}", self.label)).into();
            }
            if let Some(slot) = run.slot {
                if stored_keys.contains(&(run.task_id.clone(), slot, run.attempt)) {
                    return self.slot_duplicate(&run.task_id, slot, run.attempt).into();
                }
            }
        }
        fallback(self, error)
    }

    async fn mutate_on(
        &self,
        conn: &mut MySqlConnection,
        ids: &[String],
        floors: Option<&[Timestamp]>,
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), Failure> {
        let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let floors: Option<HashMap<&str, Timestamp>> =
            floors.map(|floors| ids.iter().map(String::as_str).zip(floors.iter().copied()).collect());
        let mut attempt = 1;
        loop {
            let why = match self.mutate_once(conn, ids, &sorted, floors.as_ref(), decide).await {
                Ok(Attempt::Done(now, left_out)) => return Ok((now, left_out)),
                Ok(Attempt::Again(why)) => why,
                Err(failure) if failure.retry => failure.error.to_string(),
                Err(failure) => return Err(failure),
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "MySQL store {}: a mutation was rolled back {MAX_ATTEMPTS} times in a row; retry (last: {why})",
                    self.label
                ))
                .into());
            }
            tracing::debug!(store = %self.label, attempt, reason = %why, "mutation rolled back; trying again");
            attempt += 1;
        }
    }

    async fn load_on(&self, conn: &mut MySqlConnection, ids: Option<&[String]>) -> Result<LoadResult, Failure> {
        let what = "loading task states";
        let (offset, floor) = self.clock.parameters();
        let rows = match ids {
            None => sqlx::query(&self.sql.load_all)
                .bind(offset)
                .bind(floor)
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| self.fail(what, error))?,
            Some(ids) => {
                let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
                sorted.sort_unstable();
                sorted.dedup();
                let mut rows = Vec::new();
                let mut rest = sorted.as_slice();
                for length in sql::chunk_lengths(sorted.len()) {
                    let (chunk, tail) = rest.split_at(length);
                    rest = tail;
                    let query = sqlx::query(chunk_text(&self.sql.load_some, length)?)
                        .bind(offset)
                        .bind(floor);
                    let query = chunk.iter().fold(query, |query, id| query.bind(*id));
                    rows.extend(
                        query
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(|error| self.fail(what, error))?,
                    );
                }
                rows
            }
        };
        let mut now = None;
        let mut states = Vec::new();
        for row in &rows {
            let at: NaiveDateTime = codec::column(row, "now")?;
            now = now.max(Some(codec::from_db(at)));
            if let Some(id) = codec::opt_text(row, "id")? {
                let text = codec::text(row, "state")?;
                states.push(codec::decode_state(&text, &id)?);
            }
        }
        Ok((now, states))
    }

    async fn prune_on(&self, conn: &mut MySqlConnection, plan: &PrunePlan) -> Result<u64, Failure> {
        let mut tx = conn
            .begin()
            .await
            .map_err(|error| self.fail("starting to prune run history", error))?;
        let cutoff = plan
            .finished_before
            .map(codec::ceil_ms)
            .filter(|cutoff| codec::in_datetime_range(*cutoff));
        let mut removed = 0;
        if let Some(cutoff) = cutoff {
            removed += sqlx::query(&self.sql.prune_by_age)
                .bind(cutoff.naive_utc())
                .execute(&mut *tx)
                .await
                .map_err(|error| self.fail("pruning run history by age", error))?
                .rows_affected();
        }
        // Rows removed for age do not count towards keep_last: they are gone before the ranking.
        if let Some(keep_last) = plan.keep_last {
            removed += sqlx::query(&self.sql.prune_by_count)
                .bind(keep_last)
                .execute(&mut *tx)
                .await
                .map_err(|error| self.fail("pruning run history by count", error))?
                .rows_affected();
        }
        tx.commit()
            .await
            .map_err(|error| self.fail("committing the history pruning", error))?;
        Ok(removed)
    }

    /// The name of this database's migration lock (server-wide; at most 64 characters).
    fn migration_lock_name(&self) -> String {
        let name = format!("{}.{}migrate", self.database, self.table_prefix);
        if name.len() <= 64 {
            return name;
        }
        // FNV-1a: stable across builds and platforms.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("fleetcron.migrate.{hash:016x}")
    }

    /// Applies the missing migrations on `conn`, which holds the migration lock.
    async fn apply_migrations(&self, conn: &mut MySqlConnection) -> Result<(), Failure> {
        conn.execute(self.sql.create_schema_table.as_str())
            .await
            .map_err(|error| self.fail("creating the schema table", error))?;
        let found: i64 = sqlx::query_scalar(&self.sql.select_schema_version)
            .fetch_one(&mut *conn)
            .await
            .map_err(|error| self.fail("reading the schema version", error))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            }
            .into());
        }
        for migration in self.sql.migrations.iter().filter(|m| m.version > found) {
            // DDL commits implicitly; every statement is idempotent (CREATE … IF NOT EXISTS, or an
            // ALTER whose duplicate-column error means it was applied), so a migration cut short is
            // simply applied again by the next caller.
            for statement in &migration.statements {
                match conn.execute(statement.as_str()).await {
                    Ok(_) => {}
                    // The statement took effect before (see `is_duplicate_column`).
                    Err(error) if statement.starts_with("ALTER TABLE") && error::is_duplicate_column(&error) => {}
                    Err(error) => {
                        return Err(self.fail(&format!("applying schema migration {}", migration.version), error))
                    }
                }
            }
            sqlx::query(&self.sql.insert_schema_version)
                .bind(migration.version)
                .bind(migration.description)
                .execute(&mut *conn)
                .await
                .map_err(|error| self.fail("recording the schema version", error))?;
            tracing::info!(
                store = %self.label,
                version = migration.version,
                description = migration.description,
                "applied fleetcron schema migration"
            );
        }
        Ok(())
    }

    /// Takes the migration lock on `conn`, migrates, releases the lock.
    async fn migrate_on(&self, conn: &mut MySqlConnection) -> Result<(), Failure> {
        let name = self.migration_lock_name();
        let taken: Option<i64> = sqlx::query_scalar(&self.sql.get_lock)
            .bind(&name)
            .bind(whole_seconds(self.migration_lock_timeout))
            .fetch_one(&mut *conn)
            .await
            .map_err(|error| self.fail("taking the migration lock", error))?;
        if taken != Some(1) {
            return Err(StoreError::Unavailable(format!(
                "MySQL store {}: another worker held the migration lock {name:?} for longer than {:?}; retry",
                self.label, self.migration_lock_timeout
            ))
            .into());
        }
        let applied = self.apply_migrations(conn).await;
        let released = sqlx::query_scalar::<_, Option<i64>>(&self.sql.release_lock)
            .bind(&name)
            .fetch_one(&mut *conn)
            .await;
        if let Err(error) = released {
            // The server releases it anyway when this connection closes, which it does next.
            tracing::debug!(store = %self.label, error = %self.label.scrub(&error.to_string()),
                "could not release the migration lock");
        }
        applied
    }
}

/// The store's clock: readings of the server's UTC clock plus a fixed offset, truncated to whole
/// milliseconds and never earlier than a previous answer of this store.
#[derive(Debug)]
struct StoreClock {
    offset: TimeDelta,
    last: MonotonicClock,
}

impl StoreClock {
    fn new(offset: chrono::Duration) -> Self {
        Self {
            offset: TimeDelta::milliseconds(offset.num_milliseconds()),
            last: MonotonicClock::new(),
        }
    }

    /// The store's now from a reading of the server's UTC clock.
    fn observe_server(&self, server: NaiveDateTime) -> Timestamp {
        let at = codec::from_db(server);
        self.observe(at.checked_add_signed(self.offset).unwrap_or(at))
    }

    /// Records a store now computed on the server (already offset; whole milliseconds).
    fn observe(&self, now: Timestamp) -> Timestamp {
        self.last.observe(now)
    }

    /// The parameters of the SQL `NOW` expression: the offset in microseconds and the lower bound
    /// (the last answer).
    fn parameters(&self) -> (i64, NaiveDateTime) {
        let floor = self
            .last
            .floor()
            .filter(|at| codec::in_datetime_range(*at))
            .map_or(chrono::DateTime::UNIX_EPOCH.naive_utc(), |at| at.naive_utc());
        (self.offset.num_milliseconds().saturating_mul(1000), floor)
    }
}

type LoadResult = (Option<Timestamp>, Vec<TaskState>);

/// Runs the session settings on a new connection.
async fn set_up_session(conn: &mut MySqlConnection, statements: &[String]) -> Result<(), sqlx::Error> {
    for statement in statements {
        conn.execute(statement.as_str()).await?;
    }
    Ok(())
}

/// A duration in whole seconds, rounded up, at least 1.
fn whole_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    seconds.max(1)
}

fn chunk_text(statement: &MultiRow, length: usize) -> Result<&str, Failure> {
    statement.text(length).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "internal error: no statement text for a chunk of {length} rows"
        ))
        .into()
    })
}

fn bind_str<'q>(value: &'q &str, query: MysqlQuery<'q>) -> MysqlQuery<'q> {
    query.bind(*value)
}

fn bind_slot_key<'q>(key: &'q (&str, NaiveDateTime, u32), query: MysqlQuery<'q>) -> MysqlQuery<'q> {
    query.bind(key.0).bind(key.1).bind(key.2)
}

/// Runs a multi-row statement over `rows`, in chunks of at most 256 rows and, by `size`, at most
/// `budget` bytes of row data (a single larger row goes alone), so no statement outgrows a packet.
async fn execute_chunks<R>(
    conn: &mut MySqlConnection,
    statement: &MultiRow,
    rows: &[R],
    bind: for<'q> fn(&'q R, MysqlQuery<'q>) -> MysqlQuery<'q>,
    size: fn(&R) -> usize,
    budget: usize,
) -> Result<u64, sqlx::Error> {
    let mut affected = 0;
    let mut rest = rows;
    let sizes: Vec<usize> = rows.iter().map(size).collect();
    for length in packet::chunk_lengths_within(&sizes, budget) {
        let (chunk, tail) = rest.split_at(length);
        rest = tail;
        let text = statement
            .text(length)
            .ok_or_else(|| sqlx::Error::Protocol(format!("no statement text for a chunk of {length} rows")))?;
        let query = chunk.iter().fold(sqlx::query(text), |query, row| bind(row, query));
        affected += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

/// Runs a multi-row query over `rows`, in chunks, and returns every row of every chunk.
async fn fetch_chunks<R>(
    conn: &mut MySqlConnection,
    statement: &MultiRow,
    rows: &[R],
    bind: for<'q> fn(&'q R, MysqlQuery<'q>) -> MysqlQuery<'q>,
) -> Result<Vec<MySqlRow>, sqlx::Error> {
    let mut fetched = Vec::new();
    let mut rest = rows;
    for length in sql::chunk_lengths(rows.len()) {
        let (chunk, tail) = rest.split_at(length);
        rest = tail;
        let text = statement
            .text(length)
            .ok_or_else(|| sqlx::Error::Protocol(format!("no statement text for a chunk of {length} rows")))?;
        let query = chunk.iter().fold(sqlx::query(text), |query, row| bind(row, query));
        fetched.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(fetched)
}

#[async_trait]
impl Store for MysqlStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let current = self.schema_version().await?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        if current > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        // A connection of its own, closed at the end: the migration lock belongs to the session, so it
        // must never go back to the pool (the server releases it when the connection closes, whatever
        // happens to this future).
        let what = "connecting to migrate the schema";
        let mut conn = tokio::time::timeout(self.acquire_timeout, self.connect_options.connect())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "MySQL store {}: {what}: no connection within {:?}",
                    self.label, self.acquire_timeout
                ))
            })?
            .map_err(|error| self.err(what, error))?;
        set_up_session(&mut conn, &self.session_setup)
            .await
            .map_err(|error| self.err(what, error))?;
        let limit = self.migration_lock_timeout + self.operation_timeout.saturating_mul(4);
        match tokio::time::timeout(limit, self.migrate_on(&mut conn)).await {
            Ok(result) => {
                // Best effort: a failed close only means the server notices the closed socket.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                result.map_err(|failure| failure.error)
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "MySQL store {}: migrating the schema took longer than {limit:?}; retry",
                self.label
            ))),
        }
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        let what = "reading the clock";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, self.server_now(&mut conn, what)).await;
        self.settle(conn, what, outcome)
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        if ids.is_empty() {
            return self.now().await;
        }
        let what = "mutating task states";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, self.mutate_on(&mut conn, ids, None, decide)).await;
        self.settle(conn, what, outcome).map(|(now, _)| now)
    }

    /// Claims lock their rows like [`Store::mutate`] but read only the high-water marks first: a task
    /// already accounted up to its floor is left out, its document neither sent nor decoded.
    async fn mutate_claims(
        &self,
        ids: &[String],
        floors: &[Timestamp],
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        if ids.is_empty() {
            return Ok((self.now().await?, Vec::new()));
        }
        fleetcron_core::store::frame::check_floors(ids, floors)?;
        let what = "claiming slots";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(
            self.operation_timeout,
            self.mutate_on(&mut conn, ids, Some(floors), decide),
        )
        .await;
        self.settle(conn, what, outcome)
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        if ids.is_some_and(<[String]>::is_empty) {
            return Ok((self.now().await?, Vec::new()));
        }
        let what = "loading task states";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, self.load_on(&mut conn, ids)).await;
        let (now, mut states) = self.settle(conn, what, outcome)?;
        let now = match now {
            Some(now) => self.clock.observe(now),
            None => self.now().await?,
        };
        states.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        Ok((now, states))
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        if limit == 0 {
            return Ok((self.now().await?, Vec::new()));
        }
        let what = "polling for tasks that want attention";
        let mut conn = self.acquire(what).await?;
        let (offset, floor) = self.clock.parameters();
        let outcome = tokio::time::timeout(self.operation_timeout, async {
            let rows = sqlx::query(&self.sql.due_for_attention)
                .bind(offset)
                .bind(floor)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| self.fail(what, error))?;
            let mut now = None;
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let at: NaiveDateTime = codec::column(row, "now")?;
                now = now.max(Some(codec::from_db(at)));
                if let Some(id) = codec::opt_text(row, "id")? {
                    ids.push(id);
                }
            }
            Ok::<_, Failure>((now, ids))
        })
        .await;
        let (now, ids) = self.settle(conn, what, outcome)?;
        let now = match now {
            Some(now) => self.clock.observe(now),
            None => self.now().await?,
        };
        Ok((now, ids))
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let what = "reading run history";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, async {
            let statement = match &query.before {
                None => sqlx::query(&self.sql.runs_first_page).bind(task_id),
                Some(before) => sqlx::query(&self.sql.runs_before).bind(task_id).bind(before.as_str()),
            };
            let rows = statement
                .bind(query.limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| self.fail(what, error))?;
            rows.iter()
                .map(codec::decode_run)
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::from)
        })
        .await;
        self.settle(conn, what, outcome)
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        let what = "pruning run history";
        let mut conn = self.acquire(what).await?;
        let outcome = tokio::time::timeout(self.operation_timeout, self.prune_on(&mut conn, plan)).await;
        self.settle(conn, what, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration as ChronoDuration, NaiveDate};

    fn at(h: u32, m: u32, s: u32, micro: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2030, 1, 1)
            .and_then(|day| day.and_hms_micro_opt(h, m, s, micro))
            .expect("valid instant")
    }

    #[test]
    fn the_store_clock_is_offset_truncated_and_monotonic() {
        let clock = StoreClock::new(ChronoDuration::microseconds(2_000_900));
        assert_eq!(
            clock.parameters(),
            (2_000_000, chrono::DateTime::UNIX_EPOCH.naive_utc())
        );
        let first = clock.observe_server(at(0, 0, 0, 1_500));
        assert_eq!(first.naive_utc(), at(0, 0, 2, 1_000));
        // The server's clock steps back: the store's does not.
        assert_eq!(clock.observe_server(at(0, 0, 0, 0)), first);
        assert_eq!(clock.observe(first - ChronoDuration::seconds(5)), first);
        assert_eq!(clock.parameters().1, first.naive_utc());
        let later = clock.observe_server(at(0, 1, 0, 0));
        assert_eq!(later.naive_utc(), at(0, 1, 2, 0));
        // A negative offset of less than a millisecond is no offset.
        assert_eq!(StoreClock::new(ChronoDuration::nanoseconds(-3)).parameters().0, 0);
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(5)), 5);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
