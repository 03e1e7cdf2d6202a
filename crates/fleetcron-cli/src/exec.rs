//! What a daemon task does when it runs: a child process in its own process group, or an HTTP request.
//!
//! Both watch the run's cancellation token (fired on timeout, lost lease, `cancel_previous` or shutdown).
//! A cancelled command gets SIGTERM on its whole process group, then SIGKILL after the task's
//! `kill_grace`; when the main process exits, whatever it left behind in its group is terminated too
//! (the run is over; like systemd's `KillMode=control-group`). Signals go through `kill(1)` because the
//! workspace forbids `unsafe`. Output is kept as bounded tails: the result is
//! `{"exit_code":0,"stdout":"…","stderr":"…"}` (or `{"status":200,"body":"…"}`), and a failure's error
//! text carries the same tails.

use crate::config::{Action, TaskSpec};
use fleetcron::{TaskContext, TaskError, Value};
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
        ("FLEETCRON_PARAMS", context.params.to_string()),
    ]
}

/// Runs a command task once.
pub async fn run_command(
    context: TaskContext,
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, String)],
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
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.envs(run_env(&context));
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

/// Runs an HTTP task once.
#[allow(clippy::too_many_arguments)]
pub async fn run_http(
    context: TaskContext,
    client: reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    expect_status: &[u16],
    limit: usize,
) -> Result<Value, TaskError> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|error| TaskError::new(format!("invalid method {method:?}: {error}")))?;
    let mut request = client
        .request(method, url)
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
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let exchange = async {
        let mut response = request
            .send()
            .await
            .map_err(|error| TaskError::new(format!("request to {url} failed: {error}")))?;
        let status = response.status();
        let mut tail = Tail::new(limit);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => tail.push(&chunk),
                Ok(None) => break,
                Err(error) => {
                    return Err(TaskError::new(format!(
                        "reading the response of {url} failed after status {status}: {error}"
                    )))
                }
            }
        }
        Ok((status, tail.text()))
    };
    let (status, body) = tokio::select! {
        outcome = exchange => outcome?,
        () = context.cancellation.cancelled() => {
            return Err(TaskError::new(format!("cancelled; request to {url} aborted")));
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
        Err(TaskError::new(format!(
            "unexpected status {status} from {url}; body: {}",
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
    move |context: TaskContext| {
        let spec = spec.clone();
        let client = client.clone();
        Box::pin(async move {
            match &spec.action {
                Action::Command {
                    argv,
                    workdir,
                    env,
                    kill_grace,
                } => run_command(context, argv, workdir.as_deref(), env, *kill_grace, spec.output_limit).await,
                Action::Http {
                    method,
                    url,
                    headers,
                    body,
                    expect_status,
                } => {
                    run_http(
                        context,
                        client,
                        method,
                        url,
                        headers,
                        body.as_deref(),
                        expect_status,
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
