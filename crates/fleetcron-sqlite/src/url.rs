//! Parsing of `sqlite:` store URLs.

use fleetcron_core::redact::redact_url;
use fleetcron_core::StoreError;
use std::path::PathBuf;

/// The database path a `sqlite:` URL names.
///
/// * `sqlite:///var/lib/fleetcron.db` and `sqlite:/var/lib/fleetcron.db`: absolute paths;
/// * `sqlite://fleetcron.db` and `sqlite:data/fleetcron.db`: relative to the working directory;
/// * `%XX` escapes are decoded (`sqlite:///tmp/my%20jobs.db`);
/// * query strings and fragments (`?mode=ro`) are refused — a `sqlite:` URL accepts no parameters: set
///   options with [`SqliteOptions`](crate::SqliteOptions) instead.
///
/// Messages show the URL through [`redact_url`].
pub(crate) fn parse(url: &str) -> Result<PathBuf, StoreError> {
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid SQLite URL {:?}: {reason} (expected sqlite:///absolute/path.db or sqlite://relative/path.db)",
            redact_url(url)
        ))
    };
    let (scheme, rest) = url.split_once(':').ok_or_else(|| invalid("it has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("sqlite") {
        return Err(invalid("the scheme must be sqlite:"));
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.contains(['?', '#']) {
        return Err(invalid(
            "a sqlite: URL accepts no parameters (accepted: none) and no fragment: the store always opens the \
             file read-write in WAL mode; use SqliteStore::open_with and SqliteOptions for settings",
        ));
    }
    let path = percent_decode(path).ok_or_else(|| invalid("it has an invalid %-escape"))?;
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path == ":memory:" || path.starts_with("file:") {
        return Err(invalid(
            "in-memory and file: URI databases are not supported: the file must be shared between \
             processes (use memory:// for a single-process store)",
        ));
    }
    Ok(PathBuf::from(path))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(url: &str) -> PathBuf {
        parse(url).expect("valid URL")
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(path("sqlite:///var/lib/f.db"), PathBuf::from("/var/lib/f.db"));
        assert_eq!(path("sqlite:/var/lib/f.db"), PathBuf::from("/var/lib/f.db"));
        assert_eq!(path("sqlite://f.db"), PathBuf::from("f.db"));
        assert_eq!(path("sqlite:data/f.db"), PathBuf::from("data/f.db"));
        assert_eq!(path("SQLite://./f.db"), PathBuf::from("./f.db"));
        assert_eq!(path("sqlite:///tmp/my%20jobs.db"), PathBuf::from("/tmp/my jobs.db"));
    }

    #[test]
    fn refused_forms() {
        for url in [
            "sqlite:///tmp/f.db?mode=ro",
            "sqlite://f.db#x",
            "sqlite://",
            "sqlite:",
            "postgres://localhost/test",
            "f.db",
            "sqlite::memory:",
            "sqlite://%zz.db",
        ] {
            match parse(url) {
                Err(StoreError::Config(message)) => assert!(message.contains(&redact_url(url)), "{message}"),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
        match parse("sqlite:///tmp/f.db?password=hunter22&mode=ro") {
            Err(StoreError::Config(message)) => {
                assert!(!message.contains("hunter22"), "{message}");
                assert!(message.contains("accepts no parameters (accepted: none)"), "{message}");
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
    }
}
