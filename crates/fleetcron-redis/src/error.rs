//! Mapping of redis-rs failures onto [`StoreError`], always naming the server and the key prefix.

use fleetcron_core::StoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a failure of an operation (`what`) on the store `label`.
///
/// Lost or refused connections, timeouts, a server that is loading, read-only (a replica after a
/// failover), out of memory or busy running a script are [`StoreError::Unavailable`] (retry); failed
/// authentication and missing ACL permissions are [`StoreError::Config`]; a key of the wrong type and a
/// script that fails on stored data are [`StoreError::Corrupt`].
pub(crate) fn map(label: &str, what: &str, error: RedisError) -> StoreError {
    let code = error.code().unwrap_or_default().to_owned();
    let detail = error.detail().unwrap_or_default().to_owned();
    match error.kind() {
        ErrorKind::AuthenticationFailed => StoreError::Config(format!(
            "Redis {label}: {what}: authentication failed ({error}); check the user and password in the URL"
        )),
        ErrorKind::InvalidClientConfig => StoreError::Config(format!("Redis {label}: {what}: {error}")),
        ErrorKind::Server(ServerErrorKind::NoPerm) => StoreError::Config(format!(
            "Redis {label}: {what}: {error}; the user needs permission for EVALSHA, SCRIPT LOAD, PUBLISH, \
             SUBSCRIBE, TIME and the data commands on the prefix's keys"
        )),
        _ if matches!(code.as_str(), "NOAUTH" | "WRONGPASS") => StoreError::Config(format!(
            "Redis {label}: {what}: {error}; set the password in the URL (redis://:PASSWORD@host)"
        )),
        _ if code == "WRONGTYPE" => StoreError::Corrupt(format!(
            "Redis {label}: {what}: {error}; a key under the prefix has a type fleetcron does not write \
             (is another program using the same key prefix?)"
        )),
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if detail.contains("user_script") || detail.contains("fleetcron") =>
        {
            StoreError::Corrupt(format!(
                "Redis {label}: {what}: a fleetcron script failed on stored data: {error}"
            ))
        }
        _ => StoreError::Unavailable(format!("Redis {label}: {what}: {error}")),
    }
}

/// The error of an operation that did not finish within the response timeout.
pub(crate) fn timed_out(label: &str, what: &str, timeout: std::time::Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "Redis {label}: {what}: no answer within {} ms (the connection is being re-established; retry)",
        timeout.as_millis()
    ))
}
