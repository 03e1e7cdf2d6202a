//! fleetcron's MySQL 8 / MariaDB ≥ 10.6 store: task state and run history in two InnoDB tables, shared
//! by workers on any number of hosts, with the server's clock as the authority.
//!
//! ```no_run
//! # async fn example() -> Result<(), fleetcron_core::StoreError> {
//! use fleetcron_core::Store;
//! use fleetcron_mysql::MysqlStore;
//!
//! let store = MysqlStore::connect("mysql://fleetcron:secret@db.internal:3306/jobs").await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! URLs: `mysql://user:password@host:port/database` or `mariadb://...`; the query parameter
//! `table_prefix=name_` (default `fleetcron_`) selects the tables, other parameters (`ssl-mode`, ...)
//! go to the driver. Manual triggers are found by polling (the engine's poll interval, default 1 s):
//! neither server can push.
//!
//! # Schema (version 1)
//! All tables are InnoDB, `utf8mb4` with the binary collation `utf8mb4_bin` (ids compare and sort byte by
//! byte). Instants are `DATETIME(3)` in UTC (whole milliseconds); JSON documents are `LONGTEXT`
//! written and validated by this crate.
//! * `<prefix>schema(version INT PRIMARY KEY, description, applied_at)`: one row per applied migration.
//! * `<prefix>tasks(id VARCHAR(128) PRIMARY KEY, state LONGTEXT /* TaskState JSON */, enabled BOOLEAN,
//!   attention_at DATETIME(3) NULL, updated_at DATETIME(3))`, with an index on `attention_at`.
//! * `<prefix>runs(run_id VARCHAR(64) PRIMARY KEY, task_id VARCHAR(128), kind, slot DATETIME(3) NULL,
//!   attempt INT UNSIGNED, fence BIGINT UNSIGNED, worker, trigger_id, claimed_at, started_at,
//!   finished_at, status, reason MEDIUMTEXT, result LONGTEXT /* JSON */, error MEDIUMTEXT)`, with
//!   `UNIQUE (task_id, slot, attempt)` and an index on `(task_id, run_id)`.
//!
//! # Statement size
//! The server refuses any packet over its `max_allowed_packet` (16 MiB by default on MariaDB), and a
//! statement's parameters travel in one packet. The store reads `max_allowed_packet` at connect and cuts
//! every multi-row write by bytes as well as by rows: at most half of `max_allowed_packet`, and at most
//! 8 MiB, of row data per statement (a larger single row goes alone). A history row or state document
//! larger than half of `max_allowed_packet` keeps the end of its error text, led by a note saying how
//! much was cut (and, if that is not enough, its result is replaced by a note), so a run's outcome is
//! always recorded; with the engine's default bounds (64 KiB results) this never happens.
//!
//! Migrations run under the server lock `GET_LOCK('<database>.<prefix>migrate')`, so any number of
//! workers may call [`Store::migrate`](fleetcron_core::Store::migrate) at once. History rows that are
//! not finished (`running`, `pending`) are never pruned.
//!
//! # Server requirements
//! Transactions run in `READ COMMITTED`; with binary logging on, `binlog_format` must be `ROW` (MySQL 8's
//! default) or `MIXED` (MariaDB's). For the guarantees to survive a server crash keep
//! `innodb_flush_log_at_trx_commit=1` (the default), and with replication `sync_binlog=1` and
//! semi-synchronous or Galera/group replication: an asynchronous replica promoted after a failover may
//! have lost committed claims. See [`MysqlStore`] for the concurrency model.

mod codec;
mod error;
mod packet;
mod sql;
mod store;
mod url;

pub use store::{MysqlOptions, MysqlStore, SCHEMA_VERSION};

/// The shared engine over a [`MysqlStore`].
pub type MysqlStrategy = fleetcron_core::EngineStrategy<MysqlStore>;
