//! Bearer tokens with two roles, compared in constant time, and the request checks every endpoint
//! runs: who is calling, and whether a state change could be a cross-site request.

use crate::error::ApiError;
use axum::http::{header, HeaderMap, Method};
use serde::Serialize;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 characters, so a token cannot be guessed by trying.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// Longest token accepted (and longest `Authorization` value compared).
const MAX_TOKEN_LENGTH: usize = 512;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read tasks, reports, history and metrics.
    Read,
    /// Read, and trigger, enable and disable tasks.
    Admin,
}

impl Role {
    /// `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// The tokens the server accepts. `Debug` never shows a token.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<(Vec<u8>, Role)>,
    insecure_no_auth: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |role| self.tokens.iter().filter(|(_, r)| *r == role).count();
        f.debug_struct("Auth")
            .field("read_tokens", &count(Role::Read))
            .field("admin_tokens", &count(Role::Admin))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

impl Auth {
    /// No tokens: every caller is an admin. [`check_bind`] allows it on loopback addresses only.
    pub fn none() -> Self {
        Self::default()
    }

    /// No tokens on any address: the operator said `--insecure-no-auth`.
    pub fn insecure_no_auth() -> Self {
        Self {
            tokens: Vec::new(),
            insecure_no_auth: true,
        }
    }

    /// These read and admin tokens (each at least [`MIN_TOKEN_LENGTH`] printable characters, no space).
    /// The error names the problem, never the token.
    pub fn with_tokens(read: Vec<String>, admin: Vec<String>) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (list, role) in [(read, Role::Read), (admin, Role::Admin)] {
            for (index, token) in list.into_iter().enumerate() {
                let token = token.trim().to_owned();
                if token.len() < MIN_TOKEN_LENGTH || token.len() > MAX_TOKEN_LENGTH {
                    return Err(format!(
                        "{} token #{} is {} characters; use {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`)",
                        role.as_str(),
                        index + 1,
                        token.len()
                    ));
                }
                if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
                    return Err(format!(
                        "{} token #{} has a space or a non-ASCII character; use printable ASCII only",
                        role.as_str(),
                        index + 1
                    ));
                }
                tokens.push((token.into_bytes(), role));
            }
        }
        Ok(Self {
            tokens,
            insecure_no_auth: false,
        })
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether the operator allowed running without tokens on any address.
    pub fn is_insecure(&self) -> bool {
        self.insecure_no_auth
    }

    /// The role of a presented token: every configured token is compared (constant time per token,
    /// no early exit), so the time taken says nothing about which one matched or how much of it.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut found: Option<Role> = None;
        for (token, role) in &self.tokens {
            // `ct_eq` on slices of different lengths returns false at once: only the length, which is
            // not secret (tokens are long random strings), can be learned.
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(found.map_or(*role, |other| other.max(*role)));
            }
        }
        found
    }

    /// Who is calling: the role of the bearer token (admin for everyone when no token is configured).
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Role, ApiError> {
        if self.tokens.is_empty() {
            return Ok(Role::Admin);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this endpoint needs a token: send `Authorization: Bearer TOKEN`",
            ));
        };
        let value = value.as_bytes();
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(ApiError::unauthorized("the token is not valid"));
        }
        self.role_of(token)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }

    /// Checks a state-changing request: an admin caller, not a cross-site request. Bearer tokens are
    /// never sent by a browser on its own (no cookies here), so with tokens the header is the proof;
    /// without tokens the request must carry `X-Fleetcron-Request`, a header no cross-site form or
    /// simple request can set. Either way an `Origin` of another site is refused.
    pub(crate) fn writer(&self, method: &Method, headers: &HeaderMap) -> Result<Role, ApiError> {
        let role = self.caller(headers)?;
        if role != Role::Admin {
            return Err(ApiError::forbidden(
                "this token may only read; triggering, enabling and disabling need an admin token",
            ));
        }
        if method != Method::GET && method != Method::HEAD {
            if let Some(origin) = headers.get(header::ORIGIN) {
                let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
                let origin_host = origin
                    .to_str()
                    .ok()
                    .and_then(|origin| origin.split_once("://").map(|(_, rest)| rest));
                if origin_host.is_none() || origin_host != host {
                    return Err(ApiError::forbidden(
                        "cross-site request refused: the Origin header names another site",
                    ));
                }
            }
            if self.tokens.is_empty() && !headers.contains_key("x-fleetcron-request") {
                return Err(ApiError::forbidden(
                    "state changes need the header `X-Fleetcron-Request: 1` (protects against cross-site requests)",
                ));
            }
        }
        Ok(role)
    }
}

/// Refuses to listen beyond loopback without a token unless the operator said `--insecure-no-auth`.
pub fn check_bind(address: SocketAddr, auth: &Auth) -> Result<(), String> {
    if auth.has_tokens() || auth.is_insecure() || address.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve the admin API on {address} without a token: set FLEETCRON_ADMIN_TOKEN (and \
         FLEETCRON_READ_TOKEN) or a token file, listen on 127.0.0.1, or pass --insecure-no-auth"
    ))
}

/// Parses a token file: one `read TOKEN` or `admin TOKEN` per line (`role: TOKEN` and `role = TOKEN`
/// too); blank lines and `#` comments are ignored. Errors name the line, never its token.
pub fn parse_token_file(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut read = Vec::new();
    let mut admin = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (role, token) = line
            .split_once(|c: char| c == ':' || c == '=' || c.is_whitespace())
            .map(|(role, token)| {
                let token = token.trim_start_matches(|c: char| c == ':' || c == '=' || c.is_whitespace());
                (role.trim(), token.trim().trim_matches('"'))
            })
            .ok_or_else(|| format!("line {}: expected `read TOKEN` or `admin TOKEN`", number + 1))?;
        match role {
            "read" => read.push(token.to_owned()),
            "admin" => admin.push(token.to_owned()),
            _ => {
                return Err(format!(
                    "line {}: unknown role {}; use `read` or `admin`",
                    number + 1,
                    fleetcron_core::limits::echo(role)
                ))
            }
        }
    }
    Ok((read, admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn roles_come_from_the_exact_token() {
        let auth = Auth::with_tokens(vec!["r".repeat(20)], vec!["a".repeat(20)]).expect("tokens");
        let read = format!("Bearer {}", "r".repeat(20));
        let admin = format!("Bearer {}", "a".repeat(20));
        let prefix = format!("Bearer {}", "r".repeat(19));
        assert_eq!(
            auth.caller(&headers(&[("authorization", &read)])).ok(),
            Some(Role::Read)
        );
        assert_eq!(
            auth.caller(&headers(&[("authorization", &admin)])).ok(),
            Some(Role::Admin)
        );
        assert!(auth.caller(&headers(&[("authorization", &prefix)])).is_err());
        assert!(auth.caller(&headers(&[])).is_err());
        assert!(auth
            .writer(&Method::POST, &headers(&[("authorization", &read)]))
            .is_err());
    }

    #[test]
    fn short_tokens_are_refused_without_echoing_them() {
        let error = Auth::with_tokens(vec!["short-secret".into()], vec![]).expect_err("too short");
        assert!(!error.contains("short-secret"), "{error}");
    }

    #[test]
    fn no_token_binds_loopback_only_unless_insecure() {
        let public: SocketAddr = "0.0.0.0:80".parse().expect("address");
        let local: SocketAddr = "127.0.0.1:80".parse().expect("address");
        assert!(check_bind(public, &Auth::none()).is_err());
        assert!(check_bind(local, &Auth::none()).is_ok());
        assert!(check_bind(public, &Auth::insecure_no_auth()).is_ok());
    }

    #[test]
    fn a_cross_site_post_is_refused_even_for_an_admin() {
        let auth = Auth::none();
        let same = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("x-fleetcron-request", "1"),
        ]);
        let other = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
            ("x-fleetcron-request", "1"),
        ]);
        let bare = headers(&[("host", "127.0.0.1:8080")]);
        assert!(auth.writer(&Method::POST, &same).is_ok());
        assert!(auth.writer(&Method::POST, &other).is_err());
        assert!(auth.writer(&Method::POST, &bare).is_err());
    }

    #[test]
    fn token_files_name_roles() {
        let (read, admin) = parse_token_file("# tokens\nread abc\nadmin: def\n\nadmin = \"ghi\"\n").expect("parses");
        assert_eq!(read, vec!["abc"]);
        assert_eq!(admin, vec!["def", "ghi"]);
        assert!(parse_token_file("root xyz").is_err());
    }
}
