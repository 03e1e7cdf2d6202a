//! Helpers shared by the integration tests: the binary, running it with a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fleetcron");

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn drain<R: Read + Send + 'static>(stream: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stream) = stream {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child`, killing it (and failing the test) after `timeout`.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait on a child") {
            Some(status) => return status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs `fleetcron ARGS` to completion (at most `timeout`; past it, the test fails showing the end of
/// what the command printed).
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the fleetcron binary");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait on a child") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = |text: String| text.lines().rev().take(60).collect::<Vec<_>>().join("\n");
                let out = tail(stdout.join().unwrap_or_default());
                let err = tail(stderr.join().unwrap_or_default());
                panic!(
                    "fleetcron {args:?} did not finish within {timeout:?}\nstdout (last lines, newest first):\n{out}\nstderr (newest first):\n{err}"
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Sends SIGTERM to these processes with kill(1) (the workspace forbids `unsafe`).
pub fn sigterm(pids: &[u32]) {
    let status = Command::new("kill")
        .arg("-TERM")
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -TERM {pids:?} failed: {status}");
}
