//! The daemon's configuration file (`fleetcron.toml`): parsing and whole-file validation.
//!
//! The file is read into TOML's spanned tree and walked by hand, so that every problem — unknown keys,
//! wrong types, invalid patterns, zones and durations, duplicate ids, a task with no action or two —
//! is collected with its line, column and field, and all of them are reported at once.
//!
//! Here: the entry points and what they produce. The walker and its typed getters are in `walker.rs`,
//! the `[engine]` table in `engine.rs`, one `[[task]]` in `task.rs` with its policies in `policy.rs` and
//! its action in `command.rs` or `http.rs`.
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

mod command;
mod engine;
mod http;
mod policy;
mod task;
mod walker;

pub use command::InheritEnv;
pub use http::Redirects;
pub use walker::parse_duration;

use fleetcron::{CatchUp, EngineConfig, OnAbandon, Overlap, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use walker::{get, Walker};

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

/// The keys of the file's top level.
const TOP_KEYS: &[&str] = &["store", "worker_id", "engine", "task", "admin"];

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
        Some(value) => engine::parse(&mut walker, value),
        None => EngineConfig::default(),
    };
    let mut tasks = Vec::new();
    match get(root, "task") {
        None => {}
        Some(value) => match value.get_ref() {
            DeValue::Array(items) => {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (index, item) in items.iter().enumerate() {
                    if let Some(task) = task::parse(&mut walker, item, index, &mut seen) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
