//! Mapping of MySQL/MariaDB and sqlx failures onto [`StoreError`], always naming the server and database
//! (never the password).

use fleetcron_core::{StoreError, StoreLabel};
use sqlx::mysql::MySqlDatabaseError;

// Server error numbers (the same in MySQL and MariaDB).
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
const ER_ACCESS_DENIED_ERROR: u16 = 1045;
const ER_BAD_DB_ERROR: u16 = 1049;
/// MariaDB's "access denied" when the account's authentication plugin refuses the login (for example
/// a user unknown to it): as permanent as 1045.
const ER_ACCESS_DENIED_NO_PASSWORD_ERROR: u16 = 1698;
const ER_SERVER_SHUTDOWN: u16 = 1053;
const ER_DUP_FIELDNAME: u16 = 1060;
const ER_DUP_ENTRY: u16 = 1062;
const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;
const ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: u16 = 1366;
const ER_DATA_TOO_LONG: u16 = 1406;
const ER_DUP_ENTRY_WITH_KEY_NAME: u16 = 1586;
const ER_BINLOG_STMT_MODE_AND_ROW_ENGINE: u16 = 1665;
const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: u16 = 1792;
const ER_READ_ONLY_MODE: u16 = 1836;

/// The server's error number of a database error, if it is one.
pub(crate) fn number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether the error is a unique or primary-key violation.
pub(crate) fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(number(error), Some(ER_DUP_ENTRY | ER_DUP_ENTRY_WITH_KEY_NAME))
}

/// Whether an `ALTER TABLE … ADD COLUMN` failed because the column exists: the migration statement
/// already took effect (MySQL's DDL commits on its own, so a migration cut short between its DDL and
/// its version row is applied again).
pub(crate) fn is_duplicate_column(error: &sqlx::Error) -> bool {
    number(error) == Some(ER_DUP_FIELDNAME)
}

/// Whether InnoDB chose this transaction as a deadlock victim (and rolled all of it back).
pub(crate) fn is_deadlock(error: &sqlx::Error) -> bool {
    number(error) == Some(ER_LOCK_DEADLOCK)
}

/// Whether the error says a table is missing (the schema was never migrated).
pub(crate) fn is_missing_table(error: &sqlx::Error) -> bool {
    number(error) == Some(ER_NO_SUCH_TABLE)
}

/// Whether the connection that returned the error must not be used again: the socket failed, the
/// protocol lost its place, or the server is going away. (A server-side error on a healthy connection
/// leaves it usable.)
pub(crate) fn breaks_connection(error: &sqlx::Error) -> bool {
    !matches!(
        error,
        sqlx::Error::Database(_)
            | sqlx::Error::RowNotFound
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
    ) || matches!(number(error), Some(ER_SERVER_SHUTDOWN))
}

/// Maps a failure of an operation on the store `label` (`what` says which operation). The message is
/// scrubbed of the store URL's secrets: a driver message may quote them.
pub(crate) fn map(label: &StoreLabel, what: &str, error: sqlx::Error) -> StoreError {
    label.scrub_error(describe(label.as_str(), what, error))
}

fn describe(label: &str, what: &str, error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            let code = number(&error).unwrap_or(0);
            match code {
                ER_LOCK_WAIT_TIMEOUT | ER_LOCK_DEADLOCK => StoreError::Unavailable(format!(
                    "MySQL store {label}: {what}: {message} (another transaction held the rows; retry)"
                )),
                ER_DUP_ENTRY | ER_DUP_ENTRY_WITH_KEY_NAME => {
                    StoreError::Duplicate(format!("MySQL store {label}: {what}: {message}"))
                }
                ER_NO_SUCH_TABLE => StoreError::Config(format!(
                    "MySQL store {label}: {what}: {message}: the fleetcron schema is missing; run `fleetcron \
                     migrate` (or Store::migrate) first"
                )),
                ER_ACCESS_DENIED_ERROR | ER_ACCESS_DENIED_NO_PASSWORD_ERROR | ER_DBACCESS_DENIED_ERROR => {
                    StoreError::Config(format!(
                        "MySQL store {label}: {what}: {message} (check the user, password and grants in the URL)"
                    ))
                }
                ER_BAD_DB_ERROR => StoreError::Config(format!(
                    "MySQL store {label}: {what}: {message} (create the database first: CREATE DATABASE ...)"
                )),
                ER_TABLEACCESS_DENIED_ERROR
                | ER_OPTION_PREVENTS_STATEMENT
                | ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
                | ER_READ_ONLY_MODE => StoreError::ReadOnly(format!(
                    "MySQL store {label}: {what}: {message} (the server is read-only or the user may not write)"
                )),
                ER_DATA_TOO_LONG | ER_TRUNCATED_WRONG_VALUE_FOR_FIELD => StoreError::Config(format!(
                    "MySQL store {label}: {what}: {message} (a value does not fit the fleetcron schema)"
                )),
                ER_BINLOG_STMT_MODE_AND_ROW_ENGINE => StoreError::Config(format!(
                    "MySQL store {label}: {what}: {message} (fleetcron runs its transactions in READ COMMITTED, \
                     which needs binlog_format=ROW or MIXED)"
                )),
                ER_CON_COUNT_ERROR => StoreError::Unavailable(format!(
                    "MySQL store {label}: {what}: {message} (the server's max_connections is reached; retry, or \
                     lower max_connections of the stores)"
                )),
                _ => StoreError::Unavailable(format!("MySQL store {label}: {what}: {message} (error {code})")),
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "MySQL store {label}: {what}: timed out waiting for a connection (the server is unreachable or \
             every connection of the pool is busy)"
        )),
        sqlx::Error::PoolClosed => {
            StoreError::Unavailable(format!("MySQL store {label}: {what}: the store was closed"))
        }
        sqlx::Error::Configuration(reason) => StoreError::Config(format!("MySQL store {label}: {what}: {reason}")),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("MySQL store {label}: {what}: {error}")),
        _ => StoreError::Unavailable(format!("MySQL store {label}: {what}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_are_scrubbed_of_the_url_secrets() {
        let url = "mysql://app:p%40ss%2Fw0rd@db:3306/jobs";
        let label = StoreLabel::new("mysql://app@db:3306/jobs", url);
        for error in [
            sqlx::Error::Configuration("bad URL mysql://app:p%40ss%2Fw0rd@db, password p@ss/w0rd".into()),
            sqlx::Error::Io(std::io::Error::other("p@ss/w0rd")),
            sqlx::Error::Protocol("p%40ss%2fw0rd".into()),
        ] {
            let mapped = map(&label, "connecting", error).to_string();
            for secret in ["p@ss/w0rd", "p%40ss%2Fw0rd", "p%40ss%2fw0rd"] {
                assert!(!mapped.contains(secret), "{mapped}");
            }
            assert!(mapped.contains("mysql://app@db:3306/jobs"), "{mapped}");
        }
    }
}
