//! fleetcron's Redis store: task state in hashes, every change one atomic Lua script on the server's
//! clock, run history per task, manual triggers pushed over pub/sub.
//!
//! ```no_run
//! # async fn example() -> Result<(), fleetcron_core::StoreError> {
//! use fleetcron_core::Store;
//! use fleetcron_redis::RedisStore;
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379/0?prefix=jobs").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Key layout (schema version 1)
//! The prefix (default `fleetcron`) is 1 to 128 characters of `A-Z a-z 0-9 . _ -`. It holds no `:`,
//! the separator between prefix and task id, so the layout is injective: two prefixes never share a
//! key or a channel even when one extends the other (`fleet` and `fleet.b`), and
//! [`RedisStore::key_pattern`] matches one prefix's keys only. (Task ids may contain `:`.)
//!
//! Every key of one task shares the hash tag `{<prefix>:<task_id>}`:
//! * `{p:t}:state` — hash: `doc` (the `TaskState` JSON), `version` (+1 on every write to the task;
//!   absent = 0 = the task does not exist), `attention_at` (epoch ms, or empty).
//! * `{p:t}:runs` — sorted set, every score 0, member = run id: the history index. Run ids are UUIDv7s,
//!   so lexical order (`ZREVRANGEBYLEX`) is creation order; pages are newest first, `before` exclusive.
//! * `{p:t}:run:<run_id>` — hash: one field per history column (`run_id`, `task_id`, `kind`, `slot`,
//!   `attempt`, `fence`, `worker`, `trigger_id`, `claimed_at`, `started_at`, `finished_at`, `status`,
//!   `reason`, `result` (JSON), `error`); an absent field is `None`; instants are epoch milliseconds.
//! * `{p:t}:slots` — set of `<slot_ms>:<attempt>`: the unique key of the history. It is a plain set
//!   member, never an expiring key: it lives exactly as long as its history row (pruning removes both).
//!
//! Fleet-wide keys share the hash tag `{<prefix>}`:
//! * `{p}:tasks` — sorted set, score 0: every task id with keys under the prefix (`load(None)`, pruning).
//! * `{p}:attention` — sorted set, task id scored by its attention time (epoch ms, rounded up); a task
//!   that wants no attention is not in it. The idle poll is one script (`TIME` + `ZRANGEBYSCORE` on it)
//!   and returns the most overdue tasks first.
//! * `{p}:schema` — the layout's schema version.
//! * Channel `<p>:wake` — trigger wake-ups (payload: the task id).
//!
//! # Mutations: optimistic, version-guarded, all or nothing
//! [`Store::mutate`](fleetcron_core::Store::mutate) reads the server's `TIME` and every task's document
//! and version in one script, lets the engine decide with that time (plus
//! [`RedisOptions::clock_offset`], truncated to milliseconds and never behind an earlier reading of the
//! same store), then runs the commit script. The script first compares every task's version with the
//! one its decision was made on (absent = 0, so two workers that both saw a task missing cannot both
//! create it), then checks that no new run repeats a run id or a `(slot, attempt)` of its task, and only
//! then writes: documents, versions, indexes, new run hashes and their slot keys, and changes of existing
//! runs. A Lua script is atomic, so no other client's command interleaves. When any task moved, nothing
//! is written and the script returns the current documents of the tasks that moved plus the server's
//! time; those tasks are decided again (the others' decisions stand, and are checked again) and the
//! commit is retried, at most 100 times before [`StoreError::Unavailable`](fleetcron_core::StoreError).
//! A unique-key clash writes nothing for the whole batch and returns
//! [`StoreError::Duplicate`](fleetcron_core::StoreError), as the SQL stores' rolled-back transaction
//! does; the engine then retries the batch one task at a time.
//!
//! # Redis Cluster
//! The layout is ready for Cluster (all keys of a task in one slot, the fleet-wide keys in another),
//! but this build talks to one server (or a primary with replicas / Sentinel): the commit script of a
//! batch touches the keys of several tasks and the fleet-wide indexes, which Cluster refuses across
//! slots. A Cluster deployment needs the batch split into one script per task slot, with the two
//! indexes maintained separately (they are hints: the attention index can be rebuilt from the
//! documents). History run hashes are addressed inside scripts from their task's declared keys (same
//! slot).
//!
//! # Durability
//! Redis acknowledges a write before it reaches disk unless AOF is on with `appendfsync always`; see
//! the crate's README for what is lost on a restart under each setting.

mod codec;
mod error;
mod keys;
mod pubsub;
mod scripts;
mod store;
mod url;

pub use store::{RedisOptions, RedisStore, SCHEMA_VERSION};

/// The shared engine over a [`RedisStore`].
pub type RedisStrategy = fleetcron_core::EngineStrategy<RedisStore>;
