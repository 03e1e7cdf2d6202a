//! Every endpoint, role and error code of the admin API, on SQLite and PostgreSQL.

use crate::support::*;
use fleetcron::{RunQuery, RunRecord, SchedulerError, SchedulerStrategy, StoreError, TaskReport, TriggerReceipt};
use fleetcron_admin::{AdminOptions, Auth};
use serde_json::{json, Value};
use std::sync::Arc;

/// Waits until `task` has `count` history rows with `status`, and returns the page.
async fn wait_for_runs(client: &Client, task: &str, status: &str, count: usize) -> Vec<Value> {
    eventually(20, &format!("{count} {status} run(s) of {task}"), || async {
        let (code, page) = client
            .get(&format!("/api/tasks/{task}/runs?status={status}"), Some(READ))
            .await;
        assert_eq!(code, 200, "{page}");
        let runs = page["runs"].as_array().cloned().unwrap_or_default();
        (runs.len() >= count).then_some(runs)
    })
    .await
}

/// Runs every scenario against a served worker on `backend`; returns the exchanges for the OpenAPI check.
pub async fn scenario(backend: Backend) -> Vec<Exchange> {
    let store = TestStore::new(backend);
    let served = Served::start(&store.url, tasks(), AdminOptions::new(auth())).await;
    let client = Client::new(&served.base);

    // Probes and the document need no token.
    assert_eq!(client.get("/healthz", None).await, (200, json!({"status": "ok"})));
    assert_eq!(client.get("/readyz", None).await, (200, json!({"status": "ok"})));
    let (code, doc) = client.get("/api/openapi.json", None).await;
    assert_eq!(code, 200);
    assert!(doc["paths"]["/api/tasks"].is_object());

    // 401: no token, a wrong token, a malformed header; the answer is JSON and asks for a bearer token.
    let (code, body) = client.get("/api/tasks", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("Bearer"), "{body}");
    assert_eq!(client.get("/api/tasks", Some("not-a-valid-token-at-all")).await.0, 401);
    let (code, _, _) = client
        .send(
            "GET",
            "/api/tasks",
            None,
            None,
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(client.get("/api/whoami", Some(READ)).await.1["role"], "read");
    assert_eq!(client.get("/api/whoami", Some(ADMIN)).await.1["role"], "admin");
    assert_eq!(client.get("/api/whoami", None).await.0, 401);

    // The list: every report field, the schedule in words and the next runs.
    let (code, list) = client.get("/api/tasks", Some(READ)).await;
    assert_eq!(code, 200, "{list}");
    let tasks = list["tasks"].as_array().expect("tasks");
    let ids: Vec<&str> = tasks.iter().filter_map(|task| task["id"].as_str()).collect();
    assert_eq!(
        ids,
        vec!["every-second", "flaky", "fleetcron.retention", "report", "xss"]
    );
    let report = tasks.iter().find(|task| task["id"] == "report").expect("report");
    for field in [
        "id",
        "description",
        "schedule",
        "timezone",
        "schedule_description",
        "last_executed_at",
        "last_started_at",
        "is_running",
        "last_result",
        "enabled",
        "next_run_at",
        "next_runs",
        "last_status",
        "last_error",
        "last_duration_ms",
        "running_on",
        "pending_trigger",
        "definition_conflict",
        "note",
    ] {
        assert!(report.get(field).is_some(), "field {field} missing: {report}");
    }
    assert_eq!(report["schedule_description"], "At 00:00, on day 1, in January.");
    assert_eq!(report["next_runs"].as_array().map(Vec::len), Some(5));
    assert_eq!(report["next_runs"][0], report["next_run_at"]);
    assert_eq!(
        tasks.iter().find(|task| task["id"] == "xss").expect("xss")["description"],
        XSS
    );

    // One task; 404 for an unknown one (also for its runs and a trigger); 400 for an oversized id.
    let (code, one) = client.get("/api/tasks/report", Some(READ)).await;
    assert_eq!((code, one["id"].as_str()), (200, Some("report")));
    let (code, body) = client.get("/api/tasks/no-such-task", Some(READ)).await;
    assert_eq!(code, 404);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("no-such-task"),
        "{body}"
    );
    assert_eq!(client.get("/api/tasks/no-such-task/runs", Some(READ)).await.0, 404);
    assert_eq!(
        client
            .post("/api/tasks/no-such-task/trigger", Some(ADMIN), None)
            .await
            .0,
        404
    );
    assert_eq!(
        client
            .post("/api/tasks/no-such-task/disable", Some(ADMIN), None)
            .await
            .0,
        404
    );
    let long = "x".repeat(2000);
    let (code, body) = client.get(&format!("/api/tasks/{long}"), Some(READ)).await;
    assert_eq!(code, 400, "{body}");
    assert!(!body.to_string().contains(&long), "an oversized id is not echoed whole");
    for action in ["trigger", "enable", "disable"] {
        assert_eq!(
            client
                .post(&format!("/api/tasks/{long}/{action}"), Some(ADMIN), None)
                .await
                .0,
            400
        );
    }
    assert_eq!(
        client.post("/api/tasks/no-such-task/enable", Some(ADMIN), None).await.0,
        404
    );
    assert_eq!(client.post("/api/tasks/report/enable", None, None).await.0, 401);
    assert_eq!(client.post("/api/tasks/report/enable", Some(READ), None).await.0, 403);
    assert_eq!(client.post("/api/tasks/report/disable", None, None).await.0, 401);
    assert_eq!(client.post("/api/tasks/report/trigger", None, None).await.0, 401);
    assert_eq!(client.get("/api/tasks/report", None).await.0, 401);
    assert_eq!(client.get("/api/tasks/report/runs", None).await.0, 401);
    // A task id with a slash and a space, percent-encoded in the path, is one id.
    assert_eq!(client.get("/api/tasks/a%2Fb%20c", Some(READ)).await.0, 404);

    // 403: a read token may not write; a cross-site request is refused even with an admin token.
    let (code, body) = client.post("/api/tasks/report/trigger", Some(READ), None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(client.post("/api/tasks/report/disable", Some(READ), None).await.0, 403);
    let (code, _, _) = client
        .send(
            "POST",
            "/api/tasks/report/trigger",
            Some(ADMIN),
            None,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(code, 403);

    // Trigger: 202 and a receipt; the run appears in the history with its result.
    let (code, receipt) = client.post("/api/tasks/report/trigger", Some(ADMIN), None).await;
    assert_eq!(code, 202, "{receipt}");
    assert!(receipt["trigger_id"].as_str().is_some_and(|id| !id.is_empty()));
    let runs = wait_for_runs(&client, "report", "succeeded", 1).await;
    assert_eq!(runs[0]["kind"], "manual");
    assert_eq!(runs[0]["trigger_id"], receipt["trigger_id"]);
    assert_eq!(runs[0]["result"]["rows"], 42);
    assert_eq!(runs[0]["worker"], "api-test-worker");
    let (_, task) = client.get("/api/tasks/report", Some(READ)).await;
    assert_eq!(task["last_status"], "succeeded");
    assert!(
        task["last_executed_at"].is_string() && task["last_duration_ms"].is_i64(),
        "{task}"
    );
    // Vendure's meaning: executed = the run's end; the start is its own field.
    assert_eq!(task["last_executed_at"], runs[0]["finished_at"], "{task}");
    assert_eq!(task["last_started_at"], runs[0]["started_at"], "{task}");
    // A failing task: its error (markup included) comes back as text.
    assert_eq!(client.post("/api/tasks/flaky/trigger", Some(ADMIN), None).await.0, 202);
    let failed = wait_for_runs(&client, "flaky", "failed", 1).await;
    assert!(failed[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("<b>not bold</b>"));
    // On failure the last result carries the error, as Vendure's does.
    let (_, flaky) = client.get("/api/tasks/flaky", Some(READ)).await;
    assert_eq!(flaky["last_result"], json!({ "error": failed[0]["error"] }), "{flaky}");
    assert_eq!(
        client.get("/api/tasks/flaky/runs?status=succeeded", Some(READ)).await.1["runs"],
        json!([])
    );

    // Paging: three runs, one per page, newest first, `next_before` walks back, none twice.
    for round in 2..=3 {
        assert_eq!(client.post("/api/tasks/report/trigger", Some(ADMIN), None).await.0, 202);
        wait_for_runs(&client, "report", "succeeded", round).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/tasks/report/runs?limit=1".to_owned();
    loop {
        let (code, page) = client.get(&path, Some(READ)).await;
        assert_eq!(code, 200, "{page}");
        for run in page["runs"].as_array().expect("runs") {
            seen.push(run["run_id"].as_str().expect("id").to_owned());
        }
        match page["next_before"].as_str() {
            Some(next) => path = format!("/api/tasks/report/runs?limit=1&before={next}"),
            None => break,
        }
        assert!(seen.len() <= 10, "paging does not end");
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first, no run twice");
    // 400 for a bad page request.
    for bad in ["limit=0", "limit=501", "limit=abc", "status=exploded"] {
        let (code, body) = client.get(&format!("/api/tasks/report/runs?{bad}"), Some(READ)).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }

    // Disable with a note: the report shows it; a trigger is refused with 409; enable clears the note.
    let (code, task) = client
        .post(
            "/api/tasks/report/disable",
            Some(ADMIN),
            Some(json!({"note": "vendor outage <b>"})),
        )
        .await;
    assert_eq!(code, 200, "{task}");
    assert_eq!(task["enabled"], false);
    assert_eq!(task["note"]["text"], "vendor outage <b>");
    assert_eq!(task["note"]["enabled"], false);
    assert_eq!(
        client.get("/api/tasks/report", Some(READ)).await.1["note"]["text"],
        "vendor outage <b>"
    );
    let (code, body) = client.post("/api/tasks/report/trigger", Some(ADMIN), None).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("disabled"));
    let (code, task) = client.post("/api/tasks/report/enable", Some(ADMIN), None).await;
    assert_eq!(
        (code, &task["enabled"], &task["note"]),
        (200, &json!(true), &Value::Null)
    );
    // 400 for a bad body; 413 for an oversized one.
    for action in ["enable", "disable"] {
        let (code, _, _) = client
            .send(
                "POST",
                &format!("/api/tasks/report/{action}"),
                Some(ADMIN),
                Some(b"{not json".to_vec()),
                &[],
            )
            .await;
        assert_eq!(code, 400);
    }
    let (code, _) = client
        .post(
            "/api/tasks/report/disable",
            Some(ADMIN),
            Some(json!({"note": "n".repeat(501)})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = client
        .post("/api/tasks/report/disable", Some(ADMIN), Some(json!({"unknown": 1})))
        .await;
    assert_eq!(code, 400);
    for action in ["enable", "disable"] {
        let (code, body, _) = client
            .send(
                "POST",
                &format!("/api/tasks/report/{action}"),
                Some(ADMIN),
                Some(vec![b' '; 20_000]),
                &[],
            )
            .await;
        assert_eq!(code, 413, "{body}");
    }
    assert_eq!(client.get("/api/tasks/report", Some(READ)).await.1["enabled"], true);

    // A range row: a long disabled stretch is one row with slot_until and slot_count.
    assert_eq!(
        client
            .post("/api/tasks/every-second/disable", Some(ADMIN), None)
            .await
            .0,
        200
    );
    store.rewind("every-second", chrono::Duration::hours(1)).await;
    assert_eq!(
        client.post("/api/tasks/every-second/enable", Some(ADMIN), None).await.0,
        200
    );
    let skipped = wait_for_runs(&client, "every-second", "skipped", 1).await;
    let range = skipped
        .iter()
        .find(|run| run["slot_count"].as_u64().is_some_and(|count| count > 3000))
        .unwrap_or_else(|| panic!("a range row of an hour of slots: {skipped:?}"));
    assert!(
        range["slot_until"].is_string() && range["reason"] == "disabled",
        "{range}"
    );

    // Unknown routes and methods answer JSON too.
    let (code, body) = client.get("/api/nothing-here", Some(READ)).await;
    assert_eq!(code, 404);
    assert!(body["error"].is_string());
    let (code, body) = client.get("/api/tasks/report/trigger", Some(ADMIN)).await;
    assert_eq!(code, 405);
    assert!(body["error"].is_string());
    // No Prometheus handle here: /metrics says so (after the token check).
    assert_eq!(client.get("/metrics", None).await.0, 401);
    assert_eq!(client.get("/metrics", Some(READ)).await.0, 404);

    let log = client.log.lock().expect("log").clone();
    served.stop().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_role_and_error_on_sqlite() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_role_and_error_on_postgres() {
    if !available(Backend::Postgres, "every_endpoint_role_and_error_on_postgres").await {
        return;
    }
    scenario(Backend::Postgres).await;
}

/// A strategy whose store never answers (its error names a URL with a password, which must not leak).
pub struct Unreachable;

const LEAKY: &str = "connection refused: postgres://app:hunter2-secret@db.internal:5432/jobs";

#[async_trait::async_trait]
impl SchedulerStrategy for Unreachable {
    async fn init(&self, _: &str) -> Result<(), SchedulerError> {
        Ok(())
    }
    async fn destroy(&self) -> Result<(), SchedulerError> {
        Ok(())
    }
    async fn register_task(&self, _: fleetcron::ScheduledTask) -> Result<fleetcron::Registration, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn execute_task(
        &self,
        _: &fleetcron::ScheduledTask,
        _: fleetcron::Firing,
    ) -> Result<fleetcron::ExecuteOutcome, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn get_tasks(&self) -> Result<Vec<TaskReport>, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn get_task(&self, _: &str) -> Result<Option<TaskReport>, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn trigger_task(&self, _: &str) -> Result<TriggerReceipt, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn update_task(&self, _: fleetcron::UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
    async fn runs(&self, _: &str, _: RunQuery) -> Result<Vec<RunRecord>, SchedulerError> {
        Err(SchedulerError::Store(StoreError::Unavailable(LEAKY.to_owned())))
    }
}

/// 503 when the store is unreachable (500 for another store failure), and never the store's message.
pub async fn unreachable_scenario() -> Vec<Exchange> {
    let served = Served::serve(Arc::new(Unreachable), AdminOptions::new(auth())).await;
    let client = Client::new(&served.base);
    assert_eq!(client.get("/healthz", None).await.0, 200);
    let answers = vec![
        client.get("/readyz", None).await,
        client.get("/api/tasks", Some(READ)).await,
        client.get("/api/tasks/report", Some(READ)).await,
        client.get("/api/tasks/report/runs", Some(READ)).await,
        client.post("/api/tasks/report/trigger", Some(ADMIN), None).await,
        client.post("/api/tasks/report/enable", Some(ADMIN), None).await,
        client.post("/api/tasks/report/disable", Some(ADMIN), None).await,
        client.get("/ui/tasks", Some(READ)).await,
    ];
    for (code, body) in &answers {
        assert_eq!(*code, 503, "{body}");
    }
    for (_, body) in &answers {
        let text = body.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("db.internal") && !text.contains("postgres://"),
            "{text}"
        );
    }
    let log = client.log.lock().expect("log").clone();
    served.stop().await;
    log
}

#[tokio::test]
async fn an_unreachable_store_answers_503_without_its_url() {
    unreachable_scenario().await;
}

#[tokio::test]
async fn without_tokens_state_changes_need_the_request_header() {
    let store = TestStore::new(Backend::Sqlite);
    let served = Served::start(&store.url, tasks(), AdminOptions::new(Auth::none())).await;
    let client = Client::new(&served.base);
    assert_eq!(
        client.get("/api/whoami", None).await.1,
        json!({"role": "admin", "auth": false})
    );
    // A plain cross-site form post carries no custom header: refused.
    let (code, _, _) = client
        .send(
            "POST",
            "/api/tasks/report/trigger",
            None,
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(code, 403);
    let (code, _, _) = client
        .send(
            "POST",
            "/api/tasks/report/trigger",
            None,
            None,
            &[("x-fleetcron-request", "1")],
        )
        .await;
    assert_eq!(code, 202);
    served.stop().await;
}
