//! Parsing of `mysql://` and `mariadb://` store URLs.

use fleetcron_core::StoreError;

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
/// * the `table_prefix` parameter (`[a-z_][a-z0-9_]{0,30}`) is removed and returned; every other
///   parameter (`ssl-mode`, `ssl-ca`, `socket`, ...) is left for sqlx;
/// * fragments are refused.
pub(crate) fn parse(url: &str) -> Result<StoreUrl, StoreError> {
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid MySQL URL {:?}: {reason} (expected mysql://user:password@host:3306/database or mariadb://...)",
            redact(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("it has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("mysql") && !scheme.eq_ignore_ascii_case("mariadb") {
        return Err(invalid("the scheme must be mysql:// or mariadb://"));
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
        if percent_decode(key).as_deref() == Some("table_prefix") {
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

/// The URL with its password replaced by `***`, for messages about a URL that does not parse.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
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
    fn prefixes() {
        for good in ["fleetcron_", "_", "a", "abc_123", &"x".repeat(31)] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "1a", "a-b", "a b", "é", &"x".repeat(32), "a;drop"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
