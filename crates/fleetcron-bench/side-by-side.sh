#!/usr/bin/env bash
# Runs two builds of fleetcron-bench alternately (before, after; three rounds) on SQLite and PostgreSQL and
# prints one JSON line per run, tagged with the version and round, so a change is measured side by side in
# one run on a machine whose load drifts.
#
#   # "before": this tree with the library crates of an older commit (the benchmark crate is newer)
#   git worktree add /tmp/before HEAD && git -C /tmp/before checkout dd687aa -- \
#     crates/fleetcron-core crates/fleetcron-sqlite crates/fleetcron-postgres crates/fleetcron-conformance crates/fleetcron-cli
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p fleetcron-bench)
#   cargo build --release -p fleetcron-bench
#   crates/fleetcron-bench/side-by-side.sh /tmp/before-target/release/fleetcron-bench \
#     target/release/fleetcron-bench > side-by-side.jsonl
set -euo pipefail
before=${1:?usage: side-by-side.sh BEFORE_BENCH AFTER_BENCH}
after=${2:?usage: side-by-side.sh BEFORE_BENCH AFTER_BENCH}
for round in 1 2 3; do
  for version in before after; do
    if [ "$version" = before ]; then bench=$before; else bench=$after; fi
    for only in register lag burst; do
      for backend in sqlite postgres; do
        "$bench" --only "$only" --backends "$backend" --runs 1 2>/dev/null | grep '^{' |
          sed "s/^{/{\"version\":\"$version\",\"round\":$round,/" || true
      done
    done
  done
done
