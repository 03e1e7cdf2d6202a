//! fleetcron's PostgreSQL store (PostgreSQL 13 or newer): task state and run history in one schema,
//! claims on the server's clock, triggers pushed with `LISTEN`/`NOTIFY`.
//!
//! ```no_run
//! # async fn example() -> Result<(), fleetcron_core::StoreError> {
//! use fleetcron_core::Store;
//! use fleetcron_postgres::PostgresStore;
//!
//! let store = PostgresStore::connect("postgres://fleetcron@db.internal/app?schema=fleetcron").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema (version 1), in the configured schema (default `fleetcron`)
//! * `fleetcron_schema(version integer PRIMARY KEY, description text, applied_at timestamptz)`: one
//!   row per applied migration; the schema version is the largest.
//! * `fleetcron_tasks(id text PRIMARY KEY, state jsonb /* TaskState */, enabled boolean,
//!   attention_at timestamptz NULL, updated_at timestamptz)`, with a partial index on `attention_at`.
//! * `fleetcron_runs(run_id text PRIMARY KEY, task_id, kind, slot timestamptz NULL, attempt integer,
//!   fence bigint, worker, trigger_id, claimed_at, started_at, finished_at, status, reason,
//!   result jsonb, error)`, `UNIQUE (task_id, slot, attempt)` and an index on `(task_id, run_id)`.
//!
//! Identifiers use the `"C"` collation; enums are stored by their snake_case names. History rows that
//! are not finished (`running`, `pending`) are never pruned. Migrations run under a session advisory
//! lock, so any number of workers may call [`Store::migrate`](fleetcron_core::Store::migrate) at once.
//!
//! # Locks
//! A mutation takes one transaction-scoped advisory lock per task, in the two-`int4` key space:
//! `(FNV-1a-32("fleetcron:" + schema), FNV-1a-32(task id))`, in ascending order of the second key. The
//! migration lock is `FNV-1a-64("fleetcron:migrate:" + schema)` in the single-`int8` space. These keys
//! are part of the store's protocol: every worker of a schema must compute them alike.
//!
//! See [`PostgresStore`] for the concurrency model and fault handling.

mod codec;
mod error;
mod listener;
mod sql;
mod store;
mod url;

pub use store::{PostgresOptions, PostgresStore, DEFAULT_SCHEMA, SCHEMA_VERSION};

/// The shared engine over a [`PostgresStore`].
pub type PostgresStrategy = fleetcron_core::EngineStrategy<PostgresStore>;
