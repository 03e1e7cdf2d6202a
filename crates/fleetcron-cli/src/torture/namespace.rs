//! Where a torture run keeps its data: its directory (the handlers' log, the workers' output and, on
//! SQLite, the store file), a store namespace of its own (a fresh PostgreSQL schema, MySQL table prefix
//! or Redis key prefix unless the URL names one), and the fault proxy each worker talks through on a
//! server store.

use crate::process::sqlite_url;
use crate::CliError;
use chrono::Utc;
use fleetcron_faultproxy::FaultProxy;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The kind of store, which decides what a restart and a cut mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
    Mysql,
    Redis,
}

impl Backend {
    pub(super) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Backend::Sqlite => 0,
            Backend::Postgres => 5432,
            Backend::Mysql => 3306,
            Backend::Redis => 6379,
        }
    }
}

/// The run's directory: `--dir` (created if missing, always kept), or a temporary directory that is
/// removed when the returned guard is dropped.
pub(super) fn directory(dir: Option<&Path>) -> Result<(PathBuf, Option<TempDir>), CliError> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|error| CliError::runtime(format!("cannot create {}: {error}", dir.display())))?;
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("fleetcron-torture-")
                .tempdir()
                .map_err(|error| CliError::runtime(format!("cannot create a temporary directory: {error}")))?;
            Ok((temporary.path().to_path_buf(), Some(temporary)))
        }
    }
}

/// The name of this run's namespace: unique per process and second.
pub(super) fn tag() -> String {
    format!("torture_{}_{}", std::process::id(), Utc::now().timestamp())
}

/// Resolves `--store` into a backend and a URL with a namespace of its own: the SQLite file
/// `torture.db` in `dir`, or the schema / table prefix / key prefix `tag` unless the URL names one.
pub(super) fn resolve_store(store: &str, dir: &Path, tag: &str) -> Result<(Backend, String), CliError> {
    let from_env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let url = match store {
        "sqlite" => return Ok((Backend::Sqlite, sqlite_url(&dir.join("torture.db")))),
        "postgres" | "postgresql" => from_env("FLEETCRON_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
        "mysql" | "mariadb" => from_env("FLEETCRON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        "redis" => from_env("FLEETCRON_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        url => url.to_owned(),
    };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or_default();
    let (backend, parameter, value) = match scheme {
        "sqlite" => return Ok((Backend::Sqlite, url)),
        "postgres" | "postgresql" => (Backend::Postgres, "schema", tag.to_owned()),
        "mysql" | "mariadb" => (Backend::Mysql, "table_prefix", format!("{tag}_")),
        "redis" => (Backend::Redis, "prefix", tag.to_owned()),
        _ => {
            return Err(CliError::usage(format!(
                "--store {:?}: expected sqlite, postgres, mysql, redis or a sqlite://, postgres://, \
                 mysql://, mariadb:// or redis:// URL (the memory store lives in one process and cannot be \
                 shared by worker processes)",
                fleetcron::redact_url(store)
            )))
        }
    };
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or_default();
    if query.split('&').any(|pair| pair.split('=').next() == Some(parameter)) {
        return Ok((backend, url));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok((backend, format!("{url}{separator}{parameter}={value}")))
}

/// A fault proxy in front of the server of `url`, and the URL that reaches the server through it.
pub(super) async fn proxied(url: &str, backend: Backend) -> Result<(String, FaultProxy), CliError> {
    let (before, host, port, after) = split_host(url, backend.default_port()).ok_or_else(|| {
        CliError::usage(format!(
            "cannot find the host and port in {}",
            fleetcron::redact_url(url)
        ))
    })?;
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| CliError::unreachable(format!("cannot resolve {host}:{port}")))?;
    let proxy = FaultProxy::start(upstream)
        .await
        .map_err(|error| CliError::runtime(format!("cannot start a fault proxy: {error}")))?;
    Ok((format!("{before}{}{after}", proxy.address()), proxy))
}

/// Splits a server URL around its `host[:port]`: (before, host, port, after).
fn split_host(url: &str, default_port: u16) -> Option<(String, String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (host.to_owned(), port.parse().ok()?),
        _ => (host_port.to_owned(), default_port),
    };
    Some((format!("{scheme}://{userinfo}"), host, port, after.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_get_a_namespace_of_their_own() {
        let dir = Path::new("/tmp/x");
        let resolved = resolve_store("postgres://u@h:1/db", dir, "tag")
            .map(|(_, url)| url)
            .ok();
        assert_eq!(resolved.as_deref(), Some("postgres://u@h:1/db?schema=tag"));
        let resolved = resolve_store("mysql://u@h/db?x=1", dir, "tag").map(|(_, url)| url).ok();
        assert_eq!(resolved.as_deref(), Some("mysql://u@h/db?x=1&table_prefix=tag_"));
        let resolved = resolve_store("redis://h?prefix=mine", dir, "tag")
            .map(|(_, url)| url)
            .ok();
        assert_eq!(resolved.as_deref(), Some("redis://h?prefix=mine"));
        let resolved = resolve_store("sqlite", dir, "tag").map(|(_, url)| url).ok();
        assert_eq!(resolved.as_deref(), Some("sqlite:///tmp/x/torture.db"));
        assert!(resolve_store("memory://x", dir, "tag").is_err());
    }

    #[test]
    fn server_urls_are_split_around_the_host() {
        assert_eq!(
            split_host("postgres://u@127.0.0.1:5432/test?schema=a", 1),
            Some((
                "postgres://u@".to_owned(),
                "127.0.0.1".to_owned(),
                5432,
                "/test?schema=a".to_owned()
            ))
        );
        assert_eq!(
            split_host("redis://localhost?prefix=p", 6379),
            Some((
                "redis://".to_owned(),
                "localhost".to_owned(),
                6379,
                "?prefix=p".to_owned()
            ))
        );
    }
}
