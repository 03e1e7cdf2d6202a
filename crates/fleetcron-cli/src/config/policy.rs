//! The task policies: `overlap`, `catch_up` and `on_abandon`, each a name or a table with `policy`.
//! Left-out values are the core's defaults (`fleetcron::task::DEFAULT_*`); the core's
//! `TaskPolicy::validate` then checks the policy's bounds, as the task builder does at start.

use super::walker::{get, Walker};
use fleetcron::limits::MAX_ATTEMPTS;
use fleetcron::task::{DEFAULT_CATCH_UP_MAX, DEFAULT_CATCH_UP_WITHIN, DEFAULT_RETRY_ATTEMPTS};
use fleetcron::{CatchUp, OnAbandon, Overlap};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The largest `catch_up.max` read as a number; larger ones are refused here, and those between the
/// core's bound (`fleetcron::limits::MAX_CATCH_UP_RUNS`) and this one by the core's own check, with
/// its message.
const CATCH_UP_MAX_READ: i64 = 100_000;

/// `overlap = "skip" | "buffer_one" | "allow_concurrent" | "cancel_previous"`.
pub(super) fn overlap(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Overlap> {
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

/// `catch_up = "skip" | "latest" | "all"` or a table with `policy`, `within` and (for `all`) `max`;
/// what is left out is the core's default.
pub(super) fn catch_up(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<CatchUp> {
    let (name, table) = policy(walker, value, field)?;
    let empty = DeTable::default();
    let table = table.unwrap_or(&empty);
    let within = |walker: &mut Walker<'_>| match get(table, "within") {
        Some(v) => walker.duration(v, &format!("{field}.within")),
        None => Some(DEFAULT_CATCH_UP_WITHIN),
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
                    .integer(v, &format!("{field}.max"), 1, CATCH_UP_MAX_READ)
                    .and_then(|n| u32::try_from(n).ok()),
                None => Some(DEFAULT_CATCH_UP_MAX),
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

/// `on_abandon = "forget" | "retry"` or a table with `policy` and (for `retry`) `max_attempts`; a
/// left-out `max_attempts` is the core's default.
pub(super) fn on_abandon(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<OnAbandon> {
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
                    .integer(v, &format!("{field}.max_attempts"), 1, i64::from(MAX_ATTEMPTS))
                    .and_then(|n| u32::try_from(n).ok())?,
                None => DEFAULT_RETRY_ATTEMPTS,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn left_out_policy_values_are_the_cores_defaults() {
        let text = r#"
[[task]]
id = "a"
schedule = "* * * * *"
shell = "true"
[[task]]
id = "b"
schedule = "* * * * *"
shell = "true"
catch_up = "latest"
on_abandon = "retry"
[[task]]
id = "c"
schedule = "* * * * *"
shell = "true"
catch_up = { policy = "all" }
on_abandon = { policy = "retry" }
"#;
        let config = parse(text).expect("valid");
        let policies: Vec<_> = config
            .tasks
            .iter()
            .map(|task| (task.timeout, task.catch_up, task.on_abandon))
            .collect();
        let retry = OnAbandon::Retry {
            max_attempts: DEFAULT_RETRY_ATTEMPTS,
        };
        assert_eq!(
            policies,
            [
                (
                    fleetcron::task::DEFAULT_TIMEOUT,
                    CatchUp::default(),
                    OnAbandon::default()
                ),
                (
                    fleetcron::task::DEFAULT_TIMEOUT,
                    CatchUp::Latest {
                        within: DEFAULT_CATCH_UP_WITHIN
                    },
                    retry
                ),
                (
                    fleetcron::task::DEFAULT_TIMEOUT,
                    CatchUp::All {
                        within: DEFAULT_CATCH_UP_WITHIN,
                        max: DEFAULT_CATCH_UP_MAX
                    },
                    retry
                ),
            ]
        );
        assert_eq!(
            CatchUp::default(),
            CatchUp::Latest {
                within: DEFAULT_CATCH_UP_WITHIN
            }
        );
    }
}
