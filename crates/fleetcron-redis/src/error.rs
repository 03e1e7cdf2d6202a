//! Mapping of redis-rs failures onto [`StoreError`], always naming the server and the key prefix.

use fleetcron_core::{StoreError, StoreLabel};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a failure of an operation (`what`) on the store `label`.
///
/// Lost or refused connections, timeouts, a server that is loading, read-only (a replica after a
/// failover), out of memory or busy running a script are [`StoreError::Unavailable`] (retry); failed
/// authentication and missing ACL permissions are [`StoreError::Config`]; a key of the wrong type and a
/// script that fails on stored data are [`StoreError::Corrupt`]. The message is scrubbed of the store
/// URL's secrets: a driver message may quote them.
pub(crate) fn map(label: &StoreLabel, what: &str, error: RedisError) -> StoreError {
    label.scrub_error(describe(label.as_str(), what, error))
}

fn describe(label: &str, what: &str, error: RedisError) -> StoreError {
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
pub(crate) fn timed_out(label: &StoreLabel, what: &str, timeout: std::time::Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "Redis {label}: {what}: no answer within {} ms (the connection is being re-established; retry)",
        timeout.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_are_scrubbed_of_the_url_secrets() {
        let url = "redis://app:p%40ss%2Fw0rd@cache:6379/0?prefix=p";
        let label = StoreLabel::new("redis://cache:6379/0 (key prefix p)", url);
        for error in [
            RedisError::from((ErrorKind::AuthenticationFailed, "denied", "p@ss/w0rd".to_owned())),
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "bad",
                "redis://app:p%40ss%2Fw0rd@cache".to_owned(),
            )),
            RedisError::from(std::io::Error::other("p@ss/w0rd")),
        ] {
            let mapped = map(&label, "connecting", error).to_string();
            for secret in ["p@ss/w0rd", "p%40ss%2Fw0rd"] {
                assert!(!mapped.contains(secret), "{mapped}");
            }
            assert!(mapped.contains("redis://cache:6379/0"), "{mapped}");
        }
    }
}
