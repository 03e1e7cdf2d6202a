//! The admin HTTP surface in the binary: the `[admin]` table of the daemon's file, the `--admin-*`
//! flags, tokens from a file or the environment (never the command line, where `ps` shows them), and
//! starting the server (`fleetcron run`, `fleetcron serve`, `fleetcron demo`).
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:8080"            # the daemon serves the API, /metrics and the dashboard here
//! token_file = "/etc/fleetcron/tokens"  # lines `read TOKEN` / `admin TOKEN`
//! insecure_no_auth = false              # true: no token even on a non-loopback address
//! ```
//!
//! Tokens: `FLEETCRON_ADMIN_TOKEN` and `FLEETCRON_READ_TOKEN` (comma-separated for rotation) and the
//! token file. Without any, the server listens on loopback addresses only unless `--insecure-no-auth`.

use crate::config::Issue;
use crate::process::say;
use crate::CliError;
use clap::Args;
use fleetcron::{SchedulerStrategy, Secrets};
use fleetcron_admin::{AdminOptions, Auth};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Keys of the `[admin]` table.
const ADMIN_KEYS: &[&str] = &["listen", "token_file", "insecure_no_auth"];

/// The `[admin]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSection {
    /// Where the daemon serves the admin surface.
    pub listen: Option<SocketAddr>,
    /// The token file.
    pub token_file: Option<PathBuf>,
    /// No token even beyond loopback.
    pub insecure_no_auth: bool,
}

/// The admin flags of `fleetcron run` (they override `[admin]`).
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Serve the admin API, /metrics and the dashboard on this address (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Read admin-surface tokens from this file (lines `read TOKEN` / `admin TOKEN`).
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve without tokens even on a non-loopback address (anyone who can connect is an admin).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |part| part.chars().count()) + 1;
    (line, column)
}

/// Reads the `[admin]` table of a parsed file, reporting every problem into `issues`.
fn section(text: &str, value: Option<&Spanned<DeValue<'_>>>, issues: &mut Vec<Issue>) -> AdminSection {
    let mut out = AdminSection::default();
    let Some(value) = value else {
        return out;
    };
    let mut issue = |span: std::ops::Range<usize>, field: &str, message: String| {
        let (line, column) = position(text, span.start);
        issues.push(Issue {
            line,
            column,
            field: field.to_owned(),
            message,
        });
    };
    let DeValue::Table(table) = value.get_ref() else {
        issue(
            value.span(),
            "admin",
            format!("expected a table, found {}", value.get_ref().type_str()),
        );
        return out;
    };
    for (key, item) in table {
        let field = format!("admin.{}", key.get_ref());
        match (key.get_ref().as_ref(), item.get_ref()) {
            ("listen", DeValue::String(text)) => match text.parse::<SocketAddr>() {
                Ok(address) => out.listen = Some(address),
                Err(_) => issue(
                    item.span(),
                    &field,
                    format!(
                        "{} is not an address; use IP:PORT such as \"127.0.0.1:8080\"",
                        fleetcron::limits::echo(text)
                    ),
                ),
            },
            ("token_file", DeValue::String(text)) => out.token_file = Some(PathBuf::from(text.as_ref())),
            ("insecure_no_auth", DeValue::Boolean(flag)) => out.insecure_no_auth = *flag,
            ("listen" | "token_file", other) => issue(
                item.span(),
                &field,
                format!("expected a string, found {}", other.type_str()),
            ),
            ("insecure_no_auth", other) => issue(
                item.span(),
                &field,
                format!("expected true or false, found {}", other.type_str()),
            ),
            _ => issue(
                key.span(),
                &field,
                format!("unknown key; expected one of: {}", ADMIN_KEYS.join(", ")),
            ),
        }
    }
    out
}

/// The configuration parser's hook: checks the `[admin]` table (problems join the file's others).
pub fn check(text: &str, value: Option<&Spanned<DeValue<'_>>>, issues: &mut Vec<Issue>) {
    let _ = section(text, value, issues);
}

/// The `[admin]` table of a file the configuration parser already accepted.
pub fn load(path: &Path) -> Result<AdminSection, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::usage(format!("cannot read {}: {error}", path.display())))?;
    if !text.contains("admin") {
        return Ok(AdminSection::default());
    }
    let root = DeTable::parse(&text)
        .map_err(|error| CliError::usage(format!("{}: {}", path.display(), error.message().trim())))?;
    let value = root
        .get_ref()
        .iter()
        .find(|(key, _)| key.get_ref() == "admin")
        .map(|(_, value)| value);
    let mut issues = Vec::new();
    let section = section(&text, value, &mut issues);
    match issues.first() {
        None => Ok(section),
        Some(issue) => Err(CliError::usage(format!("{}:{issue}", path.display()))),
    }
}

fn env_tokens(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The tokens from `FLEETCRON_ADMIN_TOKEN`, `FLEETCRON_READ_TOKEN` and `token_file`; every token is
/// registered as a secret (scrubbed from panics and usage errors).
pub fn auth(token_file: Option<&Path>, insecure_no_auth: bool) -> Result<Auth, CliError> {
    let mut read = env_tokens("FLEETCRON_READ_TOKEN");
    let mut admin = env_tokens("FLEETCRON_ADMIN_TOKEN");
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| CliError::usage(format!("cannot read the token file {}: {error}", path.display())))?;
        warn_if_readable_by_others(path);
        let (file_read, file_admin) = fleetcron_admin::parse_token_file(&text)
            .map_err(|error| CliError::usage(format!("token file {}: {error}", path.display())))?;
        read.extend(file_read);
        admin.extend(file_admin);
    }
    let mut secrets = Secrets::none();
    for token in read.iter().chain(&admin) {
        secrets.add(token);
    }
    crate::secrets::protect(&secrets);
    if read.is_empty() && admin.is_empty() {
        return Ok(if insecure_no_auth {
            Auth::insecure_no_auth()
        } else {
            Auth::none()
        });
    }
    Auth::with_tokens(read, admin).map_err(CliError::usage)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the token file is readable by other users; run `chmod 600` on it"
            );
        }
    }
}

/// The process-wide Prometheus recorder (installed once, on first use).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match fleetcron_admin::install_prometheus() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics are not exported");
                None
            }
        })
        .clone()
}

/// Installs the Prometheus recorder now, so metrics recorded before the server starts are kept.
pub fn install_recorder() {
    let _ = prometheus();
}

/// The dashboard's title for a store: its kind only (`sqlite store`). The page shell is served without
/// a token, so it names no host, database or user, not even redacted.
pub fn title(url: &str) -> String {
    let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
    let kind = match scheme.as_str() {
        "sqlite" => "sqlite",
        "postgres" | "postgresql" => "postgres",
        "mysql" | "mariadb" => "mysql",
        "redis" | "rediss" => "redis",
        "memory" => "memory",
        _ => "custom",
    };
    format!("{kind} store")
}

/// A running admin server; stopped when dropped.
pub struct AdminServer {
    /// The address it listens on.
    pub address: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Checks the address against the tokens, binds it and serves the admin surface over `strategy`.
pub async fn start(
    strategy: Arc<dyn SchedulerStrategy>,
    listen: SocketAddr,
    auth: Auth,
    title: &str,
) -> Result<AdminServer, CliError> {
    fleetcron_admin::check_bind(listen, &auth).map_err(CliError::usage)?;
    if auth.is_insecure() && !auth.has_tokens() {
        tracing::warn!(%listen, "serving the admin API without tokens (--insecure-no-auth): anyone who can connect is an admin");
    }
    let mut options = AdminOptions::new(auth).title(title);
    if let Some(handle) = prometheus() {
        options = options.metrics(handle);
    }
    let router = fleetcron_admin::router(strategy, options);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| CliError::runtime(format!("cannot listen on {listen}: {error}")))?;
    let address = listener
        .local_addr()
        .map_err(|error| CliError::runtime(format!("cannot listen on {listen}: {error}")))?;
    let handle = tokio::spawn(async move {
        if let Err(error) = fleetcron_admin::serve(listener, router, std::future::pending()).await {
            tracing::error!(%error, "the admin server stopped");
        }
    });
    Ok(AdminServer { address, handle })
}

/// The daemon's admin server, if `--admin-listen` or `[admin] listen` asks for one: a strategy of its
/// own on the daemon's store (admin calls only; reloads do not touch it).
pub async fn start_for_daemon(args: &AdminArgs, config: &Path, url: &str) -> Result<Option<AdminServer>, CliError> {
    let section = load(config)?;
    let Some(listen) = args.admin_listen.or(section.listen) else {
        return Ok(None);
    };
    let token_file = args.admin_token_file.clone().or(section.token_file);
    let auth = auth(token_file.as_deref(), args.insecure_no_auth || section.insecure_no_auth)?;
    let strategy = fleetcron::DefaultSchedulerStrategy::connect(url)
        .await
        .map_err(|error| crate::admin::store_error(url, &error))?;
    let server = start(Arc::new(strategy), listen, auth, &title(url)).await?;
    tracing::info!(address = %server.address, "admin API and dashboard at http://{}/", server.address);
    say(&format!("fleetcron: dashboard at http://{}/", server.address));
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (AdminSection, Vec<Issue>) {
        let root = DeTable::parse(text).expect("TOML");
        let value = root
            .get_ref()
            .iter()
            .find(|(key, _)| key.get_ref() == "admin")
            .map(|(_, value)| value);
        let mut issues = Vec::new();
        (section(text, value, &mut issues), issues)
    }

    #[test]
    fn the_admin_table_is_read_and_checked() {
        let (section, issues) =
            parse("[admin]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"/etc/t\"\ninsecure_no_auth = true\n");
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(section.listen, "127.0.0.1:9000".parse().ok());
        assert_eq!(section.token_file, Some(PathBuf::from("/etc/t")));
        assert!(section.insecure_no_auth);
        let (_, mut issues) = parse("[admin]\nlisten = \"localhost\"\ntoken = \"x\"\ninsecure_no_auth = 1\n");
        issues.sort_by_key(|issue| issue.line);
        let fields: Vec<&str> = issues.iter().map(|issue| issue.field.as_str()).collect();
        assert_eq!(fields, vec!["admin.listen", "admin.token", "admin.insecure_no_auth"]);
        assert_eq!((issues[1].line, issues[1].column), (3, 1));
    }
}
