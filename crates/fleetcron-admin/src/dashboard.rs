//! The web dashboard: a static shell with a small script (embedded, no build step) that fetches
//! server-rendered HTML fragments with the caller's bearer token and refreshes them every few seconds.
//! Every user-supplied text (ids, descriptions, results, errors, notes, worker ids) goes through
//! [`escape`]; the content security policy allows no inline script at all.

use crate::api::{fragment_role, run_page, task_list, task_view, RunsParams};
use crate::auth::Role;
use crate::error::ApiError;
use crate::views::{RunView, TaskView};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::fmt::Write as _;

const SHELL: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// Most characters of a result or error shown in a table cell (the task page shows more).
const CELL_TEXT: usize = 160;
/// Most characters of a result or error on the task page.
const PAGE_TEXT: usize = 4000;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '`' => out.push_str("&#96;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query parameter value.
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Text cut to `max` characters with an ellipsis.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn when(at: Option<DateTime<Utc>>) -> String {
    match at {
        Some(at) => format!(
            "<time datetime=\"{}\">{}</time>",
            at.to_rfc3339(),
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "<span class=\"muted\">—</span>".to_owned(),
    }
}

fn millis(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms.abs() < 10_000 => format!("{ms} ms"),
        Some(ms) if ms.abs() < 600_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{:.1} min", ms as f64 / 60_000.0),
        None => "—".to_owned(),
    }
}

fn status_badge(status: Option<&str>) -> String {
    match status {
        Some(status) => format!("<span class=\"badge s-{0}\">{0}</span>", escape(status)),
        None => "<span class=\"muted\">never ran</span>".to_owned(),
    }
}

fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

pub(crate) async fn shell(State(state): State<AppState>) -> Html<String> {
    Html(SHELL.replace("{{title}}", &escape(&state.title)))
}

pub(crate) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn actions(task: &TaskView, role: Role) -> String {
    if role != Role::Admin {
        return String::new();
    }
    let id = escape(&task.id);
    let mut html = String::new();
    if task.enabled {
        let _ = write!(
            html,
            "<button class=\"act run\" data-action=\"trigger\" data-task=\"{id}\">Run</button>\
             <button class=\"act\" data-action=\"disable\" data-task=\"{id}\">Disable</button>"
        );
    } else {
        let _ = write!(
            html,
            "<button class=\"act\" data-action=\"enable\" data-task=\"{id}\">Enable</button>"
        );
    }
    html
}

fn running_cell(task: &TaskView) -> String {
    if task.running_on.is_empty() {
        return "<span class=\"muted\">no</span>".to_owned();
    }
    let mut html = String::new();
    for run in &task.running_on {
        let _ = write!(
            html,
            "<div><span class=\"badge s-running\">running</span> on <code>{}</code> since {}</div>",
            escape(&cut(&run.worker, 60)),
            when(Some(run.since))
        );
    }
    html
}

fn last_result_cell(task: &TaskView, max: usize) -> String {
    let mut html = status_badge(task.last_status.as_deref());
    if task.last_duration_ms.is_some() {
        let _ = write!(
            html,
            " <span class=\"muted\">in {}</span>",
            millis(task.last_duration_ms)
        );
    }
    if let Some(error) = &task.last_error {
        let _ = write!(html, "<div class=\"err\">{}</div>", escape(&cut(error, max)));
    } else if let Some(result) = json_text(&task.last_result) {
        let _ = write!(
            html,
            "<div class=\"result\"><code>{}</code></div>",
            escape(&cut(&result, max))
        );
    }
    html
}

fn note_html(task: &TaskView) -> String {
    match &task.note {
        Some(note) => format!(
            "<div class=\"note\">{}: “{}” <span class=\"muted\">({})</span></div>",
            if note.enabled { "enabled" } else { "disabled" },
            escape(&note.text),
            when(Some(note.at))
        ),
        None => String::new(),
    }
}

fn conflict_html(task: &TaskView) -> String {
    match &task.definition_conflict {
        Some(conflict) => format!(
            "<div class=\"conflict\">worker <code>{}</code> registers <code>{}</code> ({}) “{}”, seen {}</div>",
            escape(&cut(&conflict.worker, 60)),
            escape(&conflict.schedule),
            escape(&conflict.timezone),
            escape(&cut(&conflict.description, 120)),
            when(Some(conflict.seen_at))
        ),
        None => "<span class=\"muted\">none</span>".to_owned(),
    }
}

fn task_link(id: &str) -> String {
    format!(
        "<a class=\"task-link\" href=\"/?task={}\">{}</a>",
        escape(&encode_query(id)),
        escape(id)
    )
}

/// The task table.
pub(crate) async fn tasks_fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, ApiError> {
    let role = fragment_role(&state, &headers)?;
    let list = task_list(&state).await?;
    let mut html = String::new();
    let _ = write!(
        html,
        "<div class=\"bar\"><h2>Scheduled tasks <span class=\"muted\">({})</span></h2>\
         <span class=\"muted\">store time {} · role <b id=\"role\">{}</b></span></div>",
        list.tasks.len(),
        when(Some(list.now)),
        role.as_str()
    );
    if list.tasks.is_empty() {
        html.push_str("<p class=\"muted\">No task in this store yet: start a worker that registers some.</p>");
        return Ok(Html(html));
    }
    html.push_str(
        "<div class=\"scroll\"><table id=\"tasks\"><thead><tr><th>Task</th><th>Enabled</th><th>Schedule</th>\
         <th>Last executed</th><th>Next execution</th><th>Running</th><th>Last result</th>\
         <th>Pending trigger</th><th>Definition conflict</th><th>Actions</th></tr></thead><tbody>",
    );
    for task in &list.tasks {
        let _ = write!(
            html,
            "<tr data-task-row=\"{id_attr}\"><td data-label=\"Task\">{link}<div class=\"desc\">{desc}</div>{note}</td>\
             <td data-label=\"Enabled\">{enabled}</td>\
             <td data-label=\"Schedule\">{words}<div class=\"muted\"><code>{pattern}</code> {tz}</div></td>\
             <td data-label=\"Last executed\">{last}</td><td data-label=\"Next execution\">{next}</td>\
             <td data-label=\"Running\">{running}</td><td data-label=\"Last result\">{result}</td>\
             <td data-label=\"Pending trigger\">{pending}</td><td data-label=\"Conflict\">{conflict}</td>\
             <td data-label=\"Actions\" class=\"actions\">{actions}</td></tr>",
            id_attr = escape(&task.id),
            link = task_link(&task.id),
            desc = escape(&cut(&task.description, 200)),
            note = note_html(task),
            enabled = if task.enabled {
                "<span class=\"badge on\">enabled</span>"
            } else {
                "<span class=\"badge off\">disabled</span>"
            },
            words = escape(&task.schedule_description),
            pattern = escape(&task.schedule),
            tz = escape(&task.timezone),
            last = when(task.last_executed_at),
            next = when(task.next_run_at),
            running = running_cell(task),
            result = last_result_cell(task, CELL_TEXT),
            pending = match task.pending_trigger {
                Some(at) => format!("<span class=\"badge s-pending\">pending</span> {}", when(Some(at))),
                None => "<span class=\"muted\">no</span>".to_owned(),
            },
            conflict = conflict_html(task),
            actions = actions(task, role),
        );
    }
    html.push_str("</tbody></table></div>");
    Ok(Html(html))
}

/// Query of the task page fragment.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskPageQuery {
    id: String,
    before: Option<String>,
    status: Option<String>,
}

const STATUSES: &[&str] = &[
    "pending",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "abandoned",
    "cancelled",
    "skipped",
    "missed",
];

/// An inline SVG line chart of `(instant, milliseconds)` points, oldest first.
fn chart(title: &str, id: &str, points: &[(DateTime<Utc>, i64)]) -> String {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    const PAD: f64 = 28.0;
    const LEFT: f64 = 56.0;
    let mut html = format!(
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{}</figcaption>",
        escape(title)
    );
    if points.len() < 2 {
        html.push_str("<p class=\"muted\">Not enough runs on this page to draw.</p></figure>");
        return html;
    }
    let t0 = points.iter().map(|(at, _)| at.timestamp_millis()).min().unwrap_or(0);
    let t1 = points
        .iter()
        .map(|(at, _)| at.timestamp_millis())
        .max()
        .unwrap_or(1)
        .max(t0 + 1);
    let max = points.iter().map(|(_, value)| *value).max().unwrap_or(1).max(1);
    let x = |at: &DateTime<Utc>| LEFT + (at.timestamp_millis() - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - PAD);
    let y = |value: i64| H - PAD - (value.max(0) as f64 / max as f64) * (H - 2.0 * PAD);
    let line: Vec<String> = points
        .iter()
        .map(|(at, value)| format!("{:.1},{:.1}", x(at), y(*value)))
        .collect();
    let _ = write!(
        html,
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\" preserveAspectRatio=\"none\">\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" stroke=\"#999\" stroke-width=\"1\"/>\
         <line x1=\"{LEFT}\" y1=\"{PAD}\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"#999\" stroke-width=\"1\"/>\
         <text x=\"2\" y=\"{top}\" font-size=\"11\">{max_label}</text>\
         <text x=\"2\" y=\"{base}\" font-size=\"11\">0</text>\
         <polyline fill=\"none\" stroke=\"#2a6ebb\" stroke-width=\"2\" points=\"{line}\"/>",
        title = escape(title),
        base = H - PAD,
        right = W - PAD,
        top = PAD + 4.0,
        max_label = escape(&millis(Some(max))),
        line = line.join(" "),
    );
    for (at, value) in points {
        let _ = write!(
            html,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2a6ebb\"><title>{} — {}</title></circle>",
            x(at),
            y(*value),
            at.format("%Y-%m-%d %H:%M:%S UTC"),
            escape(&millis(Some(*value)))
        );
    }
    let _ = write!(
        html,
        "<text x=\"{LEFT}\" y=\"{H}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{H}\" font-size=\"11\" text-anchor=\"end\">{}</text></svg></figure>",
        DateTime::<Utc>::from_timestamp_millis(t0).map(|at| at.format("%H:%M:%S").to_string()).unwrap_or_default(),
        W - PAD,
        DateTime::<Utc>::from_timestamp_millis(t1).map(|at| at.format("%H:%M:%S").to_string()).unwrap_or_default(),
    );
    html
}

fn slot_cell(run: &RunView) -> String {
    match (run.slot, run.slot_until, run.slot_count) {
        (Some(first), Some(last), count) => format!(
            "{} … {} <span class=\"badge\">×{}</span>",
            when(Some(first)),
            when(Some(last)),
            count.unwrap_or(0)
        ),
        (Some(slot), None, _) => when(Some(slot)),
        (None, _, _) => "<span class=\"muted\">manual</span>".to_owned(),
    }
}

/// The task page: report, actions, charts and a page of history.
pub(crate) async fn task_fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TaskPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let role = fragment_role(&state, &headers)?;
    let Query(query) = query.map_err(|error| ApiError::bad_request(format!("bad query: {}", error.body_text())))?;
    let task = task_view(&state, &query.id).await?;
    let params = RunsParams {
        limit: Some(50),
        before: query.before.clone().filter(|before| !before.is_empty()),
        status: query.status.clone().filter(|status| !status.is_empty()),
    };
    let page = run_page(&state, &query.id, &params).await?;
    let mut html = String::new();
    let _ = write!(
        html,
        "<p><a href=\"/\">← all tasks</a></p><div class=\"bar\"><h2 id=\"task-title\">{id}</h2>{enabled}\
         <span class=\"muted\">role <b id=\"role\">{role}</b></span></div><p class=\"desc\">{desc}</p>{note}",
        id = escape(&task.id),
        enabled = if task.enabled {
            "<span class=\"badge on\">enabled</span>"
        } else {
            "<span class=\"badge off\">disabled</span>"
        },
        role = role.as_str(),
        desc = escape(&task.description),
        note = note_html(&task),
    );
    if role == Role::Admin {
        let _ = write!(
            html,
            "<div class=\"actions panel\">{}<input id=\"note\" maxlength=\"500\" placeholder=\"note for enable/disable (optional)\"></div>",
            actions(&task, role)
        );
    }
    let next_runs: Vec<String> = task.next_runs.iter().map(|at| when(Some(*at))).collect();
    let _ = write!(
        html,
        "<dl class=\"facts\"><dt>Schedule</dt><dd>{words} <code>{pattern}</code> {tz}</dd>\
         <dt>Next runs</dt><dd>{next}</dd><dt>Last executed</dt><dd>{last}</dd>\
         <dt>Last started</dt><dd>{started}</dd><dt>Last result</dt><dd>{result}</dd><dt>Running</dt><dd>{running}</dd>\
         <dt>Pending trigger</dt><dd>{pending}</dd><dt>Definition conflict</dt><dd>{conflict}</dd></dl>",
        words = escape(&task.schedule_description),
        pattern = escape(&task.schedule),
        tz = escape(&task.timezone),
        next = if next_runs.is_empty() {
            "—".to_owned()
        } else {
            next_runs.join(", ")
        },
        last = when(task.last_executed_at),
        started = when(task.last_started_at),
        result = last_result_cell(&task, PAGE_TEXT),
        running = running_cell(&task),
        pending = when(task.pending_trigger),
        conflict = conflict_html(&task),
    );
    // Charts over the rows of this page, oldest first.
    let mut lag: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let mut duration: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for run in page.runs.iter().rev() {
        if let (Some(started), Some(value)) = (run.started_at, run.lag_ms) {
            lag.push((started, value));
        }
        if let (Some(started), Some(value)) = (run.started_at, run.duration_ms) {
            duration.push((started, value));
        }
    }
    html.push_str("<div class=\"charts\">");
    html.push_str(&chart("Start lag (slot → start, store clock)", "lag-chart", &lag));
    html.push_str(&chart("Run duration", "duration-chart", &duration));
    html.push_str("</div>");
    // Filter and paging.
    let current = params.status.as_deref().unwrap_or("");
    let _ = write!(
        html,
        "<div class=\"bar\"><h3>History</h3><label>status <select id=\"status-filter\"><option value=\"\">all</option>"
    );
    for status in STATUSES {
        let _ = write!(
            html,
            "<option value=\"{status}\"{}>{status}</option>",
            if *status == current { " selected" } else { "" }
        );
    }
    html.push_str("</select></label>");
    if params.before.is_some() {
        html.push_str("<button class=\"page\" data-before=\"\">newest</button>");
    }
    if let Some(next) = &page.next_before {
        let _ = write!(
            html,
            "<button class=\"page\" data-before=\"{}\">older →</button>",
            escape(next)
        );
    }
    html.push_str("</div>");
    if page.runs.is_empty() {
        html.push_str("<p class=\"muted\" id=\"no-runs\">No runs on this page.</p>");
        return Ok(Html(html));
    }
    html.push_str(
        "<div class=\"scroll\"><table id=\"runs\"><thead><tr><th>Run</th><th>Kind</th><th>Slot</th><th>Status</th>\
         <th>Worker</th><th>Started</th><th>Lag</th><th>Duration</th><th>Result / error</th></tr></thead><tbody>",
    );
    for run in &page.runs {
        let detail = match (&run.error, json_text(&run.result), &run.reason) {
            (Some(error), _, _) => format!("<span class=\"err\">{}</span>", escape(&cut(error, CELL_TEXT))),
            (None, Some(result), _) => format!("<code>{}</code>", escape(&cut(&result, CELL_TEXT))),
            (None, None, Some(reason)) => format!("<span class=\"muted\">{}</span>", escape(&cut(reason, CELL_TEXT))),
            _ => String::new(),
        };
        let _ = write!(
            html,
            "<tr class=\"run\" data-run=\"{run_id}\" data-status=\"{status}\"><td data-label=\"Run\"><code title=\"{run_id}\">{short}</code> #{attempt}</td>\
             <td data-label=\"Kind\">{kind}</td><td data-label=\"Slot\">{slot}</td><td data-label=\"Status\">{badge}</td>\
             <td data-label=\"Worker\"><code>{worker}</code></td><td data-label=\"Started\">{started}</td>\
             <td data-label=\"Lag\">{lag}</td><td data-label=\"Duration\">{duration}</td><td data-label=\"Result\">{detail}</td></tr>",
            run_id = escape(&run.run_id),
            short = escape(&cut(&run.run_id, 13)),
            attempt = run.attempt,
            status = escape(&run.status),
            kind = escape(&run.kind),
            slot = slot_cell(run),
            badge = status_badge(Some(&run.status)),
            worker = escape(&cut(run.worker.as_deref().unwrap_or("—"), 40)),
            started = when(run.started_at),
            lag = millis(run.lag_ms),
            duration = millis(run.duration_ms),
        );
    }
    html.push_str("</tbody></table></div>");
    Ok(Html(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let escaped = escape("<script>alert('x')</script> & \"q\" `b`");
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"'));
        assert!(!escaped.contains('\'') && !escaped.contains('`'));
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("a b/c&d"), "a%20b%2Fc%26d");
    }

    #[test]
    fn charts_need_two_points_and_scale_to_the_max() {
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        assert!(chart("t", "c", &[(at(1), 5)]).contains("Not enough"));
        let svg = chart("t", "c", &[(at(1), 5), (at(2), 10)]);
        assert!(svg.contains("<polyline") && svg.contains("10 ms"), "{svg}");
    }
}
