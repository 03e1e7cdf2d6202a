//! A store, a scheduler running tasks on it, and the admin router served on a loopback port.

use fleetcron::{DefaultSchedulerStrategy, ScheduledTask, Scheduler, SchedulerStrategy, Store, Timestamp};
use fleetcron_admin::{AdminOptions, Auth};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const READ: &str = "read-token-0123456789abcdef";
pub const ADMIN: &str = "admin-token-0123456789abcdef";
/// A description that must render as text.
pub const XSS: &str = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss=2\">";

/// The store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn postgres_url() -> String {
    std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether a test on `backend` runs: SQLite always; PostgreSQL when it answers, else the test is
/// skipped loudly — or fails under `FLEETCRON_REQUIRE_SERVICES=1`.
pub async fn available(backend: Backend, test: &str) -> bool {
    if backend == Backend::Sqlite {
        return true;
    }
    use sqlx::Connection;
    let url = postgres_url();
    let reason = match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return true;
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 5 s".to_owned(),
    };
    if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
        panic!("{test}: PostgreSQL is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {reason}");
    }
    eprintln!("\n*** SKIPPED {test}: PostgreSQL is unreachable: {reason}\n");
    false
}

/// A store of a test's own: a SQLite file in a temporary directory, or a PostgreSQL schema dropped at
/// the end.
pub struct TestStore {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestStore {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("admin.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Backend::Postgres => {
                let schema = format!("fc_admin_{}", uuid::Uuid::now_v7().simple());
                let base = postgres_url();
                let separator = if base.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{base}{separator}schema={schema}"),
                    _dir: None,
                    schema: Some(schema),
                }
            }
        }
    }

    /// Moves a task's high-water mark back by `by` with the store's own write primitive, as if no
    /// worker had claimed its slots for that long (to make range rows).
    pub async fn rewind(&self, id: &str, by: chrono::Duration) {
        let ids = [id.to_owned()];
        let mut decide = |_now: Timestamp, _id: &str, state: Option<&fleetcron::TaskState>| {
            let mut state = state.cloned().expect("the task exists");
            state.high_water -= by;
            fleetcron::Mutation {
                state: Some(state),
                insert_runs: Vec::new(),
                update_runs: Vec::new(),
            }
        };
        if self.url.starts_with("sqlite") {
            let store = fleetcron::SqliteStore::from_url(&self.url).await.expect("open");
            store.mutate(&ids, &mut decide).await.expect("rewind");
        } else {
            let store = fleetcron::PostgresStore::connect(&self.url).await.expect("open");
            store.mutate(&ids, &mut decide).await.expect("rewind");
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let url = postgres_url();
            // Best effort, on a thread of its own (Drop may run inside a runtime).
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .execute(&mut conn)
                            .await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// The tasks the API tests run: `report` (succeeds with a result), `flaky` (fails), `xss` (its
/// description is markup), none of which fires on its own during a test (yearly schedules).
pub fn tasks() -> Vec<ScheduledTask> {
    let build = |id: &str, description: &str, fail: bool| {
        ScheduledTask::builder(id)
            .schedule("0 0 1 1 *")
            .description(description)
            .handler(move |ctx| async move {
                if fail {
                    Err(fleetcron::TaskError::new("boom: <b>not bold</b>"))
                } else {
                    Ok(json!({ "rows": 42, "run": ctx.run_id }))
                }
            })
            .build()
            .expect("valid task")
    };
    vec![
        build("report", "Nightly report", false),
        build("flaky", "Fails every time", true),
        build("xss", XSS, false),
        ScheduledTask::builder("every-second")
            .schedule("* * * * * *")
            .description("Fires every second")
            .handler(|_| async { Ok(json!("tick")) })
            .build()
            .expect("valid task"),
    ]
}

/// A worker running `tasks` on a store, and the admin API over it on a loopback port.
pub struct Served {
    pub base: String,
    pub scheduler: Option<Scheduler>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    pub async fn start(url: &str, tasks: Vec<ScheduledTask>, options: AdminOptions) -> Self {
        let strategy = DefaultSchedulerStrategy::connect(url).await.expect("connect");
        let scheduler = Scheduler::builder()
            .strategy(strategy)
            .tasks(tasks)
            .worker_id("api-test-worker")
            .build()
            .expect("scheduler");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = scheduler.clone();
        let worker = tokio::spawn(async move {
            runner.run_until(stopped).await.expect("the scheduler runs");
        });
        tokio::time::timeout(Duration::from_secs(30), scheduler.ready())
            .await
            .expect("the scheduler is ready within 30 s");
        let mut served = Self::serve(scheduler.strategy().clone(), options).await;
        served.scheduler = Some(scheduler);
        served.stop = Some(stop);
        served.worker = Some(worker);
        served
    }

    /// Serves the admin API over `strategy` alone (no worker).
    pub async fn serve(strategy: Arc<dyn SchedulerStrategy>, options: AdminOptions) -> Self {
        let router = fleetcron_admin::router(strategy.clone(), options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = fleetcron_admin::serve(listener, router, std::future::pending()).await;
        });
        Self {
            base,
            scheduler: None,
            stop: None,
            worker: None,
            server,
        }
    }

    pub async fn stop(mut self) {
        self.server.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(worker) = self.worker.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
        }
    }
}

pub fn auth() -> Auth {
    Auth::with_tokens(vec![READ.to_owned()], vec![ADMIN.to_owned()]).expect("tokens")
}

/// One request and its answer, kept to check against the OpenAPI document.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// An HTTP client that records every exchange.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    pub log: Arc<Mutex<Vec<Exchange>>>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sends a request; `token` goes in the bearer header; `headers` are added as they are.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method.clone(), format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("a body");
        let json = if content_type.starts_with("application/json") {
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{path}: JSON body does not parse: {error}: {text}"))
        } else {
            Value::Null
        };
        let path_only = path.split('?').next().unwrap_or(path).to_owned();
        self.log.lock().expect("log").push(Exchange {
            method: method.as_str().to_owned(),
            path: path_only,
            status,
            content_type,
            body: text.clone(),
        });
        (status, json, text)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (status, json, _) = self.send("GET", path, token, None, &[]).await;
        (status, json)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|body| serde_json::to_vec(&body).expect("JSON"));
        let (status, json, _) = self.send("POST", path, token, body, &[]).await;
        (status, json)
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
