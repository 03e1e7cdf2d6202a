//! The daemon's configuration file (`fleetcron.toml`): parsing and whole-file validation.
//!
//! The file is read into TOML's spanned tree and walked by hand, so that every problem — unknown keys,
//! wrong types, invalid patterns, zones and durations, duplicate ids, a task with no action or two —
//! is collected with its line, column and field, and all of them are reported at once.
//!
//! ```toml
//! store = "sqlite://fleetcron.db"        # overridden by --store / FLEETCRON_STORE
//! [engine]
//! lease = "30s"
//! [[task]]
//! id = "backup"
//! schedule = "0 3 * * *"
//! command = ["/usr/local/bin/backup", "--full"]
//! ```

use fleetcron::{CatchUp, EngineConfig, OnAbandon, Overlap, Retention, Schedule, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Default bound of each of stdout, stderr and an HTTP body kept in a run's result.
pub const DEFAULT_OUTPUT_LIMIT: usize = 4096;
/// Largest `params` of a task, in bytes of JSON. Commands get them in an environment variable (or a
/// file, see `exec.rs`), and a run must never fail to start because of its own configuration.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;
/// Longest time between SIGTERM and SIGKILL for a cancelled command.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);
/// Default time between SIGTERM and SIGKILL for a cancelled command.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// One problem found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a path (`task[2].schedule`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
    }
}

/// Which of the daemon's environment variables a command task inherits (`inherit_env`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InheritEnv {
    /// `inherit_env = true` (the default): everything except fleetcron's own `FLEETCRON_*` variables
    /// (`FLEETCRON_STORE` holds the store's password).
    #[default]
    AllButFleetcron,
    /// `inherit_env = false`: nothing; only the task's `env` table and the run's variables.
    Nothing,
    /// `inherit_env = ["PATH", "HOME"]`: only these names (when the daemon has them).
    Only(Vec<String>),
}

/// Which redirects an HTTP task follows (`http.redirects`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Redirects {
    /// `"same_origin"` (the default): only to the same scheme, host and port; a redirect elsewhere fails
    /// the run.
    #[default]
    SameOrigin,
    /// `"any"`: to any http(s) URL; once a redirect leaves the task URL's origin, the task's headers are
    /// no longer sent.
    Any,
    /// `"none"`: never; a 3xx answer is the response (a failure unless `expect_status` lists it).
    None,
}

/// What a task does when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A process: argv (or `/bin/sh -c STRING`).
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Working directory.
        workdir: Option<PathBuf>,
        /// Extra environment.
        env: Vec<(String, String)>,
        /// Which of the daemon's variables pass through.
        inherit_env: InheritEnv,
        /// Time between SIGTERM and SIGKILL.
        kill_grace: Duration,
    },
    /// An HTTP request.
    Http {
        /// Method (upper case).
        method: String,
        /// URL.
        url: String,
        /// Request headers.
        headers: Vec<(String, String)>,
        /// Request body.
        body: Option<String>,
        /// Statuses that count as success; empty means any 2xx.
        expect_status: Vec<u16>,
        /// Which redirects are followed.
        redirects: Redirects,
    },
}

/// One `[[task]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Task id.
    pub id: String,
    /// Cron pattern.
    pub schedule: String,
    /// IANA zone.
    pub timezone: String,
    /// Description.
    pub description: String,
    /// Time limit.
    pub timeout: Duration,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Abandonment policy.
    pub on_abandon: OnAbandon,
    /// Parameters (TOML converted to JSON).
    pub params: Value,
    /// What runs.
    pub action: Action,
    /// Bytes kept of stdout, stderr or the response body.
    pub output_limit: usize,
}

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `store`, if set in the file.
    pub store: Option<String>,
    /// `worker_id`, if set in the file.
    pub worker_id: Option<String>,
    /// The `[engine]` table applied to the library's defaults.
    pub engine: EngineConfig,
    /// The tasks, in file order.
    pub tasks: Vec<TaskSpec>,
}

/// Reads and validates a file; `Err` holds every problem (or the one read error, at line 0).
pub fn load(path: &std::path::Path) -> Result<DaemonConfig, Vec<Issue>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![Issue {
            line: 0,
            column: 0,
            field: "file".to_owned(),
            message: format!("cannot read {}: {error}", path.display()),
        }]
    })?;
    parse(&text)
}

struct Walker<'t> {
    text: &'t str,
    /// Byte offset of the start of every line, so a position costs a binary search, not a scan of the
    /// file: validating 100,000 tasks stays linear in the file's size.
    line_starts: Vec<usize>,
    issues: Vec<Issue>,
}

impl<'t> Walker<'t> {
    fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(index, _)| index + 1))
            .collect();
        Self {
            text,
            line_starts,
            issues: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|start| *start <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |part| part.chars().count()) + 1;
        (line, column)
    }

    fn issue(&mut self, span: &Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.issues.push(Issue {
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn string(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.to_string()),
            other => {
                self.issue(
                    &value.span(),
                    field,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, value: &Spanned<DeValue<'_>>, field: &str, min: i64, max: i64) -> Option<i64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(integer) => i64::from_str_radix(&integer.as_str().replace('_', ""), integer.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(number) if (min..=max).contains(&number) => Some(number),
            Some(number) => {
                self.issue(
                    &value.span(),
                    field,
                    format!("{number} is out of range ({min}..={max})"),
                );
                None
            }
            None => {
                self.issue(
                    &value.span(),
                    field,
                    format!("expected an integer, found {}", value.get_ref().type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Duration> {
        let text = self.string(value, field)?;
        match parse_duration(&text) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.issue(&value.span(), field, "must be greater than zero");
                None
            }
            Err(message) => {
                self.issue(&value.span(), field, message);
                None
            }
        }
    }

    fn table<'a, 'i>(&mut self, value: &'a Spanned<DeValue<'i>>, field: &str) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                self.issue(
                    &value.span(),
                    field,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string_map(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(table) = self.table(value, field) {
            for (key, item) in table {
                let path = format!("{field}.{}", key.get_ref());
                if let Some(text) = self.string(item, &path) {
                    out.push((key.get_ref().to_string(), text));
                }
            }
        }
        out
    }

    /// Reports keys of `table` not in `allowed`.
    fn known_keys(&mut self, table: &DeTable<'_>, prefix: &str, allowed: &[&str]) {
        for key in table.keys() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                self.issue(
                    &key.span(),
                    &format!("{prefix}{}", key.get_ref()),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                );
            }
        }
    }
}

fn get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    table.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `1d` or combinations (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: use a number with a unit ms, s, m, h or d, e.g. \"30s\"");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let millis: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        let add = number.checked_mul(millis).ok_or_else(invalid)?;
        total = total.checked_add(Duration::from_millis(add)).ok_or_else(invalid)?;
    }
    Ok(total)
}

fn to_json(value: &DeValue<'_>) -> Value {
    match value {
        DeValue::String(text) => Value::from(text.to_string()),
        DeValue::Integer(integer) => i64::from_str_radix(&integer.as_str().replace('_', ""), integer.radix())
            .map_or_else(|_| Value::from(integer.as_str().to_owned()), Value::from),
        DeValue::Float(float) => float
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        DeValue::Boolean(flag) => Value::Bool(*flag),
        DeValue::Datetime(datetime) => Value::from(datetime.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|item| to_json(item.get_ref())).collect()),
        DeValue::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, item)| (key.get_ref().to_string(), to_json(item.get_ref())))
                .collect(),
        ),
    }
}

const TOP_KEYS: &[&str] = &["store", "worker_id", "engine", "task", "admin"];
const ENGINE_KEYS: &[&str] = &[
    "lease",
    "heartbeat_interval",
    "poll_interval",
    "misfire_threshold",
    "shutdown_grace",
    "cancel_grace",
    "max_result_bytes",
    "claim_batch",
    "claim_parallelism",
    "admin_retry_for",
    "retention",
];
const TASK_KEYS: &[&str] = &[
    "id",
    "schedule",
    "timezone",
    "description",
    "timeout",
    "overlap",
    "catch_up",
    "on_abandon",
    "params",
    "command",
    "shell",
    "workdir",
    "env",
    "inherit_env",
    "kill_grace",
    "http",
    "output_limit",
];
const HTTP_KEYS: &[&str] = &["method", "url", "headers", "body", "expect_status", "redirects"];

/// Validates the text of a configuration file.
pub fn parse(text: &str) -> Result<DaemonConfig, Vec<Issue>> {
    let mut walker = Walker::new(text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            walker.issue(&span, "syntax", error.message().trim().to_owned());
            return Err(walker.issues);
        }
    };
    let root = root.get_ref();
    walker.known_keys(root, "", TOP_KEYS);
    crate::admin_config::check(text, get(root, "admin"), &mut walker.issues);
    let store = get(root, "store").and_then(|v| walker.string(v, "store"));
    let worker_id = get(root, "worker_id").and_then(|v| {
        let id = walker.string(v, "worker_id")?;
        match fleetcron::task::validate_task_id(&id) {
            Ok(()) => Some(id),
            Err(_) => {
                walker.issue(
                    &v.span(),
                    "worker_id",
                    "invalid worker id: use A-Z a-z 0-9 . _ : -, at most 128 characters",
                );
                None
            }
        }
    });
    let engine = match get(root, "engine") {
        Some(value) => parse_engine(&mut walker, value),
        None => EngineConfig::default(),
    };
    let mut tasks = Vec::new();
    match get(root, "task") {
        None => {}
        Some(value) => match value.get_ref() {
            DeValue::Array(items) => {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (index, item) in items.iter().enumerate() {
                    if let Some(task) = parse_task(&mut walker, item, index, &mut seen) {
                        tasks.push(task);
                    }
                }
            }
            other => walker.issue(
                &value.span(),
                "task",
                format!("expected an array of tables ([[task]]), found {}", other.type_str()),
            ),
        },
    }
    if walker.issues.is_empty() {
        Ok(DaemonConfig {
            store,
            worker_id,
            engine,
            tasks,
        })
    } else {
        walker.issues.sort_by_key(|issue| (issue.line, issue.column));
        Err(walker.issues)
    }
}

fn parse_engine(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>) -> EngineConfig {
    let mut config = EngineConfig::default();
    let Some(table) = walker.table(value, "engine") else {
        return config;
    };
    walker.known_keys(table, "engine.", ENGINE_KEYS);
    for (key, item) in table {
        let field = format!("engine.{}", key.get_ref());
        match key.get_ref().as_ref() {
            "lease" => config.lease = walker.duration(item, &field).unwrap_or(config.lease),
            "heartbeat_interval" => config.heartbeat_interval = walker.duration(item, &field),
            "poll_interval" => config.poll_interval = walker.duration(item, &field).unwrap_or(config.poll_interval),
            "misfire_threshold" => {
                config.misfire_threshold = walker.duration(item, &field).unwrap_or(config.misfire_threshold)
            }
            "shutdown_grace" => config.shutdown_grace = walker.duration(item, &field).unwrap_or(config.shutdown_grace),
            "cancel_grace" => config.cancel_grace = walker.duration(item, &field).unwrap_or(config.cancel_grace),
            "admin_retry_for" => {
                config.admin_retry_for = walker.duration(item, &field).unwrap_or(config.admin_retry_for)
            }
            "max_result_bytes" => {
                if let Some(n) = walker.integer(item, &field, 1, i64::from(u32::MAX)) {
                    config.max_result_bytes = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            "claim_batch" => {
                if let Some(n) = walker.integer(item, &field, 1, 100_000) {
                    config.claim_batch = usize::try_from(n).unwrap_or(1000);
                }
            }
            "claim_parallelism" => {
                if let Some(n) = walker.integer(item, &field, 1, 64) {
                    config.claim_parallelism = usize::try_from(n).ok();
                }
            }
            "retention" => {
                if let Some(retention) = walker.table(item, &field) {
                    walker.known_keys(retention, "engine.retention.", &["keep_last", "max_age"]);
                    let mut parsed = Retention::default();
                    if let Some(v) = get(retention, "keep_last") {
                        parsed.keep_last = walker
                            .integer(v, "engine.retention.keep_last", 1, i64::from(u32::MAX))
                            .and_then(|n| u32::try_from(n).ok());
                    }
                    if let Some(v) = get(retention, "max_age") {
                        parsed.max_age = walker.duration(v, "engine.retention.max_age");
                    }
                    config.retention = parsed;
                }
            }
            _ => {}
        }
    }
    // The library's own check, so `--check` refuses exactly what the engine would refuse at start
    // (bounds of every setting, a heartbeat that cannot keep the lease), located on the offending key.
    if let Err(error) = config.validate() {
        let message = error.to_string();
        let names = |key: &str| [format!("engine.{key} "), format!("engine.{key}.")];
        let span = ENGINE_KEYS
            .iter()
            .filter(|key| names(key).iter().any(|name| message.starts_with(name.as_str())))
            .chain(
                ENGINE_KEYS
                    .iter()
                    .filter(|key| names(key).iter().any(|name| message.contains(name.as_str()))),
            )
            .find_map(|key| get(table, key).map(|item| (format!("engine.{key}"), item.span())))
            .unwrap_or_else(|| ("engine".to_owned(), value.span()));
        walker.issue(&span.1, &span.0, message);
    }
    config
}

fn parse_overlap(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Overlap> {
    let text = walker.string(value, field)?;
    let overlap = match text.as_str() {
        "skip" => Overlap::Skip,
        "buffer_one" => Overlap::BufferOne,
        "allow_concurrent" => Overlap::AllowConcurrent,
        "cancel_previous" => Overlap::CancelPrevious,
        other => {
            walker.issue(
                &value.span(),
                field,
                format!(
                    "unknown overlap policy {other:?}; expected skip, buffer_one, allow_concurrent or cancel_previous"
                ),
            );
            return None;
        }
    };
    Some(overlap)
}

/// A policy given as `"name"` or `{ policy = "name", ... }`: its name and the table, if any.
fn policy<'a, 'i>(
    walker: &mut Walker<'_>,
    value: &'a Spanned<DeValue<'i>>,
    field: &str,
) -> Option<(String, Option<&'a DeTable<'i>>)> {
    match value.get_ref() {
        DeValue::String(name) => Some((name.to_string(), None)),
        DeValue::Table(table) => match get(table, "policy") {
            Some(name) => {
                let name = walker.string(name, &format!("{field}.policy"))?;
                Some((name, Some(table)))
            }
            None => {
                walker.issue(&value.span(), &format!("{field}.policy"), "is required");
                None
            }
        },
        other => {
            walker.issue(
                &value.span(),
                field,
                format!("expected a string or a table, found {}", other.type_str()),
            );
            None
        }
    }
}

fn parse_catch_up(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<CatchUp> {
    let (name, table) = policy(walker, value, field)?;
    let empty = DeTable::default();
    let table = table.unwrap_or(&empty);
    let within = |walker: &mut Walker<'_>| match get(table, "within") {
        Some(v) => walker.duration(v, &format!("{field}.within")),
        None => Some(Duration::from_secs(3600)),
    };
    match name.as_str() {
        "skip" => {
            walker.known_keys(table, &format!("{field}."), &["policy"]);
            Some(CatchUp::Skip)
        }
        "latest" => {
            walker.known_keys(table, &format!("{field}."), &["policy", "within"]);
            Some(CatchUp::Latest {
                within: within(walker)?,
            })
        }
        "all" => {
            walker.known_keys(table, &format!("{field}."), &["policy", "within", "max"]);
            let within = within(walker);
            let max = match get(table, "max") {
                Some(v) => walker
                    .integer(v, &format!("{field}.max"), 1, 100_000)
                    .and_then(|n| u32::try_from(n).ok()),
                None => Some(10),
            };
            Some(CatchUp::All {
                within: within?,
                max: max?,
            })
        }
        other => {
            walker.issue(
                &value.span(),
                field,
                format!("unknown catch_up policy {other:?}; expected skip, latest or all"),
            );
            None
        }
    }
}

fn parse_on_abandon(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<OnAbandon> {
    let (name, table) = policy(walker, value, field)?;
    let empty = DeTable::default();
    let table = table.unwrap_or(&empty);
    match name.as_str() {
        "forget" => {
            walker.known_keys(table, &format!("{field}."), &["policy"]);
            Some(OnAbandon::Forget)
        }
        "retry" => {
            walker.known_keys(table, &format!("{field}."), &["policy", "max_attempts"]);
            let max_attempts = match get(table, "max_attempts") {
                Some(v) => walker
                    .integer(v, &format!("{field}.max_attempts"), 1, 1000)
                    .and_then(|n| u32::try_from(n).ok())?,
                None => 3,
            };
            Some(OnAbandon::Retry { max_attempts })
        }
        other => {
            walker.issue(
                &value.span(),
                field,
                format!("unknown on_abandon policy {other:?}; expected forget or retry"),
            );
            None
        }
    }
}

fn parse_http(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Action> {
    let table = walker.table(value, field)?;
    walker.known_keys(table, &format!("{field}."), HTTP_KEYS);
    let mut ok = true;
    let method = match get(table, "method") {
        Some(v) => match walker.string(v, &format!("{field}.method")) {
            Some(m) if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(m) => {
                walker.issue(
                    &v.span(),
                    &format!("{field}.method"),
                    format!("invalid HTTP method {m:?}"),
                );
                None
            }
            None => None,
        },
        None => Some("GET".to_owned()),
    };
    let url = match get(table, "url") {
        Some(v) => match walker.string(v, &format!("{field}.url")) {
            Some(url) if reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => Some(url),
            Some(url) => {
                walker.issue(
                    &v.span(),
                    &format!("{field}.url"),
                    format!(
                        "invalid URL {:?}: use an absolute http:// or https:// URL",
                        fleetcron::redact_url(&url)
                    ),
                );
                None
            }
            None => None,
        },
        None => {
            walker.issue(&value.span(), &format!("{field}.url"), "is required");
            None
        }
    };
    let headers = get(table, "headers").map_or_else(Vec::new, |v| {
        let headers = walker.string_map(v, &format!("{field}.headers"));
        for (name, header_value) in &headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(header_value).is_err()
            {
                walker.issue(
                    &v.span(),
                    &format!("{field}.headers.{name}"),
                    "invalid header name or value",
                );
                ok = false;
            }
        }
        headers
    });
    let body = get(table, "body").and_then(|v| walker.string(v, &format!("{field}.body")));
    let mut expect_status = Vec::new();
    if let Some(v) = get(table, "expect_status") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(code) = walker.integer(item, &format!("{field}.expect_status"), 100, 599) {
                        expect_status.push(u16::try_from(code).unwrap_or(200));
                    }
                }
            }
            _ => {
                if let Some(code) = walker.integer(v, &format!("{field}.expect_status"), 100, 599) {
                    expect_status.push(u16::try_from(code).unwrap_or(200));
                }
            }
        }
    }
    let redirects = match get(table, "redirects") {
        None => Some(Redirects::default()),
        Some(v) => walker
            .string(v, &format!("{field}.redirects"))
            .and_then(|name| match name.as_str() {
                "same_origin" => Some(Redirects::SameOrigin),
                "any" => Some(Redirects::Any),
                "none" => Some(Redirects::None),
                _ => {
                    walker.issue(
                        &v.span(),
                        &format!("{field}.redirects"),
                        format!(
                            "unknown value {:?}; expected \"same_origin\" (the default), \"any\" or \"none\"",
                            fleetcron::redact::truncate(&name, 64)
                        ),
                    );
                    None
                }
            }),
    };
    if !ok {
        return None;
    }
    Some(Action::Http {
        method: method?,
        url: url?,
        headers,
        body,
        expect_status,
        redirects: redirects?,
    })
}

/// `inherit_env = true | false | ["NAME", …]`.
fn parse_inherit_env(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<InheritEnv> {
    match value.get_ref() {
        DeValue::Boolean(true) => Some(InheritEnv::AllButFleetcron),
        DeValue::Boolean(false) => Some(InheritEnv::Nothing),
        DeValue::Array(items) => {
            let mut names = Vec::new();
            let mut ok = true;
            for item in items.iter() {
                match walker.string(item, field) {
                    Some(name) if !name.is_empty() && !name.contains(['=', '\0']) => names.push(name),
                    Some(name) => {
                        walker.issue(
                            &item.span(),
                            field,
                            format!(
                                "invalid variable name {:?}: a name is not empty and has no '=' or NUL",
                                fleetcron::redact::truncate(&name, 64)
                            ),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            ok.then_some(InheritEnv::Only(names))
        }
        other => {
            walker.issue(
                &value.span(),
                field,
                format!(
                    "expected true (the daemon's environment without FLEETCRON_* variables), false (none) or an \
                     array of variable names, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

fn parse_task(
    walker: &mut Walker<'_>,
    value: &Spanned<DeValue<'_>>,
    index: usize,
    seen: &mut BTreeMap<String, usize>,
) -> Option<TaskSpec> {
    let base = format!("task[{index}]");
    let table = walker.table(value, &base)?;
    walker.known_keys(table, &format!("{base}."), TASK_KEYS);
    let field = |name: &str| format!("{base}.{name}");
    let before = walker.issues.len();

    let id = match get(table, "id") {
        Some(v) => walker.string(v, &field("id")).and_then(|id| {
            if let Err(error) = fleetcron::task::validate_task_id(&id) {
                walker.issue(&v.span(), &field("id"), error.to_string());
                return None;
            }
            let (line, _) = walker.position(v.span().start);
            if let Some(first) = seen.get(&id) {
                walker.issue(
                    &v.span(),
                    &field("id"),
                    format!("duplicate task id {id:?} (first defined on line {first})"),
                );
                return None;
            }
            seen.insert(id.clone(), line);
            Some(id)
        }),
        None => {
            walker.issue(&value.span(), &field("id"), "is required");
            None
        }
    };
    let timezone =
        match get(table, "timezone") {
            Some(v) => walker
                .string(v, &field("timezone"))
                .and_then(|zone| match fleetcron::schedule::parse_timezone(&zone) {
                    Ok(_) => Some(zone),
                    Err(error) => {
                        walker.issue(&v.span(), &field("timezone"), error.to_string());
                        None
                    }
                }),
            None => Some("UTC".to_owned()),
        };
    let schedule = match get(table, "schedule") {
        Some(v) => walker.string(v, &field("schedule")).and_then(|pattern| {
            // Checked in UTC: a bad zone is reported on its own line.
            match Schedule::parse(&pattern, timezone.as_deref().unwrap_or("UTC")) {
                Ok(_) => Some(pattern),
                Err(error) => {
                    walker.issue(&v.span(), &field("schedule"), error.to_string());
                    None
                }
            }
        }),
        None => {
            walker.issue(&value.span(), &field("schedule"), "is required");
            None
        }
    };
    let description = get(table, "description")
        .and_then(|v| walker.string(v, &field("description")))
        .unwrap_or_default();
    let timeout = get(table, "timeout").map_or(Some(fleetcron::task::DEFAULT_TIMEOUT), |v| {
        walker.duration(v, &field("timeout"))
    });
    let overlap = get(table, "overlap").map_or(Some(Overlap::default()), |v| {
        parse_overlap(walker, v, &field("overlap"))
    });
    let catch_up = get(table, "catch_up").map_or(Some(CatchUp::default()), |v| {
        parse_catch_up(walker, v, &field("catch_up"))
    });
    let on_abandon = get(table, "on_abandon").map_or(Some(OnAbandon::default()), |v| {
        parse_on_abandon(walker, v, &field("on_abandon"))
    });
    let params = get(table, "params").map_or(Value::Null, |v| to_json(v.get_ref()));
    let output_limit = get(table, "output_limit").map_or(Some(DEFAULT_OUTPUT_LIMIT), |v| {
        walker
            .integer(v, &field("output_limit"), 0, 16 * 1024 * 1024)
            .and_then(|n| usize::try_from(n).ok())
    });

    let command = get(table, "command");
    let shell = get(table, "shell");
    let http = get(table, "http");
    let given: Vec<&str> = [("command", command), ("shell", shell), ("http", http)]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| *name)
        .collect();
    let action = match (command, shell, http) {
        (None, None, None) => {
            walker.issue(&value.span(), &base, "needs one of command, shell or http");
            None
        }
        _ if given.len() > 1 => {
            let span = command.or(shell).or(http).map_or(value.span(), Spanned::span);
            walker.issue(
                &span,
                &base,
                format!(
                    "has both {}: give exactly one of command, shell or http",
                    given.join(" and ")
                ),
            );
            None
        }
        (_, _, Some(http_value)) => {
            for name in ["workdir", "env", "inherit_env", "kill_grace"] {
                if let Some(v) = get(table, name) {
                    walker.issue(&v.span(), &field(name), "applies only to command and shell tasks");
                }
            }
            parse_http(walker, http_value, &field("http"))
        }
        _ => {
            let argv = if let Some(v) = command {
                match v.get_ref() {
                    DeValue::Array(items) if !items.is_empty() => {
                        let argv: Vec<Option<String>> = items
                            .iter()
                            .map(|item| walker.string(item, &field("command")))
                            .collect();
                        argv.into_iter().collect::<Option<Vec<_>>>().filter(|argv| {
                            let empty = argv.first().is_none_or(String::is_empty);
                            if empty {
                                walker.issue(&v.span(), &field("command"), "the program name must not be empty");
                            }
                            !empty
                        })
                    }
                    DeValue::Array(_) => {
                        walker.issue(&v.span(), &field("command"), "must not be empty");
                        None
                    }
                    other => {
                        walker.issue(
                            &v.span(),
                            &field("command"),
                            format!(
                                "expected an array of strings (argv), found {}; use shell = \"...\" for a command line",
                                other.type_str()
                            ),
                        );
                        None
                    }
                }
            } else if let Some(v) = shell {
                walker.string(v, &field("shell")).and_then(|line| {
                    if line.trim().is_empty() {
                        walker.issue(&v.span(), &field("shell"), "must not be empty");
                        None
                    } else {
                        Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), line])
                    }
                })
            } else {
                None
            };
            let workdir = get(table, "workdir")
                .and_then(|v| walker.string(v, &field("workdir")))
                .map(PathBuf::from);
            let env = get(table, "env").map_or_else(Vec::new, |v| walker.string_map(v, &field("env")));
            let inherit_env = get(table, "inherit_env").map_or(Some(InheritEnv::default()), |v| {
                parse_inherit_env(walker, v, &field("inherit_env"))
            });
            let kill_grace = get(table, "kill_grace").map_or(Some(DEFAULT_KILL_GRACE), |v| {
                let grace = walker.duration(v, &field("kill_grace"))?;
                match fleetcron::limits::check_duration(&field("kill_grace"), grace, Duration::ZERO, MAX_KILL_GRACE) {
                    Ok(()) => Some(grace),
                    Err(error) => {
                        walker.issue(&v.span(), &field("kill_grace"), error.to_string());
                        None
                    }
                }
            });
            Some(Action::Command {
                argv: argv?,
                workdir,
                env,
                inherit_env: inherit_env?,
                kill_grace: kill_grace?,
            })
        }
    };
    if let (Some(id), Some(timeout), Some(overlap), Some(catch_up), Some(on_abandon)) =
        (id.as_deref(), timeout, overlap, catch_up, on_abandon)
    {
        if id == fleetcron::scheduler::RETENTION_TASK_ID {
            let span = get(table, "id").map_or(value.span(), Spanned::span);
            walker.issue(
                &span,
                &field("id"),
                fleetcron::ConfigError::ReservedTaskId(id.to_owned()).to_string(),
            );
        }
        // The library's own bounds on the policies, as the task builder applies them at start.
        let policy = fleetcron::TaskPolicy {
            overlap,
            catch_up,
            on_abandon,
            timeout,
        };
        if let Err(error) = policy.validate(id) {
            walker.issue(&value.span(), &base, error.to_string());
        }
    }
    let params_bytes = params.to_string().len();
    if params_bytes > MAX_PARAMS_BYTES {
        let span = get(table, "params").map_or(value.span(), Spanned::span);
        walker.issue(
            &span,
            &field("params"),
            format!(
                "is {params_bytes} bytes as JSON, more than the {MAX_PARAMS_BYTES} a run can be handed; keep large \
                 data in a file the task reads"
            ),
        );
    }
    if walker.issues.len() != before {
        return None;
    }
    Some(TaskSpec {
        id: id?,
        schedule: schedule?,
        timezone: timezone?,
        description,
        timeout: timeout?,
        overlap: overlap?,
        catch_up: catch_up?,
        on_abandon: on_abandon?,
        params,
        action: action?,
        output_limit: output_limit?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "10", "s", "5 parsecs", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inherit_env_and_redirects() {
        let text = r#"
[[task]]
id = "a"
schedule = "* * * * *"
shell = "env"
[[task]]
id = "b"
schedule = "* * * * *"
shell = "env"
inherit_env = false
[[task]]
id = "c"
schedule = "* * * * *"
command = ["env"]
inherit_env = ["PATH", "HOME"]
[[task]]
id = "d"
schedule = "* * * * *"
http = { url = "http://h/", redirects = "any" }
"#;
        let config = parse(text).expect("valid");
        let inherit: Vec<_> = config
            .tasks
            .iter()
            .filter_map(|task| match &task.action {
                Action::Command { inherit_env, .. } => Some(inherit_env.clone()),
                Action::Http { .. } => None,
            })
            .collect();
        assert_eq!(
            inherit,
            [
                InheritEnv::AllButFleetcron,
                InheritEnv::Nothing,
                InheritEnv::Only(vec!["PATH".into(), "HOME".into()])
            ]
        );
        assert!(matches!(
            config.tasks[3].action,
            Action::Http {
                redirects: Redirects::Any,
                ..
            }
        ));

        let bad = r#"
[[task]]
id = "a"
schedule = "* * * * *"
shell = "env"
inherit_env = "yes"
[[task]]
id = "b"
schedule = "* * * * *"
shell = "env"
inherit_env = ["PATH", "A=B", 3]
[[task]]
id = "c"
schedule = "* * * * *"
http = { url = "http://u:hunter22@h/", redirects = "sometimes" }
inherit_env = false
"#;
        let issues = parse(bad).err().unwrap_or_default();
        let shown: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 5, "{shown:#?}");
        assert!(
            shown[0].starts_with("6:15: task[0].inherit_env: expected true"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("11:24: task[1].inherit_env: invalid variable name \"A=B\""),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("11:31: task[1].inherit_env: expected a string"),
            "{shown:#?}"
        );
        assert!(
            shown[3].contains("task[2].http.redirects: unknown value \"sometimes\""),
            "{shown:#?}"
        );
        assert!(
            shown[4].contains("task[2].inherit_env: applies only to command and shell tasks"),
            "{shown:#?}"
        );
        let invalid_url = parse(
            "[[task]]\nid = \"x\"\nschedule = \"* * * * *\"\nhttp = { url = \"ftp://u:hunter22@h/?token=t0k3n\" }\n",
        );
        let text = format!("{invalid_url:?}");
        assert!(
            text.contains("invalid URL") && !text.contains("hunter22") && !text.contains("t0k3n"),
            "{text}"
        );
    }

    #[test]
    fn positions_are_one_based() {
        let err = parse("x = 1\n\n  y = 2\n").err().unwrap_or_default();
        assert_eq!(err.len(), 2);
        assert_eq!((err[0].line, err[0].column), (1, 1));
        assert_eq!((err[1].line, err[1].column), (3, 3));
    }
}
