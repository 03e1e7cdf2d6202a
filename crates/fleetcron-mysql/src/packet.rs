//! Statement size bounds. The server refuses (and drops the connection of) any packet larger than its
//! `max_allowed_packet` (16 MiB by default on MariaDB, 64 MiB on MySQL 8), and a prepared statement's
//! parameters travel in one packet. So multi-row writes are cut by bytes as well as by row count, and a
//! single row too large for any packet has its longest texts cut to fit, so that the outcome of a run is
//! always recorded.
//!
//! * [`PacketLimits::statement_budget`]: the row data one multi-row statement may carry — half the
//!   server's `max_allowed_packet` (read at connect), at most [`MAX_STATEMENT_BYTES`]. Rows are
//!   estimated generously ([`ROW_OVERHEAD_BYTES`] for the fixed-size columns and the protocol's
//!   per-parameter bytes), so the real packet stays well under the limit.
//! * [`PacketLimits::row_limit`]: the most one row may take — half of `max_allowed_packet`. A history
//!   row above it keeps the end of its error (the most recent output) and says how much was cut; if that
//!   is not enough its result is replaced by a note, then its reason cut. A state document above it gets
//!   the same treatment for its last run's summary.

use crate::codec::{RunRow, StateRow};
use crate::sql::CHUNK_SIZES;
use fleetcron_core::TaskState;

/// The most bytes of row data one statement carries, whatever the server allows.
pub(crate) const MAX_STATEMENT_BYTES: usize = 8 * 1024 * 1024;

/// Allowance per row for its fixed-size columns and the protocol's per-parameter bytes.
pub(crate) const ROW_OVERHEAD_BYTES: usize = 1024;

/// The longest `MEDIUMTEXT` (`reason`, `error`), in bytes.
const MEDIUMTEXT_BYTES: usize = 16 * 1024 * 1024 - 1;

/// How large statements and rows may be on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketLimits {
    /// The server's `max_allowed_packet`.
    pub(crate) max_allowed_packet: usize,
    /// The most row data of one multi-row statement.
    pub(crate) statement_budget: usize,
    /// The most one row may take.
    pub(crate) row_limit: usize,
}

impl PacketLimits {
    /// The limits for a server whose `max_allowed_packet` is `max_allowed_packet` bytes.
    pub(crate) fn new(max_allowed_packet: usize) -> Self {
        let row_limit = (max_allowed_packet / 2).max(ROW_OVERHEAD_BYTES);
        Self {
            max_allowed_packet,
            statement_budget: row_limit.min(MAX_STATEMENT_BYTES),
            row_limit,
        }
    }
}

/// Splits rows of sizes `sizes` into chunk lengths from [`CHUNK_SIZES`], largest first where it fits,
/// so that no chunk's rows add up to more than `budget` bytes (a row larger than the budget goes alone).
pub(crate) fn chunk_lengths_within(sizes: &[usize], budget: usize) -> Vec<usize> {
    let mut prefix = Vec::with_capacity(sizes.len() + 1);
    prefix.push(0_usize);
    for size in sizes {
        let last = prefix.last().copied().unwrap_or(0);
        prefix.push(last.saturating_add(*size));
    }
    let bytes = |from: usize, to: usize| prefix.get(to).copied().unwrap_or(usize::MAX) - prefix[from];
    let mut lengths = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let rest = sizes.len() - start;
        let length = CHUNK_SIZES
            .iter()
            .copied()
            .find(|&size| size <= rest && (size == 1 || bytes(start, start + size) <= budget))
            .unwrap_or(1);
        lengths.push(length);
        start += length;
    }
    lengths
}

fn opt_len(text: Option<&String>) -> usize {
    text.map_or(0, String::len)
}

/// The bytes a history row adds to a statement (an upper bound).
pub(crate) fn run_row_bytes(row: &RunRow) -> usize {
    ROW_OVERHEAD_BYTES
        + row.run_id.len()
        + row.task_id.len()
        + row.kind.len()
        + opt_len(row.worker.as_ref())
        + opt_len(row.trigger_id.as_ref())
        + row.status.len()
        + opt_len(row.reason.as_ref())
        + opt_len(row.result.as_ref())
        + opt_len(row.error.as_ref())
}

/// The bytes a task row adds to a statement (an upper bound).
pub(crate) fn state_row_bytes(row: &StateRow<'_>) -> usize {
    ROW_OVERHEAD_BYTES + row.id.len() + row.state.len()
}

/// The note that replaces `cut` bytes at the start of a text.
fn cut_note(cut: usize, max_allowed_packet: usize) -> String {
    format!("[fleetcron: the first {cut} bytes were cut to fit the MySQL server's max_allowed_packet of {max_allowed_packet} bytes] ")
}

/// `text` without at least `excess` bytes at its start, led by a note saying so; its end is kept.
fn keep_tail(text: &str, excess: usize, max_allowed_packet: usize) -> String {
    let note_room = cut_note(text.len(), max_allowed_packet).len();
    let mut start = excess.saturating_add(note_room).min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{}{}", cut_note(start, max_allowed_packet), &text[start..])
}

/// The JSON that replaces a result too large to store.
fn result_note(bytes: usize, max_allowed_packet: usize) -> String {
    serde_json::json!({
        "truncated": true,
        "bytes": bytes,
        "note": format!("the result did not fit the MySQL server's max_allowed_packet of {max_allowed_packet} bytes and was not stored"),
    })
    .to_string()
}

/// Makes `row` fit one packet (see the module documentation); a row that fits is left alone.
pub(crate) fn fit_run_row(row: &mut RunRow, limits: &PacketLimits) {
    let packet = limits.max_allowed_packet;
    for column in [&mut row.error, &mut row.reason] {
        if let Some(text) = column.as_mut().filter(|text| text.len() > MEDIUMTEXT_BYTES) {
            *text = keep_tail(text, text.len() - MEDIUMTEXT_BYTES, packet);
        }
    }
    let excess = |row: &RunRow| run_row_bytes(row).saturating_sub(limits.row_limit);
    if excess(row) == 0 {
        return;
    }
    let over = excess(row);
    if let Some(error) = row.error.as_mut() {
        *error = keep_tail(error, over, packet);
    }
    let over = excess(row);
    if over > 0 {
        if let Some(result) = row.result.as_mut() {
            *result = result_note(result.len(), packet);
        }
    }
    let over = excess(row);
    if over > 0 {
        if let Some(reason) = row.reason.as_mut() {
            *reason = keep_tail(reason, over, packet);
        }
    }
}

/// `state`, or a copy whose last run summary is cut to fit one packet when its document would not.
pub(crate) fn fit_state(state: &TaskState, encoded_len: usize, limits: &PacketLimits) -> Option<TaskState> {
    if encoded_len + ROW_OVERHEAD_BYTES <= limits.row_limit {
        return None;
    }
    let mut fitted = state.clone();
    let last = fitted.last_run.as_mut()?;
    // The summary gets a quarter of a row at most; the history row keeps what it can of the rest.
    let room = limits.row_limit / 4;
    if let Some(error) = last.error.as_mut().filter(|error| error.len() > room) {
        *error = keep_tail(error, error.len() - room, limits.max_allowed_packet);
    }
    if let Some(result) = last.result.as_mut() {
        let bytes = result.to_string().len();
        if bytes > room {
            *result = serde_json::json!({
                "truncated": true,
                "bytes": bytes,
                "note": "the result did not fit the MySQL server's max_allowed_packet and was not stored",
            });
        }
    }
    Some(fitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_server() {
        let mariadb = PacketLimits::new(16 * 1024 * 1024);
        assert_eq!(mariadb.statement_budget, 8 * 1024 * 1024);
        assert_eq!(mariadb.row_limit, 8 * 1024 * 1024);
        let mysql = PacketLimits::new(64 * 1024 * 1024);
        assert_eq!(mysql.statement_budget, MAX_STATEMENT_BYTES);
        assert_eq!(mysql.row_limit, 32 * 1024 * 1024);
        let small = PacketLimits::new(1024 * 1024);
        assert_eq!(small.statement_budget, 512 * 1024);
    }

    #[test]
    fn chunks_respect_the_budget_and_cover_every_row_once() {
        for (sizes, budget) in [
            (vec![100; 1000], 10_000),
            (vec![1; 1000], 10_000),
            (vec![200_000; 300], 8 * 1024 * 1024),
            ((0..777).map(|n| (n * 7919) % 300_000).collect::<Vec<_>>(), 1_000_000),
            (vec![20_000_000, 5, 5, 5], 1_000_000),
            (Vec::new(), 10),
        ] {
            let lengths = chunk_lengths_within(&sizes, budget);
            assert_eq!(lengths.iter().sum::<usize>(), sizes.len());
            assert!(lengths.iter().all(|length| CHUNK_SIZES.contains(length)), "{lengths:?}");
            let mut start = 0;
            for length in &lengths {
                let bytes: usize = sizes[start..start + length].iter().sum();
                assert!(*length == 1 || bytes <= budget, "{length} rows of {bytes} bytes");
                start += length;
            }
        }
        // Small rows still go 256 at a time.
        assert_eq!(chunk_lengths_within(&[10; 512], 1_000_000), vec![256, 256]);
        // 300 rows of 256 KiB under an 8 MiB budget: 32-row chunks (8 MiB) would be one byte too many.
        let lengths = chunk_lengths_within(&[256 * 1024 + ROW_OVERHEAD_BYTES; 300], 8 * 1024 * 1024);
        assert!(lengths.iter().all(|&length| length <= 4), "{lengths:?}");
    }

    fn row(error: usize, result: usize) -> RunRow {
        let record = fleetcron_core::RunRecord {
            result: (result > 0).then(|| serde_json::Value::String("r".repeat(result))),
            error: (error > 0).then(|| format!("{}END", "é".repeat(error / 2))),
            ..fleetcron_conformance::store_fixtures::run("t", "r", None, 1, fleetcron_core::RunStatus::Failed)
        };
        RunRow::new(record).expect("a valid row")
    }

    #[test]
    fn an_oversized_row_keeps_the_end_of_its_error() {
        let limits = PacketLimits::new(1024 * 1024);
        let mut small = row(1000, 1000);
        let before = small.clone();
        fit_run_row(&mut small, &limits);
        assert_eq!(small.error, before.error);
        assert_eq!(small.result, before.result);

        let mut big = row(3 * 1024 * 1024, 1000);
        fit_run_row(&mut big, &limits);
        assert!(run_row_bytes(&big) <= limits.row_limit);
        let error = big.error.expect("an error");
        assert!(error.starts_with("[fleetcron: the first "), "{}", &error[..80]);
        assert!(error.ends_with("END"));
        assert_eq!(big.result.map(|result| result.len()), Some(1002), "the result fitted");

        let mut both = row(1000, 3 * 1024 * 1024);
        fit_run_row(&mut both, &limits);
        assert!(run_row_bytes(&both) <= limits.row_limit);
        assert!(both.result.is_some_and(|result| result.contains("\"truncated\":true")));
    }
}
