//! The `[engine]` table: the worker's lease, intervals, graces, result bound, claim batching and
//! history retention, applied over `EngineConfig::default()`.

use super::walker::{get, Walker};
use fleetcron::limits::{MAX_CLAIM_BATCH, MAX_CLAIM_PARALLELISM};
use fleetcron::{EngineConfig, Retention};
use toml::de::DeValue;
use toml::Spanned;

/// The keys of the `[engine]` table.
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

/// The `[engine]` table over the library's defaults, checked by the library's own `validate`.
pub(super) fn parse(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>) -> EngineConfig {
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
                if let Some(n) = walker.integer(item, &field, 1, MAX_CLAIM_BATCH as i64) {
                    config.claim_batch = usize::try_from(n).unwrap_or(config.claim_batch);
                }
            }
            "claim_parallelism" => {
                if let Some(n) = walker.integer(item, &field, 1, MAX_CLAIM_PARALLELISM as i64) {
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
