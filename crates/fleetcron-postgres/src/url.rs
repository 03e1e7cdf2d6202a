//! Parsing of `postgres://` store URLs and validation of schema names.

use fleetcron_core::redact::{has_ambiguous_userinfo, redact_url, unknown_parameter, AMBIGUOUS_USERINFO};
use fleetcron_core::StoreError;

/// The query parameters a store URL may hold: fleetcron's `schema`, and every parameter sqlx 0.8's
/// `PgConnectOptions` reads (anything else sqlx would ignore with a warning that echoes its value).
/// `options[NAME]` (one server setting) is accepted for any `NAME`.
pub(crate) const ACCEPTED: &[&str] = &[
    "schema",
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
    "options[NAME]",
];

/// A store URL split into what sqlx understands and fleetcron's own `schema` parameter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoreUrl {
    /// The URL without the `schema` parameter, for sqlx.
    pub(crate) connect: String,
    /// The `schema` query parameter, validated, if the URL had one.
    pub(crate) schema: Option<String>,
}

/// Splits `postgres://` and `postgresql://` URLs. Every parameter sqlx knows (`sslmode`,
/// `application_name`, `options`, ...) is kept; `schema=NAME` is taken out and validated with
/// [`validate_schema`]; any other parameter is refused, naming the [`ACCEPTED`] ones.
pub(crate) fn parse(url: &str) -> Result<StoreUrl, StoreError> {
    let shown = redact_url(url);
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid PostgreSQL URL {shown:?}: {reason} (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE\
             [?schema=NAME])"
        ))
    };
    let (scheme, _) = url.split_once("://").ok_or_else(|| invalid("it has no scheme"))?;
    if !scheme.eq_ignore_ascii_case("postgres") && !scheme.eq_ignore_ascii_case("postgresql") {
        return Err(invalid("the scheme must be postgres:// or postgresql://"));
    }
    if has_ambiguous_userinfo(url) {
        return Err(invalid(AMBIGUOUS_USERINFO));
    }
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let Some((head, query)) = base.split_once('?') else {
        return Ok(StoreUrl {
            connect: url.to_owned(),
            schema: None,
        });
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(&key.replace('+', " ")).unwrap_or_else(|| key.to_owned());
        let known = ACCEPTED.contains(&name.as_str()) || (name.starts_with("options[") && name.ends_with(']'));
        if !known {
            return Err(invalid(&unknown_parameter(&name, ACCEPTED)));
        }
        if name == "schema" {
            let value = percent_decode(value).ok_or_else(|| invalid("the schema parameter has an invalid %-escape"))?;
            if schema.is_some() {
                return Err(invalid("the schema parameter is given twice"));
            }
            validate_schema(&value)?;
            schema = Some(value);
        } else {
            kept.push(pair);
        }
    }
    let mut connect = head.to_owned();
    if !kept.is_empty() {
        connect.push('?');
        connect.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        connect.push('#');
        connect.push_str(fragment);
    }
    Ok(StoreUrl { connect, schema })
}

/// Checks a schema name: `[a-z_][a-z0-9_]{0,62}` (an unquoted PostgreSQL identifier that stays the same
/// when quoted, and fits `NAMEDATALEN`). Names starting with `pg_` are reserved by PostgreSQL.
pub(crate) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| {
        StoreError::Config(format!(
            "invalid PostgreSQL schema name {schema:?}: {reason} (use 1 to 63 characters from [a-z0-9_], not \
             starting with a digit)"
        ))
    };
    let mut chars = schema.chars();
    match chars.next() {
        None => return Err(invalid("it is empty")),
        Some(first) if !(first.is_ascii_lowercase() || first == '_') => {
            return Err(invalid("it must start with a lower-case letter or an underscore"))
        }
        Some(_) => {}
    }
    if schema.len() > 63 {
        return Err(invalid("it is longer than 63 characters"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid("it has a character outside [a-z0-9_]"));
    }
    if schema.starts_with("pg_") {
        return Err(invalid("names starting with pg_ are reserved by PostgreSQL"));
    }
    Ok(())
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

    fn split(url: &str) -> StoreUrl {
        parse(url).expect("valid URL")
    }

    #[test]
    fn the_schema_parameter_is_taken_out() {
        assert_eq!(
            split("postgres://u@h:5432/db"),
            StoreUrl {
                connect: "postgres://u@h:5432/db".to_owned(),
                schema: None
            }
        );
        assert_eq!(
            split("postgresql://u@h/db?schema=jobs"),
            StoreUrl {
                connect: "postgresql://u@h/db".to_owned(),
                schema: Some("jobs".to_owned())
            }
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=disable&schema=a_1&application_name=x"),
            StoreUrl {
                connect: "postgres://u@h/db?sslmode=disable&application_name=x".to_owned(),
                schema: Some("a_1".to_owned())
            }
        );
        assert_eq!(split("POSTGRES://u@h/db?schema=%5Fx").schema.as_deref(), Some("_x"));
    }

    #[test]
    fn refused_urls_and_schemas() {
        for url in [
            "mysql://u@h/db",
            "postgres:/h/db",
            "h/db",
            "postgres://u@h/db?schema=Upper",
            "postgres://u@h/db?schema=1abc",
            "postgres://u@h/db?schema=",
            "postgres://u@h/db?schema=a-b",
            "postgres://u@h/db?schema=pg_x",
            "postgres://u@h/db?schema=a&schema=b",
            "postgres://u@h/db?schema=%zz",
        ] {
            match parse(url) {
                Err(StoreError::Config(message)) => assert!(!message.is_empty()),
                other => panic!("{url}: expected a Config error, got {other:?}"),
            }
        }
        assert!(validate_schema(&"a".repeat(63)).is_ok());
        assert!(validate_schema(&"a".repeat(64)).is_err());
        assert!(validate_schema("fleetcron").is_ok());
    }

    #[test]
    fn passwords_are_redacted() {
        for url in [
            "mysql://u:secret@h/db",
            "postgres://u:secret/x@h/db",
            "postgres://u@h/db?password=secret&Schema=x",
            "postgres://u:secret@h/db?Schema=x",
        ] {
            match parse(url) {
                Err(error) => assert!(!error.to_string().contains("secret"), "{error}"),
                Ok(_) => panic!("{url}: accepted"),
            }
        }
    }

    #[test]
    fn unknown_parameters_are_refused_naming_the_accepted_ones() {
        match parse("postgres://u:pw@h/db?Schema=jobs") {
            Err(StoreError::Config(message)) => {
                assert!(message.contains(r#"unknown parameter "Schema""#), "{message}");
                assert!(message.contains("accepted: schema, sslmode,"), "{message}");
                assert!(message.contains("u:***@h"), "{message}");
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
        for url in [
            "postgres://h/db?schem=x",
            "postgres://h/db?sslmode=disable&bogus",
            "postgres://h/db?PASSWORD=x",
        ] {
            assert!(matches!(parse(url), Err(StoreError::Config(_))), "{url}");
        }
        let all = "postgres://h/db?sslmode=disable&ssl-mode=prefer&sslrootcert=a&ssl-root-cert=a&ssl-ca=a&sslcert=a\
                   &ssl-cert=a&sslkey=a&ssl-key=a&statement-cache-capacity=1&host=h&hostaddr=127.0.0.1&port=1\
                   &dbname=d&user=u&password=p&application_name=a&options=-c%20x%3Dy&options%5Bsearch_path%5D=s\
                   &schema=s";
        let parsed = split(all);
        assert_eq!(parsed.schema.as_deref(), Some("s"));
        assert!(!parsed.connect.contains("schema="));
    }
}
