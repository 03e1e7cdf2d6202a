//! THE PROOF that no secret leaves the process (issue 10 §1).
//!
//! Every command — `migrate`, `tasks list|show|runs|trigger|enable|disable`, `run --check`, and the
//! daemon `run` with text and with JSON logs, running a command task (`env`) and HTTP tasks with the
//! sentinel in their URL and headers — is started with a sentinel password holding `/ ? # @ :` in each
//! server URL scheme (PostgreSQL, MySQL/MariaDB, Redis): percent-encoded in the userinfo (reachable: a
//! MariaDB user and a Redis ACL user are created with the sentinel as their password; PostgreSQL trusts),
//! as a `password=` parameter, unencoded in the userinfo, with a wrong password, and on a closed port.
//! The URL reaches the binary through `--store URL`, `--store=URL`, `FLEETCRON_STORE` and `store =` in
//! the file. The sentinel (every form of it contains its two marks) must be in no byte of stdout,
//! stderr, the daemons' logs, or the stored history read back with `tasks runs --json`.

use crate::common::{wait_with_deadline, BIN};
use crate::daemon_support::write_config;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The password: every character a URL could split it on.
const SENTINEL: &str = "Fc5entinel/q?h#a@c:Zx9Tail";
/// Every form of the sentinel (raw, %-encoded in either case, escaped) contains both.
const MARKS: [&str; 2] = ["Fc5entinel", "Zx9Tail"];

fn encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn services_required() -> bool {
    std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// A unique namespace for this run: schema, table prefix, key prefix and user names.
fn namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    format!("fc_leak_{tag}_{}_{nanos}", std::process::id())
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `scheme://[userinfo@]host:port/path` of a test server URL → (user, host:port, path).
fn split_server(url: &str) -> (String, String, String) {
    let (_, rest) = url.split_once("://").expect("the test URL has a scheme");
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (
            userinfo.split(':').next().unwrap_or_default().to_owned(),
            host.to_owned(),
        ),
        None => (String::new(), authority.to_owned()),
    };
    (user, host, path.to_owned())
}

/// Everything the commands wrote, labelled.
#[derive(Default)]
struct Transcript {
    entries: Mutex<Vec<(String, String)>>,
}

impl Transcript {
    fn record(&self, what: String, text: String) {
        self.entries.lock().expect("transcript").push((what, text));
    }

    /// The entries holding a mark of the sentinel.
    fn leaks(&self) -> Vec<String> {
        self.entries
            .lock()
            .expect("transcript")
            .iter()
            .filter(|(_, text)| MARKS.iter().any(|mark| text.contains(mark)))
            .map(|(what, text)| format!("--- {what}\n{text}"))
            .collect()
    }

    fn len(&self) -> usize {
        self.entries.lock().expect("transcript").len()
    }
}

/// How the store URL reaches the binary.
#[derive(Debug, Clone, Copy)]
enum Via {
    Flag,
    FlagEquals,
    Env,
    /// `store =` in the configuration file (the daemon and `--check` only).
    File,
}

struct Ran {
    code: Option<i32>,
    stdout: String,
}

/// Runs `fleetcron ARGS` with the store passed `via`, records its stdout and stderr.
fn fleetcron(transcript: &Transcript, dir: &Path, args: &[&str], store: &str, via: Via) -> Ran {
    let tag = namespace("out");
    let out_path = dir.join(format!("{tag}.out"));
    let err_path = dir.join(format!("{tag}.err"));
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("FLEETCRON_STORE")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let flag = format!("--store={store}");
    match via {
        Via::Flag => {
            command.args(["--store", store]);
        }
        Via::FlagEquals => {
            command.arg(&flag);
        }
        Via::Env => {
            command.env("FLEETCRON_STORE", store);
        }
        Via::File => {}
    }
    let mut child = command.spawn().expect("spawn fleetcron");
    let status = wait_with_deadline(&mut child, Duration::from_secs(60), &format!("fleetcron {args:?}"));
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let what = format!("fleetcron {} ({via:?}) → {status}", args.join(" "));
    transcript.record(format!("{what}: stdout"), stdout.clone());
    transcript.record(format!("{what}: stderr"), stderr);
    Ran {
        code: status.code(),
        stdout,
    }
}

/// A running daemon and its log file.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    what: String,
}

impl Daemon {
    fn start(dir: &Path, config: &Path, store: &str, via: Via, format: &str, id: &str) -> Daemon {
        let log = dir.join(format!("{id}.log"));
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(config)
            .args(["--worker-id", id, "--log-format", format])
            .env_remove("FLEETCRON_STORE")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{id}.stdout"))).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"));
        match via {
            Via::Flag => {
                command.args(["--store", store]);
            }
            Via::FlagEquals => {
                command.arg(format!("--store={store}"));
            }
            Via::Env => {
                command.env("FLEETCRON_STORE", store);
            }
            Via::File => {}
        }
        Daemon {
            child: command.spawn().expect("spawn fleetcron run"),
            log,
            what: format!("daemon {id} ({format} logs, store via {via:?})"),
        }
    }

    /// SIGTERM (if still running), waits, records stdout and the log; returns the exit code.
    fn finish(mut self, transcript: &Transcript) -> Option<i32> {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(60), &self.what);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let stdout = std::fs::read_to_string(self.log.with_extension("stdout")).unwrap_or_default();
        transcript.record(format!("{} → {status}: log", self.what), log);
        transcript.record(format!("{} → {status}: stdout", self.what), stdout);
        status.code()
    }
}

/// An HTTP server that answers 500 with the request quoted back (as error pages do): whatever the
/// task sent, a careless daemon would store.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut data = Vec::new();
                let mut buffer = [0u8; 4096];
                while !String::from_utf8_lossy(&data).contains("\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&data).replace("\r\n", " | ");
                let _ = write!(
                    stream,
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// The daemon's file: a command task printing its environment, an HTTP task whose URL and headers hold
/// the sentinel against the echoing server, and one against a closed port.
fn daemon_config(dir: &Path, name: &str, store: Option<&str>, echo_port: u16, closed: u16) -> std::path::PathBuf {
    let password = encoded(SENTINEL);
    let store_line = store.map(|url| format!("store = \"{url}\"\n")).unwrap_or_default();
    write_config(
        dir,
        name,
        &format!(
            r#"{store_line}
[engine]
poll_interval = "200ms"
[[task]]
id = "cmd"
schedule = "* * * * * *"
command = ["env"]
[[task]]
id = "web"
schedule = "* * * * * *"
http = {{ url = "http://leak:{password}@127.0.0.1:{echo_port}/echo?token={password}", headers = {{ X-Api-Key = "{SENTINEL}", Authorization = "Bearer {SENTINEL}" }} }}
[[task]]
id = "unreach"
schedule = "* * * * * *"
http = {{ url = "http://leak:{password}@127.0.0.1:{closed}/x?token={password}", headers = {{ X-Api-Key = "{SENTINEL}" }} }}
"#
        ),
    )
}

/// The finished runs of a task, read back with `tasks runs --json` (recorded too).
fn finished_runs(transcript: &Transcript, dir: &Path, store: &str, id: &str) -> Vec<serde_json::Value> {
    let ran = fleetcron(
        transcript,
        dir,
        &["tasks", "runs", id, "--limit", "1000", "--json"],
        store,
        Via::Flag,
    );
    if ran.code != Some(0) {
        return Vec::new();
    }
    serde_json::from_str::<serde_json::Value>(&ran.stdout)
        .ok()
        .and_then(|runs| runs.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|run| matches!(run["status"].as_str(), Some("succeeded" | "failed")))
        .collect()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every command against a reachable store: they must work (so their output is real) and leak nothing.
fn exercise_reachable(
    transcript: &Transcript,
    dir: &Path,
    store: &str,
    text_via: Via,
    json_via: Via,
    echo_port: u16,
    closed: u16,
) {
    let run = |args: &[&str], via: Via| fleetcron(transcript, dir, args, store, via);
    assert_eq!(run(&["migrate"], Via::Env).code, Some(0), "migrate {store}");
    assert_eq!(run(&["tasks", "list"], Via::Flag).code, Some(0));
    for command in ["show", "runs", "trigger", "enable", "disable"] {
        assert_eq!(
            run(&["tasks", command, "no.such.task"], Via::FlagEquals).code,
            Some(1),
            "{command}"
        );
    }
    let with_store = daemon_config(dir, "with-store.toml", Some(store), echo_port, closed);
    let without_store = daemon_config(dir, "without-store.toml", None, echo_port, closed);
    let config_for = |via: Via| match via {
        Via::File => with_store.clone(),
        _ => without_store.clone(),
    };
    let check = fleetcron(
        transcript,
        dir,
        &["run", "--check", "--config", &with_store.display().to_string()],
        store,
        Via::File,
    );
    assert_eq!(check.code, Some(0));

    // The daemon with text logs: every task runs at least once.
    let daemon = Daemon::start(dir, &config_for(text_via), store, text_via, "text", "leak-text");
    wait_for("a finished run of each task", || {
        ["cmd", "web", "unreach"]
            .iter()
            .all(|id| !finished_runs(transcript, dir, store, id).is_empty())
    });
    assert_eq!(run(&["tasks", "trigger", "cmd"], Via::Env).code, Some(0));
    assert_eq!(run(&["tasks", "disable", "web"], Via::Flag).code, Some(0));
    assert_eq!(run(&["tasks", "enable", "web"], Via::FlagEquals).code, Some(0));
    assert_eq!(run(&["tasks", "show", "cmd"], Via::Env).code, Some(0));
    assert_eq!(run(&["tasks", "runs", "web"], Via::Flag).code, Some(0));
    assert_eq!(run(&["tasks", "list"], Via::Env).code, Some(0));
    assert_eq!(daemon.finish(transcript), Some(0), "the text daemon on {store}");

    // The daemon with JSON logs: until it has run the command once more.
    let before = finished_runs(transcript, dir, store, "cmd").len();
    let daemon = Daemon::start(dir, &config_for(json_via), store, json_via, "json", "leak-json");
    wait_for("a run by the JSON daemon", || {
        finished_runs(transcript, dir, store, "cmd").len() > before
    });
    assert_eq!(daemon.finish(transcript), Some(0), "the JSON daemon on {store}");

    // The stored history, read back: the runs really hold the environment and the echoed request.
    for id in ["cmd", "web", "unreach"] {
        assert_eq!(run(&["tasks", "show", id, "--json"], Via::Flag).code, Some(0));
    }
    assert_eq!(run(&["tasks", "list", "--json"], Via::Env).code, Some(0));
    let cmd = finished_runs(transcript, dir, store, "cmd");
    let web = finished_runs(transcript, dir, store, "web");
    let unreach = finished_runs(transcript, dir, store, "unreach");
    assert!(
        cmd.iter().all(|run| run["result"]["stdout"]
            .as_str()
            .is_some_and(|out| out.contains("FLEETCRON_TASK_ID=cmd"))),
        "{cmd:?}"
    );
    assert!(
        web.iter().any(|run| run["error"]
            .as_str()
            .is_some_and(|error| error.contains("unexpected status 500") && error.contains("x-fleetcron-task-id"))),
        "{web:?}"
    );
    assert!(unreach.iter().all(|run| run["status"] == "failed"), "{unreach:?}");
}

/// Every command against a store it cannot use: each fails (exit 2 or 3), leaking nothing.
fn exercise_unusable(transcript: &Arc<Transcript>, dir: &Path, store: &str, echo_port: u16, closed: u16) {
    let config = daemon_config(
        dir,
        &format!("{}.toml", namespace("bad")),
        Some(store),
        echo_port,
        closed,
    );
    let config = config.display().to_string();
    let mut runs: Vec<(Vec<String>, Via)> = vec![
        (vec!["migrate".into()], Via::Flag),
        (vec!["tasks".into(), "list".into()], Via::Env),
        (vec!["tasks".into(), "list".into(), "--json".into()], Via::FlagEquals),
    ];
    for (index, command) in ["show", "runs", "trigger", "enable", "disable"].into_iter().enumerate() {
        let via = [Via::Flag, Via::Env, Via::FlagEquals][index % 3];
        runs.push((vec!["tasks".into(), command.into(), "cmd".into()], via));
    }
    for format in ["text", "json"] {
        runs.push((
            vec![
                "run".into(),
                "--config".into(),
                config.clone(),
                "--log-format".into(),
                format.into(),
            ],
            Via::File,
        ));
        runs.push((
            vec![
                "run".into(),
                "--config".into(),
                config.clone(),
                "--log-format".into(),
                format.into(),
            ],
            Via::Env,
        ));
    }
    let threads: Vec<_> = runs
        .into_iter()
        .map(|(args, via)| {
            let transcript = transcript.clone();
            let dir = dir.to_path_buf();
            let store = store.to_owned();
            std::thread::spawn(move || {
                let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
                if !matches!(args.first(), Some(&"run")) {
                    args.extend(["--retry-for", "1s"]);
                }
                let ran = fleetcron(&transcript, &dir, &args, &store, via);
                assert!(
                    matches!(ran.code, Some(2 | 3)),
                    "fleetcron {args:?} on an unusable store exited {:?}",
                    ran.code
                );
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("an unusable-store run");
    }
}

/// The servers: how to reach them, and what to create and remove on them.
struct Servers {
    postgres: String,
    mysql: String,
    redis: String,
}

impl Servers {
    fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Servers {
            postgres: var("FLEETCRON_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
            mysql: var("FLEETCRON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
            redis: var("FLEETCRON_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        }
    }
}

/// What a scheme's part of the test needs on its server, and removes afterwards.
struct Fixture {
    scheme: &'static str,
    /// The store URLs that work (the password as the server knows it).
    reachable: Vec<String>,
    /// The store URLs that cannot be used (wrong or unencoded password, refused parameter, closed port).
    unusable: Vec<String>,
    cleanup: Box<dyn FnOnce() + Send>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn postgres(servers: &Servers, closed: u16) -> Result<Fixture, String> {
    use sqlx::Connection;
    let (user, host, path) = split_server(&servers.postgres);
    let schema = namespace("pg");
    let admin = servers.postgres.clone();
    runtime().block_on(async {
        sqlx::PgConnection::connect(&admin)
            .await
            .map(drop)
            .map_err(|error| format!("{admin}: {error}"))
    })?;
    let password = encoded(SENTINEL);
    let cleanup_schema = schema.clone();
    Ok(Fixture {
        scheme: "postgres",
        reachable: vec![
            format!("postgres://{user}:{password}@{host}{path}?schema={schema}"),
            format!("postgresql://{user}@{host}{path}?schema={schema}&password={password}"),
        ],
        unusable: vec![
            format!("postgres://{user}:{SENTINEL}@{host}{path}?schema={schema}"),
            format!("postgres://{user}:{password}@{host}{path}?Schema={schema}"),
            format!("postgres://{user}:{password}@127.0.0.1:{closed}{path}?password={password}"),
        ],
        cleanup: Box::new(move || {
            let _ = runtime().block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {cleanup_schema} CASCADE"))
                    .execute(&mut conn)
                    .await
            });
        }),
    })
}

fn mysql(servers: &Servers, closed: u16) -> Result<Fixture, String> {
    use sqlx::Connection;
    let (_, host, path) = split_server(&servers.mysql);
    let database = path.trim_start_matches('/').to_owned();
    let user = namespace("my");
    let admin = servers.mysql.clone();
    runtime().block_on(async {
        let mut conn = sqlx::MySqlConnection::connect(&admin)
            .await
            .map_err(|error| format!("{admin}: {error}"))?;
        for statement in [
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{SENTINEL}'"),
            format!("GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'"),
        ] {
            sqlx::query(&statement)
                .execute(&mut conn)
                .await
                .map_err(|error| format!("{statement}: {error}"))?;
        }
        Ok::<_, String>(())
    })?;
    let password = encoded(SENTINEL);
    let prefix = format!("{user}_");
    let cleanup_user = user.clone();
    Ok(Fixture {
        scheme: "mysql",
        reachable: vec![format!("mysql://{user}:{password}@{host}{path}?table_prefix={prefix}")],
        unusable: vec![
            format!("mariadb://{user}:{password}x@{host}{path}?table_prefix={prefix}"),
            format!("mysql://{user}:{SENTINEL}@{host}{path}"),
            format!("mysql://{user}@{host}{path}?table_prefix={prefix}&password={password}"),
            format!("mysql://{user}:{password}@127.0.0.1:{closed}{path}"),
        ],
        cleanup: Box::new(move || {
            let _ = runtime().block_on(async {
                let mut conn = sqlx::MySqlConnection::connect(&admin).await?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name LIKE CONCAT(?, '%')",
                )
                .bind(&prefix)
                .fetch_all(&mut conn)
                .await?;
                for table in tables {
                    sqlx::query(&format!("DROP TABLE IF EXISTS `{table}`"))
                        .execute(&mut conn)
                        .await?;
                }
                sqlx::query(&format!("DROP USER IF EXISTS '{cleanup_user}'@'%'"))
                    .execute(&mut conn)
                    .await
            });
        }),
    })
}

fn redis_fixture(servers: &Servers, closed: u16) -> Result<Fixture, String> {
    let (_, host, _) = split_server(&servers.redis);
    let user = namespace("rd");
    let admin = servers.redis.clone();
    let connect = |url: String| async move {
        let client = redis::Client::open(url.as_str()).map_err(|error| format!("{url}: {error}"))?;
        tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("{url}: no answer"))?
            .map_err(|error| format!("{url}: {error}"))
    };
    runtime().block_on(async {
        let mut conn = connect(admin.clone()).await?;
        redis::cmd("ACL")
            .arg(&["SETUSER", &user, "on", &format!(">{SENTINEL}"), "~*", "&*", "+@all"])
            .query_async::<()>(&mut conn)
            .await
            .map_err(|error| format!("ACL SETUSER: {error}"))
    })?;
    let password = encoded(SENTINEL);
    let prefix = user.clone();
    Ok(Fixture {
        scheme: "redis",
        reachable: vec![format!("redis://{user}:{password}@{host}/0?prefix={prefix}")],
        unusable: vec![
            format!("redis://{user}:{password}x@{host}?prefix={prefix}"),
            format!("redis://{user}:{SENTINEL}@{host}"),
            format!("redis://{host}?prefix={prefix}&password={password}"),
            format!("redis://{user}:{password}@127.0.0.1:{closed}"),
        ],
        cleanup: Box::new(move || {
            let _ = runtime().block_on(async {
                let mut conn = connect(admin).await?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("*{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|error| error.to_string())?;
                if !keys.is_empty() {
                    let _: () = redis::cmd("DEL")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .map_err(|error| error.to_string())?;
                }
                redis::cmd("ACL")
                    .arg(&["DELUSER", &user])
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|error| error.to_string())
            });
        }),
    })
}

/// Removes what a fixture created, even when the test fails.
struct Cleanup(Option<Box<dyn FnOnce() + Send>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup();
        }
    }
}

#[test]
fn no_command_prints_logs_or_stores_a_store_password() {
    let servers = Servers::from_env();
    let echo_port = echo_server();
    let closed = closed_port();
    let transcript = Arc::new(Transcript::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<(&str, Result<Fixture, String>)> = vec![
        ("PostgreSQL", postgres(&servers, closed)),
        ("MySQL/MariaDB", mysql(&servers, closed)),
        ("Redis", redis_fixture(&servers, closed)),
    ];
    let mut cleanups = Vec::new();
    let mut parts = Vec::new();
    for (name, fixture) in fixtures {
        match fixture {
            Ok(fixture) => {
                cleanups.push(Cleanup(Some(fixture.cleanup)));
                parts.push((fixture.scheme, fixture.reachable, fixture.unusable));
            }
            Err(reason) if services_required() => {
                panic!("{name} is required (FLEETCRON_REQUIRE_SERVICES=1) but unusable: {reason}")
            }
            Err(reason) => eprintln!("\n*** SKIPPED the {name} part: {reason}\n"),
        }
    }
    // How the URL reaches each daemon, per scheme: (text logs, JSON logs).
    let channels = |scheme: &str| match scheme {
        "postgres" => [(Via::File, Via::Env), (Via::Flag, Via::FlagEquals)],
        "mysql" => [(Via::Flag, Via::File), (Via::Env, Via::Flag)],
        _ => [(Via::Env, Via::FlagEquals), (Via::File, Via::Flag)],
    };
    let threads: Vec<_> = parts
        .into_iter()
        .map(|(scheme, reachable, unusable)| {
            let transcript = transcript.clone();
            let dir = dir.path().join(scheme);
            std::fs::create_dir_all(&dir).expect("scheme dir");
            std::thread::spawn(move || {
                for url in &unusable {
                    exercise_unusable(&transcript, &dir, url, echo_port, closed);
                }
                for (url, (text_via, json_via)) in reachable.iter().zip(channels(scheme)) {
                    exercise_reachable(&transcript, &dir, url, text_via, json_via, echo_port, closed);
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for thread in threads {
        if let Err(panic) = thread.join() {
            failures.push(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                    .unwrap_or_default(),
            );
        }
    }
    let leaks = transcript.leaks();
    assert!(
        leaks.is_empty(),
        "the sentinel leaked in {} of {} outputs:\n{}",
        leaks.len(),
        transcript.len(),
        leaks.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(cleanups);
}
