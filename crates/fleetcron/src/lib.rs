//! fleetcron: distributed cron for tokio services. Every scheduled firing runs exactly once across a
//! fleet of workers, however many run, crash, restart or disagree about the time.
//!
//! This facade re-exports the core and picks a backend from a URL
//! ([`DefaultSchedulerStrategy::connect`]); a [`Scheduler`] runs the tasks on it:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetcron::{DefaultSchedulerStrategy, ScheduledTask, Scheduler};
//!
//! let strategy = DefaultSchedulerStrategy::connect("sqlite://fleetcron.db").await?;
//! let scheduler = Scheduler::builder()
//!     .strategy(strategy)
//!     .task(
//!         ScheduledTask::builder("cleanup")
//!             .schedule("*/5 * * * *")
//!             .handler(|_ctx| async { Ok(serde_json::json!("done")) })
//!             .build()?,
//!     )
//!     .build()?;
//! scheduler.run_until(tokio::signal::ctrl_c()).await?;
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! One feature per store backend, so a service compiles only the database clients it uses. The
//! in-memory store (`memory://`) is always available. A URL whose backend is not compiled in is refused
//! by [`DefaultSchedulerStrategy::connect`] and [`DefaultSchedulerStrategy::check_url`] with a
//! [`StoreError::Config`] naming the feature to enable.
//!
//! | feature | URLs | backend crate |
//! |---|---|---|
//! | `sqlite` (default) | `sqlite://PATH` | `fleetcron-sqlite` |
//! | `postgres` | `postgres://`, `postgresql://` | `fleetcron-postgres` |
//! | `mysql` | `mysql://`, `mariadb://` | `fleetcron-mysql` |
//! | `redis` | `redis://`, `rediss://` | `fleetcron-redis` |
//! | `full` | all of the above | |
//!
//! ```toml
//! [dependencies]
//! fleetcron = { version = "0.1", default-features = false, features = ["postgres"] }
//! ```

pub use fleetcron_core::*;
#[cfg(feature = "mysql")]
pub use fleetcron_mysql::{MysqlOptions, MysqlStore, MysqlStrategy};
#[cfg(feature = "postgres")]
pub use fleetcron_postgres::{PostgresOptions, PostgresStore, PostgresStrategy};
#[cfg(feature = "redis")]
pub use fleetcron_redis::{RedisOptions, RedisStore, RedisStrategy};
#[cfg(feature = "sqlite")]
pub use fleetcron_sqlite::{SqliteStore, SqliteStrategy};

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The strategy for a store URL: `sqlite://PATH`, `postgres://USER@HOST[:PORT]/DB[?schema=NAME]` (or
/// `postgresql://`), `mysql://USER@HOST[:PORT]/DATABASE[?table_prefix=NAME]` (or `mariadb://`),
/// `redis://HOST[:PORT][/DB][?prefix=NAME]`, `memory://`
/// (private) or `memory://NAME` (shared by every strategy of this process that names it). Other schemes
/// are refused with a clear error, and so is the scheme of a backend whose cargo feature is off (the
/// error names the feature; see [the crate's features](crate#cargo-features)).
///
/// The URL is never shown: `Debug`, [`Self::label`] and every error show it through
/// [`redact_url`] (no password, no secret parameter), and every
/// error the strategy returns is scrubbed of the URL's secrets.
#[derive(Clone)]
pub struct DefaultSchedulerStrategy {
    inner: Arc<dyn SchedulerStrategy>,
    label: StoreLabel,
}

impl std::fmt::Debug for DefaultSchedulerStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultSchedulerStrategy")
            .field("store", &self.label)
            .finish()
    }
}

fn named_memory_stores() -> &'static Mutex<HashMap<String, Weak<MemoryStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Weak<MemoryStore>>>> = OnceLock::new();
    STORES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn memory_store(name: &str) -> Result<Arc<MemoryStore>, StoreError> {
    if name.is_empty() {
        return Ok(Arc::new(MemoryStore::new()));
    }
    let mut stores = named_memory_stores()
        .lock()
        .map_err(|_| StoreError::Corrupt("memory store registry poisoned".to_owned()))?;
    if let Some(store) = stores.get(name).and_then(Weak::upgrade) {
        return Ok(store);
    }
    let store = Arc::new(MemoryStore::new());
    stores.insert(name.to_owned(), Arc::downgrade(&store));
    Ok(store)
}

impl DefaultSchedulerStrategy {
    /// Connects to the store at `url` with the default engine configuration.
    ///
    /// This opens the store (a file, a connection pool) but changes nothing in it: migrations run in
    /// [`SchedulerStrategy::init`], which [`Scheduler::run_until`] calls.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fleetcron::{DefaultSchedulerStrategy, SchedulerStrategy};
    ///
    /// // A service names its shared store: "sqlite:///var/lib/app/fleetcron.db", "postgres://…".
    /// let strategy = DefaultSchedulerStrategy::connect("memory://").await?;
    /// strategy.init("worker-1").await?;
    /// assert!(strategy.get_tasks().await?.is_empty());
    /// strategy.destroy().await?;
    ///
    /// // A scheme no backend serves is refused, naming the scheme.
    /// let refused = DefaultSchedulerStrategy::connect("ftp://example.com").await;
    /// assert!(matches!(refused, Err(fleetcron::StoreError::Config(m)) if m.contains("unknown store scheme")));
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, EngineConfig::default()).await
    }

    /// Connects to the store at `url` with `config`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fleetcron::{DefaultSchedulerStrategy, EngineConfig};
    /// use std::time::Duration;
    ///
    /// let config = EngineConfig::default().lease(Duration::from_secs(60));
    /// let strategy = DefaultSchedulerStrategy::connect_with("memory://", config).await?;
    /// assert_eq!(strategy.label(), "memory://");
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, config: EngineConfig) -> Result<Self, StoreError> {
        let label = StoreLabel::of_url(url);
        Self::open(url, config, &label)
            .await
            .map(|inner| Self {
                inner,
                label: label.clone(),
            })
            .map_err(|error| label.scrub_error(error))
    }

    /// Checks a store URL as [`Self::connect`] would, without connecting or opening anything: the
    /// scheme, the backend's URL syntax and parameters. The daemon's `--check` calls it.
    ///
    /// ```
    /// use fleetcron::{DefaultSchedulerStrategy, StoreError};
    ///
    /// assert!(DefaultSchedulerStrategy::check_url("memory://jobs").is_ok());
    /// let error = DefaultSchedulerStrategy::check_url("no-scheme-at-all");
    /// assert!(matches!(error, Err(StoreError::Config(m)) if m.contains("has no scheme")));
    /// ```
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let label = StoreLabel::of_url(url);
        let checked = match Backend::of(url, &label)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => SqliteStore::check_url(url),
            Backend::Memory(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Backend::Postgres => PostgresStore::check_url(url),
            #[cfg(feature = "redis")]
            Backend::Redis => RedisStore::check_url(url),
            #[cfg(feature = "mysql")]
            Backend::Mysql => MysqlStore::check_url(url),
        };
        checked.map_err(|error| label.scrub_error(error))
    }

    async fn open(
        url: &str,
        config: EngineConfig,
        label: &StoreLabel,
    ) -> Result<Arc<dyn SchedulerStrategy>, StoreError> {
        let inner: Arc<dyn SchedulerStrategy> = match Backend::of(url, label)? {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let store = SqliteStore::from_url(url).await?;
                Arc::new(SqliteStrategy::with_config(Arc::new(store), config))
            }
            Backend::Memory(name) => Arc::new(MemoryStrategy::with_config(memory_store(name)?, config)),
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let store = PostgresStore::connect(url).await?;
                Arc::new(PostgresStrategy::with_config(Arc::new(store), config))
            }
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let store = RedisStore::connect(url).await?;
                Arc::new(RedisStrategy::with_config(Arc::new(store), config))
            }
            #[cfg(feature = "mysql")]
            Backend::Mysql => {
                let store = MysqlStore::connect(url).await?;
                Arc::new(MysqlStrategy::with_config(Arc::new(store), config))
            }
        };
        Ok(inner)
    }

    /// The store this strategy was connected to, as a label safe to print: the URL without its password
    /// or secret parameters ([`redact_url`]).
    pub fn label(&self) -> &str {
        self.label.as_str()
    }

    fn scrub<T>(&self, result: Result<T, SchedulerError>) -> Result<T, SchedulerError> {
        result.map_err(|error| self.label.secrets().scrub_scheduler_error(error))
    }
}

/// The backend a store URL names, by its scheme (case-insensitive, as the backends read it). Only the
/// backends compiled in have a variant.
enum Backend<'u> {
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// `memory://NAME`: the name, empty for a private store.
    Memory(&'u str),
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "mysql")]
    Mysql,
}

const URL_FORMS: &str = "use sqlite://PATH, postgres://USER@HOST[:PORT]/DB[?schema=NAME], mysql://USER@HOST[:PORT]/DB[?table_prefix=NAME], redis://HOST[:PORT][/DB][?prefix=NAME] or memory://";

/// The cargo feature of this crate that compiles in the backend of `scheme` (lower case), for every
/// scheme a backend serves, compiled in or not.
fn feature_of(scheme: &str) -> Option<&'static str> {
    match scheme {
        "sqlite" => Some("sqlite"),
        "postgres" | "postgresql" => Some("postgres"),
        "mysql" | "mariadb" => Some("mysql"),
        "redis" | "rediss" => Some("redis"),
        _ => None,
    }
}

impl<'u> Backend<'u> {
    fn of(url: &'u str, label: &StoreLabel) -> Result<Self, StoreError> {
        let (scheme, rest) = url
            .split_once("://")
            .or_else(|| url.split_once(':'))
            .ok_or_else(|| StoreError::Config(format!("store URL {label:?} has no scheme; {URL_FORMS}")))?;
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "memory" => Ok(Backend::Memory(rest)),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Backend::Sqlite),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Ok(Backend::Redis),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            other => Err(StoreError::Config(match feature_of(other) {
                Some(feature) => format!(
                    "{other}:// needs the fleetcron crate's `{feature}` feature, which this build leaves out \
                     (store URL {label:?}); enable `{feature}` (or `full`) where your Cargo.toml depends on fleetcron"
                ),
                None => format!(
                    "unknown store scheme {:?} in {label:?}; {URL_FORMS}",
                    fleetcron_core::redact::truncate(other, 32)
                ),
            })),
        }
    }
}

#[async_trait]
impl SchedulerStrategy for DefaultSchedulerStrategy {
    async fn init(&self, worker_id: &str) -> Result<(), SchedulerError> {
        self.scrub(self.inner.init(worker_id).await)
    }

    async fn destroy(&self) -> Result<(), SchedulerError> {
        self.scrub(self.inner.destroy().await)
    }

    async fn failed(&self) -> SchedulerError {
        self.inner.failed().await
    }

    fn store_time(&self) -> Option<StoreTime> {
        self.inner.store_time()
    }

    async fn register_task(&self, task: ScheduledTask) -> Result<Registration, SchedulerError> {
        self.scrub(self.inner.register_task(task).await)
    }

    async fn register_tasks(&self, tasks: Vec<ScheduledTask>) -> Result<Vec<Registration>, SchedulerError> {
        self.scrub(self.inner.register_tasks(tasks).await)
    }

    async fn execute_task(&self, task: &ScheduledTask, firing: Firing) -> Result<ExecuteOutcome, SchedulerError> {
        self.scrub(self.inner.execute_task(task, firing).await)
    }

    async fn execute_many(
        &self,
        firings: Vec<(std::sync::Arc<ScheduledTask>, Firing)>,
    ) -> Vec<Result<ExecuteOutcome, SchedulerError>> {
        let results = self.inner.execute_many(firings).await;
        results.into_iter().map(|result| self.scrub(result)).collect()
    }

    async fn get_tasks(&self) -> Result<Vec<TaskReport>, SchedulerError> {
        self.scrub(self.inner.get_tasks().await)
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskReport>, SchedulerError> {
        self.scrub(self.inner.get_task(id).await)
    }

    async fn trigger_task(&self, id: &str) -> Result<TriggerReceipt, SchedulerError> {
        self.scrub(self.inner.trigger_task(id).await)
    }

    async fn update_task(&self, input: UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError> {
        self.scrub(self.inner.update_task(input).await)
    }

    async fn update_task_noted(
        &self,
        input: UpdateScheduledTaskInput,
        note: Option<String>,
    ) -> Result<TaskReport, SchedulerError> {
        self.scrub(self.inner.update_task_noted(input, note).await)
    }

    async fn runs(&self, id: &str, query: RunQuery) -> Result<Vec<RunRecord>, SchedulerError> {
        self.scrub(self.inner.runs(id, query).await)
    }

    async fn prune_history(&self) -> Result<u64, SchedulerError> {
        self.scrub(self.inner.prune_history().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_scheme_names_its_feature_and_nothing_else_does() {
        for (scheme, feature) in [
            ("sqlite", "sqlite"),
            ("postgres", "postgres"),
            ("postgresql", "postgres"),
            ("mysql", "mysql"),
            ("mariadb", "mysql"),
            ("redis", "redis"),
            ("rediss", "redis"),
        ] {
            assert_eq!(feature_of(scheme), Some(feature), "{scheme}");
        }
        for scheme in ["memory", "ftp", "", "redis+cluster"] {
            assert_eq!(feature_of(scheme), None, "{scheme}");
        }
    }
}
