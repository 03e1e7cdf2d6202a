//! The routes: the JSON API (documented by [`ApiDoc`]), probes, `/metrics`, and the dashboard's pages.

use crate::auth::Role;
use crate::dashboard;
use crate::error::ApiError;
use crate::views::{ErrorBody, Health, RunPage, RunView, TaskList, TaskView, TriggerView, UpdateBody, WhoAmI};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetcron_core::{RunQuery, RunStatus, SchedulerStrategy, Timestamp, UpdateScheduledTaskInput};
use serde::Deserialize;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi};

/// Largest page of history.
pub const MAX_PAGE: u32 = 500;
/// Default page of history.
pub const DEFAULT_PAGE: u32 = 50;
/// With a status filter, how many rows one request reads at most to fill its page (the rest is the
/// next page's: `next_before` continues where the scan stopped).
pub const MAX_SCANNED: usize = 5_000;
/// Longest task id or run id accepted in a request.
const MAX_ID_BYTES: usize = 1024;
/// How long readiness waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The OpenAPI 3 document of the admin API (served at `/api/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetcron admin API",
        description = "List, inspect, trigger, enable and disable the tasks of a fleetcron store. \
                       Send `Authorization: Bearer TOKEN` (a read or an admin token) when the server has tokens.",
        version = "1"
    ),
    paths(list_tasks, get_task, list_runs, trigger_task, enable_task, disable_task, whoami, metrics, healthz, readyz),
    components(schemas(ErrorBody, TaskList, TaskView, RunPage, RunView, TriggerView, UpdateBody, WhoAmI, Health)),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) fn routes(state: AppState, timeout: Duration) -> Router {
    let api = Router::new()
        .route("/api/tasks", get(list_tasks))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/runs", get(list_runs))
        .route("/api/tasks/{id}/trigger", post(trigger_task))
        .route("/api/tasks/{id}/enable", post(enable_task))
        .route("/api/tasks/{id}/disable", post(disable_task))
        .route("/api/whoami", get(whoami))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard::shell))
        .route("/assets/dashboard.js", get(dashboard::script))
        .route("/assets/dashboard.css", get(dashboard::style))
        .route("/ui/tasks", get(dashboard::tasks_fragment))
        .route("/ui/task", get(dashboard::task_fragment))
        .fallback(not_found)
        .with_state(state);
    api.layer(axum::extract::DefaultBodyLimit::max(crate::MAX_BODY_BYTES))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            within(timeout, request, next)
        }))
        .layer(middleware::map_response(json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(middleware::map_response(security_headers))
}

/// Answers 503 (JSON) when a request outlives the timeout: a store that hangs never holds a client.
async fn within(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the request took longer than {} s (the store may be slow or unreachable); try again later",
                timeout.as_secs()
            ),
        }
        .into_response(),
    }
}

/// Any error answer that is not JSON yet (an unknown route, a wrong method, an oversized body) becomes
/// the API's JSON error, so clients parse one shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such endpoint; the API is described at /api/openapi.json".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method; see /api/openapi.json".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is over {} bytes", crate::MAX_BODY_BYTES),
        other => format!("the request failed: {}", other.canonical_reason().unwrap_or("error")),
    };
    ApiError { status, message }.into_response()
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an admin request handler panicked");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "the request failed inside the server; the server's log has the cause".to_owned(),
    }
    .into_response()
}

/// Headers every answer carries: no sniffing, no framing by other sites, no referrer leaking task ids,
/// and a content security policy that allows only this server's own script and style.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint; the API is described at /api/openapi.json".to_owned(),
    }
}

pub(crate) fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "the {what} must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The store's time as this server last read it, else this host's clock.
pub(crate) fn now(strategy: &dyn SchedulerStrategy) -> Timestamp {
    strategy
        .store_time()
        .map(|reading| reading.now())
        .unwrap_or_else(chrono::Utc::now)
}

pub(crate) async fn task_view(state: &AppState, id: &str) -> Result<TaskView, ApiError> {
    check_id(id, "task id")?;
    let report = state
        .strategy
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::unknown_task(id))?;
    Ok(TaskView::of(report, now(&*state.strategy)))
}

pub(crate) async fn task_list(state: &AppState) -> Result<TaskList, ApiError> {
    let reports = state.strategy.get_tasks().await?;
    let now = now(&*state.strategy);
    let mut tasks: Vec<TaskView> = reports.into_iter().map(|report| TaskView::of(report, now)).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(TaskList { tasks, now })
}

/// Query of the run history.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsParams {
    /// Most rows (1 to 500, default 50).
    pub limit: Option<u32>,
    /// Only rows older than this run id (the previous page's `next_before`).
    pub before: Option<String>,
    /// Only rows with this status (`pending`, `running`, `succeeded`, `failed`, `timed_out`,
    /// `abandoned`, `cancelled`, `skipped`, `missed`).
    pub status: Option<String>,
}

pub(crate) async fn run_page(state: &AppState, id: &str, params: &RunsParams) -> Result<RunPage, ApiError> {
    check_id(id, "task id")?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")));
    }
    if let Some(before) = params.before.as_deref() {
        check_id(before, "`before` run id")?;
    }
    let status = match params.status.as_deref().filter(|status| !status.is_empty()) {
        None => None,
        Some(name) => Some(RunStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {}; use pending, running, succeeded, failed, timed_out, abandoned, cancelled, skipped or missed",
                fleetcron_core::limits::echo(name)
            ))
        })?),
    };
    let mut runs = Vec::new();
    let mut before = params.before.clone();
    let mut scanned = 0usize;
    let mut next_before = None;
    // Without a filter one read is the page. With one, read pages until it is full, the history ends or
    // MAX_SCANNED rows were read; `next_before` continues the scan where it stopped.
    loop {
        let want = if status.is_some() { MAX_PAGE } else { limit };
        let page = state
            .strategy
            .runs(
                id,
                RunQuery {
                    limit: want,
                    before: before.clone(),
                },
            )
            .await?;
        let full_page = page.len() == want as usize;
        let mut last = None;
        for run in page {
            scanned += 1;
            last = Some(run.run_id.clone());
            if status.is_none_or(|status| run.status == status) {
                runs.push(RunView::from(run));
                if runs.len() == limit as usize {
                    break;
                }
            }
        }
        let stopped_early = runs.len() == limit as usize;
        if stopped_early || !full_page || scanned >= MAX_SCANNED {
            if stopped_early || full_page {
                next_before = last;
            }
            break;
        }
        before = last;
    }
    Ok(RunPage { runs, next_before })
}

/// List every task in the store.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    responses(
        (status = 200, description = "Every task, sorted by id", body = TaskList),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn list_tasks(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<TaskList>, ApiError> {
    state.auth.caller(&headers)?;
    Ok(Json(task_list(&state).await?))
}

/// One task's report.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task id (percent-encoded)")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "An empty or oversized id", body = ErrorBody),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn get_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    state.auth.caller(&headers)?;
    Ok(Json(task_view(&state, &id).await?))
}

/// A task's run history, newest first, paged with `before`, filtered by `status`.
#[utoipa::path(get, path = "/api/tasks/{id}/runs", tag = "tasks",
    params(("id" = String, Path, description = "The task id (percent-encoded)"), RunsParams),
    responses(
        (status = 200, description = "A page of the history", body = RunPage),
        (status = 400, description = "A bad limit, status or cursor", body = ErrorBody),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Result<Query<RunsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunPage>, ApiError> {
    state.auth.caller(&headers)?;
    let Query(params) = params.map_err(|error| ApiError::bad_request(format!("bad query: {}", error.body_text())))?;
    Ok(Json(run_page(&state, &id, &params).await?))
}

/// Trigger a task now (durable; it runs after the running run, if any; two pending triggers coalesce).
#[utoipa::path(post, path = "/api/tasks/{id}/trigger", tag = "tasks",
    params(("id" = String, Path, description = "The task id (percent-encoded)")),
    responses(
        (status = 202, description = "Accepted: a worker will run it", body = TriggerView),
        (status = 400, description = "An empty or oversized id", body = ErrorBody),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 403, description = "A read token, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is disabled", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn trigger_task(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    state.auth.writer(&method, &headers)?;
    check_id(&id, "task id")?;
    let receipt = state.strategy.trigger_task(&id).await?;
    tracing::info!(task = %fleetcron_core::limits::echo(&id), trigger = %receipt.trigger_id, "admin API: task triggered");
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerView {
            trigger_id: receipt.trigger_id,
            coalesced: receipt.coalesced,
        }),
    ))
}

fn update_body(body: &Bytes) -> Result<UpdateBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(UpdateBody::default());
    }
    let body: UpdateBody = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body must be empty or JSON like {{\"note\": \"why\"}}: {}",
            fleetcron_core::redact::truncate(&error.to_string(), 200)
        ))
    })?;
    if body
        .note
        .as_ref()
        .is_some_and(|note| note.len() > fleetcron_core::model::MAX_NOTE_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "the note is over {} bytes",
            fleetcron_core::model::MAX_NOTE_BYTES
        )));
    }
    Ok(body)
}

async fn set_enabled(
    state: AppState,
    method: Method,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    enabled: bool,
) -> Result<Json<TaskView>, ApiError> {
    state.auth.writer(&method, &headers)?;
    check_id(&id, "task id")?;
    let body = update_body(&body)?;
    let note = body
        .note
        .map(|note| note.trim().to_owned())
        .filter(|note| !note.is_empty());
    let report = state
        .strategy
        .update_task_noted(
            UpdateScheduledTaskInput {
                id: id.clone(),
                enabled: Some(enabled),
            },
            note,
        )
        .await?;
    tracing::info!(task = %fleetcron_core::limits::echo(&id), enabled, "admin API: task updated");
    Ok(Json(TaskView::of(report, now(&*state.strategy))))
}

/// Enable a task fleet-wide (slots missed while disabled are recorded skipped, never caught up).
#[utoipa::path(post, path = "/api/tasks/{id}/enable", tag = "tasks",
    params(("id" = String, Path, description = "The task id (percent-encoded)")),
    request_body(content = Option<UpdateBody>, description = "Optional note", content_type = "application/json"),
    responses(
        (status = 200, description = "The task after the change", body = TaskView),
        (status = 400, description = "A bad body or id", body = ErrorBody),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 403, description = "A read token, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn enable_task(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TaskView>, ApiError> {
    set_enabled(state, method, headers, id, body, true).await
}

/// Disable a task fleet-wide (a running run is not killed; its slots are recorded skipped).
#[utoipa::path(post, path = "/api/tasks/{id}/disable", tag = "tasks",
    params(("id" = String, Path, description = "The task id (percent-encoded)")),
    request_body(content = Option<UpdateBody>, description = "Optional note", content_type = "application/json"),
    responses(
        (status = 200, description = "The task after the change", body = TaskView),
        (status = 400, description = "A bad body or id", body = ErrorBody),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 403, description = "A read token, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = ErrorBody),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn disable_task(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TaskView>, ApiError> {
    set_enabled(state, method, headers, id, body, false).await
}

/// The caller's role.
#[utoipa::path(get, path = "/api/whoami", tag = "auth",
    responses(
        (status = 200, description = "The role of the presented token", body = WhoAmI),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
    ))]
async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<WhoAmI>, ApiError> {
    let role = state.auth.caller(&headers)?;
    Ok(Json(WhoAmI {
        role: role.as_str().to_owned(),
        auth: state.auth.has_tokens(),
    }))
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the OpenAPI document");
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "cannot render the OpenAPI document".to_owned(),
            }
            .into_response()
        }
    }
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain"),
        (status = 401, description = "No token or a wrong token", body = ErrorBody),
        (status = 404, description = "This process exports no Prometheus metrics", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.auth.caller(&headers)?;
    let Some(handle) = &state.metrics else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: "this process exports no Prometheus metrics (the embedding service has its own recorder)"
                .to_owned(),
        });
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the store answers (within 3 s).
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "The store answers", body = Health),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.strategy.get_task("fleetcron-readiness-probe")).await {
        Ok(Ok(_)) => Ok(Json(Health {
            status: "ok".to_owned(),
        })),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store did not answer");
            Err(ApiError::unavailable())
        }
        Err(_) => Err(ApiError::unavailable()),
    }
}

/// The role a dashboard fragment renders for.
pub(crate) fn fragment_role(state: &AppState, headers: &HeaderMap) -> Result<Role, ApiError> {
    state.auth.caller(headers)
}
