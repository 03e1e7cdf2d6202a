//! What an operator installs: `--version`, shell completions and man pages generated from the CLI, the
//! example `/etc/fleetcron/fleetcron.toml`, the systemd unit (`systemd-analyze verify`), the daemon's
//! `Type=notify` readiness (`READY=1` only once it is really up, `STOPPING=1` on SIGTERM) and its
//! journal-friendly logs.

use crate::common::{run, wait_with_deadline, BIN};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The subcommands an operator sees (`--help`, completions, man pages); the hidden ones are not listed.
const VISIBLE: &[&str] = &[
    "run",
    "tasks",
    "migrate",
    "serve",
    "schedule",
    "demo",
    "torture",
    "completions",
    "man",
];

fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

#[test]
fn version_prints_the_crate_version() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag], Duration::from_secs(10));
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        assert_eq!(out.stdout.trim(), format!("fleetcron {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn completions_offer_every_subcommand_in_each_shell() {
    for (shell, marker, offered) in [
        ("bash", "complete -F _fleetcron", "opts=\""),
        ("zsh", "#compdef fleetcron", ""),
        ("fish", "complete -c fleetcron", ""),
    ] {
        let out = run(&["completions", shell], Duration::from_secs(10));
        assert_eq!(out.code(), Some(0), "{shell}: {}", out.stderr);
        let script = out.stdout;
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for name in VISIBLE {
            let found = match shell {
                // The top level's word list: `opts="-h -V --help --version run tasks …"`.
                "bash" => script
                    .lines()
                    .find(|line| line.trim_start().starts_with(offered) && line.contains("--version"))
                    .is_some_and(|line| line.split(['"', ' ']).any(|word| word == *name)),
                "zsh" => script.contains(&format!("'{name}:")),
                _ => script.contains(&format!("-a \"{name}\"")),
            };
            assert!(found, "{shell} completion does not offer `{name}`");
        }
    }
    // The bash script is valid bash.
    let out = run(&["completions", "bash"], Duration::from_secs(10));
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .expect("bash");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(out.stdout.as_bytes())
        .expect("write the script");
    assert!(
        check.wait().expect("bash -n").success(),
        "bash -n refused the completion script"
    );
    let out = run(&["completions", "tcsh"], Duration::from_secs(10));
    assert_eq!(out.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn the_man_page_has_a_title_and_lists_the_subcommands() {
    let out = run(&["man"], Duration::from_secs(10));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let page = out.stdout;
    assert!(
        page.contains(&format!(".TH fleetcron 1  \"fleetcron {}\"", env!("CARGO_PKG_VERSION"))),
        "{page}"
    );
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for name in VISIBLE {
        assert!(
            page.contains(&format!("fleetcron\\-{name}(1)")),
            "fleetcron(1) does not list {name}"
        );
    }
    assert!(!page.contains("fleetcron\\-worker"), "a hidden subcommand is listed");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        &["man", "--dir", dir.path().to_str().expect("utf-8 path")],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for name in VISIBLE {
        assert!(
            dir.path().join(format!("fleetcron-{name}.1")).exists(),
            "no fleetcron-{name}.1"
        );
    }
    assert_eq!(
        read(&dir.path().join("fleetcron.1")),
        page,
        "--dir writes the page `man` prints"
    );
    let run_page = read(&dir.path().join("fleetcron-run.1"));
    assert!(run_page.contains(".TH fleetcron-run 1"), "{run_page}");
    assert!(run_page.contains("\\-\\-check"), "fleetcron-run(1) documents --check");
    let out = run(&["man", "--dir", "/nonexistent/dir"], Duration::from_secs(10));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot write the man pages into /nonexistent/dir"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_example_system_configuration_passes_the_check() {
    let example = repository("dist/fleetcron.toml");
    let path = example.to_str().expect("utf-8 path");
    let out = run(&["run", "--config", path, "--check"], Duration::from_secs(20));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("valid (1 task)"), "{}", out.stdout);
    // The commented-out tasks at its end are valid too once uncommented.
    let text = read(&example);
    let start = text.find("# [[task]]").expect("commented example tasks");
    let uncommented: String = text[start..]
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(if line == "#" { "" } else { line }))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("fleetcron.toml");
    std::fs::write(&whole, format!("{}{uncommented}\n", &text[..start])).expect("write");
    let out = run(
        &["run", "--config", whole.to_str().expect("utf-8 path"), "--check"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("valid (3 tasks)"), "{}", out.stdout);
    // Where the unit and the image keep the store is where the example points.
    assert!(text.contains("store = \"sqlite:///var/lib/fleetcron/fleetcron.db\""));
    let unit = read(&repository("dist/systemd/fleetcron.service"));
    assert!(unit.contains("\nStateDirectory=fleetcron\n"), "{unit}");
    assert!(unit.contains("--config /etc/fleetcron/fleetcron.toml"), "{unit}");
    let image = read(&repository("dist/Containerfile"));
    assert!(
        image.contains("COPY dist/fleetcron.toml /etc/fleetcron/fleetcron.toml"),
        "{image}"
    );
    assert!(image.contains("VOLUME [\"/var/lib/fleetcron\"]"), "{image}");
    assert!(image.contains("http://127.0.0.1:8080/healthz"), "{image}");
    assert!(
        text.contains("listen = \"127.0.0.1:8080\""),
        "the image's health check needs this port"
    );
}

/// `systemd-analyze verify` accepts the unit without a single warning (it exits 0 on most problems, so
/// its output must be empty too), with the binary under test in place of the installed one; the man
/// pages it names exist; and it keeps the hardening the README promises.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit_path = repository("dist/systemd/fleetcron.service");
    let unit = read(&unit_path);
    for directive in [
        "Type=notify",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=fleetcron",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecStart=/usr/local/bin/fleetcron run --config /etc/fleetcron/fleetcron.toml",
    ] {
        assert!(unit.lines().any(|line| line == directive), "the unit lacks {directive}");
    }
    // Documentation=man:NAME(1) pages are ones `fleetcron man --dir` writes.
    let pages = tempfile::tempdir().expect("tempdir");
    let out = run(
        &["man", "--dir", pages.path().to_str().expect("utf-8 path")],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let documentation = unit
        .lines()
        .find_map(|line| line.strip_prefix("Documentation="))
        .expect("Documentation=");
    for reference in documentation.split_whitespace() {
        let name = reference
            .strip_prefix("man:")
            .and_then(|page| page.strip_suffix("(1)"))
            .unwrap_or_else(|| panic!("unexpected reference {reference}"));
        assert!(pages.path().join(format!("{name}.1")).exists(), "no man page {name}(1)");
    }

    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("fleetcron.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/fleetcron", BIN)).expect("write the unit");
    let verify = |path: &Path| {
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(path)
            .output()
            .expect("systemd-analyze");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, output) = verify(&copy);
    assert!(ok && output.trim().is_empty(), "systemd-analyze verify: {output}");
    // It does catch a broken directive (so the check above can fail).
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/fleetcron", BIN)
            .replace("KillMode=mixed", "KillMode=mixd"),
    )
    .expect("write the unit");
    let (_, output) = verify(&copy);
    assert!(
        output.contains("kill mode"),
        "a bad directive went unnoticed: {output:?}"
    );
}

/// The path of a command-line tool; a missing one fails the test under `FLEETCRON_REQUIRE_SERVICES=1`
/// (CI installs it) and is skipped loudly otherwise.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            !std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1"),
            "{name} is required (FLEETCRON_REQUIRE_SERVICES=1) but not installed"
        );
        eprintln!("\n*** SKIPPED: {name} is not installed\n");
    }
    found
}

const TASKS: usize = 3000;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// One daemon under a fake service manager: its notify socket given as `socket_name`, its stderr a
/// file, `JOURNAL_STREAM` as `journal` says.
struct Supervised {
    dir: tempfile::TempDir,
    receiver: UnixDatagram,
    child: std::process::Child,
    store: String,
    port: u16,
}

enum Journal {
    /// `JOURNAL_STREAM` names the daemon's stderr, as systemd sets it.
    Matching,
    /// `JOURNAL_STREAM` inherited from elsewhere: names another file.
    Elsewhere,
}

impl Supervised {
    fn start(abstract_socket: bool, journal: Journal) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (receiver, socket_name) = if abstract_socket {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("fleetcron-test-notify-{}-{}", std::process::id(), free_port());
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
            (UnixDatagram::bind_addr(&address).expect("bind"), format!("@{name}"))
        } else {
            let path = dir.path().join("notify.sock");
            (
                UnixDatagram::bind(&path).expect("bind"),
                path.to_str().expect("utf-8").to_owned(),
            )
        };
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let store = format!("sqlite://{}", dir.path().join("store.db").display());
        let port = free_port();
        // Thousands of tasks: registering them takes a while, so a READY=1 sent before the daemon is
        // up would be seen before the tasks are in the store.
        let mut config = format!("store = \"{store}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n");
        for index in 0..TASKS {
            config.push_str(&format!(
                "[[task]]\nid = \"t{index}\"\nschedule = \"0 0 1 1 *\"\nshell = \"true\"\n"
            ));
        }
        let config_path = dir.path().join("fleetcron.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let stream = match journal {
            Journal::Matching => {
                let metadata = log.metadata().expect("metadata");
                format!("{}:{}", metadata.dev(), metadata.ino())
            }
            Journal::Elsewhere => {
                let metadata = std::fs::metadata(&config_path).expect("metadata");
                format!("{}:{}", metadata.dev(), metadata.ino())
            }
        };
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &socket_name)
            .env("JOURNAL_STREAM", stream)
            .env("RUST_LOG", "info")
            .env_remove("FLEETCRON_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fleetcron run");
        Self {
            dir,
            receiver,
            child,
            store,
            port,
        }
    }

    /// The next notification, failing the test after `timeout`.
    fn next(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 4096];
        loop {
            match self.receiver.recv(&mut buffer) {
                Ok(length) => return String::from_utf8_lossy(&buffer[..length]).into_owned(),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(status) = self.child.try_wait().expect("try_wait") {
                        panic!("the daemon exited ({status}) before notifying:\n{}", self.log());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no notification within {timeout:?}:\n{}",
                        self.log()
                    );
                }
                Err(error) => panic!("receive: {error}"),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `/healthz` of the admin server, answered now.
    fn healthz(&self) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("the admin server listens");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    }

    /// READY=1 (with a STATUS) arrives, and at that moment the daemon is up: every task registered
    /// in the store, the admin server answering. Then SIGTERM brings STOPPING=1 and a clean exit.
    fn ready_then_stopping(mut self) -> String {
        let ready = self.next(Duration::from_secs(120));
        assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
        assert!(
            ready.contains(&format!("STATUS=running {TASKS} tasks as worker ")),
            "{ready:?}"
        );
        assert!(
            self.healthz().starts_with("HTTP/1.0 200"),
            "/healthz right after READY=1"
        );
        let out = run(
            &["tasks", "list", "--json", "--store", &self.store],
            Duration::from_secs(60),
        );
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        let tasks: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let registered = tasks.as_array().map_or(0, |tasks| {
            tasks
                .iter()
                .filter(|task| task["id"].as_str().is_some_and(|id| id.starts_with('t')))
                .count()
        });
        assert_eq!(registered, TASKS, "READY=1 before every task was registered");

        crate::common::sigterm(&[self.child.id()]);
        assert_eq!(self.next(Duration::from_secs(20)), "STOPPING=1");
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(30), "daemon");
        let log = self.log();
        assert_eq!(status.code(), Some(0), "{log}");
        log
    }
}

#[test]
fn the_daemon_notifies_readiness_and_stopping_and_logs_for_the_journal() {
    // A socket path, and stderr is the journal: `<N>` priorities, no timestamp, no colour.
    let log = Supervised::start(false, Journal::Matching).ready_then_stopping();
    assert!(
        log.lines().any(|line| line.starts_with("<6>fleetcron daemon running")),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.starts_with("<6>SIGTERM: shutting down")),
        "{log}"
    );
    for line in log.lines().filter(|line| !line.is_empty()) {
        let prefixed = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|prefix| line.starts_with(prefix));
        assert!(prefixed, "a journal line without its priority: {line:?}");
        assert!(!line.contains('\u{1b}'), "colour in the journal: {line:?}");
        assert!(
            !line.contains(" INFO "),
            "the level word repeats the priority: {line:?}"
        );
    }

    // An abstract socket name, and a JOURNAL_STREAM that names another file: ordinary lines.
    let log = Supervised::start(true, Journal::Elsewhere).ready_then_stopping();
    let running = log
        .lines()
        .find(|line| line.contains("fleetcron daemon running"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!running.starts_with('<'), "{running}");
    assert!(running.starts_with("20") && running.contains(" INFO "), "{running}");
}
