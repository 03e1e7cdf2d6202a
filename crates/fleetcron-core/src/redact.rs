//! The one redactor for store URLs, and the scrubber for text that came from drivers.
//!
//! * [`redact_url`] turns any string that may be a URL — well-formed, malformed or hostile — into a label
//!   safe to print: the password of the userinfo and the values of secret-looking query parameters become
//!   `***`, control characters are escaped and the result is bounded in length. When the structure is
//!   ambiguous it over-redacts (everything up to the *last* `@` counts as userinfo); it never
//!   under-redacts.
//! * [`Secrets`] knows the secret strings of a URL (its password and secret parameter values, raw,
//!   percent-decoded and re-encoded the ways drivers print them) and replaces them in any text: error
//!   messages of sqlx, redis-rs and reqwest, panic messages, anything a driver may echo.
//! * [`StoreLabel`] is what a store prints about itself: a label that never held the password, plus the
//!   secrets to scrub from driver messages.
//!
//! Every backend, the facade and the command line show store URLs only through this module.

use crate::error::{SchedulerError, StoreError};
use std::fmt;
use std::sync::Arc;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Shown URLs longer than this many bytes are cut (see [`truncate`]).
pub const MAX_SHOWN_URL: usize = 160;

/// Query parameter names (lower case, `-` and `_` removed) that hold secrets, matched as substrings:
/// `password`, `Password`, `sslpassword`, `ssl-key-password`, `pwd`, `secret`, `token`, `auth`,
/// `api_key`, …
const SECRET_PARAMETER_PARTS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
    "key",
    "credential",
    "signature",
    "sig",
    "session",
    "cookie",
];

/// Whether a query parameter of this name holds a secret (case-insensitive, `%`-escapes decoded,
/// over-approximating: `sslkey` counts).
pub fn is_secret_parameter(name: &str) -> bool {
    let decoded = percent_decode(name, true);
    let normalized: String = decoded
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_PARAMETER_PARTS.iter().any(|part| normalized.contains(part))
}

/// `url` safe to show: the userinfo's password and secret query values replaced by `***`, the fragment
/// masked, control characters escaped, at most about [`MAX_SHOWN_URL`] bytes.
///
/// ```
/// use fleetcron_core::redact::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db/jobs?schema=x"), "postgres://app:***@db/jobs?schema=x");
/// assert_eq!(redact_url("postgres://u:p@ss/w?rd#x@host/db"), "postgres://***@host/db");
/// assert_eq!(redact_url("redis://h/0?password=pw&prefix=p"), "redis://h/0?password=***&prefix=p");
/// ```
pub fn redact_url(url: &str) -> String {
    truncate(&escape_controls(&redact_parts(url)), MAX_SHOWN_URL)
}

/// What is secret in a URL: byte ranges to mask, and the secret strings (for [`Secrets`]).
///
/// Two readings are combined and everything either finds is masked:
/// * **last `@`** — everything up to the last `@` is userinfo (a password with unencoded `/ ? # @ :`
///   stays whole); a userinfo holding `/ ? #` (or any userinfo of a URL without `//`) is masked whole;
///   secret query values, the fragment and a port that is not a number are masked;
/// * **standard** — the authority ends at the first `/ ? #`, as the `url` crate and the drivers read
///   it: its password and the secret values of the query after the first `?` are masked too (an `@`
///   inside a query value must not uncover the value's tail).
#[derive(Default)]
struct Analysis {
    ranges: Vec<std::ops::Range<usize>>,
    secrets: Vec<String>,
}

fn valid_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl Analysis {
    fn mask(&mut self, url: &str, range: std::ops::Range<usize>, secret: bool) {
        if range.is_empty() {
            return;
        }
        if secret {
            self.secrets.push(url[range.clone()].to_owned());
        }
        self.ranges.push(range);
    }

    /// Masks the values of secret parameters of the query at `start..end`.
    fn query(&mut self, url: &str, start: usize, end: usize) {
        let mut pair_start = start;
        for pair in url[start..end].split('&') {
            if let Some(equals) = pair.find('=') {
                if is_secret_parameter(&pair[..equals]) {
                    self.mask(url, pair_start + equals + 1..pair_start + pair.len(), true);
                }
            }
            pair_start += pair.len() + 1;
        }
    }

    /// Masks a port that is not a number in the authority at `start..end` (`scheme://user:password/db`,
    /// a forgotten host, puts the password there).
    fn port(&mut self, url: &str, start: usize, end: usize) {
        let authority = &url[start..end];
        let colon = if authority.starts_with('[') {
            authority
                .find(']')
                .filter(|close| authority[close + 1..].starts_with(':'))
                .map(|close| close + 1)
        } else {
            authority.rfind(':')
        };
        if let Some(colon) = colon {
            if !authority[colon + 1..].chars().all(|c| c.is_ascii_digit()) {
                self.mask(url, start + colon + 1..end, true);
            }
        }
    }
}

fn analyse(url: &str) -> Analysis {
    let mut analysis = Analysis::default();
    let (body, hierarchical) = match url.split_once(':') {
        Some((scheme, after)) if valid_scheme(scheme) => match after.strip_prefix("//") {
            Some(_) => (scheme.len() + 3, true),
            None => (scheme.len() + 1, false),
        },
        _ => (0, false),
    };
    // Reading 1: the last @.
    let mut last_password = None;
    let rest = match url[body..].rfind('@').map(|at| body + at) {
        Some(at) => {
            let userinfo = &url[body..at];
            let colon = userinfo.find(':').map(|colon| body + colon);
            if let Some(colon) = colon {
                last_password = Some(&url[colon + 1..at]);
                analysis.secrets.push(url[colon + 1..at].to_owned());
            }
            if !hierarchical || userinfo.contains(['/', '?', '#']) {
                // Without `//` there is no telling a user from a password: all of it is secret.
                analysis.mask(url, body..at, !hierarchical);
                if let Some(last_colon) = userinfo.rfind(':').filter(|_| !hierarchical) {
                    analysis.secrets.push(userinfo[last_colon + 1..].to_owned());
                }
            } else if let Some(colon) = colon {
                analysis.mask(url, colon + 1..at, false);
            }
            at + 1
        }
        None => body,
    };
    let fragment = url[rest..].find('#').map_or(url.len(), |hash| rest + hash);
    analysis.mask(url, (fragment + 1).min(url.len())..url.len(), true);
    let query = url[rest..fragment].find('?').map(|question| rest + question);
    if let Some(question) = query {
        analysis.query(url, question + 1, fragment);
    }
    if hierarchical {
        let authority_end = url[rest..fragment].find(['/', '?']).map_or(fragment, |end| rest + end);
        analysis.port(url, rest, authority_end);
    }
    // Reading 2: the standard one.
    if hierarchical {
        let authority_end = url[body..].find(['/', '?', '#']).map_or(url.len(), |end| body + end);
        let host_start = match url[body..authority_end].rfind('@') {
            Some(at) => {
                if let Some(colon) = url[body..body + at].find(':') {
                    let password = &url[body + colon + 1..body + at];
                    // A piece of the password the first reading already holds whole is no secret of
                    // its own (scrubbing its every occurrence would only garble messages).
                    let known = last_password.is_some_and(|whole| whole.contains(password));
                    analysis.mask(url, body + colon + 1..body + at, !known);
                }
                body + at + 1
            }
            None => body,
        };
        analysis.port(url, host_start, authority_end);
    }
    let fragment = url[body..].find('#').map_or(url.len(), |hash| body + hash);
    if let Some(question) = url[body..fragment].find('?') {
        analysis.query(url, body + question + 1, fragment);
    }
    analysis
}

fn redact_parts(url: &str) -> String {
    let mut ranges = analyse(url).ranges;
    ranges.sort_by_key(|range| range.start);
    let mut out = String::with_capacity(url.len());
    let mut shown_to = 0;
    for range in ranges {
        if range.end <= shown_to {
            continue;
        }
        if range.start > shown_to {
            out.push_str(&url[shown_to..range.start]);
            out.push_str(MASK);
        } else if shown_to == 0 {
            out.push_str(MASK);
        }
        shown_to = range.end;
    }
    out.push_str(&url[shown_to..]);
    out
}

/// Whether `url` has an `@` after the end of its authority (a `/`, `?` or `#` in front of it): either a
/// password holding unencoded `/ ? #` — which a driver would split in the wrong place, connecting to a
/// host made of a piece of the password — or an `@` in a path or query value. Backends refuse such URLs
/// with [`AMBIGUOUS_USERINFO`].
pub fn has_ambiguous_userinfo(url: &str) -> bool {
    let Some((_, body)) = url.split_once("://") else {
        return false;
    };
    match (body.find(['/', '?', '#']), body.rfind('@')) {
        (Some(end), Some(at)) => at > end,
        _ => false,
    }
}

/// What to do about a URL [`has_ambiguous_userinfo`] refuses.
pub const AMBIGUOUS_USERINFO: &str = "it has an '@' after a '/', '?' or '#': percent-encode those characters in \
     the password (/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A) and an '@' in a parameter value as %40";

/// The error text for a query parameter a backend does not know: names it (escaped, bounded — never its
/// value) and lists the accepted ones.
pub fn unknown_parameter(name: &str, accepted: &[&str]) -> String {
    format!(
        "unknown parameter {:?} in the store URL; accepted: {}",
        truncate(&escape_controls(name), 64),
        accepted.join(", ")
    )
}

/// Control characters (newlines, escapes) as `\n`, `\u{1b}`: a label stays one line and cannot drive a
/// terminal.
fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` cut to at most `max` bytes (at a character boundary) with `…(N bytes)` appended when it was
/// longer: echoed input stays bounded.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], text.len())
}

/// Decodes `%XX` escapes; malformed escapes stay as they are, invalid UTF-8 becomes U+FFFD.
pub fn percent_decode_lossy(text: &str) -> String {
    percent_decode(text, false)
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); malformed escapes stay as they are,
/// invalid UTF-8 becomes U+FFFD.
fn percent_decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            if let Some(value) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                decoded.push(value);
                index += 3;
                continue;
            }
        }
        decoded.push(if plus && byte == b'+' { b' ' } else { byte });
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Percent-encodes every byte for which `encode` says so, with upper- or lower-case hex.
fn percent_encode(text: &str, encode: impl Fn(u8) -> bool, upper: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if encode(byte) {
            if upper {
                out.push_str(&format!("%{byte:02X}"));
            } else {
                out.push_str(&format!("%{byte:02x}"));
            }
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

/// The bytes the `url` crate escapes in a userinfo (so a driver that prints its parsed URL shows them so).
fn userinfo_escaped(byte: u8) -> bool {
    !(0x20..0x7f).contains(&byte)
        || matches!(
            byte,
            b' ' | b'"'
                | b'#'
                | b'<'
                | b'>'
                | b'?'
                | b'`'
                | b'{'
                | b'}'
                | b'/'
                | b':'
                | b';'
                | b'='
                | b'@'
                | b'['
                | b'\\'
                | b']'
                | b'^'
                | b'|'
        )
}

/// The secret strings of a URL (or of an HTTP request: header values), in every form a driver may
/// print them; [`Secrets::scrub`] replaces them with `***` in any text. Its `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret that contains another is replaced whole.
    items: Arc<Vec<String>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} forms)", self.items.len())
    }
}

impl Secrets {
    /// No secrets: scrubbing changes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// The secrets of a URL: the userinfo's password (everything between its first `:` and the last `@`
    /// of the URL — more than a driver would take when the URL is malformed) and the values of
    /// secret-looking query parameters ([`is_secret_parameter`]), plus, for a URL whose host is missing
    /// (`scheme://user:password/db`), a non-numeric port.
    pub fn of_url(url: &str) -> Self {
        let mut secrets = Self::none();
        secrets.add_url(url);
        secrets
    }

    /// Adds the secrets of another URL.
    pub fn add_url(&mut self, url: &str) {
        for secret in analyse(url).secrets {
            self.add(&secret);
        }
    }

    /// Adds one secret as written (e.g. still percent-encoded in a URL) and its decoded and re-encoded
    /// forms, and the forms `{:?}` and escaping give them.
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut forms = Vec::new();
        for raw in [
            secret.to_owned(),
            percent_decode(secret, false),
            percent_decode(secret, true),
        ] {
            for upper in [true, false] {
                forms.push(percent_encode(&raw, |byte| !byte.is_ascii_alphanumeric(), upper));
                forms.push(percent_encode(&raw, userinfo_escaped, upper));
            }
            forms.push(raw.escape_debug().to_string());
            forms.push(raw.escape_default().to_string());
            forms.push(raw);
        }
        let items = Arc::make_mut(&mut self.items);
        for form in forms {
            if !form.is_empty() && !items.contains(&form) {
                items.push(form);
            }
        }
        items.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        let items = Arc::make_mut(&mut self.items);
        for item in other.items.iter() {
            if !items.contains(item) {
                items.push(item.clone());
            }
        }
        items.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.items.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// Like [`Self::scrub`] for the *end* of a longer text (an output tail): a secret cut in two by the
    /// truncation leaves its end at the start of `tail`, which is masked too when it is 4 bytes or more.
    pub fn scrub_tail(&self, tail: &str) -> String {
        let scrubbed = self.scrub(tail);
        let mut cut = 0;
        for secret in self.items.iter() {
            for start in 1..secret.len() {
                let end_of_secret = &secret[start..];
                if end_of_secret.len() <= cut || end_of_secret.len() < 4 {
                    break;
                }
                if secret.is_char_boundary(start) && scrubbed.starts_with(end_of_secret) {
                    cut = end_of_secret.len();
                    break;
                }
            }
        }
        if cut == 0 {
            scrubbed
        } else {
            format!("{MASK}{}", &scrubbed[cut..])
        }
    }

    /// A store error with its message scrubbed.
    pub fn scrub_store_error(&self, error: StoreError) -> StoreError {
        if self.is_empty() {
            return error;
        }
        match error {
            StoreError::Unavailable(text) => StoreError::Unavailable(self.scrub(&text)),
            StoreError::ReadOnly(text) => StoreError::ReadOnly(self.scrub(&text)),
            StoreError::Corrupt(text) => StoreError::Corrupt(self.scrub(&text)),
            StoreError::Duplicate(text) => StoreError::Duplicate(self.scrub(&text)),
            StoreError::Config(text) => StoreError::Config(self.scrub(&text)),
            other @ StoreError::SchemaTooNew { .. } => other,
        }
    }

    /// A scheduler error with the message of its store error scrubbed.
    pub fn scrub_scheduler_error(&self, error: SchedulerError) -> SchedulerError {
        match error {
            SchedulerError::Store(store) => SchedulerError::Store(self.scrub_store_error(store)),
            other => other,
        }
    }
}

/// How a store names itself in messages and logs: a label that never held the password (e.g.
/// `PostgreSQL db:5432/jobs (schema fleetcron)` or a [`redact_url`] output), and the [`Secrets`] of the
/// URL it was opened with, to scrub driver messages. `Display` and `Debug` show the label only.
#[derive(Clone)]
pub struct StoreLabel {
    shown: String,
    secrets: Secrets,
}

impl StoreLabel {
    /// The label `shown` for the store opened with `url`; `shown` itself is scrubbed and bounded.
    pub fn new(shown: impl AsRef<str>, url: &str) -> Self {
        let secrets = Secrets::of_url(url);
        let shown = truncate(&escape_controls(&secrets.scrub(shown.as_ref())), 2 * MAX_SHOWN_URL);
        Self { shown, secrets }
    }

    /// The label of `url`: its [`redact_url`] form.
    pub fn of_url(url: &str) -> Self {
        Self {
            shown: redact_url(url),
            secrets: Secrets::of_url(url),
        }
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// The secrets of the URL.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// `text` scrubbed of the URL's secrets.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }

    /// A store error scrubbed of the URL's secrets.
    pub fn scrub_error(&self, error: StoreError) -> StoreError {
        self.secrets.scrub_store_error(error)
    }
}

impl fmt::Display for StoreLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for StoreLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (input, expected redaction, the secret that must not survive)
    const TABLE: &[(&str, &str, &str)] = &[
        ("postgres://u:s3cret@h:5432/db", "postgres://u:***@h:5432/db", "s3cret"),
        (
            "postgresql://u:s3cret@h/db?schema=x",
            "postgresql://u:***@h/db?schema=x",
            "s3cret",
        ),
        ("POSTGRES://u:s3cret@h/db", "POSTGRES://u:***@h/db", "s3cret"),
        // Unencoded / ? # @ : in the password: everything up to the last @ is userinfo, and it is
        // ambiguous, so the user is masked too.
        (
            "postgres://u:p@ss/w?rd#x@host/db",
            "postgres://***@host/db",
            "p@ss/w?rd#x",
        ),
        ("postgres://u:p@ss:w@host/db", "postgres://u:***@host/db", "p@ss:w"),
        ("mysql://u:a/b@h/db", "mysql://***@h/db", "a/b"),
        ("mysql://u:a?b@h/db", "mysql://***@h/db", "a?b"),
        ("mariadb://u:a#b@h/db", "mariadb://***@h/db", "a#b"),
        ("redis://:a@b@h:6379/0", "redis://:***@h:6379/0", "a@b"),
        // Percent-encoded.
        (
            "postgres://u:p%40ss%2Fw%3Frd%23x%3A@host/db",
            "postgres://u:***@host/db",
            "p%40ss%2Fw%3Frd%23x%3A",
        ),
        (
            "rediss://user:pa%3Ass@h:6380?prefix=p",
            "rediss://user:***@h:6380?prefix=p",
            "pa%3Ass",
        ),
        // Query parameters.
        (
            "postgres://u@h/db?password=hunter22&schema=s",
            "postgres://u@h/db?password=***&schema=s",
            "hunter22",
        ),
        (
            "postgres://u@h/db?sslmode=disable&PassWord=hunter22",
            "postgres://u@h/db?sslmode=disable&PassWord=***",
            "hunter22",
        ),
        ("mysql://u@h/db?pwd=hunter22", "mysql://u@h/db?pwd=***", "hunter22"),
        (
            "redis://h?token=hunter22&prefix=a",
            "redis://h?token=***&prefix=a",
            "hunter22",
        ),
        ("redis://h?auth=hunter22", "redis://h?auth=***", "hunter22"),
        (
            "postgres://h/db?sslpassword=hunter22",
            "postgres://h/db?sslpassword=***",
            "hunter22",
        ),
        (
            "postgres://h/db?pass%77ord=hunter22",
            "postgres://h/db?pass%77ord=***",
            "hunter22",
        ),
        (
            "mysql://h/db?secret=hunter22&passwd=hunter33",
            "mysql://h/db?secret=***&passwd=***",
            "hunter22",
        ),
        // A forgotten host puts the password in the port.
        ("postgres://user:hunter22/db", "postgres://user:***/db", "hunter22"),
        ("redis://:hunter22", "redis://:***", "hunter22"),
        // Fragments are masked.
        ("postgres://u@h/db#hunter22", "postgres://u@h/db#***", "hunter22"),
        // SQLite: paths, but an @ still makes what precedes it a userinfo (over-redacted).
        ("sqlite:///var/lib/a@b/f.db", "sqlite://***@b/f.db", ""),
        ("sqlite:///var/lib/f.db", "sqlite:///var/lib/f.db", ""),
        ("sqlite://u:hunter22@/tmp/f.db", "sqlite://u:***@/tmp/f.db", "hunter22"),
        (
            "sqlite:/tmp/f.db?password=hunter22",
            "sqlite:/tmp/f.db?password=***",
            "hunter22",
        ),
        // Not URLs at all.
        ("no-scheme-at-all", "no-scheme-at-all", ""),
        ("u:hunter22@host", "u:***@host", "hunter22"),
        ("://:hunter22@", "***@", "hunter22"),
        ("", "", ""),
        ("@", "@", ""),
        ("postgres://[::1]:5432/db", "postgres://[::1]:5432/db", ""),
        (
            "postgres://u:hunter22@[::1]:5432/db",
            "postgres://u:***@[::1]:5432/db",
            "hunter22",
        ),
        ("memory://", "memory://", ""),
    ];

    #[test]
    fn the_table_of_nasty_urls() {
        for (url, expected, secret) in TABLE {
            let shown = redact_url(url);
            assert_eq!(&shown, expected, "{url}");
            if secret.is_empty() {
                continue;
            }
            assert!(!shown.contains(secret), "{url}: {shown}");
            let scrubbed = Secrets::of_url(url).scrub(&format!("driver said: {url} / {secret}"));
            assert!(!scrubbed.contains(secret), "{url}: {scrubbed}");
        }
    }

    #[test]
    fn every_form_of_the_password_is_scrubbed() {
        let secrets = Secrets::of_url("postgres://u:p%40ss%2Fw%3Frd%23x%3A%22@host/db");
        for form in [
            "p@ss/w?rd#x:\"",
            "p%40ss%2Fw%3Frd%23x%3A%22",
            "p%40ss%2fw%3frd%23x%3a%22",
            "p%40ss%2Fw%3Frd%23x%3A%22",
            "p@ss/w?rd#x:\\\"",
        ] {
            let text = format!("error: password authentication failed ({form}) for user u");
            assert_eq!(
                secrets.scrub(&text),
                "error: password authentication failed (***) for user u",
                "{form}"
            );
        }
        // A driver printing the URL it parsed (the url crate escapes @ : / ? # in a userinfo).
        let secrets = Secrets::of_url("redis://:p@ss:w@h:6379");
        assert_eq!(secrets.scrub("redis://:p%40ss%3Aw@h:6379"), "redis://:***@h:6379");
        assert!(format!("{secrets:?}").starts_with("Secrets("), "{secrets:?}");
        assert!(!format!("{secrets:?}").contains("ss"));
    }

    #[test]
    fn the_end_of_a_cut_secret_is_masked_in_a_tail() {
        let mut secrets = Secrets::none();
        secrets.add("Fc5entinelZx9Tail");
        assert_eq!(secrets.scrub_tail("tinelZx9Tail and more"), "*** and more");
        assert_eq!(secrets.scrub_tail("ail and more"), "ail and more");
        assert_eq!(secrets.scrub_tail("x Fc5entinelZx9Tail y"), "x *** y");
        assert_eq!(secrets.scrub_tail("unrelated"), "unrelated");
        assert_eq!(Secrets::none().scrub_tail("anything"), "anything");
    }

    #[test]
    fn long_and_hostile_urls_are_bounded_and_one_line() {
        let long = format!("postgres://u@h/db?application_name={}", "x".repeat(1 << 20));
        let shown = redact_url(&long);
        assert!(shown.len() < MAX_SHOWN_URL + 40, "{} bytes", shown.len());
        assert!(shown.ends_with(&format!("…({} bytes)", long.len())), "{shown}");
        let shown = redact_url("postgres://u@h/db\n\u{1b}[31mred");
        assert_eq!(shown, "postgres://u@h/db\\n\\u{1b}[31mred");
        assert_eq!(truncate("héllo", 2), "h…(6 bytes)");
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn labels_show_only_the_label() {
        let label = StoreLabel::new("PostgreSQL h:5432/db", "postgres://u:hunter22@h/db");
        assert_eq!(label.to_string(), "PostgreSQL h:5432/db");
        assert_eq!(format!("{label:?}"), "\"PostgreSQL h:5432/db\"");
        let error = label.scrub_error(StoreError::Config("bad password hunter22".into()));
        assert_eq!(error.to_string(), "invalid store configuration: bad password ***");
        let label = StoreLabel::new("leaky u:hunter22@h", "postgres://u:hunter22@h/db");
        assert_eq!(label.as_str(), "leaky u:***@h");
        assert_eq!(StoreLabel::of_url("redis://:hunter22@h").as_str(), "redis://:***@h");
    }

    #[test]
    fn ambiguous_userinfo() {
        for url in [
            "postgres://u:a/b@h/db",
            "redis://:a?b@h",
            "mysql://u:a#b@h/db",
            "postgres://u@h/db?x=a@b",
        ] {
            assert!(has_ambiguous_userinfo(url), "{url}");
        }
        for url in ["postgres://u:a@b:c@h/db", "postgres://u:a%2Fb@h/db", "redis://h", "x"] {
            assert!(!has_ambiguous_userinfo(url), "{url}");
        }
        let message = unknown_parameter(&format!("Sch\nema{}", "x".repeat(1000)), &["schema", "sslmode"]);
        assert!(message.starts_with("unknown parameter \"Sch\\\\nemaxx"), "{message}");
        assert!(
            message.len() < 200 && message.ends_with("accepted: schema, sslmode"),
            "{message}"
        );
    }

    #[test]
    fn secret_parameters() {
        for name in [
            "password",
            "PASSWORD",
            "pass",
            "pwd",
            "passwd",
            "secret",
            "token",
            "auth",
            "sslpassword",
            "ssl-key-password",
            "api_key",
            "X-Api-Key",
            "pass%77ord",
        ] {
            assert!(is_secret_parameter(name), "{name}");
        }
        for name in [
            "schema",
            "prefix",
            "table_prefix",
            "sslmode",
            "application_name",
            "protocol",
            "host",
            "dbname",
        ] {
            assert!(!is_secret_parameter(name), "{name}");
        }
    }

    fn scheme() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "postgres",
            "postgresql",
            "mysql",
            "mariadb",
            "redis",
            "rediss",
            "sqlite",
            "POSTGRES",
            "http",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the password holds (`/ ? # @ :`, escapes, unicode), neither it nor its encoded forms
        /// survive redaction, and scrubbing removes it from any text that quotes it.
        #[test]
        fn the_password_never_survives(
            scheme in scheme(),
            user in "[a-z]{0,6}",
            password in "[a-zA-Z0-9/?#@:%+ &=é]{1,24}",
            host in "[a-z0-9.]{1,12}",
            port in prop::option::of(0u16..),
            tail in "(/[a-z0-9]{0,8})?(\\?[a-z]{1,8}=[a-z0-9]{0,8}(&[a-z]{1,8}=[a-z0-9]{0,8})?)?",
        ) {
            let port = port.map(|port| format!(":{port}")).unwrap_or_default();
            let url = format!("{scheme}://{user}:{password}@{host}{port}{tail}");
            let secrets = Secrets::of_url(&url);
            let shown = redact_url(&url);
            // Only a password that the visible parts do not happen to contain can be looked for.
            let visible = format!("{scheme}://{user}@{host}{port}{tail}");
            if !visible.contains(&password) {
                prop_assert!(!shown.contains(&password), "{} -> {}", url, shown);
            }
            let quoted = format!("failed: {password} / {} / {url}", percent_decode(&password, false));
            let scrubbed = secrets.scrub(&quoted);
            prop_assert!(!scrubbed.contains(&password), "{} -> {}", quoted, scrubbed);
        }

        /// A `password=` (or other secret) query value never survives, whatever else the URL holds.
        #[test]
        fn secret_query_values_never_survive(
            scheme in scheme(),
            name in prop::sample::select(vec!["password", "Password", "pwd", "token", "sslpassword", "auth"]),
            value in "[a-zA-Z0-9%+/:@]{6,24}",
            before in "([a-z]{1,6}=[a-z0-9]{0,6}&)?",
        ) {
            let url = format!("{scheme}://h:1/db?{before}{name}={value}");
            let shown = redact_url(&url);
            if !format!("{scheme}://h:1/db?{before}{name}=").contains(&value) {
                prop_assert!(!shown.contains(&value), "{} -> {}", url, shown);
            }
            let scrubbed = Secrets::of_url(&url).scrub(&format!("x {value} y"));
            prop_assert!(!scrubbed.contains(&value), "{}", scrubbed);
        }

        /// Any input at all: redaction never panics and stays bounded.
        #[test]
        fn arbitrary_input_is_bounded(text in ".{0,400}") {
            let shown = redact_url(&text);
            prop_assert!(shown.len() <= MAX_SHOWN_URL + 30, "{}", shown.len());
            let _ = Secrets::of_url(&text).scrub(&text);
        }
    }
}
