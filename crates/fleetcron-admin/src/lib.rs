//! fleetcron's admin surface as an axum [`Router`] over any [`SchedulerStrategy`]: a JSON API described
//! by an OpenAPI 3 document (`/api/openapi.json`), bearer tokens with two roles (read, admin),
//! Prometheus `/metrics`, `/healthz` and `/readyz` probes, and a server-rendered web dashboard at `/`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetcron_admin::{AdminOptions, Auth};
//! use std::sync::Arc;
//!
//! let strategy = Arc::new(fleetcron_core::MemoryStrategy::new(Arc::new(fleetcron_core::MemoryStore::new())));
//! let auth = Auth::with_tokens(vec!["a-read-token-of-16+chars".into()], vec!["an-admin-token-16+chars".into()])?;
//! let app = fleetcron_admin::router(strategy, AdminOptions::new(auth));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Security
//! * Every endpoint but the dashboard's static shell and assets, the OpenAPI document and the probes
//!   needs a token when tokens are configured: `Authorization: Bearer TOKEN`. Tokens are compared in
//!   constant time ([`subtle`]). A read token may read; only an admin token may trigger, enable or
//!   disable (a read token gets 403).
//! * No cookie is ever set or read, so a browser never attaches a credential by itself: every
//!   state change needs the `Authorization` header (or, without tokens, the `X-Fleetcron-Request`
//!   header), which a cross-site form cannot send, and a request whose `Origin` is another site is refused.
//! * The surface calls only the strategy's admin methods (`get_tasks`, `get_task`, `runs`,
//!   `trigger_task`, `update_task_noted`, and `get_task` for readiness); errors are JSON and never
//!   carry a store error's text (which could name a host): the log has it, redacted.

mod api;
mod auth;
mod dashboard;
mod error;
mod views;

pub use api::ApiDoc;
pub use auth::{check_bind, parse_token_file, Auth, Role, MIN_TOKEN_LENGTH};
pub use error::ApiError;
pub use views::{ErrorBody, RunPage, RunView, TaskList, TaskView, TriggerView, UpdateBody};

use axum::Router;
use fleetcron_core::SchedulerStrategy;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (a note is at most 500 bytes; nothing else has a body).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a request may take before it is answered 503 (a store that hangs).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the admin router behaves.
#[derive(Clone)]
pub struct AdminOptions {
    auth: Auth,
    metrics: Option<PrometheusHandle>,
    request_timeout: Duration,
    title: String,
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("auth", &self.auth)
            .field("metrics", &self.metrics.is_some())
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl AdminOptions {
    /// Options with this authentication, no `/metrics` renderer and the default timeout.
    pub fn new(auth: Auth) -> Self {
        Self {
            auth,
            metrics: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            title: "fleetcron".to_owned(),
        }
    }

    /// Serves `/metrics` from this Prometheus recorder's handle (the binary installs the recorder; a
    /// service with its own recorder leaves this out and `/metrics` answers 404).
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// How long a request may take (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The dashboard's title (default `fleetcron`). The page shell is served without a token: name no
    /// host or database here.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) strategy: Arc<dyn SchedulerStrategy>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) title: Arc<str>,
}

/// The admin surface over `strategy`: mount it in any axum application, or serve it alone.
pub fn router(strategy: Arc<dyn SchedulerStrategy>, options: AdminOptions) -> Router {
    let state = AppState {
        strategy,
        auth: Arc::new(options.auth),
        metrics: options.metrics,
        title: Arc::from(options.title.as_str()),
    };
    api::routes(state, options.request_timeout)
}

/// Installs the process-wide Prometheus recorder for fleetcron's metrics (histogram buckets for the
/// lag, duration and batch metrics) and returns the handle `/metrics` renders. For binaries: a library
/// never installs a recorder.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    use fleetcron_core::metrics as m;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let seconds = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let sizes = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(m::START_LAG.to_owned()), &seconds)
        .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(m::RUN_DURATION.to_owned()), &seconds))
        .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(m::CLAIM_BATCH_SECONDS.to_owned()), &seconds))
        .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(m::CLAIM_BATCH_SIZE.to_owned()), &sizes))
        .map_err(|error| format!("cannot configure the metrics recorder: {error}"))?
        .install_recorder()
        .map_err(|error| format!("cannot install the metrics recorder: {error}"))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
