//! The key layout. Every key of one task shares the hash tag `{<prefix>:<task_id>}`, so one task's
//! keys live in one Redis Cluster slot; the fleet-wide keys share the hash tag `{<prefix>}`.
//!
//! # Injectivity
//! A prefix consists of `A-Z a-z 0-9 . _ -` only: no `:` (the separator between prefix and task id),
//! no braces (they would move the hash tag), no glob characters. So in every key the prefix is exactly
//! the text between the opening `{` and the first `:` or `}`, whatever the task id holds (task ids
//! may contain `:`): two different prefixes never produce the same key, the same channel or keys that
//! one [`Keys::scan_pattern`] matches together. Before this rule, prefix `P:x` and prefix `P` shared
//! the key `{P:x:y}:state` (task `y` of one, task `x:y` of the other).

use fleetcron_core::StoreError;

/// The characters a prefix may hold, as users are told.
pub(crate) const ALLOWED_PREFIX_CHARACTERS: &str = "A-Z a-z 0-9 . _ -";

/// Longest prefix (keys stay short; hash tags include it).
pub(crate) const MAX_PREFIX_LEN: usize = 128;

/// The names of every key and channel under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix`, which must be 1 to [`MAX_PREFIX_LEN`] characters of
    /// [`ALLOWED_PREFIX_CHARACTERS`].
    pub(crate) fn new(prefix: &str) -> Result<Self, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config(format!(
                "the Redis key prefix is empty: use 1 to {MAX_PREFIX_LEN} characters of {ALLOWED_PREFIX_CHARACTERS}"
            )));
        }
        let shown = shorten(prefix);
        if prefix.chars().count() > MAX_PREFIX_LEN {
            return Err(StoreError::Config(format!(
                "the Redis key prefix {shown:?} is longer than {MAX_PREFIX_LEN} characters: use 1 to \
                 {MAX_PREFIX_LEN} characters of {ALLOWED_PREFIX_CHARACTERS}"
            )));
        }
        if let Some(bad) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            let why = match bad {
                ':' => " (`:` separates the prefix from the task id in every key, so prefix `a:b` would share keys with prefix `a`)",
                '{' | '}' => " (braces would change the keys' hash tags)",
                _ => "",
            };
            return Err(StoreError::Config(format!(
                "the Redis key prefix {shown:?} contains {bad:?}{why}: use only {ALLOWED_PREFIX_CHARACTERS}, \
                 e.g. `fleet.prod`"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{<prefix>}:tasks`: sorted set (score 0) of every task id with keys in the store.
    pub(crate) fn tasks(&self) -> String {
        format!("{{{}}}:tasks", self.prefix)
    }

    /// `{<prefix>}:attention`: sorted set of task ids scored by their attention time (epoch ms).
    pub(crate) fn attention(&self) -> String {
        format!("{{{}}}:attention", self.prefix)
    }

    /// `{<prefix>}:schema`: the layout's schema version.
    pub(crate) fn schema(&self) -> String {
        format!("{{{}}}:schema", self.prefix)
    }

    /// `<prefix>:wake`: the pub/sub channel of trigger wake-ups.
    pub(crate) fn wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    fn tag(&self, task_id: &str) -> String {
        format!("{{{}:{}}}", self.prefix, task_id)
    }

    /// `{<prefix>:<task>}:state`: hash with `doc` (TaskState JSON), `version`, `attention_at`.
    pub(crate) fn state(&self, task_id: &str) -> String {
        format!("{}:state", self.tag(task_id))
    }

    /// `{<prefix>:<task>}:runs`: sorted set (score 0) of the task's run ids.
    pub(crate) fn runs(&self, task_id: &str) -> String {
        format!("{}:runs", self.tag(task_id))
    }

    /// `{<prefix>:<task>}:slots`: set of `<slot_ms>:<attempt>`, the unique key of the history.
    pub(crate) fn slots(&self, task_id: &str) -> String {
        format!("{}:slots", self.tag(task_id))
    }

    /// `{<prefix>:<task>}:run:<run_id>`: hash of one history row.
    #[cfg(test)]
    pub(crate) fn run(&self, task_id: &str, run_id: &str) -> String {
        format!("{}:run:{}", self.tag(task_id), run_id)
    }

    /// A `SCAN MATCH` pattern for every key under the prefix and no other: `{<prefix>}…` (fleet-wide
    /// keys) or `{<prefix>:…` (task keys). Another prefix `Q` starts its keys with `{Q}` or `{Q:`; as
    /// neither prefix holds `:` or `}`, those match only when `Q` is this prefix.
    pub(crate) fn scan_pattern(&self) -> String {
        // The allowed characters hold no glob syntax; escape anyway, in case the rule ever widens.
        let mut pattern = String::from("{");
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("[}:]*");
        pattern
    }
}

/// At most 64 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The unique key of a history row: `<slot_ms>:<attempt>`.
pub(crate) fn slot_key(slot_ms: i64, attempt: u32) -> String {
    format!("{slot_ms}:{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let keys = Keys::new("fc").expect("valid prefix");
        assert_eq!(keys.tasks(), "{fc}:tasks");
        assert_eq!(keys.attention(), "{fc}:attention");
        assert_eq!(keys.schema(), "{fc}:schema");
        assert_eq!(keys.wake_channel(), "fc:wake");
        assert_eq!(keys.state("a.b"), "{fc:a.b}:state");
        assert_eq!(keys.runs("a.b"), "{fc:a.b}:runs");
        assert_eq!(keys.slots("a.b"), "{fc:a.b}:slots");
        assert_eq!(keys.run("a.b", "r1"), "{fc:a.b}:run:r1");
        assert_eq!(slot_key(1_700_000_000_000, 2), "1700000000000:2");
        assert_eq!(
            Keys::new("fc.prod-1_a").expect("valid").scan_pattern(),
            "{fc.prod-1_a[}:]*"
        );
    }

    #[test]
    fn invalid_prefixes() {
        let long = "p".repeat(MAX_PREFIX_LEN + 1);
        for prefix in [
            "",
            "a:b",
            ":",
            "a:",
            "a{b",
            "a}b",
            "a b",
            "a\nb",
            "a*b",
            "a/b",
            "é",
            long.as_str(),
        ] {
            match Keys::new(prefix) {
                Err(StoreError::Config(message)) => {
                    assert!(message.contains(ALLOWED_PREFIX_CHARACTERS), "{message}");
                    assert!(message.len() < 400, "the prefix is echoed whole: {message}");
                }
                other => panic!("{prefix:?}: {other:?}"),
            }
        }
        let message = Keys::new("a:b").map(|_| ()).expect_err("refused").to_string();
        assert!(message.contains("separates the prefix from the task id"), "{message}");
        for prefix in [
            "fleetcron",
            "fc_t_01",
            "fleet.prod",
            "a-b",
            "P",
            &"p".repeat(MAX_PREFIX_LEN),
        ] {
            assert!(Keys::new(prefix).is_ok(), "{prefix:?}");
        }
    }

    #[test]
    fn prefixes_that_extend_one_another_share_no_key() {
        // With `:` allowed, prefix `P:x`'s task `y` and prefix `P`'s task `x:y` had the same keys.
        let outer = Keys::new("P").expect("valid");
        for inner in ["Px", "P.x", "P-x", "P_x"] {
            let inner = Keys::new(inner).expect("valid");
            for (a, b) in [("x:y", "y"), ("y", "y"), ("x", ""), (".x:y", "y")] {
                assert_ne!(outer.state(a), inner.state(b));
                assert_ne!(outer.runs(a), inner.runs(b));
            }
            assert_ne!(outer.wake_channel(), inner.wake_channel());
            assert_ne!(outer.scan_pattern(), inner.scan_pattern());
        }
    }
}
