//! `fleetcron-bench`: the benchmark harness of DESIGN §8–9. It measures; it asserts nothing about time.
//!
//! ```text
//! cargo run --release -p fleetcron-bench -- --backends sqlite,postgres --runs 3
//! cargo run --release -p fleetcron-bench -- --quick --runs 1 --backends sqlite,postgres,mysql,redis,memory
//! cargo run --release -p fleetcron-bench -- --only lag,trigger --backends redis
//! ```
//!
//! Every run of every benchmark uses a fresh namespace (a new SQLite file in a temporary directory, a
//! new PostgreSQL schema, MySQL table prefix or Redis key prefix `bench_<pid>_<n>`, a new memory store)
//! and removes it afterwards. Servers come from `--postgres-url`, `--mysql-url`, `--redis-url`, else
//! `FLEETCRON_TEST_POSTGRES_URL` / `FLEETCRON_TEST_MYSQL_URL` / `FLEETCRON_TEST_REDIS_URL`, else the local
//! defaults; only loopback servers are accepted. A backend that cannot be reached is reported as
//! `skipped: <backend>: <error>` on stderr and the others go on.
//!
//! Benchmarks (each repeated `--runs` times per backend; `--quick` shrinks every size):
//! * `lag`: 4 workers × 1,000 tasks due every second for 20 s (first 5 s dropped): start lag
//!   p50/p90/p99/max, slots/s, duplicates, process CPU per slot, store statements per slot.
//! * `burst`: 10,000 tasks due at one instant, 4 workers: time to the last handler start, slots/s.
//! * `register`: 100,000 tasks registered by one worker (in a child process): time to `ready()`, resident
//!   memory per task, idle CPU afterwards.
//! * `idle`: store statements per second per idle worker (4 workers).
//! * `trigger`: manual trigger from a second connection → handler start.
//!
//! Output: one JSON line per (benchmark, backend) on stdout with the median, min, max and per-run values
//! of every figure, then markdown tables of the medians and [min–max]. Progress and warnings go to
//! stderr. The exit status is 1 if a run failed, a slot ran twice, or nothing could be measured.

mod backend;
mod benches;
mod counter;
mod fleet;
mod procfs;
mod report;
mod stats;

use backend::{Backend, Urls};
use benches::Sizes;
use clap::Parser;
use report::{BenchReport, RunFigures};
use std::process::ExitCode;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The harness's error type: a message for the operator.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    Lag,
    Burst,
    Register,
    Idle,
    Trigger,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Lag => "lag",
            Bench::Burst => "burst",
            Bench::Register => "register",
            Bench::Idle => "idle",
            Bench::Trigger => "trigger",
        }
    }
}

/// fleetcron benchmarks: start lag, burst throughput, registration, idle load and trigger latency.
#[derive(Debug, Parser)]
#[command(name = "fleetcron-bench", version)]
struct Args {
    /// Backends to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres,mysql,redis,memory"
    )]
    backends: Vec<Backend>,

    /// Runs of every benchmark per backend (figures are reported as median, min and max).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,

    /// Benchmarks to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lag,burst,register,idle,trigger"
    )]
    only: Vec<Bench>,

    /// Shrink every size, for a smoke run in seconds.
    #[arg(long)]
    quick: bool,

    /// In-process workers of lag, burst and idle (DESIGN §9: 4; 16 measures how store work grows with
    /// the fleet).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,

    /// PostgreSQL server (no schema parameter; each run adds its own).
    #[arg(
        long,
        env = "FLEETCRON_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,

    /// MySQL / MariaDB server and database (no table_prefix parameter).
    #[arg(
        long,
        env = "FLEETCRON_TEST_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306/test"
    )]
    mysql_url: String,

    /// Redis server (no prefix parameter).
    #[arg(long, env = "FLEETCRON_TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// Internal: run one registration measurement on this store URL and print it as JSON.
    #[arg(long, hide = true)]
    register_child: Option<String>,

    /// Internal: tasks of the registration child.
    #[arg(long, hide = true, default_value_t = 100_000)]
    child_tasks: usize,

    /// Internal: idle seconds of the registration child.
    #[arg(long, hide = true, default_value_t = 10)]
    child_idle_seconds: u64,
}

fn init_tracing(count_statements: bool) -> Result<(), Error> {
    // Warnings of the library go to stderr; sqlx's per-statement events are never printed.
    let printed = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn"))
        .add_directive(
            "sqlx::query=off"
                .parse()
                .map_err(|error| format!("bad filter directive: {error}"))?,
        );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(printed);
    let counting = count_statements
        .then(|| counter::SqlxCountingLayer.with_filter(Targets::new().with_target("sqlx::query", LevelFilter::TRACE)));
    tracing_subscriber::registry()
        .with(fmt)
        .with(counting)
        .try_init()
        .map_err(|error| format!("cannot install the tracing subscriber: {error}").into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(url) = &args.register_child {
        if let Err(error) = init_tracing(false) {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        return match benches::register_child(url, args.child_tasks, args.child_idle_seconds).await {
            Ok(result) => {
                println!("{result}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: registration child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; `Ok(false)` when a run failed, a slot ran twice or nothing was measured.
async fn run(args: Args) -> Result<bool, Error> {
    init_tracing(true)?;
    let urls = Urls {
        postgres: args.postgres_url.clone(),
        mysql: args.mysql_url.clone(),
        redis: args.redis_url.clone(),
    };
    urls.check_loopback()?;
    let mut sizes = if args.quick { Sizes::quick() } else { Sizes::full() };
    sizes.workers = usize::from(args.workers);
    let mut backends = args.backends.clone();
    backends.dedup();
    let mut benches = args.only.clone();
    benches.dedup();
    eprintln!(
        "fleetcron-bench: backends {:?}, benchmarks {:?}, {} run(s) each{}",
        backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        benches.iter().map(|b| b.name()).collect::<Vec<_>>(),
        args.runs,
        if args.quick { ", quick sizes" } else { "" }
    );
    let mut reports: Vec<BenchReport> = Vec::new();
    let mut skipped = Vec::new();
    for backend in backends {
        let check = match benches::check_counter(backend, &urls).await {
            Ok(check) => check,
            Err(error) => {
                eprintln!("\n*** skipped: {}: {error}\n", backend.name());
                skipped.push(backend);
                continue;
            }
        };
        eprintln!("[{}] statement counter check: {check}", backend.name());
        for &bench in &benches {
            let report = run_bench(bench, backend, &urls, &sizes, args.runs, &check).await;
            println!("{}", report.json());
            reports.push(report);
        }
    }
    println!();
    println!("{}", report::markdown(&reports));
    for backend in &skipped {
        eprintln!("*** skipped: {} (see above)", backend.name());
    }
    let failed: usize = reports.iter().map(|report| report.failures.len()).sum();
    let duplicates: u64 = reports.iter().map(BenchReport::duplicates).sum();
    if failed > 0 {
        eprintln!("*** {failed} run(s) failed (see failed_runs in the JSON lines)");
    }
    if duplicates > 0 {
        eprintln!("*** EXACTLY-ONCE VIOLATED: {duplicates} duplicate slot start(s) seen");
    }
    let measured = reports.iter().any(|report| !report.runs.is_empty());
    if !measured {
        eprintln!("*** nothing was measured");
    }
    Ok(failed == 0 && duplicates == 0 && measured)
}

async fn run_bench(bench: Bench, backend: Backend, urls: &Urls, sizes: &Sizes, runs: u32, check: &str) -> BenchReport {
    let uses_counter = matches!(bench, Bench::Lag | Bench::Idle);
    let method = counter_method(backend);
    let (params, notes) = match bench {
        Bench::Lag => benches::lag_describe(sizes, method),
        Bench::Burst => benches::burst_describe(sizes),
        Bench::Register => benches::register_describe(sizes),
        Bench::Idle => benches::idle_describe(sizes, method),
        Bench::Trigger => benches::trigger_describe(sizes, backend),
    };
    let mut report = BenchReport {
        bench: bench.name(),
        backend: backend.name(),
        params,
        notes,
        counter_check: uses_counter.then(|| check.to_owned()),
        runs: Vec::new(),
        failures: Vec::new(),
    };
    for index in 1..=runs {
        eprintln!("[{} {}] run {index}/{runs} ...", bench.name(), backend.name());
        let outcome: Result<RunFigures, Error> = match bench {
            Bench::Lag => benches::lag(backend, urls, sizes).await,
            Bench::Burst => benches::burst(backend, urls, sizes).await,
            Bench::Register => benches::register(backend, urls, sizes).await,
            Bench::Idle => benches::idle(backend, urls, sizes).await,
            Bench::Trigger => benches::trigger(backend, urls, sizes).await,
        };
        match outcome {
            Ok(run) => {
                let shown: Vec<String> = run
                    .figures
                    .iter()
                    .map(|(name, value)| match value {
                        Some(value) => format!("{name}={}", stats::human(*value)),
                        None => format!("{name}=n/a"),
                    })
                    .collect();
                eprintln!("[{} {}] run {index}: {}", bench.name(), backend.name(), shown.join(" "));
                if run.duplicates > 0 {
                    eprintln!(
                        "*** [{} {}] run {index}: {} DUPLICATE slot start(s): exactly-once violated",
                        bench.name(),
                        backend.name(),
                        run.duplicates
                    );
                }
                report.runs.push(run);
            }
            Err(error) => {
                eprintln!("*** [{} {}] run {index} FAILED: {error}", bench.name(), backend.name());
                report.failures.push(error.to_string());
            }
        }
    }
    report
}

fn counter_method(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "sqlx::query tracing events, plus BEGIN IMMEDIATE and COMMIT/ROLLBACK (run by sqlx's SQLite worker outside its logger: 2 per mutation)"
        }
        Backend::Postgres => "sqlx::query tracing events (one per statement string sent = one round trip)",
        Backend::Mysql => {
            "COM_QUERY + COM_STMT_EXECUTE packets counted by an in-process loopback proxy (the MySQL store turns sqlx statement logging off); the proxy adds one loopback hop to every round trip and its thread's CPU is subtracted"
        }
        Backend::Redis => {
            "commands sent, counted by an in-process loopback RESP proxy (adds one loopback hop to every round trip; its thread's CPU is subtracted); server_commands = INFO commandstats delta without INFO: includes the calls made inside Lua scripts, and is server-wide (other clients of this Redis server would be counted too)"
        }
        Backend::Memory => "n/a (in-process memory store)",
    }
}
