//! Write transactions that never give the pool back a connection with a transaction open.
//!
//! sqlx's `Transaction` (0.8) keeps its own depth counter: when `COMMIT` fails — a full disk, an I/O
//! error — SQLite may already have rolled the transaction back, the `ROLLBACK` that sqlx queues on drop
//! then fails, the counter stays at 1, and the connection goes back to the pool where every later
//! `BEGIN IMMEDIATE` on it fails ("attempted to call begin_with at non-zero transaction depth") until
//! the process restarts. [`WriteTx`] issues `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` itself and
//! tracks one fact: whether the connection is known to be outside any transaction. Only then does
//! the connection return to the pool; a failed `COMMIT` is followed by a `ROLLBACK`, and when that
//! fails too — or the state is unknown (a future dropped half-way, a failed `BEGIN` other than
//! "busy") — the connection is closed (which rolls back whatever it held) and the pool opens a fresh one.

use crate::error::is_busy;
use crate::sql;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

/// A pooled connection inside a `BEGIN IMMEDIATE` transaction.
pub(crate) struct WriteTx {
    conn: PoolConnection<Sqlite>,
    /// Whether the connection is known to be outside any transaction: only then may it be reused.
    clean: bool,
}

impl WriteTx {
    /// Takes a connection of `pool` and starts a write transaction on it (waiting up to the busy
    /// timeout for the file's write lock).
    pub(crate) async fn begin(pool: &SqlitePool) -> Result<Self, sqlx::Error> {
        Self::begin_on(pool.acquire().await?).await
    }

    /// Starts a write transaction on `conn`.
    pub(crate) async fn begin_on(conn: PoolConnection<Sqlite>) -> Result<Self, sqlx::Error> {
        // Unclean from here on: if this future is dropped while BEGIN is in flight, the connection closes.
        let mut tx = Self { conn, clean: false };
        match sqlx::query(sql::BEGIN_IMMEDIATE).execute(tx.conn()).await {
            Ok(_) => Ok(tx),
            Err(error) => {
                // A BEGIN IMMEDIATE refused for the lock starts nothing; after any other failure the
                // state is unknown and the connection is closed on drop.
                tx.clean = is_busy(&error);
                Err(error)
            }
        }
    }

    /// The connection, to run the transaction's statements on.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Commits. When the commit fails the transaction is rolled back, or its connection closed.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        match sqlx::query(sql::COMMIT).execute(self.conn()).await {
            Ok(_) => {
                self.clean = true;
                Ok(())
            }
            Err(error) => {
                self.discard().await;
                Err(error)
            }
        }
    }

    /// Rolls back. When the rollback fails the connection is closed (which rolls back anyway) and the
    /// error returned.
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query(sql::ROLLBACK).execute(self.conn()).await?;
        self.clean = true;
        Ok(())
    }

    /// Ends the transaction after a failure, whatever it takes: a rollback, else closing the connection.
    pub(crate) async fn discard(self) {
        if let Err(error) = self.rollback().await {
            tracing::debug!(%error, "rollback after a failed SQLite transaction failed; its connection was closed");
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.clean {
            // A failed COMMIT/ROLLBACK, an error returned early, a cancelled future: the connection must
            // not go back to the pool. sqlx closes it in the background instead (SQLite rolls back
            // whatever it held) and the pool opens a fresh one when needed.
            // (It keeps its pool permit while closing, so the pool never exceeds its size.)
            self.conn.close_on_drop();
        }
    }
}
