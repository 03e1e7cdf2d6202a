//! The admin HTTP surface in the binary: `fleetcron run` with `[admin]` serves the API, the dashboard
//! and `/metrics` with the engine's metrics; tokens come from the environment and never reach the log;
//! `fleetcron serve` refuses a public address without a token.

use crate::common::{run, wait_with_deadline, BIN};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READ: &str = "daemon-read-token-0123456789";
const ADMIN: &str = "daemon-admin-token-0123456789";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut command = vec!["serve", "--store", url.as_str(), "--listen", "0.0.0.0:0"];
    let output = run(&command, Duration::from_secs(30));
    assert_eq!(output.code(), Some(2), "{output:?}");
    assert!(
        output
            .stderr
            .contains("refusing to serve the admin API on 0.0.0.0:0 without a token"),
        "{}",
        output.stderr
    );
    // A token given where `ps` would show it is not an option at all.
    command.extend(["--token", ADMIN]);
    let output = run(&command, Duration::from_secs(30));
    assert_eq!(output.code(), Some(2), "{output:?}");
    assert!(!output.stderr.contains(ADMIN), "{}", output.stderr);
}

#[test]
fn the_daemon_serves_api_dashboard_and_metrics_from_its_admin_table() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = dir.path().join("fleetcron.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"sqlite://{}\"\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[task]]\nid = \"tick\"\nschedule = \"* * * * * *\"\ndescription = \"<b>every second</b>\"\nshell = \"true\"\n",
            dir.path().join("d.db").display()
        ),
    )
    .expect("write the config");
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("FLEETCRON_ADMIN_TOKEN", ADMIN)
        .env("FLEETCRON_READ_TOKEN", READ)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("daemon.out")).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn the daemon");
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        runtime.block_on(async move {
            match request.send().await {
                Ok(response) => Some((response.status().as_u16(), response.text().await.unwrap_or_default())),
                Err(_) => None,
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait until a run has started and the metrics show it.
    let metrics = loop {
        assert!(
            Instant::now() < deadline,
            "no metrics within 30 s; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Some((200, text)) = get("/metrics", Some(READ)) {
            if text.contains("fleetcron_runs_started_total{task=\"tick\",store=\"sqlite\",kind=\"scheduled\"}") {
                break text;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("fleetcron_start_lag_seconds_bucket"), "{metrics}");
    assert_eq!(get("/healthz", None).map(|(code, _)| code), Some(200));
    assert_eq!(get("/api/tasks", None).map(|(code, _)| code), Some(401));
    let (code, tasks) = get("/api/tasks", Some(READ)).expect("answer");
    assert_eq!(code, 200, "{tasks}");
    assert!(
        tasks.contains("\"id\":\"tick\"") && tasks.contains("Every second"),
        "{tasks}"
    );
    let (code, page) = get("/", None).expect("answer");
    assert_eq!(code, 200);
    assert!(page.contains("/assets/dashboard.js"), "{page}");
    // The shell is public: it names the kind of store, not its path, host or user.
    assert!(page.contains("sqlite store") && !page.contains("d.db"), "{page}");
    let (code, fragment) = get("/ui/tasks", Some(READ)).expect("answer");
    assert_eq!(code, 200);
    assert!(
        fragment.contains("&lt;b&gt;every second&lt;/b&gt;") && !fragment.contains("<b>every second"),
        "{fragment}"
    );
    crate::common::sigterm(&[child.id()]);
    let status = wait_with_deadline(&mut child, Duration::from_secs(20), "daemon");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{logged}");
    assert!(
        !logged.contains(ADMIN) && !logged.contains(READ),
        "a token reached the log:\n{logged}"
    );
    let out = std::fs::read_to_string(dir.path().join("daemon.out")).unwrap_or_default();
    assert!(out.contains(&format!("dashboard at http://127.0.0.1:{port}/")), "{out}");
}
