//! Process plumbing shared by the worker and the demo: shutdown signals, signalling child processes,
//! store URLs for files, and line output that never panics on a closed pipe.

use crate::CliError;
use std::io::Write;
use std::path::Path;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::oneshot;

/// The events that end a process: SIGINT (Ctrl-C), SIGTERM and, when asked, the end of stdin (the
/// parent that holds the other end of the pipe is gone).
pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
    stdin_closed: Option<oneshot::Receiver<()>>,
}

impl Shutdown {
    /// Installs the signal handlers now, so that a signal arriving before anyone waits is not lost.
    pub fn install(watch_stdin: bool) -> Result<Self, CliError> {
        let install = |kind: SignalKind, name: &str| {
            tokio::signal::unix::signal(kind)
                .map_err(|error| CliError::runtime(format!("cannot install the {name} handler: {error}")))
        };
        let interrupt = install(SignalKind::interrupt(), "SIGINT")?;
        let terminate = install(SignalKind::terminate(), "SIGTERM")?;
        let stdin_closed = watch_stdin.then(|| {
            let (sender, receiver) = oneshot::channel();
            // A plain thread, not tokio's stdin: a blocking read there would hold up runtime shutdown.
            std::thread::spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin().lock();
                loop {
                    match std::io::Read::read(&mut stdin, &mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = sender.send(());
            });
            receiver
        });
        Ok(Self {
            interrupt,
            terminate,
            stdin_closed,
        })
    }

    /// Waits for the next shutdown event and names it.
    pub async fn recv(&mut self) -> &'static str {
        let stdin_closed = async {
            match self.stdin_closed.as_mut() {
                Some(receiver) => {
                    let _ = receiver.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            () = stdin_closed => "stdin closed",
        }
    }
}

/// Sends SIGTERM to these processes.
pub async fn sigterm(pids: &[u32]) -> Result<(), String> {
    signal("TERM", pids).await
}

/// Sends the signal `name` (`TERM`, `STOP`, `CONT`, ...) to these processes, through `kill(1)`: this
/// crate forbids `unsafe`, hence no direct `kill(2)`.
pub async fn signal(name: &str, pids: &[u32]) -> Result<(), String> {
    if pids.is_empty() {
        return Ok(());
    }
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|error| format!("cannot run kill(1): {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pids:?} failed ({status})"))
    }
}

/// The `sqlite://` URL of a file, with the characters the URL parser treats specially escaped.
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            ' ' => url.push_str("%20"),
            other => url.push(other),
        }
    }
    url
}

/// Prints one line to stdout; a closed stdout is ignored (the reader went away, the work goes on).
pub fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Prints one line to stderr, ignoring a closed stderr.
pub fn warn(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_escape_special_characters() {
        assert_eq!(
            sqlite_url(Path::new("/tmp/a b/x%y?.db")),
            "sqlite:///tmp/a%20b/x%25y%3F.db"
        );
        assert_eq!(sqlite_url(Path::new("rel.db")), "sqlite://rel.db");
    }
}
