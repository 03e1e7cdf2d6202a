//! Counting the statements the stores send, without touching the stores.
//!
//! * **SQLite, PostgreSQL**: sqlx reports every statement it executes as a `tracing` event with target
//!   `sqlx::query` (`QueryLogger` in sqlx-core 0.8, at `DEBUG` by default, `WARN` when slow); a layer
//!   counts them. The SQLite driver runs `BEGIN IMMEDIATE` and `COMMIT`/`ROLLBACK` on its worker thread
//!   outside that logger, so two statements per mutation are added (a mutation is recognised by its one
//!   packed state read). PostgreSQL's store sends its own `BEGIN …; SELECT pg_advisory_xact_lock …` and
//!   `COMMIT` through the executor, so they are counted (one event = one statement string = one round trip).
//! * **MySQL/MariaDB**: the store turns sqlx's statement logging off, so the connections go through a
//!   loopback proxy that counts `COM_QUERY` and `COM_STMT_EXECUTE` packets.
//! * **Redis**: the same proxy counts the commands the store sends (RESP). `INFO commandstats` deltas are
//!   reported beside them as server-side commands: they include the calls the Lua scripts make and are
//!   server-wide (another client of the same server during the window would be counted too).
//!
//! A proxy runs on a thread of its own whose CPU time is subtracted from the process's.

use crate::procfs;
use crate::Error;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Statements counted so far (or in a window), with a breakdown by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Statements.
    pub total: u64,
    /// By statement summary (first words, digits replaced by `N`) or command name.
    pub breakdown: BTreeMap<String, u64>,
    /// Redis: the commands the server executed (script calls included), by command.
    pub server: Option<Box<Counts>>,
}

impl Counts {
    /// `self - earlier`, key by key.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut breakdown = BTreeMap::new();
        for (key, value) in &self.breakdown {
            let delta = value.saturating_sub(earlier.breakdown.get(key).copied().unwrap_or(0));
            if delta > 0 {
                breakdown.insert(key.clone(), delta);
            }
        }
        let server = match (&self.server, &earlier.server) {
            (Some(now), Some(then)) => Some(Box::new(now.since(then))),
            _ => None,
        };
        Counts {
            total: self.total.saturating_sub(earlier.total),
            breakdown,
            server,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// sqlx tracing events

#[derive(Default)]
struct SqlxTally {
    total: AtomicU64,
    by_summary: Mutex<HashMap<String, u64>>,
}

fn sqlx_tally() -> &'static SqlxTally {
    static TALLY: OnceLock<SqlxTally> = OnceLock::new();
    TALLY.get_or_init(SqlxTally::default)
}

/// The layer that counts `sqlx::query` events (install it with a `Targets` filter for that target).
pub struct SqlxCountingLayer;

#[derive(Default)]
struct SummaryVisitor {
    summary: Option<String>,
}

impl Visit for SummaryVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.summary = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.summary.is_none() {
            self.summary = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber> Layer<S> for SqlxCountingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut visitor = SummaryVisitor::default();
        event.record(&mut visitor);
        let tally = sqlx_tally();
        tally.total.fetch_add(1, Ordering::Relaxed);
        let key = normalize_summary(visitor.summary.as_deref().unwrap_or("?"));
        if let Ok(mut by_summary) = tally.by_summary.lock() {
            *by_summary.entry(key).or_insert(0) += 1;
        }
    }
}

/// A statement summary as a breakdown key: digit runs become `N` (namespaces carry the pid and a counter).
pub fn normalize_summary(summary: &str) -> String {
    let mut key = String::with_capacity(summary.len());
    let mut in_digits = false;
    for c in summary.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                key.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            key.push(c);
        }
    }
    key
}

fn sqlx_counts() -> Counts {
    let tally = sqlx_tally();
    let breakdown = tally
        .by_summary
        .lock()
        .map(|by_summary| by_summary.iter().map(|(key, value)| (key.clone(), *value)).collect())
        .unwrap_or_default();
    Counts {
        total: tally.total.load(Ordering::Relaxed),
        breakdown,
        server: None,
    }
}

/// The summary of the SQLite store's packed state read, the one statement every mutation runs once.
const SQLITE_MUTATION_READ: &str = "SELECT json_group_array(id),";
/// Breakdown key of the estimated `BEGIN IMMEDIATE`s.
pub const SQLITE_BEGIN_KEY: &str = "BEGIN IMMEDIATE (sqlx worker, not logged; 1 per mutation)";
/// Breakdown key of the estimated `COMMIT`/`ROLLBACK`s.
pub const SQLITE_END_KEY: &str = "COMMIT/ROLLBACK (sqlx worker, not logged; 1 per mutation)";

/// Adds SQLite's unlogged transaction statements to a window's counts: one `BEGIN IMMEDIATE` and one
/// `COMMIT` or `ROLLBACK` per mutation.
pub fn add_sqlite_transactions(counts: &mut Counts) {
    let mutations: u64 = counts
        .breakdown
        .iter()
        .filter(|(key, _)| key.starts_with(SQLITE_MUTATION_READ))
        .map(|(_, value)| *value)
        .sum();
    if mutations > 0 {
        counts.breakdown.insert(SQLITE_BEGIN_KEY.to_owned(), mutations);
        counts.breakdown.insert(SQLITE_END_KEY.to_owned(), mutations);
        counts.total += 2 * mutations;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Redis INFO commandstats

/// Calls per command from the text of `INFO commandstats` (`cmdstat_get:calls=3,usec=...`).
pub fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some((name, stats)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let count = stats
            .split(',')
            .find_map(|pair| pair.strip_prefix("calls="))
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(count) = count {
            calls.insert(name.to_owned(), count);
        }
    }
    calls
}

/// A separate Redis connection that reads `INFO commandstats`.
pub struct RedisStats {
    connection: redis::aio::MultiplexedConnection,
}

impl RedisStats {
    /// Connects to the server at `url` (no key prefix needed).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|error| format!("invalid Redis URL {url:?}: {error}"))?;
        let connection = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("Redis at {url}: no answer within 5 s"))?
            .map_err(|error| format!("cannot connect to Redis at {url}: {error}"))?;
        Ok(Self { connection })
    }

    async fn counts(&mut self) -> Result<Counts, Error> {
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection)
            .await
            .map_err(|error| format!("INFO commandstats failed: {error}"))?;
        let mut breakdown = parse_commandstats(&text);
        // Our own INFO calls are not the store's.
        breakdown.remove("info");
        Ok(Counts {
            total: breakdown.values().sum(),
            breakdown,
            server: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Wire proxy (MySQL and Redis)

/// Commands seen by a wire proxy, by kind.
#[derive(Default)]
pub struct WireTally {
    statements: AtomicU64,
    by_kind: Mutex<HashMap<String, u64>>,
}

impl WireTally {
    fn add(&self, kind: &str, statement: bool) {
        if statement {
            self.statements.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut by_kind) = self.by_kind.lock() {
            match by_kind.get_mut(kind) {
                Some(count) => *count += 1,
                None => {
                    by_kind.insert(kind.to_owned(), 1);
                }
            }
        }
    }

    fn counts(&self) -> Counts {
        let breakdown = self
            .by_kind
            .lock()
            .map(|by_kind| by_kind.iter().map(|(key, value)| (key.clone(), *value)).collect())
            .unwrap_or_default();
        Counts {
            total: self.statements.load(Ordering::Relaxed),
            breakdown,
            server: None,
        }
    }
}

/// The protocol a wire proxy parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MySQL client/server protocol (plain text: the local server has no TLS).
    Mysql,
    /// RESP (Redis).
    Redis,
}

const COM_QUERY: u8 = 0x03;
const COM_STMT_EXECUTE: u8 = 0x17;

/// A MySQL command's name in the breakdown and whether it is a statement (`COM_QUERY`, `COM_STMT_EXECUTE`).
fn mysql_command(command: u8) -> (&'static str, bool) {
    match command {
        0x01 => ("COM_QUIT", false),
        0x02 => ("COM_INIT_DB", false),
        COM_QUERY => ("COM_QUERY", true),
        0x0e => ("COM_PING (not a statement)", false),
        0x11 => ("COM_CHANGE_USER", false),
        0x16 => ("COM_STMT_PREPARE (not a statement)", false),
        COM_STMT_EXECUTE => ("COM_STMT_EXECUTE", true),
        0x18 => ("COM_STMT_SEND_LONG_DATA", false),
        0x19 => ("COM_STMT_CLOSE (not a statement)", false),
        0x1a => ("COM_STMT_RESET", false),
        0x1f => ("COM_RESET_CONNECTION", false),
        _ => ("COM_other", false),
    }
}

/// Splits the client-to-server byte stream into MySQL packets (3-byte length, 1-byte sequence id) and
/// reports the command byte of every packet with sequence id 0: that is where a command starts. Handshake
/// and authentication packets have higher sequence ids, and so do the continuations of 16 MiB packets.
#[derive(Debug, Default)]
pub struct PacketParser {
    header: Vec<u8>,
    remaining: usize,
    awaiting_command: bool,
}

impl PacketParser {
    /// Feeds the next bytes; `count` is called with each command byte.
    pub fn feed(&mut self, mut bytes: &[u8], mut count: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                if self.awaiting_command {
                    count(bytes[0]);
                    self.awaiting_command = false;
                }
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if self.header.len() == 4 {
                let length =
                    usize::from(self.header[0]) | usize::from(self.header[1]) << 8 | usize::from(self.header[2]) << 16;
                let sequence = self.header[3];
                self.header.clear();
                self.remaining = length;
                self.awaiting_command = sequence == 0 && length > 0;
            }
        }
    }
}

/// Where a [`RespParser`] is in the client's stream.
#[derive(Debug, Default)]
enum RespState {
    /// Reading a line: a command's `*N` header, or an inline command.
    #[default]
    Command,
    /// Reading a `$len` line of the current command's next argument.
    BulkHeader,
    /// Skipping an argument's bytes (and its CRLF).
    BulkBody(usize),
}

/// Splits the client-to-server RESP stream into commands (`*N\r\n` then N bulk strings; inline commands
/// are one line) and reports each command's name (upper-cased first argument).
#[derive(Debug, Default)]
pub struct RespParser {
    state: RespState,
    line: Vec<u8>,
    arguments_left: i64,
    name: Option<Vec<u8>>,
}

impl RespParser {
    /// Feeds the next bytes; `count` is called with each command's name.
    pub fn feed(&mut self, mut bytes: &[u8], mut count: impl FnMut(&str)) {
        while !bytes.is_empty() {
            match self.state {
                RespState::BulkBody(remaining) => {
                    let take = remaining.min(bytes.len());
                    if let Some(name) = self.name.as_mut() {
                        let room = 32usize.saturating_sub(name.len());
                        name.extend_from_slice(&bytes[..take.min(room)]);
                    }
                    bytes = &bytes[take..];
                    if take < remaining {
                        self.state = RespState::BulkBody(remaining - take);
                        continue;
                    }
                    // The argument ended: the first one is the command's name.
                    if let Some(name) = self.name.take() {
                        let name = String::from_utf8_lossy(&name);
                        let name = name.trim_end_matches(['\r', '\n']).to_ascii_uppercase();
                        count(&name);
                    }
                    self.arguments_left -= 1;
                    self.state = if self.arguments_left > 0 {
                        RespState::BulkHeader
                    } else {
                        RespState::Command
                    };
                }
                RespState::Command | RespState::BulkHeader => {
                    let Some(end) = bytes.iter().position(|byte| *byte == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.on_line(line, &mut count);
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8], count: &mut impl FnMut(&str)) {
        let number = |digits: &[u8]| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
        };
        match (&self.state, line.split_first()) {
            (RespState::Command, Some((b'*', digits))) => {
                self.arguments_left = number(digits).unwrap_or(0);
                if self.arguments_left > 0 {
                    self.name = Some(Vec::new());
                    self.state = RespState::BulkHeader;
                }
            }
            (RespState::Command, Some(_)) => {
                // An inline command: its first word is the name.
                let text = String::from_utf8_lossy(line);
                if let Some(name) = text.split_whitespace().next() {
                    count(&name.to_ascii_uppercase());
                }
            }
            (RespState::BulkHeader, Some((b'$', digits))) => {
                let length = number(digits).unwrap_or(0).max(0) as usize;
                self.state = RespState::BulkBody(length + 2);
            }
            // An empty line between commands, or a stream we do not understand: resynchronise on the
            // next command header.
            _ => {
                self.name = None;
                self.state = RespState::Command;
            }
        }
    }
}

/// A loopback TCP proxy in front of a server that counts the commands clients send.
pub struct WireProxy {
    address: SocketAddr,
    tally: Arc<WireTally>,
    tid: u32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WireProxy {
    /// Starts the proxy on `127.0.0.1:0` in front of `upstream`, on a thread (and runtime) of its own.
    pub fn start(upstream: SocketAddr, protocol: Protocol) -> Result<Self, Error> {
        let tally = Arc::new(WireTally::default());
        let (ready_sender, ready) = std::sync::mpsc::channel::<Result<(SocketAddr, u32), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_tally = tally.clone();
        let thread = std::thread::Builder::new()
            .name("counting-proxy".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_sender.send(Err(format!("cannot start the proxy's runtime: {error}")));
                        return;
                    }
                };
                runtime.block_on(serve(upstream, protocol, thread_tally, ready_sender, stopped));
            })
            .map_err(|error| format!("cannot start the counting proxy thread: {error}"))?;
        let (address, tid) = ready
            .recv_timeout(Duration::from_secs(10))
            .map_err(|error| format!("the counting proxy did not start: {error}"))??;
        Ok(Self {
            address,
            tally,
            tid,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The proxy's `host:port`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// CPU time the proxy's thread used so far.
    pub fn cpu(&self) -> Result<Duration, Error> {
        procfs::thread_cpu(self.tid)
    }
}

impl Drop for WireProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    upstream: SocketAddr,
    protocol: Protocol,
    tally: Arc<WireTally>,
    ready: std::sync::mpsc::Sender<Result<(SocketAddr, u32), String>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let tid = match procfs::current_tid() {
        Ok(tid) => tid,
        Err(error) => {
            let _ = ready.send(Err(error.to_string()));
            return;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send(Err(format!("cannot listen on 127.0.0.1: {error}")));
            return;
        }
    };
    match listener.local_addr() {
        Ok(address) => {
            let _ = ready.send(Ok((address, tid)));
        }
        Err(error) => {
            let _ = ready.send(Err(format!("cannot read the proxy's address: {error}")));
            return;
        }
    }
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, upstream, protocol, tally.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "counting proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn relay(client: tokio::net::TcpStream, upstream: SocketAddr, protocol: Protocol, tally: Arc<WireTally>) {
    let server = match tokio::net::TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(%error, %upstream, "counting proxy: cannot reach the server");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async {
        let mut mysql = PacketParser::default();
        let mut resp = RespParser::default();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            let bytes = &buffer[..read];
            match protocol {
                Protocol::Mysql => mysql.feed(bytes, |command| {
                    let (kind, statement) = mysql_command(command);
                    tally.add(kind, statement);
                }),
                Protocol::Redis => resp.feed(bytes, |name| tally.add(name, true)),
            }
            server_write.write_all(bytes).await?;
        }
        server_write.shutdown().await
    };
    let downward = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let _ = tokio::join!(upward, downward);
}

// ---------------------------------------------------------------------------------------------------------

/// How a benchmark counts the statements of one backend.
pub enum StatementCounter {
    /// sqlx tracing events (SQLite adds its unlogged transaction statements).
    Sqlx {
        /// Whether the backend is SQLite.
        sqlite: bool,
    },
    /// The MySQL wire proxy.
    Mysql(WireProxy),
    /// The Redis wire proxy (top-level commands) and `INFO commandstats` (server-side commands).
    Redis(WireProxy, RedisStats),
    /// No statements to count (memory).
    None,
}

impl StatementCounter {
    /// The counts so far; `None` when the backend has no statements.
    pub async fn snapshot(&mut self) -> Result<Option<Counts>, Error> {
        match self {
            StatementCounter::Sqlx { .. } => Ok(Some(sqlx_counts())),
            StatementCounter::Mysql(proxy) => Ok(Some(proxy.tally.counts())),
            StatementCounter::Redis(proxy, stats) => {
                let server = stats.counts().await?;
                let mut counts = proxy.tally.counts();
                counts.server = Some(Box::new(server));
                Ok(Some(counts))
            }
            StatementCounter::None => Ok(None),
        }
    }

    /// The statements between two snapshots.
    pub fn window(&self, before: &Option<Counts>, after: &Option<Counts>) -> Option<Counts> {
        let (Some(before), Some(after)) = (before, after) else {
            return None;
        };
        let mut counts = after.since(before);
        if matches!(self, StatementCounter::Sqlx { sqlite: true }) {
            add_sqlite_transactions(&mut counts);
        }
        Some(counts)
    }

    /// CPU time the counter itself used in this process so far (a proxy's thread), to subtract.
    pub fn own_cpu(&self) -> Result<Duration, Error> {
        match self {
            StatementCounter::Mysql(proxy) | StatementCounter::Redis(proxy, _) => proxy.cpu(),
            _ => Ok(Duration::ZERO),
        }
    }

    /// Stops the counter once the workers are gone (their pools close their connections in the
    /// background: a proxy that vanished first would make them log errors).
    pub async fn close(self) {
        if matches!(self, StatementCounter::Mysql(_) | StatementCounter::Redis(..)) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
        let length = payload.len();
        let mut bytes = vec![
            (length & 0xff) as u8,
            ((length >> 8) & 0xff) as u8,
            ((length >> 16) & 0xff) as u8,
            sequence,
        ];
        bytes.extend_from_slice(payload);
        bytes
    }

    fn commands_of(chunks: &[&[u8]]) -> Vec<u8> {
        let mut parser = PacketParser::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |command| seen.push(command));
        }
        seen
    }

    #[test]
    fn the_parser_counts_commands_and_skips_handshake_packets() {
        let mut stream = packet(1, b"handshake response with \x03 inside");
        stream.extend(packet(0, b"\x03SELECT 1"));
        stream.extend(packet(0, b"\x16SELECT ?"));
        stream.extend(packet(0, b"\x17\x01\x00\x00\x00"));
        stream.extend(packet(0, b"\x0e"));
        assert_eq!(commands_of(&[&stream]), vec![0x03, 0x16, 0x17, 0x0e]);
    }

    #[test]
    fn the_parser_survives_any_split_of_the_stream() {
        let mut stream = packet(0, b"\x03BEGIN");
        stream.extend(packet(0, b"\x17abc"));
        stream.extend(packet(0, b"\x03COMMIT"));
        for split in 0..stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(
                commands_of(&[first, second]),
                vec![0x03, 0x17, 0x03],
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(commands_of(&bytes), vec![0x03, 0x17, 0x03]);
    }

    #[test]
    fn the_wire_tally_totals_only_statements() {
        let tally = WireTally::default();
        for command in [0x03u8, 0x17, 0x17, 0x16, 0x0e] {
            let (kind, statement) = mysql_command(command);
            tally.add(kind, statement);
        }
        let counts = tally.counts();
        assert_eq!(counts.total, 3);
        assert_eq!(counts.breakdown.get("COM_STMT_EXECUTE"), Some(&2));
        assert_eq!(counts.breakdown.get("COM_PING (not a statement)"), Some(&1));
    }

    fn resp_commands(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = RespParser::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |name| seen.push(name.to_owned()));
        }
        seen
    }

    #[test]
    fn resp_commands_are_named_whatever_their_arguments_hold() {
        let stream: &[u8] = b"*3\r\n$7\r\nevalsha\r\n$4\r\n*1\r\n\r\n$6\r\n\r\n$3\r\n\r\n*1\r\n$4\r\nTIME\r\nPING\r\n*2\r\n$7\r\npublish\r\n$0\r\n\r\n";
        assert_eq!(resp_commands(&[stream]), vec!["EVALSHA", "TIME", "PING", "PUBLISH"]);
        for split in 0..stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(
                resp_commands(&[first, second]),
                vec!["EVALSHA", "TIME", "PING", "PUBLISH"],
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(resp_commands(&bytes), vec!["EVALSHA", "TIME", "PING", "PUBLISH"]);
    }

    #[test]
    fn commandstats_are_parsed_by_command() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=300,usec_per_call=25.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=4,usec=90\r\ncmdstat_publish:calls=1,usec=3\r\n";
        let calls = parse_commandstats(text);
        assert_eq!(calls.get("evalsha"), Some(&12));
        assert_eq!(calls.get("info"), Some(&4));
        assert_eq!(calls.get("publish"), Some(&1));
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn windows_subtract_key_by_key_and_sqlite_adds_its_transactions() {
        let before = Counts {
            total: 5,
            breakdown: BTreeMap::from([("SELECT id FROM".to_owned(), 5)]),
            server: None,
        };
        let after = Counts {
            total: 9,
            breakdown: BTreeMap::from([
                ("SELECT id FROM".to_owned(), 6),
                ("SELECT json_group_array(id), '[' ||".to_owned(), 2),
                ("INSERT INTO fleetcron_runs".to_owned(), 1),
            ]),
            server: None,
        };
        let counter = StatementCounter::Sqlx { sqlite: true };
        let window = counter
            .window(&Some(before.clone()), &Some(after.clone()))
            .expect("window");
        assert_eq!(window.total, 4 + 2 * 2);
        assert_eq!(window.breakdown.get(SQLITE_BEGIN_KEY), Some(&2));
        assert_eq!(window.breakdown.get("SELECT id FROM"), Some(&1));
        let postgres = StatementCounter::Sqlx { sqlite: false };
        assert_eq!(postgres.window(&Some(before), &Some(after)).map(|w| w.total), Some(4));
        assert_eq!(postgres.window(&None, &None), None);
    }

    #[test]
    fn summaries_lose_their_digits() {
        assert_eq!(
            normalize_summary("UPDATE \"bench_123_4\".tasks AS"),
            "UPDATE \"bench_N_N\".tasks AS"
        );
    }
}
