//! The key layout. Every key of one task shares the hash tag `{<prefix>:<task_id>}`, so one task's
//! keys live in one Redis Cluster slot; the fleet-wide keys share the hash tag `{<prefix>}`.

use fleetcron_core::StoreError;

/// The names of every key and channel under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix`, which must be non-empty and free of braces (they would change the
    /// hash tag), whitespace and control characters.
    pub(crate) fn new(prefix: &str) -> Result<Self, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::Config("the Redis key prefix is empty".to_owned()));
        }
        if let Some(bad) = prefix
            .chars()
            .find(|c| matches!(c, '{' | '}') || c.is_whitespace() || c.is_control())
        {
            return Err(StoreError::Config(format!(
                "the Redis key prefix {prefix:?} contains {bad:?}: use letters, digits and punctuation \
                 other than braces (braces would change the keys' hash tags)"
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

    /// A `SCAN MATCH` pattern for every key under the prefix.
    pub(crate) fn scan_pattern(&self) -> String {
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
        assert_eq!(Keys::new("a*b").expect("valid").scan_pattern(), "{a\\*b[}:]*");
    }

    #[test]
    fn invalid_prefixes() {
        for prefix in ["", "a{b", "a}b", "a b", "a\nb"] {
            assert!(matches!(Keys::new(prefix), Err(StoreError::Config(_))), "{prefix:?}");
        }
    }
}
