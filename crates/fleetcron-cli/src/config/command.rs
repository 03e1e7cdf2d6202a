//! A command or shell task: argv (or `/bin/sh -c LINE`), `workdir`, `env`, `inherit_env` and
//! `kill_grace`.

use super::walker::{get, Walker};
use super::Action;
use std::path::PathBuf;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Longest time between SIGTERM and SIGKILL for a cancelled command.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);
/// Default time between SIGTERM and SIGKILL for a cancelled command.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// The keys that apply only to command and shell tasks.
pub(super) const COMMAND_ONLY_KEYS: [&str; 4] = ["workdir", "env", "inherit_env", "kill_grace"];

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

/// The action of task `base` given by its `command` (argv) or `shell` (a command line) value, with
/// the rest of its command settings from `table`.
pub(super) fn parse(
    walker: &mut Walker<'_>,
    table: &DeTable<'_>,
    command: Option<&Spanned<DeValue<'_>>>,
    shell: Option<&Spanned<DeValue<'_>>>,
    base: &str,
) -> Option<Action> {
    let field = |name: &str| format!("{base}.{name}");
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
