//! One `[[task]]` table: id (unique in the file, not the reserved retention id), schedule and zone,
//! description, timeout, the policies, params, output bound, and exactly one action — a command or
//! shell (`command.rs`) or an HTTP request (`http.rs`).

use super::walker::{get, to_json, Walker};
use super::{command, http, policy, TaskSpec};
use fleetcron::{CatchUp, OnAbandon, Overlap, Schedule, Value};
use std::collections::BTreeMap;
use toml::de::DeValue;
use toml::Spanned;

/// Default bound of each of stdout, stderr and an HTTP body kept in a run's result.
pub const DEFAULT_OUTPUT_LIMIT: usize = 4096;
/// Largest `params` of a task, in bytes of JSON. Commands get them in an environment variable (or a
/// file, see `exec.rs`), and a run must never fail to start because of its own configuration.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;

/// The keys of a `[[task]]` table.
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

/// One `[[task]]` table, the `index`-th; `seen` maps the ids met so far to their lines.
pub(super) fn parse(
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
        policy::overlap(walker, v, &field("overlap"))
    });
    let catch_up = get(table, "catch_up").map_or(Some(CatchUp::default()), |v| {
        policy::catch_up(walker, v, &field("catch_up"))
    });
    let on_abandon = get(table, "on_abandon").map_or(Some(OnAbandon::default()), |v| {
        policy::on_abandon(walker, v, &field("on_abandon"))
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
            for name in command::COMMAND_ONLY_KEYS {
                if let Some(v) = get(table, name) {
                    walker.issue(&v.span(), &field(name), "applies only to command and shell tasks");
                }
            }
            http::parse(walker, http_value, &field("http"))
        }
        _ => command::parse(walker, table, command, shell, &base),
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
