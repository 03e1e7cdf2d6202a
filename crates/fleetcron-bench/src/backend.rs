//! Backends, their URLs and one fresh namespace per benchmark run (a new SQLite file, PostgreSQL schema,
//! MySQL table prefix, Redis key prefix or memory store name), cleaned up afterwards.

use crate::counter::{Protocol, RedisStats, StatementCounter, WireProxy};
use crate::Error;
use sqlx::Connection;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// MySQL / MariaDB server.
    Mysql,
    /// Redis server.
    Redis,
    /// In-process memory store.
    Memory,
}

impl Backend {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
            Backend::Memory => "memory",
        }
    }
}

/// Server URLs (without namespace parameters).
#[derive(Debug, Clone)]
pub struct Urls {
    /// PostgreSQL.
    pub postgres: String,
    /// MySQL / MariaDB.
    pub mysql: String,
    /// Redis.
    pub redis: String,
}

impl Urls {
    /// Refuses any server that is not on this machine's loopback interface.
    pub fn check_loopback(&self) -> Result<(), Error> {
        for url in [&self.postgres, &self.mysql, &self.redis] {
            ensure_loopback(url)?;
        }
        Ok(())
    }
}

/// One run's isolated namespace.
pub struct Namespace {
    /// The backend.
    pub backend: Backend,
    /// `bench_<pid>_<n>`.
    pub name: String,
    /// The store URL naming the namespace.
    pub url: String,
    /// The server URL the namespace lives on (for cleanup and raw connections).
    base_url: String,
    /// Holds the SQLite file's directory until the namespace is dropped.
    _dir: Option<tempfile::TempDir>,
}

static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(1);

impl Namespace {
    /// A fresh namespace for `backend`.
    pub fn new(backend: Backend, urls: &Urls) -> Result<Self, Error> {
        let name = format!(
            "bench_{}_{}",
            std::process::id(),
            NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed)
        );
        let (url, base_url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("fleetcron-bench-")
                    .tempdir()
                    .map_err(|error| format!("cannot create a temporary directory for SQLite: {error}"))?;
                let path = dir.path().join(format!("{name}.db"));
                let url = format!("sqlite://{}", path.display());
                (url.clone(), url, Some(dir))
            }
            Backend::Postgres => (with_param(&urls.postgres, "schema", &name), urls.postgres.clone(), None),
            Backend::Mysql => (
                with_param(&urls.mysql, "table_prefix", &format!("{name}_")),
                urls.mysql.clone(),
                None,
            ),
            Backend::Redis => (with_param(&urls.redis, "prefix", &name), urls.redis.clone(), None),
            Backend::Memory => (format!("memory://{name}"), String::new(), None),
        };
        Ok(Self {
            backend,
            name,
            url,
            base_url,
            _dir: dir,
        })
    }

    /// The statement counter for this namespace and the store URL the counted workers must use (for
    /// MySQL, through the counting proxy).
    pub async fn counter(&self) -> Result<(StatementCounter, String), Error> {
        match self.backend {
            Backend::Sqlite => Ok((StatementCounter::Sqlx { sqlite: true }, self.url.clone())),
            Backend::Postgres => Ok((StatementCounter::Sqlx { sqlite: false }, self.url.clone())),
            Backend::Mysql => {
                let upstream = socket_address(&self.base_url, 3306)?;
                let proxy = WireProxy::start(upstream, Protocol::Mysql)?;
                let url = replace_host_port(&self.url, &proxy.address().to_string())?;
                Ok((StatementCounter::Mysql(proxy), url))
            }
            Backend::Redis => {
                let stats = RedisStats::connect(&self.base_url).await?;
                let upstream = socket_address(&self.base_url, 6379)?;
                let proxy = WireProxy::start(upstream, Protocol::Redis)?;
                let url = replace_host_port(&self.url, &proxy.address().to_string())?;
                Ok((StatementCounter::Redis(proxy, stats), url))
            }
            Backend::Memory => Ok((StatementCounter::None, self.url.clone())),
        }
    }

    /// Removes what the run left in the store: drops the PostgreSQL schema, the MySQL tables of the
    /// prefix, the Redis keys of the prefix; the SQLite directory goes when `self` is dropped.
    pub async fn cleanup(self) -> Result<(), Error> {
        let work = async {
            match self.backend {
                Backend::Sqlite | Backend::Memory => Ok(()),
                Backend::Postgres => drop_postgres_schema(&self.base_url, &self.name).await,
                Backend::Mysql => drop_mysql_tables(&self.base_url, &format!("{}_", self.name)).await,
                Backend::Redis => delete_redis_keys(&self.base_url, &self.name).await,
            }
        };
        tokio::time::timeout(Duration::from_secs(60), work).await.map_err(|_| {
            format!(
                "cleaning up {} namespace {} took over 60 s",
                self.backend.name(),
                self.name
            )
        })?
    }
}

async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), Error> {
    let mut conn = sqlx::PgConnection::connect(url).await.map_err(|error| {
        let error = fleetcron::Secrets::of_url(url).scrub(&error.to_string());
        format!("cleanup: cannot connect to PostgreSQL: {error}")
    })?;
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await
        .map_err(|error| format!("cleanup: {error}"))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .map_err(|error| format!("cleanup: dropping schema {schema}: {error}"))?;
    let _ = conn.close().await;
    Ok(())
}

async fn drop_mysql_tables(url: &str, prefix: &str) -> Result<(), Error> {
    let mut conn = sqlx::MySqlConnection::connect(url).await.map_err(|error| {
        let error = fleetcron::Secrets::of_url(url).scrub(&error.to_string());
        format!("cleanup: cannot connect to MySQL: {error}")
    })?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?",
    )
    .bind(prefix)
    .bind(prefix)
    .fetch_all(&mut conn)
    .await
    .map_err(|error| format!("cleanup: listing tables of prefix {prefix}: {error}"))?;
    sqlx::query("SET SESSION foreign_key_checks = 0")
        .execute(&mut conn)
        .await
        .map_err(|error| format!("cleanup: {error}"))?;
    for table in tables {
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("cleanup: unexpected table name {table:?}").into());
        }
        sqlx::query(&format!("DROP TABLE IF EXISTS `{table}`"))
            .execute(&mut conn)
            .await
            .map_err(|error| format!("cleanup: dropping table {table}: {error}"))?;
    }
    let _ = conn.close().await;
    Ok(())
}

async fn delete_redis_keys(url: &str, prefix: &str) -> Result<(), Error> {
    let scrub = |error: redis::RedisError| fleetcron::Secrets::of_url(url).scrub(&error.to_string());
    let client = redis::Client::open(url).map_err(|error| format!("cleanup: invalid Redis URL: {}", scrub(error)))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|error| format!("cleanup: cannot connect to Redis: {}", scrub(error)))?;
    // Every key of the store starts with `{<prefix>}` or `{<prefix>:<task>}`.
    let pattern = format!("{{{prefix}[}}:]*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|error| format!("cleanup: SCAN failed: {error}"))?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(|error| format!("cleanup: UNLINK failed: {error}"))?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `url` with `key=value` added to its query string.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

/// The `(start, end)` byte range of the `host[:port]` part of `url`'s authority.
fn host_port_range(url: &str) -> Result<(usize, usize), Error> {
    let scheme_end = url
        .find("://")
        .map(|index| index + 3)
        .ok_or_else(|| format!("URL {:?} has no scheme", fleetcron::redact_url(url)))?;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_start = authority.rfind('@').map(|at| at + 1).unwrap_or(0);
    Ok((scheme_end + host_start, scheme_end + authority_end))
}

/// The host and port of `url` (port `None` when absent).
pub fn host_and_port(url: &str) -> Result<(String, Option<u16>), Error> {
    let (start, end) = host_port_range(url)?;
    let host_port = &url[start..end];
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("URL {:?}: unterminated [IPv6] host", fleetcron::redact_url(url)))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|error| format!("URL {:?}: invalid port: {error}", fleetcron::redact_url(url)))?,
        ),
        None => None,
    };
    Ok((host.to_owned(), port))
}

/// `url` with its `host[:port]` replaced.
pub fn replace_host_port(url: &str, host_port: &str) -> Result<String, Error> {
    let (start, end) = host_port_range(url)?;
    Ok(format!("{}{host_port}{}", &url[..start], &url[end..]))
}

/// Refuses a URL whose host is not a loopback address: this harness only loads servers on this machine.
pub fn ensure_loopback(url: &str) -> Result<(), Error> {
    let (host, _) = host_and_port(url)?;
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "refusing {:?}: the benchmark only targets servers on a loopback address (127.0.0.1, localhost, ::1)",
            fleetcron::redact_url(url)
        )
        .into())
    }
}

/// The socket address of `url`'s server.
fn socket_address(url: &str, default_port: u16) -> Result<SocketAddr, Error> {
    let (host, port) = host_and_port(url)?;
    let port = port.unwrap_or(default_port);
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host}:{port}: {error}"))?
        .find(|address| address.ip().is_loopback())
        .ok_or_else(|| format!("{host}:{port} has no loopback address").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_appended_to_the_query_string() {
        assert_eq!(
            with_param("redis://127.0.0.1:6379", "prefix", "p"),
            "redis://127.0.0.1:6379?prefix=p"
        );
        assert_eq!(
            with_param("postgres://u@h/db?sslmode=disable", "schema", "s"),
            "postgres://u@h/db?sslmode=disable&schema=s"
        );
    }

    #[test]
    fn host_and_port_are_found_behind_user_info() {
        assert_eq!(
            host_and_port("mysql://root:pw@127.0.0.1:3306/test?table_prefix=x").expect("parse"),
            ("127.0.0.1".to_owned(), Some(3306))
        );
        assert_eq!(
            host_and_port("redis://localhost").expect("parse"),
            ("localhost".to_owned(), None)
        );
        assert_eq!(
            host_and_port("postgres://u@[::1]:5432/db").expect("parse"),
            ("::1".to_owned(), Some(5432))
        );
        assert!(host_and_port("no-scheme").is_err());
        assert!(host_and_port("mysql://h:notaport/db").is_err());
    }

    #[test]
    fn the_host_port_is_replaced_in_place() {
        assert_eq!(
            replace_host_port("mysql://root@127.0.0.1:3306/test?table_prefix=x", "127.0.0.1:4000").expect("replace"),
            "mysql://root@127.0.0.1:4000/test?table_prefix=x"
        );
        assert_eq!(
            replace_host_port("mysql://localhost/test", "127.0.0.1:4000").expect("replace"),
            "mysql://127.0.0.1:4000/test"
        );
    }

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(ensure_loopback("postgres://postgres@127.0.0.1:5432/test").is_ok());
        assert!(ensure_loopback("redis://localhost:6379").is_ok());
        assert!(ensure_loopback("mysql://root@[::1]:3306/test").is_ok());
        assert!(ensure_loopback("postgres://postgres@10.0.0.5:5432/test").is_err());
        assert!(ensure_loopback("redis://example.com:6379").is_err());
    }

    #[test]
    fn namespaces_are_fresh_and_named_in_the_url() {
        let urls = Urls {
            postgres: "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            mysql: "mysql://root@127.0.0.1:3306/test".to_owned(),
            redis: "redis://127.0.0.1:6379".to_owned(),
        };
        let first = Namespace::new(Backend::Postgres, &urls).expect("namespace");
        let second = Namespace::new(Backend::Postgres, &urls).expect("namespace");
        assert_ne!(first.name, second.name);
        assert!(first.url.ends_with(&format!("?schema={}", first.name)));
        let mysql = Namespace::new(Backend::Mysql, &urls).expect("namespace");
        assert!(mysql.url.ends_with(&format!("?table_prefix={}_", mysql.name)));
        let sqlite = Namespace::new(Backend::Sqlite, &urls).expect("namespace");
        assert!(sqlite.url.starts_with("sqlite:///"));
        let memory = Namespace::new(Backend::Memory, &urls).expect("namespace");
        assert_eq!(memory.url, format!("memory://{}", memory.name));
    }
}
