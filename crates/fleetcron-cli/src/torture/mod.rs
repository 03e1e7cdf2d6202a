//! `fleetcron torture`: tries hard to break exactly-once on a real store, then proves it held.
//!
//! It starts `--workers` real worker processes (`fleetcron worker --profile test`: tasks every second,
//! a slower `hold` task, a `manual` one) on one store and, for `--seconds`, injects faults at random:
//! * `kill`: SIGKILL a worker, restart it a moment later (its leases stay held until they expire);
//! * `pause`: SIGSTOP a worker for longer than the lease, then SIGCONT (its late writes must be fenced);
//! * `skew`: every worker incarnation runs with its clock off by up to ±`--max-skew-ms`;
//! * `cut`: on server stores each worker talks through its own fault-injecting proxy, which cuts its
//!   connections, or refuses them for a while (an outage seen from that worker only);
//! * `restart`: the store restarts — on SQLite every worker dies at once and the file survives; on a
//!   server store only when `--store-restart-cmd` says how;
//! * `trigger`: concurrent manual triggers from an operator connection;
//! * `flip`: disable a task for a few seconds, then enable it.
//!
//! Then it lets the fleet settle, stops it with SIGTERM, reads the store's history and the handlers'
//! own log, and runs [`check::check`]. The last stdout line is one JSON object; the exit code is 1 if
//! any guarantee was violated.
//!
//! `run` is the sequence of [`phases`]; the worker processes are the [`fleet`], what is injected and
//! undone is in [`faults`], and where the run's data lives (directory, SQLite file, schema or prefix,
//! proxies) in [`namespace`].

pub mod check;
mod faults;
mod fleet;
mod namespace;
mod phases;

use crate::CliResult;
use clap::Args;
pub use faults::Fault;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `fleetcron torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// The store: `sqlite`, `postgres`, `mysql`, `redis` (local services, or the URLs in
    /// FLEETCRON_TEST_{POSTGRES,MYSQL,REDIS}_URL), or a store URL. A fresh schema / table prefix / key
    /// prefix is used unless the URL names one.
    #[arg(long, value_name = "BACKEND|URL", default_value = "sqlite")]
    pub store: String,
    /// Worker processes.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// How long faults are injected, in seconds (the fleet then settles and stops).
    #[arg(long, value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub seconds: u64,
    /// Tasks every second (the first two are flipped; the `hold` and `manual` tasks come in addition).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub tasks: u32,
    /// Faults to inject, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<Fault>,
    /// Mean time between two faults, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub fault_every_ms: u64,
    /// The workers' lease, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_ms: u64,
    /// The workers' poll interval, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Largest clock skew of a worker, either way, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub max_skew_ms: u64,
    /// Shell command that restarts a server store (e.g. `pg_ctlcluster 15 main restart`); without it
    /// only SQLite stores are "restarted".
    #[arg(long, value_name = "CMD")]
    pub store_restart_cmd: Option<String>,
    /// Seed of the fault schedule (default: from the clock; printed either way).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Keep the handlers' log, the SQLite file and the workers' output here (default: a temporary
    /// directory, removed after a passing run).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs the torture test; exit code 1 when a guarantee was violated.
pub async fn run(args: TortureArgs) -> CliResult {
    let mut torture = phases::start(&args).await?;
    let injected = phases::faults(&mut torture, &args).await?;
    phases::settle(&mut torture, &args).await?;
    let stopped = phases::stop(&mut torture).await;
    phases::verdict(torture, injected, stopped, &args).await
}

fn ms(duration: u64) -> Duration {
    Duration::from_millis(duration)
}
