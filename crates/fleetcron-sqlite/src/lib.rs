//! fleetcron's embedded default store: task state and run history in one SQLite file, shared by the
//! worker processes of one host.
//!
//! ```no_run
//! # async fn example() -> Result<(), fleetcron_core::StoreError> {
//! use fleetcron_core::Store;
//! use fleetcron_sqlite::SqliteStore;
//!
//! let store = SqliteStore::from_url("sqlite:///var/lib/fleetcron/fleetcron.db").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema (version 1)
//! * `fleetcron_schema(version INTEGER PRIMARY KEY, applied_at INTEGER)`: one row per applied
//!   migration; the schema version is the largest.
//! * `fleetcron_tasks(id TEXT PRIMARY KEY, state TEXT /* TaskState JSON */, enabled INTEGER,
//!   attention_at INTEGER NULL, updated_at INTEGER)`, with a partial index on `attention_at`.
//! * `fleetcron_runs(run_id TEXT PRIMARY KEY, task_id, kind, slot NULL, attempt, fence, worker,
//!   trigger_id, claimed_at, started_at, finished_at, status, reason, result /* JSON */, error)`,
//!   `UNIQUE (task_id, slot, attempt)` and an index on `(task_id, run_id)`.
//!
//! Instants are epoch milliseconds; enums are stored by their snake_case names. History rows that are
//! not finished (`running`, `pending`) are never pruned. See [`SqliteStore`] for the concurrency model.

mod codec;
mod error;
mod sql;
mod store;
mod tx;
mod url;

pub use store::{SqliteOptions, SqliteStore, SCHEMA_VERSION};

/// The shared engine over a [`SqliteStore`]: fleetcron's default strategy.
pub type SqliteStrategy = fleetcron_core::EngineStrategy<SqliteStore>;
