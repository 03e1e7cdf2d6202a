//! What a daemon task may not leak: an HTTP task's headers never reach another origin (redirects are
//! followed within the origin by default, without the headers with `redirects = "any"`), its URL's
//! userinfo and query values and its header values are in no stored error or result; a command task
//! does not see fleetcron's own `FLEETCRON_*` environment (`inherit_env`).

use crate::common::{wait_with_deadline, BIN};
use crate::daemon_support::{runs, sqlite_url, wait_until, write_config, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as a server saw it: the request line, the header block and the body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    head: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads one request (headers, then the body by Content-Length).
fn read_request(stream: &mut std::net::TcpStream) -> Option<Seen> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|value| value.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let (head, body) = text.split_at(end);
                return Some(Seen {
                    line: head.lines().next().unwrap_or_default().to_owned(),
                    head: head.to_owned(),
                    body: body[4..].to_owned(),
                });
            }
        }
    }
}

/// A local HTTP server on 127.0.0.1 answering by `route(request line, head)` → (status line, extra
/// headers, body); every request is logged.
fn serve(route: impl Fn(&str, &str) -> (String, String, String) + Send + Sync + 'static) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let route = Arc::new(route);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            let route = route.clone();
            std::thread::spawn(move || {
                let Some(request) = read_request(&mut stream) else {
                    return;
                };
                let (status, headers, body) = route(&request.line, &request.head);
                seen.lock().expect("lock").push(request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, log)
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn finished(url: &str, id: &str) -> Option<Value> {
    runs(url, id)
        .into_iter()
        .find(|run| matches!(run["status"].as_str(), Some("succeeded" | "failed")))
}

const SECRETS: [&str; 4] = ["UsErSeCrEt", "QuErYsEcReT", "KeYsEcReT1", "AuThSeCrEt"];

#[test]
fn http_redirects_keep_headers_in_their_origin_and_no_secret_is_stored() {
    let (other_port, other_log) = serve(|line, _| {
        if line.contains("/landing") {
            ("200 OK".into(), String::new(), "landed".into())
        } else {
            ("404 Not Found".into(), String::new(), String::new())
        }
    });
    let (port, log) = serve(move |line, head| {
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let redirect = |status: &str, to: String| (status.to_owned(), format!("location: {to}\r\n"), String::new());
        match path.split('?').next().unwrap_or_default() {
            "/same" => redirect("302 Found", "/final?token=QuErYsEcReT".into()),
            "/final" => ("200 OK".into(), String::new(), "final".into()),
            "/cross" => redirect(
                "302 Found",
                format!("http://127.0.0.1:{other_port}/landing?token=QuErYsEcReT"),
            ),
            "/see-other" => redirect("303 See Other", format!("http://127.0.0.1:{other_port}/landing")),
            "/loop" => redirect("302 Found", "/loop".into()),
            // An error page that quotes the request back, credentials and all.
            "/echo" => (
                "500 Internal Server Error".into(),
                String::new(),
                head.replace("\r\n", " | "),
            ),
            _ => ("404 Not Found".into(), String::new(), String::new()),
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir.path().join("s.db"));
    let base = format!("http://someone:UsErSeCrEt@127.0.0.1:{port}");
    let headers = r#"headers = { X-Api-Key = "KeYsEcReT1", Authorization = "Bearer AuThSeCrEt" }"#;
    let closed = closed_port();
    let config = write_config(
        dir.path(),
        "h.toml",
        &format!(
            r#"
store = "{url}"
[engine]
poll_interval = "100ms"
[[task]]
id = "same"
schedule = "* * * * * *"
http = {{ url = "{base}/same?token=QuErYsEcReT", {headers} }}
[[task]]
id = "cross.default"
schedule = "* * * * * *"
http = {{ url = "{base}/cross?token=QuErYsEcReT", {headers} }}
[[task]]
id = "cross.any"
schedule = "* * * * * *"
http = {{ url = "{base}/cross?token=QuErYsEcReT", {headers}, redirects = "any" }}
[[task]]
id = "see-other"
schedule = "* * * * * *"
http = {{ method = "POST", body = "payload", url = "{base}/see-other", {headers}, redirects = "any" }}
[[task]]
id = "none"
schedule = "* * * * * *"
http = {{ url = "{base}/same?token=QuErYsEcReT", {headers}, redirects = "none" }}
[[task]]
id = "loop"
schedule = "* * * * * *"
http = {{ url = "{base}/loop?token=QuErYsEcReT", {headers} }}
[[task]]
id = "echo"
schedule = "* * * * * *"
http = {{ url = "{base}/echo?token=QuErYsEcReT", {headers} }}
[[task]]
id = "refused"
schedule = "* * * * * *"
http = {{ url = "http://someone:UsErSeCrEt@127.0.0.1:{closed}/x?token=QuErYsEcReT", {headers} }}
"#
        ),
    );
    let ids = [
        "same",
        "cross.default",
        "cross.any",
        "see-other",
        "none",
        "loop",
        "echo",
        "refused",
    ];
    let daemon = Daemon::start(dir.path(), &config, "redirects");
    wait_until(Duration::from_secs(20), "a finished run of every task", || {
        ids.iter().all(|id| finished(&url, id).is_some())
    });
    let log_text = daemon.stop();

    let outcome = |id: &str| finished(&url, id).unwrap_or_default();
    let error = |id: &str| outcome(id)["error"].as_str().unwrap_or_default().to_owned();
    // Same origin: followed, with the headers (the Authorization from the userinfo as well).
    assert_eq!(outcome("same")["status"], "succeeded", "{}", outcome("same"));
    assert_eq!(outcome("same")["result"]["body"], "final");
    let seen = log.lock().expect("lock").clone();
    let finals: Vec<&Seen> = seen.iter().filter(|request| request.line.contains("/final")).collect();
    assert!(!finals.is_empty());
    for request in &finals {
        assert!(request.head.contains("KeYsEcReT1"), "{request:?}");
    }
    // Another origin: refused by default, naming the target without its query value.
    let refused = error("cross.default");
    assert_eq!(outcome("cross.default")["status"], "failed");
    assert!(
        refused.contains(&format!(
            "redirect to another origin, http://127.0.0.1:{other_port}/landing?token=***"
        )) && refused.contains("http.redirects"),
        "{refused}"
    );
    // redirects = "any": followed, without the task's headers; a 303 drops the POST body too.
    assert_eq!(outcome("cross.any")["status"], "succeeded", "{}", outcome("cross.any"));
    assert_eq!(outcome("cross.any")["result"]["body"], "landed");
    assert_eq!(outcome("see-other")["status"], "succeeded", "{}", outcome("see-other"));
    let landed = other_log.lock().expect("lock").clone();
    assert!(landed.len() >= 2, "{landed:?}");
    for request in &landed {
        let head = request.head.to_ascii_lowercase();
        assert!(request.line.starts_with("GET "), "{request:?}");
        assert!(request.body.is_empty(), "{request:?}");
        assert!(
            !head.contains("x-api-key") && !head.contains("authorization"),
            "{request:?}"
        );
        for secret in ["UsErSeCrEt", "KeYsEcReT1", "AuThSeCrEt"] {
            assert!(!request.head.contains(secret), "{request:?}");
        }
    }
    // redirects = "none": the 302 is the answer.
    assert!(
        error("none").contains("unexpected status 302 Found"),
        "{}",
        error("none")
    );
    assert!(
        error("none").contains("redirects are not followed"),
        "{}",
        error("none")
    );
    assert!(error("loop").contains("more than 10 redirects"), "{}", error("loop"));
    assert!(
        error("refused").contains(&format!("request to http://127.0.0.1:{closed}/x?token=***")),
        "{}",
        error("refused")
    );
    assert!(error("echo").contains("unexpected status 500"), "{}", error("echo"));
    // No secret in any stored run or log line.
    let mut stored = String::new();
    for id in ids {
        stored.push_str(&serde_json::to_string(&runs(&url, id)).expect("JSON"));
    }
    for secret in SECRETS {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
        assert!(!log_text.contains(secret), "{secret} logged: {log_text}");
    }
}

/// Starts `fleetcron run` with exactly this environment (plus PATH and HOME).
fn start_with_env(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Child {
    let log = File::create(dir.join("env-daemon.log")).expect("log");
    let mut command = Command::new(BIN);
    command
        .args(["run", "--config"])
        .arg(config)
        .args(["--worker-id", "env-test"])
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .envs(std::env::var_os("HOME").map(|home| ("HOME", home)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("spawn fleetcron run")
}

fn variables(run: &Value) -> BTreeMap<String, String> {
    run["result"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn command_tasks_do_not_inherit_fleetcrons_own_environment() {
    const SENTINEL: &str = "EnVsEnTiNeL";
    let dir = tempfile::tempdir().expect("tempdir");
    // FLEETCRON_STORE is the daemon's store (it holds a password in real deployments): a path naming
    // the sentinel stands in for one.
    let store_dir = dir.path().join(SENTINEL);
    std::fs::create_dir(&store_dir).expect("store dir");
    let url = sqlite_url(&store_dir.join("s.db"));
    let config = write_config(
        dir.path(),
        "e.toml",
        r#"
[engine]
poll_interval = "100ms"
[[task]]
id = "default"
schedule = "* * * * * *"
command = ["env"]
[[task]]
id = "clean"
schedule = "* * * * * *"
command = ["/usr/bin/env"]
inherit_env = false
env = { TASK_VAR = "t" }
[[task]]
id = "listed"
schedule = "* * * * * *"
shell = "env"
inherit_env = ["DAEMON_VAR", "NOT_SET_ANYWHERE"]
"#,
    );
    let mut child = start_with_env(
        dir.path(),
        &config,
        &[
            ("FLEETCRON_STORE", &url),
            ("FLEETCRON_OTHER", SENTINEL),
            ("DAEMON_VAR", "daemon"),
        ],
    );
    let done = || {
        ["default", "clean", "listed"]
            .iter()
            .all(|id| finished(&url, id).is_some())
    };
    let waited = std::panic::catch_unwind(|| wait_until(Duration::from_secs(20), "every task's run", done));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20), "daemon");
    let log = std::fs::read_to_string(dir.path().join("env-daemon.log")).unwrap_or_default();
    assert!(waited.is_ok(), "the runs did not finish; daemon log:\n{log}");
    assert_eq!(status.code(), Some(0), "{log}");

    let run = |id: &str| finished(&url, id).unwrap_or_default();
    for id in ["default", "clean", "listed"] {
        let run = run(id);
        assert_eq!(run["status"], "succeeded", "{run}");
        let text = run.to_string();
        assert!(!text.contains(SENTINEL), "{id}: {text}");
        let vars = variables(&run);
        assert!(
            !vars.contains_key("FLEETCRON_STORE") && !vars.contains_key("FLEETCRON_OTHER"),
            "{id}: {vars:?}"
        );
        assert_eq!(vars.get("FLEETCRON_TASK_ID").map(String::as_str), Some(id), "{vars:?}");
        assert!(vars.contains_key("FLEETCRON_RUN_ID"), "{vars:?}");
    }
    // Default: everything else of the daemon's environment.
    let default = variables(&run("default"));
    assert_eq!(default.get("DAEMON_VAR").map(String::as_str), Some("daemon"));
    assert!(default.contains_key("PATH"), "{default:?}");
    // false: the task's env and the run's variables only.
    let clean = variables(&run("clean"));
    let names: Vec<&str> = clean.keys().map(String::as_str).collect();
    assert!(
        names
            .iter()
            .all(|name| name.starts_with("FLEETCRON_") || *name == "TASK_VAR"),
        "{names:?}"
    );
    // A list: those names (when set), nothing else of the daemon's.
    let listed = variables(&run("listed"));
    assert_eq!(listed.get("DAEMON_VAR").map(String::as_str), Some("daemon"));
    assert!(
        !listed.contains_key("HOME") && !listed.contains_key("NOT_SET_ANYWHERE"),
        "{listed:?}"
    );
}
