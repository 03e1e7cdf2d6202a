//! fleetcron: distributed cron for tokio services. Every scheduled firing runs exactly once across a
//! fleet of workers, however many run, crash, restart or disagree about the time.
//!
//! This facade re-exports the core and picks a backend from a URL:
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

pub use fleetcron_core::*;
pub use fleetcron_mysql::{MysqlOptions, MysqlStore, MysqlStrategy};
pub use fleetcron_postgres::{PostgresOptions, PostgresStore, PostgresStrategy};
pub use fleetcron_redis::{RedisOptions, RedisStore, RedisStrategy};
pub use fleetcron_sqlite::{SqliteStore, SqliteStrategy};

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The strategy for a store URL: `sqlite://PATH`, `postgres://USER@HOST[:PORT]/DB[?schema=NAME]` (or
/// `postgresql://`), `mysql://USER@HOST[:PORT]/DATABASE[?table_prefix=NAME]` (or `mariadb://`),
/// `redis://HOST[:PORT][/DB][?prefix=NAME]`, `memory://`
/// (private) or `memory://NAME` (shared by every strategy of this process that names it). Other schemes
/// are refused with a clear error.
///
/// The URL is never shown: `Debug`, [`Self::label`] and every error show it through
/// [`redact_url`](fleetcron_core::redact::redact_url) (no password, no secret parameter), and every
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
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, EngineConfig::default()).await
    }

    /// Connects to the store at `url` with `config`.
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
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        let label = StoreLabel::of_url(url);
        let checked = match Backend::of(url, &label)? {
            Backend::Sqlite => SqliteStore::check_url(url),
            Backend::Memory(_) => Ok(()),
            Backend::Postgres => PostgresStore::check_url(url),
            Backend::Redis => RedisStore::check_url(url),
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
            Backend::Sqlite => {
                let store = SqliteStore::from_url(url).await?;
                Arc::new(SqliteStrategy::with_config(Arc::new(store), config))
            }
            Backend::Memory(name) => Arc::new(MemoryStrategy::with_config(memory_store(name)?, config)),
            Backend::Postgres => {
                let store = PostgresStore::connect(url).await?;
                Arc::new(PostgresStrategy::with_config(Arc::new(store), config))
            }
            Backend::Redis => {
                let store = RedisStore::connect(url).await?;
                Arc::new(RedisStrategy::with_config(Arc::new(store), config))
            }
            Backend::Mysql => {
                let store = MysqlStore::connect(url).await?;
                Arc::new(MysqlStrategy::with_config(Arc::new(store), config))
            }
        };
        Ok(inner)
    }

    /// The store this strategy was connected to, as a label safe to print: the URL without its password
    /// or secret parameters ([`redact_url`](fleetcron_core::redact::redact_url)).
    pub fn label(&self) -> &str {
        self.label.as_str()
    }

    fn scrub<T>(&self, result: Result<T, SchedulerError>) -> Result<T, SchedulerError> {
        result.map_err(|error| self.label.secrets().scrub_scheduler_error(error))
    }
}

/// The backend a store URL names, by its scheme (case-insensitive, as the backends read it).
enum Backend<'u> {
    Sqlite,
    /// `memory://NAME`: the name, empty for a private store.
    Memory(&'u str),
    Postgres,
    Redis,
    Mysql,
}

impl<'u> Backend<'u> {
    fn of(url: &'u str, label: &StoreLabel) -> Result<Self, StoreError> {
        let (scheme, rest) = url.split_once("://").or_else(|| url.split_once(':')).ok_or_else(|| {
            StoreError::Config(format!(
                "store URL {label:?} has no scheme; use sqlite://PATH, postgres://USER@HOST[:PORT]/DB[?schema=NAME], mysql://USER@HOST[:PORT]/DB[?table_prefix=NAME], redis://HOST[:PORT][/DB][?prefix=NAME] or memory://"
            ))
        })?;
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Backend::Sqlite,
            "memory" => Backend::Memory(rest),
            "postgres" | "postgresql" => Backend::Postgres,
            "redis" | "rediss" => Backend::Redis,
            "mysql" | "mariadb" => Backend::Mysql,
            _ => {
                return Err(StoreError::Config(format!(
                    "unknown store scheme {:?} in {label:?}; use sqlite://PATH, postgres://USER@HOST[:PORT]/DB[?schema=NAME], mysql://USER@HOST[:PORT]/DB[?table_prefix=NAME], redis://HOST[:PORT][/DB][?prefix=NAME] or memory://",
                    fleetcron_core::redact::truncate(scheme, 32)
                )))
            }
        })
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
