//! Mapping of PostgreSQL and sqlx failures onto [`StoreError`], always naming the server and schema.
//!
//! Transient conditions — lost or refused connections, timeouts, serialization failures, deadlocks,
//! a server shutting down or starting up, too many connections — are [`StoreError::Unavailable`], which
//! the engine retries with backoff. A unique-key violation is [`StoreError::Duplicate`]; a missing
//! schema says to migrate; authentication and unknown databases are configuration errors.

use fleetcron_core::{StoreError, StoreLabel};

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// Whether the error is a unique-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    sqlstate(error).as_deref() == Some("23505")
}

/// The constraint a database error names, if any.
pub(crate) fn constraint(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
        _ => None,
    }
}

/// Whether the error says a table or the schema is missing (the store was never migrated).
pub(crate) fn is_missing_schema(error: &sqlx::Error) -> bool {
    matches!(sqlstate(error).as_deref(), Some("42P01" | "3F000"))
}

/// Whether the connection the error happened on cannot be trusted any more: it must be closed, not
/// returned to the pool.
pub(crate) fn breaks_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => {
            let code = sqlstate(error).unwrap_or_default();
            // Connection exceptions; the server shutting down, crashing or refusing the session.
            code.starts_with("08") || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "57P05")
        }
        _ => false,
    }
}

/// Maps a failure of an operation (`what`) on the store `label` (server and schema). The message is
/// scrubbed of the store URL's secrets: a driver message may quote them.
pub(crate) fn map(label: &StoreLabel, what: &str, error: sqlx::Error) -> StoreError {
    label.scrub_error(describe(label.as_str(), what, error))
}

fn describe(label: &str, what: &str, error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|code| code.into_owned()).unwrap_or_default();
            let message = db.message();
            let class = code.get(..2).unwrap_or("");
            match (class, code.as_str()) {
                (_, "23505") => StoreError::Duplicate(format!("{label}: {what}: {message}")),
                (_, "42P01" | "3F000") => StoreError::Config(format!(
                    "{label}: {what}: {message}: the fleetcron schema is missing; run `fleetcron migrate` (or \
                     Store::migrate) first"
                )),
                (_, "40001") => {
                    StoreError::Unavailable(format!("{label}: {what}: {message} (serialization failure; retry)"))
                }
                (_, "40P01") => StoreError::Unavailable(format!("{label}: {what}: {message} (deadlock; retry)")),
                (_, "57014") => StoreError::Unavailable(format!(
                    "{label}: {what}: {message} (the statement timeout passed, e.g. waiting for a lock another \
                     worker holds; retry)"
                )),
                (_, "55P03") => {
                    StoreError::Unavailable(format!("{label}: {what}: {message} (a lock was not available; retry)"))
                }
                (_, "25P03") => StoreError::Unavailable(format!(
                    "{label}: {what}: {message} (the transaction stayed idle past the idle timeout; retry)"
                )),
                (_, "25006") => StoreError::Unavailable(format!(
                    "{label}: {what}: {message} (the server is read-only: a standby, or a failover in \
                     progress; retry)"
                )),
                (_, "53200") => StoreError::Unavailable(format!(
                    "{label}: {what}: {message} (the server's lock table is full: each task of a batch holds one \
                     advisory lock, so raise max_locks_per_transaction or lower the engine's claim_batch; retry)"
                )),
                (_, "42501") => StoreError::ReadOnly(format!(
                    "{label}: {what}: {message} (grant the connecting role the privileges on the schema and its \
                     tables)"
                )),
                ("28", _) => StoreError::Config(format!(
                    "{label}: {what}: {message} (check the user and password of the store URL)"
                )),
                (_, "3D000") => StoreError::Config(format!(
                    "{label}: {what}: {message} (the database in the store URL does not exist; create it)"
                )),
                ("22", _) | ("XX", "XX001" | "XX002") => {
                    StoreError::Corrupt(format!("{label}: {what}: {message} (SQLSTATE {code})"))
                }
                // Connection exceptions, shutdown, resources, and anything else: may pass.
                _ => StoreError::Unavailable(format!("{label}: {what}: {message} (SQLSTATE {code})")),
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "{label}: {what}: timed out waiting for a connection (the server is unreachable or every pooled \
             connection is busy)"
        )),
        sqlx::Error::PoolClosed => StoreError::Unavailable(format!("{label}: {what}: the store was closed")),
        sqlx::Error::Io(io) => StoreError::Unavailable(format!("{label}: {what}: connection failed: {io}")),
        sqlx::Error::Configuration(reason) => StoreError::Config(format!("{label}: {what}: {reason}")),
        sqlx::Error::Tls(reason) => StoreError::Config(format!(
            "{label}: {what}: TLS: {reason} (this build of fleetcron connects without TLS: use sslmode=disable \
             or sslmode=prefer, or a TLS-terminating proxy)"
        )),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::InvalidArgument(_) => StoreError::Corrupt(format!("{label}: {what}: {error}")),
        _ => StoreError::Unavailable(format!("{label}: {what}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_are_scrubbed_of_the_url_secrets() {
        let url = "postgres://app:p%40ss%2Fw0rd@db:5432/jobs?password=qu3ry-secret";
        let label = StoreLabel::new("PostgreSQL db:5432/jobs (schema fleetcron)", url);
        for error in [
            sqlx::Error::Configuration("bad URL postgres://app:p%40ss%2Fw0rd@db, password p@ss/w0rd".into()),
            sqlx::Error::Io(std::io::Error::other("connect to qu3ry-secret failed")),
            sqlx::Error::Protocol("p@ss/w0rd".into()),
        ] {
            let mapped = map(&label, "connecting", error).to_string();
            for secret in ["p@ss/w0rd", "p%40ss%2Fw0rd", "qu3ry-secret"] {
                assert!(!mapped.contains(secret), "{mapped}");
            }
            assert!(mapped.contains("PostgreSQL db:5432/jobs"), "{mapped}");
        }
    }
}
