//! A task's `http` table: method, an absolute http(s) URL (shown redacted in messages), headers,
//! body, the statuses that count as success, and which redirects are followed.

use super::walker::{get, Walker};
use super::Action;
use toml::de::DeValue;
use toml::Spanned;

/// The keys of an `http` table.
const HTTP_KEYS: &[&str] = &["method", "url", "headers", "body", "expect_status", "redirects"];

/// Which redirects an HTTP task follows (`http.redirects`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Redirects {
    /// `"same_origin"` (the default): only to the same scheme, host and port; a redirect elsewhere fails
    /// the run.
    #[default]
    SameOrigin,
    /// `"any"`: to any http(s) URL; once a redirect leaves the task URL's origin, the task's headers are
    /// no longer sent.
    Any,
    /// `"none"`: never; a 3xx answer is the response (a failure unless `expect_status` lists it).
    None,
}

/// The `http` table of a task: method, URL, headers, body, expected statuses and redirects.
pub(super) fn parse(walker: &mut Walker<'_>, value: &Spanned<DeValue<'_>>, field: &str) -> Option<Action> {
    let table = walker.table(value, field)?;
    walker.known_keys(table, &format!("{field}."), HTTP_KEYS);
    let mut ok = true;
    let method = match get(table, "method") {
        Some(v) => match walker.string(v, &format!("{field}.method")) {
            Some(m) if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(m) => {
                walker.issue(
                    &v.span(),
                    &format!("{field}.method"),
                    format!("invalid HTTP method {m:?}"),
                );
                None
            }
            None => None,
        },
        None => Some("GET".to_owned()),
    };
    let url = match get(table, "url") {
        Some(v) => match walker.string(v, &format!("{field}.url")) {
            Some(url) if reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => Some(url),
            Some(url) => {
                walker.issue(
                    &v.span(),
                    &format!("{field}.url"),
                    format!(
                        "invalid URL {:?}: use an absolute http:// or https:// URL",
                        fleetcron::redact_url(&url)
                    ),
                );
                None
            }
            None => None,
        },
        None => {
            walker.issue(&value.span(), &format!("{field}.url"), "is required");
            None
        }
    };
    let headers = get(table, "headers").map_or_else(Vec::new, |v| {
        let headers = walker.string_map(v, &format!("{field}.headers"));
        for (name, header_value) in &headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(header_value).is_err()
            {
                walker.issue(
                    &v.span(),
                    &format!("{field}.headers.{name}"),
                    "invalid header name or value",
                );
                ok = false;
            }
        }
        headers
    });
    let body = get(table, "body").and_then(|v| walker.string(v, &format!("{field}.body")));
    let mut expect_status = Vec::new();
    if let Some(v) = get(table, "expect_status") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(code) = walker.integer(item, &format!("{field}.expect_status"), 100, 599) {
                        expect_status.push(u16::try_from(code).unwrap_or(200));
                    }
                }
            }
            _ => {
                if let Some(code) = walker.integer(v, &format!("{field}.expect_status"), 100, 599) {
                    expect_status.push(u16::try_from(code).unwrap_or(200));
                }
            }
        }
    }
    let redirects = match get(table, "redirects") {
        None => Some(Redirects::default()),
        Some(v) => walker
            .string(v, &format!("{field}.redirects"))
            .and_then(|name| match name.as_str() {
                "same_origin" => Some(Redirects::SameOrigin),
                "any" => Some(Redirects::Any),
                "none" => Some(Redirects::None),
                _ => {
                    walker.issue(
                        &v.span(),
                        &format!("{field}.redirects"),
                        format!(
                            "unknown value {:?}; expected \"same_origin\" (the default), \"any\" or \"none\"",
                            fleetcron::redact::truncate(&name, 64)
                        ),
                    );
                    None
                }
            }),
    };
    if !ok {
        return None;
    }
    Some(Action::Http {
        method: method?,
        url: url?,
        headers,
        body,
        expect_status,
        redirects: redirects?,
    })
}
