//! [`RedisStore`]: the [`Store`] contract over one Redis server.

use crate::codec::{self, EncodedRun, EncodedUpdate};
use crate::error;
use crate::keys::Keys;
use crate::pubsub;
use crate::scripts::{COMMIT, DUE, MIGRATE, PRUNE, READ_CLAIMS, READ_STATES, RUNS};
use async_trait::async_trait;
use fleetcron_core::store::frame::MonotonicClock;
use fleetcron_core::store::{Decide, Mutation, Store};
use fleetcron_core::{PrunePlan, RunQuery, RunRecord, StoreError, StoreLabel, TaskState, Timestamp};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The newest schema version (key layout) this build of the Redis store writes and understands.
/// 1: the key layout; 2: history rows may carry `slot_until` and `slot_count` (range rows), which an
/// older build would misread as a row of one slot, so it must refuse the store.
pub const SCHEMA_VERSION: i64 = 2;

/// How many times one mutation decides again for tasks that other workers changed meanwhile before it
/// gives up with [`StoreError::Unavailable`] (the engine then retries with backoff).
const MAX_COMMIT_ROUNDS: usize = 100;

/// Tasks read per script call when loading every task.
const READ_CHUNK: usize = 1_000;

/// Tasks whose history one prune script call handles (bounds how long Redis is blocked).
const PRUNE_CHUNK: usize = 50;

/// Settings of a [`RedisStore`]. Build with `RedisOptions::default()` and the `with_*` methods (or
/// struct update syntax).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The prefix of every key (and of the pub/sub channel), so several fleets or tests can share one
    /// server. Default: `fleetcron`. A `prefix` query parameter of the URL overrides it. 1 to 128
    /// characters of `A-Z a-z 0-9 . _ -`: no `:`, which separates the prefix from the task id in every
    /// key (so prefixes are isolated namespaces even when one extends another), and no braces, which
    /// would move the keys' hash tags.
    pub key_prefix: String,
    /// Added to the server's `TIME` to give the store's clock, at millisecond precision. Default: zero.
    /// Only tests and clock-skew simulations set it; every worker of a fleet must use the same value.
    pub clock_offset: chrono::Duration,
    /// How long one round trip may take (including waiting for a reconnection) before the operation
    /// fails with [`StoreError::Unavailable`]. Default: 5 s.
    pub response_timeout: Duration,
    /// How long one attempt to open a connection may take. Default: 2 s.
    pub connection_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: "fleetcron".to_owned(),
            clock_offset: chrono::Duration::zero(),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
        }
    }
}

impl RedisOptions {
    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, key_prefix: impl Into<String>) -> Self {
        self.key_prefix = key_prefix.into();
        self
    }

    /// Sets the offset added to the server's clock.
    pub fn with_clock_offset(mut self, clock_offset: chrono::Duration) -> Self {
        self.clock_offset = clock_offset;
        self
    }

    /// Sets the response timeout.
    pub fn with_response_timeout(mut self, response_timeout: Duration) -> Self {
        self.response_timeout = response_timeout;
        self
    }

    /// Sets the connection timeout.
    pub fn with_connection_timeout(mut self, connection_timeout: Duration) -> Self {
        self.connection_timeout = connection_timeout;
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        for (name, value) in [
            ("response_timeout", self.response_timeout),
            ("connection_timeout", self.connection_timeout),
        ] {
            if value.is_zero() {
                return Err(StoreError::Config(format!(
                    "RedisOptions::{name} must be greater than zero"
                )));
            }
        }
        Ok(())
    }
}

/// fleetcron's Redis store: each task's state document in a hash, its history in per-run hashes, every
/// change one atomic Lua script on the server's clock.
///
/// # Concurrency
/// [`Store::mutate`] is optimistic: one script reads the server's `TIME` and every task's document and
/// version; the engine decides; a second script checks that no task's version moved and that no new
/// run repeats a unique key, then writes the whole batch — or nothing, returning the current documents
/// of the tasks that moved, which are decided again (see the crate documentation).
///
/// # Connections
/// Commands share one multiplexed connection behind a [`ConnectionManager`], which reconnects with
/// backoff after the connection drops. An operation that gets no answer within
/// [`RedisOptions::response_timeout`] fails with [`StoreError::Unavailable`]; the engine retries.
/// Wake-ups are pushed over pub/sub on a second connection, opened on the first
/// [`Store::subscribe`].
pub struct RedisStore {
    client: redis::Client,
    manager: ConnectionManager,
    keys: Keys,
    offset_ms: std::sync::atomic::AtomicI64,
    response_timeout: Duration,
    connection_timeout: Duration,
    last_now: MonotonicClock,
    label: StoreLabel,
    wakeups: broadcast::Sender<String>,
    listener: Mutex<Option<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.label)
            .field("key_prefix", &self.keys.prefix())
            .field("clock_offset_ms", &self.offset_ms())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(PoisonError::into_inner).take() {
            listener.abort();
        }
    }
}

/// One task's encoded write, guarded by the version its decision was made on.
#[derive(Debug)]
struct Write {
    id: String,
    expected_version: i64,
    /// The new document, its attention time (epoch ms, rounded up) and its high-water mark (epoch ms,
    /// rounded down: a claim's floor compares with it).
    state: Option<(String, Option<i64>, i64)>,
    inserts: Vec<EncodedRun>,
    updates: Vec<EncodedUpdate>,
    /// For a claim, the earliest slot it wants (epoch ms, rounded up): when the task moved meanwhile
    /// and its mark reached this, the commit reports it accounted instead of sending its document.
    floor: Option<i64>,
}

impl Write {
    /// The write `mutation` asks for, or `None` when it changes nothing.
    fn new(id: &str, expected_version: i64, mutation: Mutation) -> Result<Option<Self>, StoreError> {
        if mutation.state.is_none() && mutation.insert_runs.is_empty() && mutation.update_runs.is_empty() {
            return Ok(None);
        }
        let state = mutation
            .state
            .map(|state| {
                let attention = state.attention_at().map(codec::ceil_ms);
                let mark = state.high_water.timestamp_millis();
                codec::encode_state(&state, id).map(|doc| (doc, attention, mark))
            })
            .transpose()?;
        Ok(Some(Self {
            id: id.to_owned(),
            expected_version,
            floor: None,
            state,
            inserts: mutation
                .insert_runs
                .into_iter()
                .map(EncodedRun::new)
                .collect::<Result<_, _>>()?,
            updates: mutation
                .update_runs
                .into_iter()
                .map(EncodedUpdate::new)
                .collect::<Result<_, _>>()?,
        }))
    }
}

/// What the commit script answered.
enum CommitReply {
    Committed,
    /// Nothing was written: these tasks (indexes into the batch) moved; their current document and
    /// version, and the server's time.
    /// Nothing written: these writes' tasks moved (index, current doc and version; version -1 and no
    /// doc for a claim whose task is now accounted up to its floor).
    Conflict {
        server_ms: i64,
        moved: Vec<(usize, Option<Vec<u8>>, i64)>,
    },
    /// Nothing was written: a new run of the task at this index hits a unique key.
    Duplicate {
        index: usize,
        what: String,
        detail: String,
    },
}

impl RedisStore {
    /// Connects to the server a `redis://` URL names, with default options; see [`Self::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connects to `url` (`redis://[user:password@]host[:port][/db][?prefix=NAME]`) with `options`; a
    /// `prefix` query parameter overrides [`RedisOptions::key_prefix`] and is not passed to the client.
    ///
    /// Fails with [`StoreError::Config`] for an invalid URL or options (and for `rediss://` in this
    /// build, which has no TLS support compiled in), and with [`StoreError::Unavailable`] when the
    /// server does not answer a `PING` within the timeouts. Does not create anything: call
    /// [`Store::migrate`] (the engine does on `init`).
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        Self::connect_checked(url, options).await
    }

    /// Checks a URL as [`Self::connect`] would, without connecting: scheme, parameters, key prefix.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let parsed = crate::url::parse(url)?;
        if let Some(prefix) = &parsed.prefix {
            Keys::new(prefix)?;
        }
        redis::Client::open(parsed.connect.as_str()).map_err(|error| {
            StoreLabel::new(parsed.label.clone(), url).scrub_error(StoreError::Config(format!(
                "Redis URL {}: {error}",
                fleetcron_core::redact_url(url)
            )))
        })?;
        Ok(())
    }

    async fn connect_checked(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        options.validate()?;
        let parsed = crate::url::parse(url)?;
        let keys = Keys::new(parsed.prefix.as_deref().unwrap_or(&options.key_prefix))?;
        let label = StoreLabel::new(format!("{} (key prefix {})", parsed.label, keys.prefix()), url);
        let client = redis::Client::open(parsed.connect.as_str()).map_err(|error| {
            label.scrub_error(StoreError::Config(format!(
                "Redis URL {}: {error}{}",
                fleetcron_core::redact_url(url),
                if parsed.connect.to_ascii_lowercase().starts_with("rediss") {
                    " (this build of fleetcron-redis has no TLS support; use redis:// or a TLS tunnel)"
                } else {
                    ""
                }
            )))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|error| error::map(&label, "creating the connection manager", error))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Config("the Redis store must be connected from within a tokio runtime".to_owned())
        })?;
        let (wakeups, _) = broadcast::channel(1024);
        let store = Self {
            client,
            manager,
            offset_ms: std::sync::atomic::AtomicI64::new(options.clock_offset.num_milliseconds()),
            response_timeout: options.response_timeout,
            connection_timeout: options.connection_timeout,
            last_now: MonotonicClock::new(),
            label,
            keys,
            wakeups,
            listener: Mutex::new(None),
            runtime,
        };
        store.ping().await?;
        Ok(store)
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The offset added to the server's clock, in whole milliseconds.
    pub fn clock_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.offset_ms())
    }

    /// Changes the offset added to the server's clock (tests and clock-skew simulations). The store's
    /// clock still never goes back: after a step back it holds its last reading until the server
    /// catches up.
    pub fn set_clock_offset(&self, clock_offset: chrono::Duration) {
        self.offset_ms
            .store(clock_offset.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
    }

    fn offset_ms(&self) -> i64 {
        self.offset_ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A `SCAN MATCH` pattern that matches every key under this store's prefix and no key of another
    /// prefix (not even one that extends this one: `{fleet}`/`{fleet:…` never match `{fleet.b…`), for
    /// operators who want to inspect or delete a fleet's keys.
    pub fn key_pattern(&self) -> String {
        self.keys.scan_pattern()
    }

    /// Checks that the server answers, within the response timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.manager.clone();
        let reply: Value = self
            .call("pinging the server", async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        match reply {
            Value::SimpleString(_) | Value::Okay | Value::BulkString(_) => Ok(()),
            other => Err(codec::unexpected("PING", &other)),
        }
    }

    /// The schema version stored under the prefix (0 before the first [`Store::migrate`]).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.manager.clone();
        let key = self.keys.schema();
        let reply: Value = self
            .call("reading the schema version", async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(codec::integer(&reply, "the schema version")?.unwrap_or(0))
    }

    /// Runs one round trip, bounded by the response timeout.
    async fn call<T>(&self, what: &str, future: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.response_timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(error::map(&self.label, what, failure)),
            Err(_) => Err(error::timed_out(&self.label, what, self.response_timeout)),
        }
    }

    /// Runs a prepared script, bounded by the response timeout.
    async fn script(&self, what: &str, invocation: &redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.manager.clone();
        self.call(what, async move { invocation.invoke_async::<Value>(&mut conn).await })
            .await
    }

    /// The store's clock for a server reading: offset, never behind an earlier reading of this store.
    fn observe(&self, server_ms: i64) -> Result<Timestamp, StoreError> {
        self.observe_store_ms(server_ms.saturating_add(self.offset_ms()))
    }

    /// Like [`Self::observe`] for a reading that has the offset applied already.
    fn observe_store_ms(&self, candidate: i64) -> Result<Timestamp, StoreError> {
        Ok(self.last_now.observe(codec::from_ms(candidate, "the store clock")?))
    }

    fn last_now_ms(&self) -> Option<i64> {
        self.last_now.floor().map(|at| at.timestamp_millis())
    }

    /// The server's time and each task's stored document and version, in one atomic script.
    async fn read_states(&self, ids: &[String], what: &str) -> Result<(i64, Vec<(Option<Vec<u8>>, i64)>), StoreError> {
        let mut invocation = READ_STATES.prepare_invoke();
        for id in ids {
            invocation.key(self.keys.state(id));
        }
        let reply = self.script(what, &invocation).await?;
        let items = codec::array(&reply, what)?;
        if items.len() != 2 + 2 * ids.len() {
            return Err(codec::unexpected(what, &reply));
        }
        let server_ms = codec::time_ms(&items[0], &items[1])?;
        let states = items[2..]
            .chunks(2)
            .zip(ids)
            .map(|(pair, id)| {
                let doc = codec::text(&pair[0]).map(<[u8]>::to_vec);
                let version = codec::integer(&pair[1], &format!("task {id}: version"))?.unwrap_or(0);
                Ok((doc, version))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((server_ms, states))
    }

    /// [`Self::read_states`] for claims: the server's time, each task's document and version, or `None`
    /// for a task whose stored mark is at or after its floor (already accounted: nothing sent).
    async fn read_claims(
        &self,
        ids: &[String],
        floors: &[Timestamp],
    ) -> Result<(i64, Vec<Option<(Option<Vec<u8>>, i64)>>), StoreError> {
        const WHAT: &str = "reading task states for a claim";
        let mut invocation = READ_CLAIMS.prepare_invoke();
        for (id, floor) in ids.iter().zip(floors) {
            invocation.key(self.keys.state(id)).arg(codec::ceil_ms(*floor));
        }
        let reply = self.script(WHAT, &invocation).await?;
        let items = codec::array(&reply, WHAT)?;
        if items.len() != 2 + 3 * ids.len() {
            return Err(codec::unexpected(WHAT, &reply));
        }
        let server_ms = codec::time_ms(&items[0], &items[1])?;
        let states = items[2..]
            .chunks(3)
            .zip(ids)
            .map(|(triple, id)| {
                if codec::integer(&triple[0], &format!("task {id}: accounted"))? == Some(1) {
                    return Ok(None);
                }
                let doc = codec::text(&triple[1]).map(<[u8]>::to_vec);
                let version = codec::integer(&triple[2], &format!("task {id}: version"))?.unwrap_or(0);
                Ok(Some((doc, version)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((server_ms, states))
    }

    /// Every task id with keys under the prefix, sorted.
    async fn task_ids(&self, what: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.manager.clone();
        let key = self.keys.tasks();
        self.call(what, async move {
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    async fn commit(&self, writes: &[Write]) -> Result<CommitReply, StoreError> {
        const WHAT: &str = "committing a mutation";
        let mut invocation = COMMIT.prepare_invoke();
        invocation.key(self.keys.tasks()).key(self.keys.attention());
        for write in writes {
            invocation
                .key(self.keys.state(&write.id))
                .key(self.keys.runs(&write.id))
                .key(self.keys.slots(&write.id));
        }
        invocation.arg(writes.len());
        for write in writes {
            let (doc, attention, mark) = match &write.state {
                Some((doc, attention, mark)) => (
                    doc.as_str(),
                    attention.map(|ms| ms.to_string()).unwrap_or_default(),
                    mark.to_string(),
                ),
                None => ("", String::new(), String::new()),
            };
            invocation
                .arg(&write.id)
                .arg(write.expected_version)
                .arg(if write.state.is_some() { "1" } else { "0" })
                .arg(doc)
                .arg(attention)
                .arg(mark)
                .arg(write.floor.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(write.inserts.len());
            for insert in &write.inserts {
                invocation
                    .arg(&insert.run_id)
                    .arg(insert.slot_key.as_deref().unwrap_or(""))
                    .arg(insert.fields.len());
                for (name, value) in &insert.fields {
                    invocation.arg(*name).arg(value);
                }
            }
            invocation.arg(write.updates.len());
            for update in &write.updates {
                invocation.arg(&update.run_id).arg(update.set.len());
                for (name, value) in &update.set {
                    invocation.arg(*name).arg(value);
                }
                invocation.arg(update.delete.len());
                for name in &update.delete {
                    invocation.arg(*name);
                }
            }
        }
        let reply = self.script(WHAT, &invocation).await?;
        let items = codec::array(&reply, WHAT)?;
        let tag = items.first().map(|tag| codec::string(tag, WHAT)).transpose()?;
        let index = |value: &Value| -> Result<usize, StoreError> {
            codec::integer(value, WHAT)?
                .and_then(|index| usize::try_from(index).ok())
                .filter(|index| (1..=writes.len()).contains(index))
                .map(|index| index - 1)
                .ok_or_else(|| codec::unexpected(WHAT, value))
        };
        match (tag.as_deref(), items) {
            (Some("ok"), _) => Ok(CommitReply::Committed),
            (Some("conflict"), [_, seconds, micros, moved @ ..]) if moved.len() % 3 == 0 => {
                let server_ms = codec::time_ms(seconds, micros)?;
                let moved = moved
                    .chunks(3)
                    .map(|entry| {
                        let index = index(&entry[0])?;
                        let doc = codec::text(&entry[1]).map(<[u8]>::to_vec);
                        let version = codec::integer(&entry[2], WHAT)?.unwrap_or(0);
                        Ok((index, doc, version))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(CommitReply::Conflict { server_ms, moved })
            }
            (Some("duplicate"), [_, at, what, detail]) => Ok(CommitReply::Duplicate {
                index: index(at)?,
                what: codec::string(what, WHAT)?,
                detail: codec::string(detail, WHAT)?,
            }),
            _ => Err(codec::unexpected(WHAT, &reply)),
        }
    }

    fn duplicate(&self, write: &Write, what: &str, detail: &str) -> StoreError {
        if what == "slot" {
            let (slot, attempt) = detail.split_once(':').unwrap_or((detail, "?"));
            let slot = slot
                .parse::<i64>()
                .ok()
                .and_then(|ms| codec::from_ms(ms, "slot").ok())
                .map_or_else(|| format!("{slot} ms"), |slot| slot.to_rfc3339());
            StoreError::Duplicate(format!(
                "task {} slot {slot} attempt {attempt} already has a history row (Redis {})",
                write.id, self.label
            ))
        } else {
            StoreError::Duplicate(format!(
                "run id {detail} of task {} already has a history row (Redis {})",
                write.id, self.label
            ))
        }
    }

    fn spawn_listener(&self) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.as_ref().is_some_and(|handle| !handle.is_finished()) {
            return;
        }
        *listener = Some(self.runtime.spawn(pubsub::listen(
            self.client.clone(),
            self.keys.wake_channel(),
            self.wakeups.clone(),
            self.connection_timeout,
            self.label.clone(),
        )));
    }
}

fn decode(doc: Option<&[u8]>, id: &str) -> Result<Option<TaskState>, StoreError> {
    doc.map(|doc| codec::decode_state(doc, id)).transpose()
}

#[async_trait]
impl Store for RedisStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut invocation = MIGRATE.prepare_invoke();
        invocation.key(self.keys.schema()).arg(SCHEMA_VERSION);
        let reply = self.script("migrating the schema", &invocation).await?;
        let found = codec::integer(&reply, "the schema version")?.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            tracing::info!(server = %self.label, from = found, to = SCHEMA_VERSION, "applied fleetcron schema version");
        }
        Ok(())
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        let mut conn = self.manager.clone();
        let reply: Value = self
            .call("reading the server clock", async move {
                redis::cmd("TIME").query_async(&mut conn).await
            })
            .await?;
        match codec::array(&reply, "TIME")? {
            [seconds, micros] => self.observe(codec::time_ms(seconds, micros)?),
            _ => Err(codec::unexpected("TIME", &reply)),
        }
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        if ids.is_empty() {
            return self.now().await;
        }
        let (server_ms, stored) = self.read_states(ids, "reading task states").await?;
        let stored = ids.iter().zip(stored).map(|(id, stored)| (id, stored, None));
        self.decide_and_commit(stored, server_ms, decide)
            .await
            .map(|(now, _)| now)
    }

    /// Claims read only the documents of tasks not yet accounted up to their floor (see
    /// `lua/read_claims.lua`); the rest is [`Store::mutate`].
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
        let (server_ms, stored) = self.read_claims(ids, floors).await?;
        let mut left_out = Vec::new();
        let mut kept = Vec::with_capacity(ids.len());
        for ((id, stored), floor) in ids.iter().zip(stored).zip(floors) {
            match stored {
                Some(stored) => kept.push((id, stored, Some(codec::ceil_ms(*floor)))),
                None => left_out.push(id.clone()),
            }
        }
        let (now, accounted) = self.decide_and_commit(kept.into_iter(), server_ms, decide).await?;
        left_out.extend(accounted);
        Ok((now, left_out))
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        const WHAT: &str = "loading task states";
        let ids = match ids {
            Some(ids) => ids.to_vec(),
            None => self.task_ids(WHAT).await?,
        };
        let mut server_ms = None;
        let mut states = Vec::with_capacity(ids.len());
        let chunks: Vec<&[String]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(READ_CHUNK).collect()
        };
        // The chunks go out together on the multiplexed connection (pipelined).
        let replies = futures::future::try_join_all(chunks.iter().map(|chunk| self.read_states(chunk, WHAT))).await?;
        for (chunk, (chunk_ms, stored)) in chunks.iter().zip(replies) {
            server_ms = Some(server_ms.map_or(chunk_ms, |ms: i64| ms.max(chunk_ms)));
            for (id, (doc, _)) in chunk.iter().zip(stored) {
                if let Some(state) = decode(doc.as_deref(), id)? {
                    states.push(state);
                }
            }
        }
        states.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        let now = match server_ms {
            Some(ms) => self.observe(ms)?,
            None => self.now().await?,
        };
        Ok((now, states))
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        const WHAT: &str = "polling for tasks that want attention";
        let offset_ms = self.offset_ms();
        let mut invocation = DUE.prepare_invoke();
        invocation
            .key(self.keys.attention())
            .arg(offset_ms)
            .arg(self.last_now_ms().map(|ms| ms.to_string()).unwrap_or_default())
            .arg(limit);
        let reply = self.script(WHAT, &invocation).await?;
        match codec::array(&reply, WHAT)? {
            [now, ids] => {
                let now_ms = codec::integer(now, WHAT)?.ok_or_else(|| codec::unexpected(WHAT, &reply))?;
                let ids = codec::array(ids, WHAT)?
                    .iter()
                    .map(|id| codec::string(id, WHAT))
                    .collect::<Result<Vec<_>, _>>()?;
                // The script applied the offset and this store's floor already.
                let now = self.observe_store_ms(now_ms)?;
                Ok((now, ids))
            }
            _ => Err(codec::unexpected(WHAT, &reply)),
        }
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        const WHAT: &str = "reading run history";
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let upper = query
            .before
            .as_ref()
            .map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        let mut invocation = RUNS.prepare_invoke();
        invocation.key(self.keys.runs(task_id)).arg(upper).arg(query.limit);
        let reply = self.script(WHAT, &invocation).await?;
        codec::array(&reply, WHAT)?.iter().map(codec::decode_run).collect()
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        const WHAT: &str = "pruning run history";
        let cutoff = plan.finished_before.map(codec::ceil_ms);
        if plan.keep_last.is_none() && cutoff.is_none() {
            return Ok(0);
        }
        let ids = self.task_ids(WHAT).await?;
        let mut removed = 0u64;
        for chunk in ids.chunks(PRUNE_CHUNK) {
            let mut invocation = PRUNE.prepare_invoke();
            for id in chunk {
                invocation.key(self.keys.runs(id)).key(self.keys.slots(id));
            }
            invocation
                .arg(cutoff.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(plan.keep_last.map(|keep| keep.to_string()).unwrap_or_default());
            let reply = self.script(WHAT, &invocation).await?;
            let count = codec::integer(&reply, WHAT)?.unwrap_or(0);
            removed = removed.saturating_add(u64::try_from(count).unwrap_or(0));
        }
        Ok(removed)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<String>> {
        let receiver = self.wakeups.subscribe();
        self.spawn_listener();
        Some(receiver)
    }

    async fn notify(&self, task_id: &str) -> Result<(), StoreError> {
        let mut conn = self.manager.clone();
        let channel = self.keys.wake_channel();
        let task_id = task_id.to_owned();
        let _receivers: i64 = self
            .call("publishing a wake-up", async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(task_id)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }
}

impl RedisStore {
    /// Decides every task on its stored document (read at `server_ms`) and commits the batch, deciding
    /// again the tasks another writer moved meanwhile.
    /// Returns the store time and, for claims (a floor given), the ids of tasks found accounted up to
    /// their floor when a commit met them moved: left out, as [`Store::mutate_claims`] allows.
    async fn decide_and_commit<'i>(
        &self,
        stored: impl Iterator<Item = (&'i String, (Option<Vec<u8>>, i64), Option<i64>)>,
        server_ms: i64,
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        let mut now = self.observe(server_ms)?;
        let mut writes = Vec::new();
        let mut accounted = Vec::new();
        for (id, (doc, version), floor) in stored {
            let state = decode(doc.as_deref(), id)?;
            if let Some(mut write) = Write::new(id, version, decide(now, id, state.as_ref()))? {
                write.floor = floor;
                writes.push(write);
            }
        }
        for _ in 0..MAX_COMMIT_ROUNDS {
            if writes.is_empty() {
                return Ok((now, accounted));
            }
            match self.commit(&writes).await? {
                CommitReply::Committed => return Ok((now, accounted)),
                CommitReply::Duplicate { index, what, detail } => {
                    return Err(self.duplicate(&writes[index], &what, &detail));
                }
                CommitReply::Conflict { server_ms, moved } => {
                    // Decide again, on the current documents, for the tasks that moved; the others'
                    // decisions stand (their versions are checked again by the next commit).
                    now = self.observe(server_ms)?;
                    let mut slots: Vec<Option<Write>> = writes.into_iter().map(Some).collect();
                    for (index, doc, version) in moved {
                        let Some((id, floor)) = slots[index].as_ref().map(|write| (write.id.clone(), write.floor))
                        else {
                            continue;
                        };
                        if version < 0 && floor.is_some() {
                            // Another worker accounted the slots this claim wanted: nothing to decide.
                            slots[index] = None;
                            accounted.push(id);
                            continue;
                        }
                        let state = decode(doc.as_deref(), &id)?;
                        slots[index] = Write::new(&id, version, decide(now, &id, state.as_ref()))?.map(|mut write| {
                            write.floor = floor;
                            write
                        });
                    }
                    writes = slots.into_iter().flatten().collect();
                }
            }
        }
        let moved: Vec<&str> = writes.iter().map(|write| write.id.as_str()).take(5).collect();
        Err(StoreError::Unavailable(format!(
            "Redis {}: tasks {moved:?} changed under this mutation {MAX_COMMIT_ROUNDS} times in a row; retry",
            self.label
        )))
    }
}
