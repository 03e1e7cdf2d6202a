//! [`SqliteStore`]: the [`Store`] contract over one SQLite file.

use crate::codec::{self, RunRow, SqliteQuery, StateRow, UpdateRow};
use crate::error::{self, is_busy, is_missing_table, is_unique_violation, primary_code};
use crate::sql;
use crate::tx::WriteTx;
use async_trait::async_trait;
use fleetcron_core::clock::system_clock;
use fleetcron_core::store::frame::{
    collect_writes, duplicate_run_id, duplicate_slot, run_migrations, MigrationSteps, MonotonicClock,
};
use fleetcron_core::store::{Decide, Store};
use fleetcron_core::{PrunePlan, RunQuery, RunRecord, SharedClock, StoreError, TaskState, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqliteConnection;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The newest schema version this build of the SQLite store writes and understands.
pub const SCHEMA_VERSION: i64 = sql::SCHEMA_VERSION;

/// Settings of a [`SqliteStore`]. Build with `SqliteOptions::default()` and the `with_*` methods (or
/// struct update syntax).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The store's clock: the authority for "now" in every decision (leases, due slots). Default: the
    /// system clock. Every process sharing the file should use the same clock source.
    pub clock: SharedClock,
    /// How long a statement waits for a lock held by another connection or process before failing
    /// with [`StoreError::Unavailable`]. Default: 5 s. At most `i32::MAX` milliseconds.
    pub busy_timeout: Duration,
    /// Connections in this store's pool (readers run in parallel; writers serialise on the file's
    /// write lock). Default: 4. At least 1.
    pub max_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            clock: system_clock(),
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

impl SqliteOptions {
    /// Uses `clock` as the store's clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the busy timeout.
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Sets the pool size.
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.max_connections == 0 {
            return Err(StoreError::Config(
                "SqliteOptions::max_connections must be at least 1".to_owned(),
            ));
        }
        if i32::try_from(self.busy_timeout.as_millis()).is_err() {
            return Err(StoreError::Config(format!(
                "SqliteOptions::busy_timeout {:?} is too long: at most {} ms",
                self.busy_timeout,
                i32::MAX
            )));
        }
        Ok(())
    }
}

/// fleetcron's embedded store: task state documents and run history in one SQLite file, shared by the
/// worker processes of one host.
///
/// The file runs in WAL mode with `synchronous=NORMAL` and a busy timeout; every write is one
/// transaction started with `BEGIN IMMEDIATE`, so writers from any number of processes queue on the
/// file's write lock instead of failing. Instants are kept to the millisecond: the store's clock is
/// truncated to whole milliseconds, so every instant the engine derives from it round-trips exactly.
///
/// Opening does not create the schema: call [`Store::migrate`] (the engine does on `init`; the CLI has
/// `fleetcron migrate`).
pub struct SqliteStore {
    pool: SqlitePool,
    clock: SharedClock,
    last_now: MonotonicClock,
    path: PathBuf,
    label: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` with default options.
    ///
    /// Fails with [`StoreError::ReadOnly`] when the file cannot be created or written (its directory is
    /// missing or not writable, the path is a directory, the file is read-only), with
    /// [`StoreError::Corrupt`] when the file is not a SQLite database, and with
    /// [`StoreError::Unavailable`] when another process holds the file locked past the busy timeout.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating it if missing) the database file at `path` with `options`; see [`Self::open`].
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let label = path.display().to_string();
        check_path(&path, &label).await?;

        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(options.busy_timeout)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .test_before_acquire(false)
            .acquire_timeout(options.busy_timeout.max(Duration::from_secs(30)))
            .connect_with(connect)
            .await
            .map_err(|error| open_error(&label, error))?;

        let store = Self {
            pool,
            clock: options.clock,
            last_now: MonotonicClock::new(),
            path,
            label,
        };
        store.prepare_file(options.busy_timeout).await?;
        Ok(store)
    }

    /// Opens the database a `sqlite:` URL names, with default options: `sqlite:///abs/path.db` or
    /// `sqlite:/abs/path.db` (absolute), `sqlite://rel/path.db` or `sqlite:rel/path.db` (relative to the
    /// working directory). Query strings such as `?mode=ro` are refused with [`StoreError::Config`].
    pub async fn from_url(url: &str) -> Result<Self, StoreError> {
        Self::from_url_with(url, SqliteOptions::default()).await
    }

    /// Checks a `sqlite:` URL as [`Self::from_url`] would, without opening the file.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        crate::url::parse(url).map(|_| ())
    }

    /// Opens the database a `sqlite:` URL names (see [`Self::from_url`]) with `options`.
    pub async fn from_url_with(url: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = crate::url::parse(url)?;
        // A path holds no password, but a mistyped URL (`sqlite://user:password@…`) may look like one.
        Self::open_with(path, options)
            .await
            .map_err(|error| fleetcron_core::StoreLabel::of_url(url).scrub_error(error))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version stored in the file (0 before the first [`Store::migrate`]).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match sqlx::query_scalar::<_, i64>(sql::SELECT_SCHEMA_VERSION)
            .fetch_one(&self.pool)
            .await
        {
            Ok(version) => Ok(version),
            Err(error) if is_missing_table(&error) => Ok(0),
            Err(error) => Err(self.err("reading the schema version", error)),
        }
    }

    /// Closes every connection of this store; later operations fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn err(&self, what: &str, error: sqlx::Error) -> StoreError {
        error::map(&self.label, what, error)
    }

    /// Switches the file to WAL mode (persistent; needs an exclusive lock the busy handler does not wait
    /// for, hence the retry loop) and checks that the file can be written.
    async fn prepare_file(&self, busy_timeout: Duration) -> Result<(), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|error| open_error(&self.label, error))?;
        let deadline = Instant::now() + busy_timeout;
        loop {
            match sqlx::query_scalar::<_, String>(sql::JOURNAL_MODE_WAL)
                .fetch_one(&mut *conn)
                .await
            {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
                Ok(mode) => {
                    return Err(StoreError::ReadOnly(format!(
                        "SQLite database {}: cannot switch to WAL journal mode (it stays {mode:?}); the file \
                         or its directory is probably read-only",
                        self.label
                    )))
                }
                Err(error) if is_busy(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => return Err(open_error(&self.label, error)),
            }
        }
        // A read-only file opens silently read-only: take (and release) the write lock to find out now.
        let probe = WriteTx::begin_on(conn)
            .await
            .map_err(|error| open_error(&self.label, error))?;
        probe.rollback().await.map_err(|error| open_error(&self.label, error))?;
        Ok(())
    }

    /// The store clock's now, truncated to milliseconds and never earlier than a previous answer.
    fn monotonic_now(&self) -> Timestamp {
        self.last_now.observe(self.clock.now())
    }

    /// Starts a write transaction (see [`WriteTx`]: a failed or abandoned one never returns its
    /// connection to the pool with a transaction open).
    async fn begin_immediate(&self, what: &str) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.pool).await.map_err(|error| self.err(what, error))
    }

    /// Ends `tx` by the outcome of its work: commits when `outcome` says there is something to commit,
    /// rolls back when there is nothing to write, and after an error rolls back (or closes the
    /// connection) before returning the error.
    async fn finish<T>(
        &self,
        tx: WriteTx,
        outcome: Result<(T, bool), StoreError>,
        what: &str,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok((value, true)) => {
                tx.commit()
                    .await
                    .map_err(|error| self.err(&format!("committing {what}"), error))?;
                Ok(value)
            }
            Ok((value, false)) => {
                // Nothing to write: release the lock without a commit record.
                tx.rollback()
                    .await
                    .map_err(|error| self.err(&format!("ending {what} that wrote nothing"), error))?;
                Ok(value)
            }
            Err(error) => {
                tx.discard().await;
                Err(error)
            }
        }
    }

    /// Stored states of `ids`, by id.
    ///
    /// One row comes back holding every state (rows cross a thread boundary one by one in sqlx, which
    /// costs more than the decoding itself). A document that does not parse is looked for row by row, so
    /// the error names its task.
    async fn states_of(
        &self,
        conn: &mut SqliteConnection,
        ids: &[String],
        what: &str,
    ) -> Result<HashMap<String, TaskState>, StoreError> {
        let ids_json = to_json(ids, "task ids")?;
        let (found_ids, states): (String, Option<String>) = sqlx::query_as(sql::SELECT_PACKED_STATES_BY_IDS)
            .bind(&ids_json)
            .fetch_one(&mut *conn)
            .await
            .map_err(|error| self.err(what, error))?;
        let Some(states) = states else {
            return Ok(HashMap::new());
        };
        let decoded = serde_json::from_str::<Vec<String>>(&found_ids)
            .ok()
            .zip(serde_json::from_str::<Vec<TaskState>>(&states).ok())
            .filter(|(found_ids, states)| found_ids.len() == states.len());
        if let Some((found_ids, states)) = decoded {
            return Ok(found_ids.into_iter().zip(states).collect());
        }
        let rows = sqlx::query(sql::SELECT_STATES_BY_IDS)
            .bind(&ids_json)
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| self.err(what, error))?;
        rows.iter()
            .map(codec::decode_state_row)
            .collect::<Result<HashMap<_, _>, _>>()?;
        Err(StoreError::Corrupt(format!(
            "SQLite database {}: {what}: the stored state documents do not parse together",
            self.label
        )))
    }

    /// [`Store::mutate`], and with `floors` [`Store::mutate_claims`]: leaves out the tasks whose slots
    /// are already accounted for and returns their ids.
    async fn mutate_with_floors(
        &self,
        ids: &[String],
        floors: Option<&[Timestamp]>,
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        if ids.is_empty() {
            return Ok((self.monotonic_now(), Vec::new()));
        }
        let mut tx = self.begin_immediate("starting a mutation").await?;
        let outcome = self.mutate_in(tx.conn(), ids, floors, decide).await;
        self.finish(tx, outcome, "a mutation").await
    }

    /// The body of [`Self::mutate_with_floors`], inside its transaction; says whether it wrote anything.
    async fn mutate_in(
        &self,
        conn: &mut SqliteConnection,
        ids: &[String],
        floors: Option<&[Timestamp]>,
        decide: &mut Decide<'_>,
    ) -> Result<((Timestamp, Vec<String>), bool), StoreError> {
        // Read the clock once the write lock is ours: a wait for the lock must not age the decisions.
        let now = self.monotonic_now();
        let left_out = match floors {
            Some(floors) => self.accounted_for(conn, ids, floors).await?,
            None => Vec::new(),
        };
        let skip: HashSet<String> = left_out.iter().cloned().collect();
        let wanted: Vec<String> = if skip.is_empty() {
            ids.to_vec()
        } else {
            ids.iter().filter(|id| !skip.contains(*id)).cloned().collect()
        };
        let stored = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.states_of(conn, &wanted, "reading task states").await?
        };
        let writes = collect_writes(
            ids.iter().filter(|id| !skip.contains(*id)),
            |id| stored.get(id),
            now,
            decide,
        );
        if writes.is_empty() {
            return Ok(((now, left_out), false));
        }
        let states = writes
            .states
            .iter()
            .map(|write| StateRow::new(&write.id, &write.state, now))
            .collect::<Result<Vec<_>, _>>()?;
        let runs = writes
            .inserts
            .into_iter()
            .map(RunRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        let updates = writes
            .updates
            .into_iter()
            .map(|(id, update)| UpdateRow::new(&id, update))
            .collect::<Result<Vec<_>, _>>()?;
        // On any error the caller rolls the whole batch back.
        self.write_batch(conn, &states, &runs, &updates).await?;
        Ok(((now, left_out), true))
    }

    /// The body of [`Store::migrate`], inside its transaction.
    async fn migrate_in(&self, conn: &mut SqliteConnection) -> Result<((), bool), StoreError> {
        sqlx::query(sql::CREATE_SCHEMA_TABLE)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(|error| self.err("creating the schema table", error))?;
        let now = codec::to_ms(self.monotonic_now());
        run_migrations(&mut Steps { store: self, conn, now }, SCHEMA_VERSION).await?;
        Ok(((), true))
    }

    /// The body of [`Store::prune_runs`], inside its transaction.
    async fn prune_in(&self, conn: &mut SqliteConnection, plan: &PrunePlan) -> Result<(u64, bool), StoreError> {
        let cutoff = plan.finished_before.map(codec::ceil_ms);
        let keep_last = plan.keep_last.map(i64::from);
        let removed = sqlx::query(sql::PRUNE_RUNS)
            .bind(cutoff)
            .bind(keep_last)
            .execute(&mut *conn)
            .await
            .map_err(|error| self.err("pruning run history", error))?
            .rows_affected();
        Ok((removed, true))
    }

    /// The ids among `ids` whose stored high-water mark is at or after their floor (rounded so that the
    /// answer is never wrongly yes).
    async fn accounted_for(
        &self,
        conn: &mut SqliteConnection,
        ids: &[String],
        floors: &[Timestamp],
    ) -> Result<Vec<String>, StoreError> {
        let pairs: Vec<(&str, i64)> = ids
            .iter()
            .zip(floors)
            .map(|(id, floor)| {
                let rounded_up = floor.timestamp() + i64::from(floor.timestamp_subsec_nanos() > 0);
                (id.as_str(), rounded_up)
            })
            .collect();
        let pairs = to_json(&pairs, "claim floors")?;
        let accounted: Option<String> = sqlx::query_scalar(sql::SELECT_ACCOUNTED_FOR_CLAIMS)
            .bind(pairs)
            .fetch_one(&mut *conn)
            .await
            .map_err(|error| self.err("reading claimed slots", error))?;
        match accounted {
            Some(text) => serde_json::from_str(&text).map_err(|error| {
                StoreError::Corrupt(format!("SQLite database {}: claimed slots: {error}", self.label))
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Writes one batch of decisions inside the open transaction.
    async fn write_batch(
        &self,
        conn: &mut SqliteConnection,
        states: &[StateRow<'_>],
        runs: &[RunRow],
        updates: &[UpdateRow],
    ) -> Result<(), StoreError> {
        execute_chunks(conn, &sql::UPSERT_STATES, states, StateRow::bind)
            .await
            .map_err(|error| self.err("writing task states", error))?;
        if let Err(error) = execute_chunks(conn, &sql::INSERT_RUNS, runs, RunRow::bind).await {
            if is_unique_violation(&error) {
                return Err(self.describe_duplicate(conn, runs, error).await);
            }
            return Err(self.err("inserting history rows", error));
        }
        execute_chunks(conn, &sql::UPDATE_RUNS, updates, UpdateRow::bind)
            .await
            .map_err(|error| self.err("updating history rows", error))?;
        Ok(())
    }

    /// Names the history row a unique key refused (within the batch, or against a stored row).
    async fn describe_duplicate(&self, conn: &mut SqliteConnection, runs: &[RunRow], error: sqlx::Error) -> StoreError {
        let mut run_ids = HashSet::new();
        let mut slot_keys = HashSet::new();
        for run in runs {
            if !run_ids.insert(run.run_id.as_str()) {
                return StoreError::Duplicate(format!(
                    "run id {} appears twice in one mutation (SQLite database {})",
                    run.run_id, self.label
                ));
            }
            if let Some(slot) = run.slot {
                if !slot_keys.insert((run.task_id.as_str(), slot, run.attempt)) {
                    return slot_duplicate(&run.task_id, slot, run.attempt, &self.label);
                }
            }
        }
        let Ok(runs_json) = to_json(runs, "history rows") else {
            return self.err("inserting history rows", error);
        };
        let collision = sqlx::query_as::<_, (String, String, Option<i64>, i64, String)>(sql::SELECT_COLLIDING_RUN)
            .bind(runs_json)
            .fetch_optional(&mut *conn)
            .await;
        match collision {
            Ok(Some((run_id, _, _, _, new_run_id))) if run_id == new_run_id => {
                duplicate_run_id(&run_id, &format!("SQLite database {}", self.label))
            }
            Ok(Some((_, task_id, Some(slot), attempt, _))) => slot_duplicate(&task_id, slot, attempt, &self.label),
            _ => self.err("inserting history rows", error),
        }
    }
}

/// The migrations of a SQLite file, applied inside the migration's write transaction.
struct Steps<'a> {
    store: &'a SqliteStore,
    conn: &'a mut SqliteConnection,
    now: i64,
}

#[async_trait]
impl MigrationSteps for Steps<'_> {
    async fn stored_version(&mut self) -> Result<i64, StoreError> {
        sqlx::query_scalar(sql::SELECT_SCHEMA_VERSION)
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|error| self.store.err("reading the schema version", error))
    }

    async fn apply(&mut self, version: i64) -> Result<(), StoreError> {
        let Some(migration) = sql::MIGRATIONS.iter().find(|migration| migration.version == version) else {
            return Err(StoreError::Corrupt(format!(
                "no schema migration {version} in this build"
            )));
        };
        for statement in migration.statements {
            sqlx::query(statement)
                .persistent(false)
                .execute(&mut *self.conn)
                .await
                .map_err(|error| self.store.err(&format!("applying schema migration {version}"), error))?;
        }
        sqlx::query(sql::INSERT_SCHEMA_VERSION)
            .bind(version)
            .bind(self.now)
            .execute(&mut *self.conn)
            .await
            .map_err(|error| self.store.err("recording the schema version", error))?;
        tracing::info!(
            path = %self.store.label,
            version,
            description = migration.description,
            "applied fleetcron schema migration"
        );
        Ok(())
    }
}

/// Runs a multi-row statement over `rows`, in chunks.
async fn execute_chunks<R>(
    conn: &mut SqliteConnection,
    statement: &'static sql::MultiRow,
    rows: &[R],
    bind: for<'q> fn(&'q R, SqliteQuery<'q>) -> SqliteQuery<'q>,
) -> Result<(), sqlx::Error> {
    let mut rest = rows;
    for length in sql::chunk_lengths(rows.len()) {
        let (chunk, tail) = rest.split_at(length);
        rest = tail;
        let text = statement
            .text(length)
            .ok_or_else(|| sqlx::Error::Protocol(format!("no statement text for a chunk of {length} rows")))?;
        let query = chunk.iter().fold(sqlx::query(text), |query, row| bind(row, query));
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn slot_duplicate(task_id: &str, slot_ms: i64, attempt: i64, label: &str) -> StoreError {
    let store = format!("SQLite database {label}");
    match codec::from_ms(slot_ms, "slot") {
        Ok(slot) => duplicate_slot(task_id, slot, u32::try_from(attempt).unwrap_or(u32::MAX), &store),
        Err(_) => StoreError::Duplicate(format!(
            "task {task_id} slot {slot_ms} ms attempt {attempt} already has a history row ({store})"
        )),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(format!("cannot encode {what} as JSON: {error}")))
}

/// Refuses paths SQLite would fail on with a vague "unable to open database file".
async fn check_path(path: &Path, label: &str) -> Result<(), StoreError> {
    if path.as_os_str().is_empty() {
        return Err(StoreError::Config("the SQLite database path is empty".to_owned()));
    }
    if let Ok(metadata) = tokio::fs::metadata(path).await {
        if metadata.is_dir() {
            return Err(StoreError::ReadOnly(format!(
                "cannot use {label} as a SQLite database: it is a directory, not a file"
            )));
        }
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        match tokio::fs::metadata(parent).await {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::ReadOnly(format!(
                    "cannot create SQLite database {label}: {} is not a directory",
                    parent.display()
                )))
            }
            Err(error) => {
                return Err(StoreError::ReadOnly(format!(
                    "cannot create SQLite database {label}: directory {} is not accessible ({error}); create \
                     it first",
                    parent.display()
                )))
            }
        }
    }
    Ok(())
}

/// Maps a failure while opening: a file that cannot be opened or created is a permanent
/// [`StoreError::ReadOnly`], not an outage to retry.
fn open_error(label: &str, error: sqlx::Error) -> StoreError {
    const SQLITE_CANTOPEN: i32 = 14;
    if primary_code(&error) == Some(SQLITE_CANTOPEN) {
        return StoreError::ReadOnly(format!(
            "cannot open or create SQLite database {label}: {error}; check that its directory exists and is \
             writable"
        ));
    }
    error::map(label, "opening the database", error)
}

#[async_trait]
impl Store for SqliteStore {
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
        // Under the write lock, decide again: another process may have migrated meanwhile.
        let mut tx = self.begin_immediate("starting the migration").await?;
        let outcome = self.migrate_in(tx.conn()).await;
        self.finish(tx, outcome, "the migration").await
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        Ok(self.monotonic_now())
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        self.mutate_with_floors(ids, None, decide).await.map(|(now, _)| now)
    }

    async fn mutate_claims(
        &self,
        ids: &[String],
        floors: &[Timestamp],
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        fleetcron_core::store::frame::check_floors(ids, floors)?;
        self.mutate_with_floors(ids, Some(floors), decide).await
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        let now = self.monotonic_now();
        let states = match ids {
            None => {
                let rows = sqlx::query(sql::SELECT_ALL_STATES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|error| self.err("loading task states", error))?;
                rows.iter()
                    .map(|row| codec::decode_state_row(row).map(|(_, state)| state))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some([]) => Vec::new(),
            Some(ids) => {
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|error| self.err("loading task states", error))?;
                let stored = self.states_of(&mut conn, ids, "loading task states").await?;
                let mut states: Vec<TaskState> = ids.iter().filter_map(|id| stored.get(id).cloned()).collect();
                states.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
                states
            }
        };
        Ok((now, states))
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        let now = self.monotonic_now();
        let ids = sqlx::query_scalar::<_, String>(sql::SELECT_DUE_FOR_ATTENTION)
            .bind(codec::to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|error| self.err("polling for tasks that want attention", error))?;
        Ok((now, ids))
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(sql::SELECT_RUNS)
            .bind(task_id)
            .bind(query.before.as_deref())
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|error| self.err("reading run history", error))?;
        rows.iter().map(codec::decode_run).collect()
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        let mut tx = self.begin_immediate("starting to prune run history").await?;
        let outcome = self.prune_in(tx.conn(), plan).await;
        self.finish(tx, outcome, "the history pruning").await
    }
}
