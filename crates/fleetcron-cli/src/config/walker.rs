//! The spanned-TOML walker: positions (1-based line and column, from a line index, so locating a
//! problem costs a binary search and checking a file stays linear in its size), typed getters that
//! report a wrong type or an out-of-range value on the value's own position, known-keys checks,
//! durations (`30s`, `1h30m`) and TOML values as JSON.

use super::Issue;
use fleetcron::Value;
use std::ops::Range;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Walks the parsed file, collecting every problem with its position and field path.
pub(super) struct Walker<'t> {
    text: &'t str,
    /// Byte offset of the start of every line, so a position costs a binary search, not a scan of the
    /// file: validating 100,000 tasks stays linear in the file's size.
    line_starts: Vec<usize>,
    /// The problems found so far, in the order they were found.
    pub(super) issues: Vec<Issue>,
}

impl<'t> Walker<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(index, _)| index + 1))
            .collect();
        Self {
            text,
            line_starts,
            issues: Vec::new(),
        }
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|start| *start <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |part| part.chars().count()) + 1;
        (line, column)
    }

    pub(super) fn issue(&mut self, span: &Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.issues.push(Issue {
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn string(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Option<String> {
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

    pub(super) fn integer(&mut self, value: &Spanned<DeValue<'_>>, field: &str, min: i64, max: i64) -> Option<i64> {
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

    pub(super) fn duration(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Duration> {
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

    pub(super) fn table<'a, 'i>(&mut self, value: &'a Spanned<DeValue<'i>>, field: &str) -> Option<&'a DeTable<'i>> {
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

    pub(super) fn string_map(&mut self, value: &Spanned<DeValue<'_>>, field: &str) -> Vec<(String, String)> {
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
    pub(super) fn known_keys(&mut self, table: &DeTable<'_>, prefix: &str, allowed: &[&str]) {
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

/// The value of `key` in `table`.
pub(super) fn get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
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

/// A TOML value as JSON (a task's `params`).
pub(super) fn to_json(value: &DeValue<'_>) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

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
    fn positions_are_one_based() {
        let err = parse("x = 1\n\n  y = 2\n").err().unwrap_or_default();
        assert_eq!(err.len(), 2);
        assert_eq!((err[0].line, err[0].column), (1, 1));
        assert_eq!((err[1].line, err[1].column), (3, 3));
    }
}
