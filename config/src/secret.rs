//! Secrets in configuration: `${VAR}` from the environment, `${file:/path}` from a file.
//!
//! A secret is kept as the text the user wrote and expanded only when a connection needs it,
//! so a configuration can be checked on a machine that does not have the secrets. Neither
//! type ever prints its expanded value: `Display` and `Debug` show a redacted form.

use std::fmt;

use serde::{Deserialize, Deserializer};
use url::Url;

/// Why a secret could not be expanded. Names the variable or file, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// `${` without a closing `}`, or an empty name.
    Syntax(String),
    /// The environment variable is not set.
    UnsetVar(String),
    /// The file could not be read.
    File { path: String, reason: String },
    /// Not a URL: why, and the text with its user-info redacted.
    BadUrl(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(why) => write!(f, "bad secret reference: {why}"),
            Self::UnsetVar(v) => write!(f, "environment variable {v} is not set"),
            Self::File { path, reason } => write!(f, "cannot read secret file {path}: {reason}"),
            Self::BadUrl(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SecretError {}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(v) => write!(f, "${{{v}}}"),
            Self::File(p) => write!(f, "${{file:{p}}}"),
        }
    }
}

/// A string that may hold `${VAR}` or `${file:PATH}` references (`$$` is a literal `$`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(template: impl Into<String>) -> Self {
        Self(template.into())
    }

    /// The references in the template, in order; a syntax error if it has a malformed one.
    pub fn references(&self) -> Result<Vec<SecretRef>, SecretError> {
        let mut refs = Vec::new();
        for piece in pieces(&self.0)? {
            if let Piece::Ref(r) = piece {
                refs.push(r);
            }
        }
        Ok(refs)
    }

    /// Whether the template is only literal text: a password written into the file.
    pub fn is_literal(&self) -> bool {
        matches!(self.references(), Ok(r) if r.is_empty())
    }

    /// Expands the references with `lookup` for variables and the file system for files.
    pub fn expand_with(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, SecretError> {
        let mut out = String::with_capacity(self.0.len());
        for piece in pieces(&self.0)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Dollar => out.push('$'),
                Piece::Ref(SecretRef::Env(v)) => {
                    out.push_str(&lookup(&v).ok_or(SecretError::UnsetVar(v))?);
                }
                Piece::Ref(SecretRef::File(p)) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| SecretError::File {
                        path: p.clone(),
                        reason: e.to_string(),
                    })?;
                    out.push_str(text.trim_end_matches(['\n', '\r']));
                }
            }
        }
        Ok(out)
    }

    /// Expands the references from the process environment.
    pub fn expand(&self) -> Result<String, SecretError> {
        self.expand_with(&|v| std::env::var(v).ok())
    }

    /// The template as written, for places that redact it themselves (e.g. URLs).
    pub(crate) fn template(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let secret = Secret(s);
        secret.references().map_err(serde::de::Error::custom)?;
        Ok(secret)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Dollar,
    Ref(SecretRef),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, SecretError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Piece::Dollar);
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| SecretError::Syntax("`${` without a closing `}`".into()))?;
            let name = &body[..end];
            let r = match name.strip_prefix("file:") {
                Some(p) if !p.is_empty() => SecretRef::File(p.to_owned()),
                Some(_) => return Err(SecretError::Syntax("`${file:}` needs a path".into())),
                None if is_var_name(name) => SecretRef::Env(name.to_owned()),
                None => {
                    return Err(SecretError::Syntax(format!(
                        "`${{{name}}}` is not a variable name (letters, digits and _)"
                    )));
                }
            };
            out.push(Piece::Ref(r));
            rest = &body[end + 1..];
        } else {
            out.push(Piece::Text("$"));
            rest = after;
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A URL whose user and password may be secrets (`rtsp://admin:${CAM_PASS}@host/...`).
/// Prints without its user-info, so it is safe in logs, metrics, alerts and errors.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    template: Secret,
    /// The URL parsed with references left unexpanded: enough to know scheme, host, path.
    shape: Url,
}

impl SecretUrl {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        // A URL parser drops tabs and line breaks, so `rtsp:\n//u:pw@h` would connect with a
        // password that redaction, reading the text as written, does not see.
        if s.chars().any(char::is_control) {
            return Err(SecretError::BadUrl(format!(
                "not a URL: it holds a control character (a line break or tab?): {}",
                redact_for_error(s).escape_debug()
            )));
        }
        let template = Secret::new(s);
        // The reference's own text may run on into the password: shown redacted.
        template.references().map_err(|e| match e {
            SecretError::Syntax(why) => SecretError::Syntax(redact_for_error(&why)),
            other => other,
        })?;
        // References may hold characters a URL cannot (`${file:/run/secrets/pw}`): the shape
        // is parsed with each replaced by a placeholder.
        let shape = Url::parse(&with_placeholders(s)).map_err(|e| {
            SecretError::BadUrl(format!("not a URL ({e}): {}", redact_for_error(s)))
        })?;
        Ok(Self { template, shape })
    }

    pub fn scheme(&self) -> &str {
        self.shape.scheme()
    }

    pub fn host(&self) -> Option<&str> {
        self.shape.host_str()
    }

    pub fn port(&self) -> Option<u16> {
        self.shape.port_or_known_default()
    }

    pub fn path(&self) -> &str {
        self.shape.path()
    }

    /// The host as an IP address; `None` for a name. A URL parser reads the host of
    /// `redis://` and `rtsp://` as opaque text, so an address there is parsed here.
    fn host_ip(&self) -> Option<std::net::IpAddr> {
        match self.shape.host()? {
            url::Host::Ipv4(ip) => Some(ip.into()),
            url::Host::Ipv6(ip) => Some(ip.into()),
            url::Host::Domain(d) => d.parse().ok(),
        }
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `::1`, or none: a unix
    /// socket): a link that never leaves it.
    pub fn host_is_loopback(&self) -> bool {
        match self.shape.host() {
            None => true,
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => true,
            Some(_) => self.host_ip().is_some_and(|ip| ip.is_loopback()),
        }
    }

    /// Whether the host is an IP address inside one of `networks`. A name is not: it can
    /// resolve anywhere, and again differently later.
    pub fn host_in(&self, networks: &[ipnet::IpNet]) -> bool {
        self.host_ip()
            .is_some_and(|ip| networks.iter().any(|n| n.contains(&ip)))
    }

    /// Whether the URL carries a user name or password.
    pub fn has_credentials(&self) -> bool {
        !self.shape.username().is_empty() || self.shape.password().is_some()
    }

    /// Whether a password is written literally in the file instead of as a reference.
    pub fn has_literal_password(&self) -> bool {
        self.shape
            .password()
            .is_some_and(|p| !p.contains(PLACEHOLDER))
    }

    pub fn secret(&self) -> &Secret {
        &self.template
    }

    /// The URL with its references expanded: for the connection, and nothing else.
    pub fn expand(&self) -> Result<Url, SecretError> {
        let text = self.template.expand()?;
        Url::parse(&text).map_err(|e| SecretError::Syntax(format!("expanded URL is invalid: {e}")))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.template.template()))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Stands in for each `${...}` when a template's URL shape is parsed.
const PLACEHOLDER: &str = "sharpeyes-secret";

fn with_placeholders(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i..].find('}') {
            Some(end) => {
                out.push_str(PLACEHOLDER);
                rest = &rest[i + end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Hides the credentials of a URL-like string, without needing it to parse: its user-info
/// (`rtsp://admin:pw@10.1.2.3/x` -> `rtsp://***@10.1.2.3/x`; `${...}` references are
/// opaque, so `rtsp://u:${file:/run/pw}@h/x` -> `rtsp://***@h/x`), and the values of query
/// parameters that carry them, as some cameras take them
/// (`/live?user=admin&password=pw&channel=1` -> `/live?user=***&password=***&channel=1`).
pub fn redact_url(s: &str) -> String {
    redact_query(&redact_userinfo(s))
}

/// Query parameters whose values are credentials, by a part of their name.
const SECRET_PARAMS: &[&str] = &["user", "pass", "pwd", "token", "secret", "key", "auth"];

fn redact_query(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_owned();
    };
    let (head, query) = s.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_PARAMS
                    .iter()
                    .any(|p| name.to_ascii_lowercase().contains(p)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}{fragment}", params.join("&"))
}

fn redact_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let auth_start = scheme_end + 3;
    let bytes = s.as_bytes();
    let mut auth_end = s.len();
    let mut i = auth_start;
    // Bytes, not chars: `i` may stop inside a multi-byte character; only ASCII ends a span.
    while i < bytes.len() {
        if bytes[i..].starts_with(b"${") {
            i += bytes[i..]
                .iter()
                .position(|&b| b == b'}')
                .map_or(bytes.len() - i, |e| e + 1);
            continue;
        }
        if matches!(bytes[i], b'/' | b'?' | b'#') {
            auth_end = i;
            break;
        }
        i += 1;
    }
    match s[auth_start..auth_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..auth_start], &s[auth_start + at..]),
        None => s.to_owned(),
    }
}

/// RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// For text that failed to parse as a URL: everything from after the scheme (or from the
/// start, when the scheme is mangled) up to the last `@` may be user-info (a password may
/// hold `/` or `#`), so all of it goes.
fn redact_for_error(s: &str) -> String {
    let Some(at) = s.rfind('@') else {
        return redact_url(s);
    };
    // Only a scheme that starts the text is kept (`rtsp://`, or `rtsp:` when the slashes are
    // mistyped).
    let start = s
        .find(':')
        .filter(|&i| is_scheme(&s[..i]))
        .map(|i| {
            if s[i + 1..].starts_with("//") {
                i + 3
            } else {
                i + 1
            }
        })
        .filter(|&i| i <= at)
        .unwrap_or(0);
    format!("{}***{}", &s[..start], redact_query(&s[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn expands_variables_and_literal_dollars() {
        let s = Secret::new("a${USER_X}b$$c");
        assert_eq!(s.expand_with(&env(&[("USER_X", "-")])).unwrap(), "a-b$c");
        assert_eq!(
            s.expand_with(&env(&[])),
            Err(SecretError::UnsetVar("USER_X".into()))
        );
    }

    #[test]
    fn expands_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = Secret::new(format!("${{file:{}}}", p.display()));
        assert_eq!(s.expand_with(&env(&[])).unwrap(), "s3cret");
        let missing = Secret::new("${file:/nonexistent/pw}");
        assert!(matches!(
            missing.expand_with(&env(&[])),
            Err(SecretError::File { .. })
        ));
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(Secret::new("${OPEN").references().is_err());
        assert!(Secret::new("${}").references().is_err());
        assert!(Secret::new("${1X}").references().is_err());
        assert!(Secret::new("${file:}").references().is_err());
        assert_eq!(
            Secret::new("x${A}y${file:/p}").references().unwrap(),
            vec![SecretRef::Env("A".into()), SecretRef::File("/p".into())]
        );
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(s.to_string(), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn urls_print_without_user_info() {
        let u =
            SecretUrl::parse("rtsp://admin:hunter2@10.1.2.3:554/Streaming/Channels/102").unwrap();
        assert_eq!(
            u.to_string(),
            "rtsp://***@10.1.2.3:554/Streaming/Channels/102"
        );
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(u.has_credentials());
        assert!(u.has_literal_password());
        assert_eq!(u.host(), Some("10.1.2.3"));
        assert_eq!(u.port(), Some(554));

        let r = SecretUrl::parse("rtsp://admin:${CAM_PASS}@10.1.2.3/x").unwrap();
        assert!(r.has_credentials());
        assert!(!r.has_literal_password());
        assert_eq!(r.to_string(), "rtsp://***@10.1.2.3/x");
    }

    #[test]
    fn a_bad_url_error_does_not_echo_the_password() {
        let err = SecretUrl::parse("rtsp://admin:hunter2@[bad/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("***@"), "{err}");
    }

    #[test]
    fn file_references_may_hold_slashes() {
        let u =
            SecretUrl::parse("rtsp://viewer:${file:/run/secrets/cam}@10.0.0.5:554/ch1").unwrap();
        assert_eq!(u.host(), Some("10.0.0.5"));
        assert_eq!(u.path(), "/ch1");
        assert!(u.has_credentials() && !u.has_literal_password());
        assert_eq!(u.to_string(), "rtsp://***@10.0.0.5:554/ch1");
    }

    #[test]
    fn a_password_with_a_slash_is_not_echoed_when_the_url_fails() {
        let err = SecretUrl::parse("rtsp://admin:pa/ss@10.0.0.5:99999/ch1")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pa/ss") && !err.contains("admin"), "{err}");
    }

    #[test]
    fn credentials_in_the_query_are_hidden_and_other_parameters_kept() {
        assert_eq!(
            redact_url("rtsp://10.1.2.3/live?user=admin&Password=hunter2&channel=1#x"),
            "rtsp://10.1.2.3/live?user=***&Password=***&channel=1#x"
        );
        assert_eq!(
            redact_url("rtsp://u:p@h/cam/realmonitor?channel=1&subtype=0"),
            "rtsp://***@h/cam/realmonitor?channel=1&subtype=0"
        );
        assert_eq!(
            redact_url("rtsp://h/x?token=${CAM_TOKEN}"),
            "rtsp://h/x?token=***"
        );
    }

    #[test]
    fn redaction_leaves_urls_without_credentials_alone() {
        assert_eq!(redact_url("rtsp://h/p@q"), "rtsp://h/p@q");
        assert_eq!(redact_url("no url"), "no url");
        assert_eq!(redact_url("mqtts://u:p@b:8883"), "mqtts://***@b:8883");
        // A password with a multi-byte character (found by tests/hostile_input.rs: it panicked).
        assert_eq!(
            redact_url("rtsp://admin:pé${@10.0.0.1/x"),
            "rtsp://***@10.0.0.1/x"
        );
        assert_eq!(
            redact_url("rtsp://管理员:密码@10.0.0.1/x"),
            "rtsp://***@10.0.0.1/x"
        );
    }
}
