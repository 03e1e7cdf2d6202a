//! The Lua scripts, loaded once per server (EVALSHA, with a fallback to loading them after a restart).
//! Each is atomic: Redis runs no other command while a script runs.

use redis::Script;
use std::sync::LazyLock;

/// Server `TIME` plus each task's `doc` and `version`: the first round trip of a mutation.
pub(crate) static READ_STATES: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/read_states.lua")));

/// [`READ_STATES`] for claims: leaves out the tasks whose high-water mark is at or after the claim's floor.
pub(crate) static READ_CLAIMS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/read_claims.lua")));

/// The version-guarded, all-or-nothing write of a batch of mutations.
pub(crate) static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/commit.lua")));

/// The idle poll: server `TIME` and the attention index up to it.
pub(crate) static DUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/due.lua")));

/// A page of one task's history, newest first.
pub(crate) static RUNS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/runs.lua")));

/// The retention policy over some tasks' histories.
pub(crate) static PRUNE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/prune.lua")));

/// The schema version check-and-set.
pub(crate) static MIGRATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/migrate.lua")));
