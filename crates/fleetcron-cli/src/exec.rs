//! What a daemon task does when it runs: a child process in its own process group, or an HTTP request.
//!
//! Both watch the run's cancellation token (fired on timeout, lost lease, `cancel_previous` or shutdown).
//! A cancelled command gets SIGTERM on its whole process group, then SIGKILL after the task's
//! `kill_grace`; when the main process exits, whatever it left behind in its group is terminated too
//! (the run is over; like systemd's `KillMode=control-group`). Signals go through `kill(1)` because the
//! workspace forbids `unsafe`. Output is kept as bounded tails: the result is
//! `{"exit_code":0,"stdout":"…","stderr":"…"}` (or `{"status":200,"body":"…"}`), and a failure's error
//! text carries the same tails.
//!
//! Secrets stay in: a command inherits the daemon's environment without fleetcron's own `FLEETCRON_*`
//! variables (or what `inherit_env` says); an HTTP task's messages show its URL without userinfo and
//! with every query value masked, never its headers, reqwest's errors come without their URL, and
//! redirects are followed by hand (at most [`MAX_REDIRECTS`]): within the task URL's origin by
//! default, and never with the task's headers once they leave it.

use crate::config::{Action, InheritEnv, Redirects, TaskSpec};
use fleetcron::{Secrets, TaskContext, TaskError, Value};
use serde_json::json;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Keeps the last `limit` bytes written to it.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > self.limit {
            let excess = self.bytes.len() - self.limit;
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The tail as text, starting at a character boundary, prefixed with `…` when bytes were dropped.
    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.dropped > 0 {
            // A multi-byte character cut in half at the start shows as U+FFFD; drop it.
            let trimmed = text.trim_start_matches('\u{FFFD}').to_owned();
            text = format!("…{trimmed}");
        }
        text
    }
}

async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, limit: usize) -> Tail {
    let mut tail = Tail::new(limit);
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(buffer.get(..n).unwrap_or_default()),
        }
    }
    tail
}

/// Signals a whole process group with `kill(1)`; false when no process of the group was left.
async fn signal_group(pgid: u32, signal: &str) -> bool {
    tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// SIGKILLs the group when dropped, unless disarmed: covers a handler future dropped by the engine
/// before its own cleanup ran.
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Terminates what is left of a group: SIGTERM, then SIGKILL if anything survives `grace`.
async fn terminate_group(pgid: u32, grace: Duration) {
    if !signal_group(pgid, "TERM").await {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !signal_group(pgid, "0").await {
            return;
        }
    }
    signal_group(pgid, "KILL").await;
}

/// Environment every command gets.
fn run_env(context: &TaskContext) -> Vec<(&'static str, String)> {
    vec![
        ("FLEETCRON_TASK_ID", context.task_id.clone()),
        (
            "FLEETCRON_SLOT",
            context
                .slot
                .map(|slot| slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default(),
        ),
        ("FLEETCRON_RUN_ID", context.run_id.clone()),
        ("FLEETCRON_FENCE", context.fence.to_string()),
        ("FLEETCRON_ATTEMPT", context.attempt.to_string()),
        ("FLEETCRON_WORKER_ID", context.worker_id.clone()),
    ]
}

/// Largest `params` handed in the environment (`FLEETCRON_PARAMS`); Linux refuses to start a process
/// with one environment string over 128 KiB, so larger params go through a file.
pub const MAX_PARAMS_IN_ENV: usize = 64 * 1024;

/// Where a command finds its task's `params`: the `FLEETCRON_PARAMS` variable when they are small, else a
/// file (mode 0600) named by `FLEETCRON_PARAMS_FILE`, removed when the run ends.
struct ParamsHandoff {
    file: Option<std::path::PathBuf>,
}

impl ParamsHandoff {
    fn prepare(context: &TaskContext, command: &mut Command) -> Result<Self, TaskError> {
        let json = context.params.to_string();
        if json.len() <= MAX_PARAMS_IN_ENV {
            command.env("FLEETCRON_PARAMS", json);
            return Ok(Self { file: None });
        }
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(format!("fleetcron-params-{}.json", context.run_id));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| TaskError::new(format!("cannot write the params file {}: {error}", path.display())))?;
        let handoff = Self {
            file: Some(path.clone()),
        };
        file.write_all(json.as_bytes())
            .map_err(|error| TaskError::new(format!("cannot write the params file {}: {error}", path.display())))?;
        command.env("FLEETCRON_PARAMS_FILE", &path);
        Ok(handoff)
    }
}

impl Drop for ParamsHandoff {
    fn drop(&mut self) {
        if let Some(path) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Applies `inherit_env` to a command: what it keeps of the daemon's environment (the task's `env` and
/// the run's variables are set after this).
fn inherit(command: &mut Command, inherit_env: &InheritEnv) {
    match inherit_env {
        InheritEnv::AllButFleetcron => {
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("FLEETCRON_") {
                    command.env_remove(name);
                }
            }
        }
        InheritEnv::Nothing => {
            command.env_clear();
        }
        InheritEnv::Only(names) => {
            command.env_clear();
            for name in names {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
        }
    }
}

/// Runs a command task once.
#[allow(clippy::too_many_arguments)] // one per task setting; a struct would only rename them
pub async fn run_command(
    context: TaskContext,
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, String)],
    inherit_env: &InheritEnv,
    kill_grace: Duration,
    limit: usize,
) -> Result<Value, TaskError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(TaskError::new("empty command"));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    inherit(&mut command, inherit_env);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.envs(run_env(&context));
    let _params = ParamsHandoff::prepare(&context, &mut command)?;
    let mut child = command
        .spawn()
        .map_err(|error| TaskError::new(format!("cannot start {program:?}: {error}")))?;
    let pgid = child.id();
    let mut guard = GroupGuard { pgid };
    let stdout = child.stdout.take().map(|out| tokio::spawn(read_tail(out, limit)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(read_tail(err, limit)));

    let (status, cancelled) = tokio::select! {
        status = child.wait() => (Some(status), false),
        () = context.cancellation.cancelled() => (None, true),
    };
    let status = match status {
        Some(status) => status,
        None => {
            if let Some(pgid) = pgid {
                tracing::info!(task = %context.task_id, run = %context.run_id, pgid, "run cancelled: terminating its process group");
                signal_group(pgid, "TERM").await;
                match tokio::time::timeout(kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        signal_group(pgid, "KILL").await;
                        child.wait().await
                    }
                }
            } else {
                child.wait().await
            }
        }
    };
    // Whatever the main process left running in its group ends with the run (and releases the pipes).
    if let Some(pgid) = pgid {
        terminate_group(pgid, kill_grace).await;
    }
    guard.pgid = None;
    let collect = |handle: Option<tokio::task::JoinHandle<Tail>>| async move {
        match handle {
            Some(handle) => match tokio::time::timeout(Duration::from_secs(2), handle).await {
                Ok(Ok(tail)) => tail.text(),
                _ => String::new(),
            },
            None => String::new(),
        }
    };
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    let status = status.map_err(|error| TaskError::new(format!("cannot wait for {program:?}: {error}")))?;
    if cancelled {
        return Err(TaskError::new(format!(
            "cancelled; process group terminated; stderr: {}",
            one_line(&stderr)
        )));
    }
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    let result = json!({
        "exit_code": status.code(),
        "signal": signal,
        "stdout": stdout,
        "stderr": stderr,
    });
    if status.success() {
        Ok(result)
    } else {
        let how = match (status.code(), signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "abnormal exit".to_owned(),
        };
        Err(TaskError::new(format!(
            "{how}; stderr: {}; stdout: {}",
            one_line(&stderr),
            one_line(&stdout)
        )))
    }
}

fn one_line(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        "(empty)".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The most redirects one run follows.
pub const MAX_REDIRECTS: usize = 10;

/// The daemon's HTTP client: it follows no redirect by itself ([`run_http`] does, by its policy).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Headers whose values are not secrets, so a response may quote them unscrubbed.
const PLAIN_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-type",
    "pragma",
    "user-agent",
];

/// The secrets of an HTTP action, scrubbed from everything a run stores or logs: the URL's userinfo,
/// fragment and query values, and header values. Values under a secret-looking name (`password`,
/// `token`, `Authorization`, `X-Api-Key`, …) count whatever their length; other values from 6 bytes on
/// (scrubbing every `1` of a response would only garble it).
pub fn http_secrets(action: &Action) -> Secrets {
    let mut secrets = Secrets::none();
    let Action::Http { url, headers, .. } = action else {
        return secrets;
    };
    let mut add = |name: &str, value: &str| {
        if fleetcron::redact::is_secret_parameter(name) || value.len() >= 6 {
            secrets.add(value);
        }
    };
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            add("user", parsed.username());
            add("password", parsed.password().unwrap_or_default());
            if let Some(password) = parsed.password() {
                // reqwest sends the userinfo as `Authorization: Basic base64(user:password)`, decoded.
                let decode = |text: &str| fleetcron::redact::percent_decode_lossy(text);
                let credentials = format!("{}:{}", decode(parsed.username()), decode(password));
                add("authorization", &base64(credentials.as_bytes()));
            }
            for (name, value) in parsed.query_pairs() {
                add(&name, &value);
            }
            add("fragment", parsed.fragment().unwrap_or_default());
        }
        Err(_) => add("password", url),
    }
    for (name, value) in headers {
        if !PLAIN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            add(name, value);
            // `Bearer TOKEN`, `Basic CREDENTIALS`: the credentials alone may be quoted back.
            if let Some((_, credentials)) = value.split_once(' ') {
                add(name, credentials.trim());
            }
        }
    }
    secrets
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials reqwest derives from a userinfo.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (index, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An HTTP URL as messages show it: no userinfo, every query value `***`, no fragment, bounded.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if url.query().is_some() {
        let pairs: Vec<String> = url.query_pairs().map(|(name, _)| name.into_owned()).collect();
        shown.set_query(None);
        if !pairs.is_empty() {
            let mut query = shown.query_pairs_mut();
            for name in &pairs {
                query.append_pair(name, "***");
            }
        }
    }
    // The pairs' serialiser escapes the mask: show it plainly.
    let text = shown.as_str().replace("%2A%2A%2A", "***");
    fleetcron::redact::truncate(&text, fleetcron::redact::MAX_SHOWN_URL)
}

/// A reqwest error without its URL, with its causes (connection refused, timed out, …), scrubbed.
fn describe(error: reqwest::Error, secrets: &Secrets) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    secrets.scrub(&text)
}

/// The request of one hop.
struct Hop<'a> {
    method: reqwest::Method,
    url: reqwest::Url,
    /// Whether the task's own headers go along (not once a redirect left the task URL's origin).
    task_headers: bool,
    body: Option<&'a str>,
}

/// Where a redirect answer points, or `None` when the response is final.
fn redirect_target(response: &reqwest::Response, from: &reqwest::Url) -> Result<Option<reqwest::Url>, String> {
    if !response.status().is_redirection() {
        return Ok(None);
    }
    let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
        return Ok(None);
    };
    let target = location
        .to_str()
        .ok()
        .and_then(|location| from.join(location).ok())
        .ok_or_else(|| {
            format!(
                "{} answered {} with an invalid Location",
                shown_url(from),
                response.status()
            )
        })?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!(
            "{} answered {} with a redirect to a non-HTTP URL ({}:…); not followed",
            shown_url(from),
            response.status(),
            target.scheme()
        ));
    }
    Ok(Some(target))
}

/// Runs an HTTP task once.
#[allow(clippy::too_many_arguments)] // one per task setting; a struct would only rename them
pub async fn run_http(
    context: TaskContext,
    client: reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    expect_status: &[u16],
    redirects: Redirects,
    secrets: &Secrets,
    limit: usize,
) -> Result<Value, TaskError> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|error| TaskError::new(format!("invalid method {method:?}: {error}")))?;
    let start = reqwest::Url::parse(url).map_err(|error| {
        TaskError::new(format!(
            "invalid URL {}: {error}",
            fleetcron::redact::truncate(&secrets.scrub(url), 160)
        ))
    })?;
    let origin = start.origin();
    let shown = shown_url(&start);
    let exchange = async {
        let mut hop = Hop {
            method,
            url: start.clone(),
            task_headers: true,
            body,
        };
        let mut followed = 0;
        let response = loop {
            let mut request = client
                .request(hop.method.clone(), hop.url.clone())
                .header("x-fleetcron-task-id", &context.task_id)
                .header("x-fleetcron-run-id", &context.run_id)
                .header("x-fleetcron-fence", context.fence.to_string())
                .header("x-fleetcron-attempt", context.attempt.to_string())
                .header(
                    "x-fleetcron-slot",
                    context
                        .slot
                        .map(|slot| slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                        .unwrap_or_default(),
                );
            if hop.task_headers {
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str());
                }
            }
            if let Some(body) = hop.body {
                request = request.body(body.to_owned());
            }
            let response = request.send().await.map_err(|error| {
                TaskError::new(format!(
                    "request to {} failed: {}",
                    shown_url(&hop.url),
                    describe(error, secrets)
                ))
            })?;
            if redirects == Redirects::None {
                break response;
            }
            let Some(target) = redirect_target(&response, &hop.url).map_err(TaskError::new)? else {
                break response;
            };
            let status = response.status();
            drop(response);
            if followed == MAX_REDIRECTS {
                return Err(TaskError::new(format!(
                    "{shown}: more than {MAX_REDIRECTS} redirects (the last to {}); not followed",
                    shown_url(&target)
                )));
            }
            let same_origin = target.origin() == origin;
            if !same_origin && redirects == Redirects::SameOrigin {
                return Err(TaskError::new(format!(
                    "{} answered {status} with a redirect to another origin, {}; refused (set http.redirects = \
                     \"any\" to follow it without the task's headers)",
                    shown_url(&hop.url),
                    shown_url(&target)
                )));
            }
            followed += 1;
            hop.task_headers &= same_origin;
            // RFC 9110 §15.4 as browsers apply it: 303 turns anything but HEAD into a GET without a
            // body, and so do 301 and 302 for a POST; 307 and 308 repeat the request as it was.
            let to_get = match status.as_u16() {
                303 => hop.method != reqwest::Method::HEAD,
                301 | 302 => hop.method == reqwest::Method::POST,
                _ => false,
            };
            if to_get {
                hop.method = reqwest::Method::GET;
                hop.body = None;
            }
            hop.url = target;
        };
        let status = response.status();
        let at = shown_url(response.url());
        let mut response = response;
        let mut tail = Tail::new(limit);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => tail.push(&chunk),
                Ok(None) => break,
                Err(error) => {
                    return Err(TaskError::new(format!(
                        "reading the response of {at} failed after status {status}: {}",
                        describe(error, secrets)
                    )))
                }
            }
        }
        // A tail may begin inside a secret the server quoted: its end is masked too.
        let body = tail.text();
        let body = match body.strip_prefix('…') {
            Some(rest) => format!("…{}", secrets.scrub_tail(rest)),
            None => secrets.scrub(&body),
        };
        Ok((status, at, body))
    };
    let (status, at, body) = tokio::select! {
        outcome = exchange => outcome?,
        () = context.cancellation.cancelled() => {
            return Err(TaskError::new(format!("cancelled; request to {shown} aborted")));
        }
    };
    let expected = if expect_status.is_empty() {
        status.is_success()
    } else {
        expect_status.contains(&status.as_u16())
    };
    if expected {
        Ok(json!({ "status": status.as_u16(), "body": body }))
    } else {
        let hint = if status.is_redirection() && redirects == Redirects::None {
            " (http.redirects = \"none\": redirects are not followed)"
        } else {
            ""
        };
        Err(TaskError::new(format!(
            "unexpected status {status} from {at}{hint}; body: {}",
            one_line(&body)
        )))
    }
}

/// The handler of a task spec: runs its action with its context.
pub fn handler(
    spec: &TaskSpec,
    client: reqwest::Client,
) -> impl Fn(TaskContext) -> futures_like::BoxedRun + Send + Sync + 'static {
    let spec = Arc::new(spec.clone());
    let secrets = Arc::new(http_secrets(&spec.action));
    move |context: TaskContext| {
        let spec = spec.clone();
        let client = client.clone();
        let secrets = secrets.clone();
        Box::pin(async move {
            match &spec.action {
                Action::Command {
                    argv,
                    workdir,
                    env,
                    inherit_env,
                    kill_grace,
                } => {
                    run_command(
                        context,
                        argv,
                        workdir.as_deref(),
                        env,
                        inherit_env,
                        *kill_grace,
                        spec.output_limit,
                    )
                    .await
                }
                Action::Http {
                    method,
                    url,
                    headers,
                    body,
                    expect_status,
                    redirects,
                } => {
                    run_http(
                        context,
                        client,
                        method,
                        url,
                        headers,
                        body.as_deref(),
                        expect_status,
                        *redirects,
                        &secrets,
                        spec.output_limit,
                    )
                    .await
                }
            }
        })
    }
}

/// The boxed future type of a handler.
pub mod futures_like {
    use fleetcron::{TaskError, Value};
    use std::future::Future;
    use std::pin::Pin;

    /// A handler's run.
    pub type BoxedRun = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send + 'static>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_drop_userinfo_query_values_and_fragments() {
        let url =
            reqwest::Url::parse("https://user:pa%40ss@api.example:8443/v1/x?token=abc&mode=fast#frag").expect("URL");
        assert_eq!(shown_url(&url), "https://api.example:8443/v1/x?token=***&mode=***");
        let url = reqwest::Url::parse("http://h/p").expect("URL");
        assert_eq!(shown_url(&url), "http://h/p");
        let long = reqwest::Url::parse(&format!("http://h/{}", "a".repeat(10_000))).expect("URL");
        assert!(shown_url(&long).len() < 200);
    }

    #[test]
    fn http_secrets_cover_userinfo_query_values_and_headers() {
        let action = Action::Http {
            method: "GET".into(),
            url: "http://someuser:pw@h/x?token=t0k&long=verylongvalue&n=1".into(),
            headers: vec![
                ("Authorization".into(), "Bearer b3arer-token".into()),
                ("X-Api-Key".into(), "k".into()),
                ("X-Extra".into(), "1".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: None,
            expect_status: Vec::new(),
            redirects: Redirects::default(),
        };
        let secrets = http_secrets(&action);
        let scrubbed =
            secrets.scrub("someuser pw t0k verylongvalue b3arer-token Bearer b3arer-token k 1 application/json");
        assert_eq!(scrubbed, "*** *** *** *** *** *** *** 1 application/json");
    }

    #[test]
    fn basic_credentials_are_secrets() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let action = Action::Http {
            method: "GET".into(),
            url: "http://Aladdin:open%20sesame@h/".into(),
            headers: Vec::new(),
            body: None,
            expect_status: Vec::new(),
            redirects: Redirects::default(),
        };
        let echoed = "authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==";
        assert_eq!(http_secrets(&action).scrub(echoed), "authorization: Basic ***");
    }

    #[test]
    fn tails_keep_the_end() {
        let mut tail = Tail::new(4);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.text(), "…defg");
        let mut short = Tail::new(10);
        short.push(b"hi");
        assert_eq!(short.text(), "hi");
    }
}
