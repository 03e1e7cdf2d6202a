//! `fleetcron serve --store URL --listen ADDR`: the admin API, `/metrics` and the dashboard for a store,
//! without running any task (workers run elsewhere). Tokens come from `FLEETCRON_ADMIN_TOKEN`,
//! `FLEETCRON_READ_TOKEN` or `--token-file`, never from the command line.

use crate::admin::store_error;
use crate::process::{say, Shutdown};
use crate::{CliError, CliResult};
use clap::Args;
use fleetcron::DefaultSchedulerStrategy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `fleetcron serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store URL.
    #[arg(long, value_name = "URL", env = "FLEETCRON_STORE", hide_env_values = true)]
    pub store: String,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Read tokens from this file (lines `read TOKEN` / `admin TOKEN`).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Serve without tokens even on a non-loopback address (anyone who can connect is an admin).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// Runs the admin server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> CliResult {
    let mut shutdown = Shutdown::install(false)?;
    crate::admin_config::install_recorder();
    let auth = crate::admin_config::auth(args.token_file.as_deref(), args.insecure_no_auth)?;
    fleetcron_admin::check_bind(args.listen, &auth).map_err(CliError::usage)?;
    let strategy = DefaultSchedulerStrategy::connect(&args.store)
        .await
        .map_err(|error| store_error(&args.store, &error))?;
    let label = strategy.label().to_owned();
    let title = crate::admin_config::title(&args.store);
    let server = crate::admin_config::start(Arc::new(strategy), args.listen, auth, &title).await?;
    say(&format!("fleetcron serve: {label} at http://{}/", server.address));
    let why = shutdown.recv().await;
    tracing::info!("{why}: stopping the admin server");
    drop(server);
    Ok(ExitCode::SUCCESS)
}
