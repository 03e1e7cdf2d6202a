//! Parsing of `redis://` and `rediss://` store URLs: the `prefix` query parameter is fleetcron's and
//! is removed before redis-rs sees the URL; everything else is redis-rs's.

use fleetcron_core::redact::{has_ambiguous_userinfo, redact_url, unknown_parameter, AMBIGUOUS_USERINFO};
use fleetcron_core::StoreError;

/// The query parameters a store URL may hold: fleetcron's `prefix`, and `protocol` — the only one
/// redis-rs 1.8 reads from a `redis://` URL (anything else it would ignore silently).
pub(crate) const ACCEPTED: &[&str] = &["prefix", "protocol"];

/// A store URL split into what redis-rs connects to and what fleetcron reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    /// The URL for redis-rs, without fleetcron's parameters.
    pub(crate) connect: String,
    /// The `prefix` parameter, percent-decoded, if present.
    pub(crate) prefix: Option<String>,
    /// The URL without credentials or query, for messages.
    pub(crate) label: String,
}

/// Splits `url`; refuses other schemes, an empty or repeated `prefix`, bad `%` escapes, parameters
/// other than the [`ACCEPTED`] ones and an `@` after the host (an unencoded `/ ? #` in the password).
pub(crate) fn parse(url: &str) -> Result<ParsedUrl, StoreError> {
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid Redis URL {:?}: {reason} (expected redis://[user:password@]host[:port][/db][?prefix=NAME])",
            redact_url(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("it has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("redis") && !scheme.eq_ignore_ascii_case("rediss") {
        return Err(invalid("the scheme must be redis:// or rediss://"));
    }
    if has_ambiguous_userinfo(url) {
        return Err(invalid(AMBIGUOUS_USERINFO));
    }
    if rest.contains('#') {
        return Err(invalid("fragments are not supported"));
    }
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    if location.is_empty() {
        return Err(invalid("the host is missing"));
    }
    let mut prefix = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|query| query.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode(name).unwrap_or_else(|| name.to_owned());
        if !ACCEPTED.contains(&decoded.as_str()) {
            return Err(invalid(&unknown_parameter(&decoded, ACCEPTED)));
        }
        if decoded == "prefix" {
            if prefix.is_some() {
                return Err(invalid("the prefix parameter is given twice"));
            }
            let value = percent_decode(value).ok_or_else(|| invalid("the prefix has an invalid %-escape"))?;
            if value.is_empty() {
                return Err(invalid("the prefix parameter is empty"));
            }
            prefix = Some(value);
        } else {
            kept.push(pair);
        }
    }
    let mut connect = format!("{scheme}://{location}");
    if !kept.is_empty() {
        connect.push('?');
        connect.push_str(&kept.join("&"));
    }
    let host = location.rsplit_once('@').map_or(location, |(_, host)| host);
    Ok(ParsedUrl {
        connect,
        prefix,
        label: format!("{scheme}://{host}"),
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> ParsedUrl {
        parse(url).expect("valid URL")
    }

    #[test]
    fn prefix_is_removed_and_the_rest_kept() {
        let url = parsed("redis://127.0.0.1:6379/2?prefix=jobs%3Aprod&protocol=resp3");
        assert_eq!(url.connect, "redis://127.0.0.1:6379/2?protocol=resp3");
        assert_eq!(url.prefix.as_deref(), Some("jobs:prod"));
        assert_eq!(url.label, "redis://127.0.0.1:6379/2");

        let url = parsed("rediss://user:secret@cache.example:6380?prefix=a");
        assert_eq!(url.connect, "rediss://user:secret@cache.example:6380");
        assert_eq!(url.prefix.as_deref(), Some("a"));
        assert_eq!(url.label, "rediss://cache.example:6380");

        let url = parsed("redis://localhost");
        assert_eq!(url.connect, "redis://localhost");
        assert_eq!(url.prefix, None);
    }

    #[test]
    fn refused_forms() {
        for url in [
            "postgres://localhost/test",
            "localhost:6379",
            "redis://",
            "redis://h?prefix=",
            "redis://h?prefix=a&prefix=b",
            "redis://h?prefix=%zz",
            "redis://h#x",
        ] {
            match parse(url) {
                Err(StoreError::Config(message)) => assert!(message.contains(&redact_url(url)), "{message}"),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        for url in [
            "mysql://u:hunter2@h",
            "redis://:hunter2@h?Prefix=x",
            "redis://h?password=hunter2",
            "redis://:hunter2/x@h",
            "redis://:hunter2@h?prefix=",
        ] {
            match parse(url) {
                Err(StoreError::Config(message)) => assert!(!message.contains("hunter2"), "{message}"),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_parameters_name_the_accepted_ones() {
        match parse("redis://:pw@h?Prefix=jobs") {
            Err(StoreError::Config(message)) => assert!(
                message.contains(r#"unknown parameter "Prefix" in the store URL; accepted: prefix, protocol"#),
                "{message}"
            ),
            other => panic!("expected a Config error, got {other:?}"),
        }
        assert_eq!(
            parsed("redis://h?protocol=resp3&prefix=p").connect,
            "redis://h?protocol=resp3"
        );
    }
}
