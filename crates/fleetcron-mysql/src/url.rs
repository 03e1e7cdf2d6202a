//! Parsing of `mysql://` and `mariadb://` store URLs.

use fleetcron_core::redact::{has_ambiguous_userinfo, redact_url, unknown_parameter, AMBIGUOUS_USERINFO};
use fleetcron_core::StoreError;

/// The query parameters a store URL may hold: fleetcron's `table_prefix`, and the parameters sqlx 0.8's
/// `MySqlConnectOptions` reads that fleetcron does not set itself.
pub(crate) const ACCEPTED: &[&str] = &[
    "table_prefix",
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "ssl-key",
    "sslkey",
    "socket",
    "collation",
];

/// Parameters sqlx reads but fleetcron always overrides (its schema and clock depend on them).
const FIXED: &[(&str, &str)] = &[
    ("charset", "fleetcron always connects with utf8mb4"),
    ("timezone", "fleetcron always sets the session time zone to +00:00"),
    ("time-zone", "fleetcron always sets the session time zone to +00:00"),
    (
        "statement-cache-capacity",
        "fleetcron sets the statement cache to 128 statements",
    ),
];

/// A store URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreUrl {
    /// The URL handed to sqlx: scheme `mysql://`, without the `table_prefix` parameter.
    pub(crate) sqlx_url: String,
    /// The `table_prefix` query parameter, validated.
    pub(crate) table_prefix: Option<String>,
    /// The URL for messages and logs: no password, no query string.
    pub(crate) label: String,
}

/// Takes a store URL apart.
///
/// * `mysql://user:password@host:port/database?params` and the same with `mariadb://`;
/// * the `table_prefix` parameter (`[a-z_][a-z0-9_]{0,30}`) is removed and returned; the other
///   [`ACCEPTED`] parameters (`ssl-mode`, `ssl-ca`, `socket`, ...) are left for sqlx; any other
///   parameter is refused, naming the accepted ones;
/// * fragments are refused, and so is an `@` after the host (an unencoded `/ ? #` in the password).
pub(crate) fn parse(url: &str) -> Result<StoreUrl, StoreError> {
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid MySQL URL {:?}: {reason} (expected mysql://user:password@host:3306/database or mariadb://...)",
            redact_url(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("it has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("mysql") && !scheme.eq_ignore_ascii_case("mariadb") {
        return Err(invalid("the scheme must be mysql:// or mariadb://"));
    }
    if has_ambiguous_userinfo(url) {
        return Err(invalid(AMBIGUOUS_USERINFO));
    }
    if rest.contains('#') {
        return Err(invalid("fragments (#...) are not supported"));
    }
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match location.find('/') {
        Some(index) => location.split_at(index),
        None => (location, ""),
    };
    let database = path.trim_start_matches('/');
    if database.is_empty() {
        return Err(invalid("it names no database: add /DATABASE after the host"));
    }

    let mut table_prefix = None;
    let mut kept = Vec::new();
    for parameter in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let name = percent_decode(key).unwrap_or_else(|| key.to_owned());
        if let Some((_, why)) = FIXED.iter().find(|(fixed, _)| *fixed == name) {
            return Err(invalid(&format!("the parameter {name:?} cannot be set: {why}")));
        }
        if !ACCEPTED.contains(&name.as_str()) {
            return Err(invalid(&unknown_parameter(&name, ACCEPTED)));
        }
        if name == "table_prefix" {
            if table_prefix.is_some() {
                return Err(invalid("table_prefix is given twice"));
            }
            let value = percent_decode(value).ok_or_else(|| invalid("table_prefix has an invalid %-escape"))?;
            validate_prefix(&value)?;
            table_prefix = Some(value);
        } else {
            kept.push(parameter);
        }
    }
    let mut sqlx_url = format!("mysql://{location}");
    if !kept.is_empty() {
        sqlx_url.push('?');
        sqlx_url.push_str(&kept.join("&"));
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let user = authority
        .rsplit_once('@')
        .map(|(userinfo, _)| userinfo.split_once(':').map_or(userinfo, |(user, _)| user));
    let label = match user {
        Some(user) if !user.is_empty() => format!("{}://{user}@{host}{path}", scheme.to_ascii_lowercase()),
        _ => format!("{}://{host}{path}", scheme.to_ascii_lowercase()),
    };
    Ok(StoreUrl {
        sqlx_url,
        table_prefix,
        label,
    })
}

/// Checks a table prefix: `[a-z_][a-z0-9_]{0,30}` (it is spliced into SQL text, so nothing else).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let mut chars = prefix.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_first && valid_rest && prefix.len() <= 31 {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "invalid table prefix {prefix:?}: use 1 to 31 characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
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

    fn parsed(url: &str) -> StoreUrl {
        parse(url).expect("valid URL")
    }

    #[test]
    fn accepted_forms() {
        let url = parsed("mysql://root@127.0.0.1:3306/test");
        assert_eq!(url.sqlx_url, "mysql://root@127.0.0.1:3306/test");
        assert_eq!(url.table_prefix, None);
        assert_eq!(url.label, "mysql://root@127.0.0.1:3306/test");

        let url = parsed("mariadb://fc:s3cret@db.example:3307/jobs?table_prefix=cron_&ssl-mode=disabled");
        assert_eq!(url.sqlx_url, "mysql://fc:s3cret@db.example:3307/jobs?ssl-mode=disabled");
        assert_eq!(url.table_prefix.as_deref(), Some("cron_"));
        assert_eq!(url.label, "mariadb://fc@db.example:3307/jobs");
        assert!(!url.label.contains("s3cret"));

        let url = parsed("MySQL://h/d?table_prefix=a%5Fb");
        assert_eq!(url.sqlx_url, "mysql://h/d");
        assert_eq!(url.table_prefix.as_deref(), Some("a_b"));
        assert_eq!(url.label, "mysql://h/d");
    }

    #[test]
    fn refused_forms() {
        for url in [
            "postgres://localhost/test",
            "mysql:/localhost/test",
            "mysql://localhost",
            "mysql://localhost/",
            "mysql://localhost/test#x",
            "mysql://localhost/test?table_prefix=Bad",
            "mysql://localhost/test?table_prefix=",
            "mysql://localhost/test?table_prefix=1abc",
            "mysql://localhost/test?table_prefix=a-b",
            "mysql://localhost/test?table_prefix=a&table_prefix=b",
            "mysql://localhost/test?table_prefix=%zz",
        ] {
            assert!(matches!(parse(url), Err(StoreError::Config(_))), "{url}");
        }
        match parse("mysql://u:hunter2@h") {
            Err(StoreError::Config(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
                assert!(message.contains("u:***@h"), "{message}");
            }
            other => panic!("expected Config, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_fixed_parameters_are_refused() {
        match parse("mysql://u:hunter2@h/db?Table_Prefix=x_") {
            Err(StoreError::Config(message)) => {
                assert!(
                    message.contains(
                        r#"unknown parameter "Table_Prefix" in the store URL; accepted: table_prefix, ssl-mode,"#
                    ),
                    "{message}"
                );
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("expected Config, got {other:?}"),
        }
        for url in [
            "mysql://h/db?password=hunter2",
            "mysql://h/db?charset=latin1",
            "mysql://h/db?timezone=%2B02:00",
            "mysql://u:hunter2/x@h/db",
            "mysql://u:a@h/db?ssl-ca=/x@y",
        ] {
            match parse(url) {
                Err(StoreError::Config(message)) => assert!(!message.contains("hunter2"), "{message}"),
                other => panic!("{url}: expected Config, got {other:?}"),
            }
        }
        let url = parsed(
            "mysql://u@h/db?ssl-mode=disabled&sslca=a&ssl-cert=b&sslkey=c&socket=%2Ftmp%2Fs&collation=utf8mb4_bin",
        );
        assert!(url
            .sqlx_url
            .ends_with("?ssl-mode=disabled&sslca=a&ssl-cert=b&sslkey=c&socket=%2Ftmp%2Fs&collation=utf8mb4_bin"));
    }

    #[test]
    fn prefixes() {
        for good in ["fleetcron_", "_", "a", "abc_123", &"x".repeat(31)] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "1a", "a-b", "a b", "é", &"x".repeat(32), "a;drop"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
