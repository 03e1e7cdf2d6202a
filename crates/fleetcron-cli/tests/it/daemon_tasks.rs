//! Command and HTTP tasks run by `fleetcron run`: exit codes, environment, bounded output, timeouts that
//! kill the whole process group (even when it ignores SIGTERM), HTTP success, unexpected status and
//! timeout against a local server on 127.0.0.1.

use crate::daemon_support::{admin_json, runs, sqlite_url, wait_until, write_config, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn pgrep(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

fn finished_with(url: &str, id: &str, status: &str) -> Option<Value> {
    runs(url, id).into_iter().find(|run| run["status"] == status)
}

#[test]
fn command_tasks_exit_codes_env_output_and_process_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let url = sqlite_url(&dir.path().join("s.db"));
    let config = write_config(
        dir.path(),
        "c.toml",
        &format!(
            r#"
store = "{url}"
[engine]
poll_interval = "100ms"
lease = "3s"
[[task]]
id = "env"
schedule = "* * * * * *"
shell = "env | grep -E '^(FLEETCRON_|MY_VAR)' | sort > {d}/env-$FLEETCRON_RUN_ID.txt; pwd >> {d}/env-$FLEETCRON_RUN_ID.txt"
env = {{ MY_VAR = "hello world" }}
workdir = "/tmp"
params = {{ n = 3 }}
[[task]]
id = "manual"
schedule = "0 0 1 1 *"
shell = "printf '%s' \"$FLEETCRON_SLOT\" > {d}/manual-slot.txt"
[[task]]
id = "ok"
schedule = "* * * * * *"
command = ["/bin/echo", "hello", "argv"]
[[task]]
id = "exit3"
schedule = "* * * * * *"
shell = "echo to-out; echo to-err >&2; exit 3"
[[task]]
id = "big"
schedule = "* * * * * *"
shell = "head -c 20000 /dev/zero | tr '\\0' x; echo; echo END"
output_limit = 100
[[task]]
id = "hang"
schedule = "* * * * * *"
shell = "sleep 41.25 & sleep 41.25 & sleep 41.25; echo never"
timeout = "1500ms"
kill_grace = "1s"
[[task]]
id = "stubborn"
schedule = "* * * * * *"
shell = "trap '' TERM; sleep 42.25 & sleep 42.25; echo never"
timeout = "1500ms"
kill_grace = "500ms"
"#
        ),
    );
    let daemon = Daemon::start(dir.path(), &config, "cmd1");
    // The hanging groups exist while they run…
    wait_until(Duration::from_secs(15), "the hanging commands to start", || {
        pgrep("sleep 41.25") && pgrep("sleep 42.25")
    });
    wait_until(Duration::from_secs(15), "timed-out runs", || {
        finished_with(&url, "hang", "timed_out").is_some() && finished_with(&url, "stubborn", "timed_out").is_some()
    });
    let trigger = crate::common::run(
        &["tasks", "trigger", "manual", "--store", &url],
        Duration::from_secs(20),
    );
    assert_eq!(trigger.code(), Some(0), "{}", trigger.stderr);
    wait_until(Duration::from_secs(10), "the manual run", || {
        dir.path().join("manual-slot.txt").exists()
    });
    let log = daemon.stop();
    // …and none of their processes survives the run (nor the daemon).
    assert!(!pgrep("sleep 41.25"), "a child of the timed-out group survived");
    assert!(!pgrep("sleep 42.25"), "a child that ignored SIGTERM survived");

    let ok = finished_with(&url, "ok", "succeeded").expect("ok succeeded");
    assert_eq!(ok["result"]["exit_code"], 0);
    assert_eq!(ok["result"]["stdout"], "hello argv\n");
    assert_eq!(ok["result"]["stderr"], "");

    let failed = finished_with(&url, "exit3", "failed").expect("exit3 failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit code 3") && error.contains("to-err") && error.contains("to-out"),
        "{error}"
    );

    let big = finished_with(&url, "big", "succeeded").expect("big succeeded");
    let stdout = big["result"]["stdout"].as_str().unwrap_or_default();
    assert!(stdout.starts_with('…') && stdout.ends_with("x\nEND\n"), "{stdout}");
    assert!(stdout.len() <= 100 + '…'.len_utf8(), "{} bytes kept", stdout.len());

    let hang = finished_with(&url, "hang", "timed_out").expect("hang timed out");
    assert!(hang["error"].as_str().unwrap_or_default().contains("timeout"), "{hang}");

    // Environment of a scheduled run.
    let env_run = finished_with(&url, "env", "succeeded").expect("env succeeded");
    let run_id = env_run["run_id"].as_str().expect("run id");
    let text = std::fs::read_to_string(dir.path().join(format!("env-{run_id}.txt"))).expect("env file");
    let vars: BTreeMap<&str, &str> = text.lines().filter_map(|line| line.split_once('=')).collect();
    assert_eq!(vars.get("FLEETCRON_TASK_ID"), Some(&"env"));
    assert_eq!(vars.get("FLEETCRON_RUN_ID"), Some(&run_id));
    let slot: chrono::DateTime<chrono::Utc> = vars["FLEETCRON_SLOT"].parse().expect("RFC 3339 slot");
    let stored: chrono::DateTime<chrono::Utc> = env_run["slot"].as_str().expect("slot").parse().expect("slot");
    assert_eq!(slot, stored);
    assert_eq!(
        vars.get("FLEETCRON_FENCE").map(|f| f.to_string()),
        Some(env_run["fence"].to_string())
    );
    assert_eq!(vars.get("FLEETCRON_ATTEMPT"), Some(&"1"));
    assert_eq!(vars.get("FLEETCRON_PARAMS"), Some(&"{\"n\":3}"));
    assert_eq!(vars.get("MY_VAR"), Some(&"hello world"));
    assert!(text.lines().any(|line| line == "/tmp"), "workdir: {text}");

    // A manual run has an empty slot.
    let manual = std::fs::read_to_string(dir.path().join("manual-slot.txt")).expect("manual file");
    assert_eq!(manual, "");
    assert!(log.contains("terminating its process group"), "{log}");
}

/// A tiny HTTP/1.1 server: `/ok` → 200 "fine", `/teapot` → 418, `/slow` → answers after 20 s.
/// Records each request's first line, the task header and the body.
/// Params too large for the environment (Linux refuses an environment string over 128 KiB, so the
/// run could never start) are handed through a private file, removed after the run.
#[test]
fn large_params_reach_the_command_through_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let url = sqlite_url(&dir.path().join("s.db"));
    let blob = "p".repeat(300 * 1024);
    let config = write_config(
        dir.path(),
        "c.toml",
        &format!(
            r#"
store = "{url}"
[engine]
poll_interval = "100ms"
[[task]]
id = "large"
schedule = "* * * * * *"
shell = "test -z \"$FLEETCRON_PARAMS\" && wc -c < \"$FLEETCRON_PARAMS_FILE\" && stat -c %a \"$FLEETCRON_PARAMS_FILE\" && echo $FLEETCRON_PARAMS_FILE > {d}/params-path.txt"
params = {{ blob = "{blob}" }}
[[task]]
id = "small"
schedule = "* * * * * *"
shell = "printf '%s' \"$FLEETCRON_PARAMS\"; test -z \"$FLEETCRON_PARAMS_FILE\""
params = {{ n = 1 }}
"#
        ),
    );
    let daemon = Daemon::start(dir.path(), &config, "params");
    wait_until(Duration::from_secs(15), "both tasks to run", || {
        finished_with(&url, "large", "succeeded").is_some() && finished_with(&url, "small", "succeeded").is_some()
    });
    let log = daemon.stop();
    let large = finished_with(&url, "large", "succeeded").expect("large succeeded");
    let stdout = large["result"]["stdout"].as_str().unwrap_or_default().to_owned();
    let expected_bytes = serde_json::json!({ "blob": blob }).to_string().len();
    assert_eq!(stdout, format!("{expected_bytes}\n600\n"), "{log}");
    let path = std::fs::read_to_string(dir.path().join("params-path.txt")).expect("the path");
    assert!(
        !std::path::Path::new(path.trim()).exists(),
        "the params file is removed after the run"
    );
    let small = finished_with(&url, "small", "succeeded").expect("small succeeded");
    assert_eq!(small["result"]["stdout"], "{\"n\":1}");
}

fn serve(requests: Arc<Mutex<Vec<(String, String, String)>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let requests = requests.clone();
            std::thread::spawn(move || {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Read headers, then the body by Content-Length.
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&data).to_string();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let first = head.lines().next().unwrap_or_default().to_owned();
                let task = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("x-fleetcron-task-id:")
                            .map(|v| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                requests
                    .lock()
                    .expect("lock")
                    .push((first.clone(), task, body.to_owned()));
                let (status, reply) = if first.contains("/ok") {
                    ("200 OK", "fine")
                } else if first.contains("/teapot") {
                    ("418 I'm a teapot", "short and stout")
                } else {
                    std::thread::sleep(Duration::from_secs(20));
                    ("200 OK", "late")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    port
}

#[test]
fn http_tasks_success_unexpected_status_and_timeout() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let port = serve(requests.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir.path().join("s.db"));
    let config = write_config(
        dir.path(),
        "h.toml",
        &format!(
            r#"
store = "{url}"
[engine]
poll_interval = "100ms"
[[task]]
id = "h.ok"
schedule = "* * * * * *"
http = {{ method = "POST", url = "http://127.0.0.1:{port}/ok", body = "payload", headers = {{ X-Extra = "1" }}, expect_status = [200, 204] }}
[[task]]
id = "h.teapot"
schedule = "* * * * * *"
http = {{ url = "http://127.0.0.1:{port}/teapot" }}
[[task]]
id = "h.slow"
schedule = "* * * * * *"
http = {{ url = "http://127.0.0.1:{port}/slow" }}
timeout = "1s"
"#
        ),
    );
    let daemon = Daemon::start(dir.path(), &config, "http1");
    wait_until(Duration::from_secs(15), "the three outcomes", || {
        finished_with(&url, "h.ok", "succeeded").is_some()
            && finished_with(&url, "h.teapot", "failed").is_some()
            && finished_with(&url, "h.slow", "timed_out").is_some()
    });
    daemon.stop();
    let ok = finished_with(&url, "h.ok", "succeeded").expect("ok");
    assert_eq!(ok["result"], serde_json::json!({ "status": 200, "body": "fine" }));
    let teapot = finished_with(&url, "h.teapot", "failed").expect("teapot");
    let error = teapot["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unexpected status 418") && error.contains("short and stout"),
        "{error}"
    );
    let requests = requests.lock().expect("lock").clone();
    assert!(
        requests
            .iter()
            .any(|(first, task, body)| first.starts_with("POST /ok") && task == "h.ok" && body == "payload"),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|(first, _, _)| first.starts_with("GET /teapot")),
        "{requests:?}"
    );
    let report = admin_json(&["tasks", "show", "h.slow"], &url);
    assert_eq!(report["id"], "h.slow");
}
