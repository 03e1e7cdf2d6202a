//! The dashboard in headless Chromium, driven over WebDriver (chromedriver): log in with the admin
//! token, see a `<script>` description rendered as text, trigger a task and see its run appear, disable a
//! task with a note, log in with the read token and find no write button, and fit a narrow window.
//!
//! The WebDriver client is the dozen W3C WebDriver calls this test needs, over `reqwest` (already a
//! dependency of the workspace) rather than a client crate: nothing to keep in step with chromedriver
//! beyond the standard protocol, and no second HTTP stack to build.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (`.ci/run` installs them);
//! when they are missing the test is skipped loudly, and fails under `FLEETCRON_REQUIRE_SERVICES=1`.
//! With `FLEETCRON_SCREENSHOT_DIR=DIR` the test saves `dashboard.png` and `dashboard-task.png` there
//! (the README's, in `docs/`).

use crate::support::*;
use fleetcron_admin::AdminOptions;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&paths).chain([PathBuf::from("/usr/lib/chromium")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session.
struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let value: Value = response.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "WebDriver {method} {path}: {status}: {value}");
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Every element matching `css` now.
    async fn all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it up to 20 s.
    async fn wait_for(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(first) = self.all(css).await.into_iter().next() {
                return first;
            }
            let page = self.run("return document.body.innerText").await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {css} within 20 s; page:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        decode_base64(encoded.as_str().expect("base64 text"))
    }

    async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    async fn log_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/")).await;
        self.run("sessionStorage.clear()").await;
        self.goto(&format!("{base}/")).await;
        self.type_into("#token", token).await;
        self.click("#login-button").await;
        self.wait_for("table#tasks").await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for digit in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | u32::from(digit);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xFF) as u8);
        }
    }
    out
}

async fn start_driver() -> Option<(Driver, PathBuf)> {
    let driver = find_binary("FLEETCRON_CHROMEDRIVER", &["chromedriver"]);
    let browser = find_binary("FLEETCRON_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let (Some(driver), Some(browser)) = (driver, browser) else {
        let reason = "chromium and chromedriver were not found (apt-get install chromium chromium-driver)";
        if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
            panic!("the browser test is required (FLEETCRON_REQUIRE_SERVICES=1) but {reason}");
        }
        eprintln!("\n*** SKIPPED the dashboard's browser test: {reason}\n");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", driver.display()));
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    eventually(20, "chromedriver to answer", || {
        let http = http.clone();
        let url = format!("{}/status", driver.base);
        async move {
            let response = http.get(url).send().await.ok()?;
            let status: Value = response.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        }
    })
    .await;
    Some((driver, browser))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium() {
    let Some((driver, browser)) = start_driver().await else {
        return;
    };
    let store = TestStore::new(Backend::Sqlite);
    let served = Served::start(&store.url, tasks(), AdminOptions::new(auth()).title("test fleet")).await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/session", driver.base))
        .json(&json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--window-size=1400,900"]
            }
        }}}))
        .send()
        .await
        .expect("chromedriver answers")
        .json()
        .await
        .expect("a session");
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    let session = Session {
        http: http.clone(),
        url: format!("{}/session/{id}", driver.base),
    };

    // Without a token the page asks for one; a wrong one is refused.
    session.goto(&format!("{base}/")).await;
    session.wait_for("form#login:not([hidden])").await;
    session.type_into("#token", "wrong-token-0123456789").await;
    session.click("#login-button").await;
    eventually(10, "the login error", || async {
        let text = session.text("#login-error").await;
        (!text.is_empty()).then_some(())
    })
    .await;

    // Admin: the table, with the markup description shown as text and nothing of it executed.
    session.log_in(&base, ADMIN).await;
    assert_eq!(session.text("#role").await, "admin");
    let description = session.text("tr[data-task-row=\"xss\"] .desc").await;
    assert_eq!(description, XSS);
    assert_eq!(session.run("return window.__xss === undefined").await, json!(true));
    assert_eq!(
        session
            .run("return document.querySelectorAll('#tasks .desc *').length")
            .await,
        json!(0),
        "the description made elements"
    );
    assert!(!session
        .all("button[data-action=\"trigger\"][data-task=\"report\"]")
        .await
        .is_empty());

    // Trigger from the task page; the run appears in the history by the live refresh.
    session.goto(&format!("{base}/?task=report")).await;
    session.wait_for("#task-title").await;
    assert!(session.all("tr.run").await.is_empty(), "no run yet");
    session.click("button[data-action=\"trigger\"]").await;
    session.wait_for("tr.run[data-status=\"succeeded\"]").await;
    assert!(session.text("tr.run").await.contains("manual"));

    // Disable with a note: the page shows it disabled with the note, and offers Enable instead.
    session.type_into("#note", "vendor maintenance <i>tonight</i>").await;
    session.click("button[data-action=\"disable\"]").await;
    session.wait_for("button[data-action=\"enable\"]").await;
    let note = session.text(".note").await;
    assert!(note.contains("vendor maintenance <i>tonight</i>"), "{note}");
    assert!(session.all("button[data-action=\"trigger\"]").await.is_empty());
    let client = Client::new(&base);
    assert_eq!(client.get("/api/tasks/report", Some(READ)).await.1["enabled"], false);

    // Charts on a task with slot runs: let every-second run a few times, then look.
    eventually(20, "three runs of every-second", || async {
        let (_, page) = client
            .get("/api/tasks/every-second/runs?status=succeeded", Some(READ))
            .await;
        (page["runs"].as_array().map_or(0, Vec::len) >= 3).then_some(())
    })
    .await;
    session.goto(&format!("{base}/?task=every-second")).await;
    session.wait_for("#lag-chart svg polyline").await;
    session.wait_for("#duration-chart svg polyline").await;
    let task_page = session.screenshot().await;

    // The list, for the README.
    session.goto(&format!("{base}/")).await;
    session.wait_for("table#tasks").await;
    let list = session.screenshot().await;
    assert!(
        list.starts_with(b"\x89PNG") && task_page.starts_with(b"\x89PNG"),
        "screenshots are PNG"
    );
    if let Some(dir) = std::env::var_os("FLEETCRON_SCREENSHOT_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::write(dir.join("dashboard.png"), &list).expect("save the screenshot");
        std::fs::write(dir.join("dashboard-task.png"), &task_page).expect("save the screenshot");
    }

    // A narrow window: nothing overflows the page sideways.
    session.resize(400, 900).await;
    let overflow = session
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 1),
        "the page overflows a narrow window by {overflow} px"
    );
    session.resize(1400, 900).await;

    // Read token: the same pages without a single write control.
    session.click("#logout").await;
    session.wait_for("form#login:not([hidden])").await;
    session.log_in(&base, READ).await;
    assert_eq!(session.text("#role").await, "read");
    assert!(
        session.all("button[data-action]").await.is_empty(),
        "a read token sees write buttons"
    );
    session.goto(&format!("{base}/?task=report")).await;
    session.wait_for("#task-title").await;
    assert!(session.all("button[data-action]").await.is_empty());
    assert!(session.all("#note").await.is_empty());
    // And the API refuses the write anyway.
    assert_eq!(client.post("/api/tasks/report/enable", Some(READ), None).await.0, 403);

    session.call(reqwest::Method::DELETE, "", None).await;
    served.stop().await;
    drop(driver);
}
