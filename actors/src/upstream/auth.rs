//! Registry authentication: parsing `WWW-Authenticate` challenges and
//! caching bearer tokens per scope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Token lifetime assumed when the token server names none (Docker's default).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens are renewed up to this long before they expire (a tenth of a
/// short token's lifetime).
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// Longest a token is reused, whatever lifetime the token server names
/// (an `expires_in` near `u64::MAX` would overflow `Instant`).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`: send the configured user and password.
    Basic,
    /// `Bearer realm=..,service=..,scope=..`: get a token from `realm`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// The `service` parameter, passed back to the realm.
        service: Option<String>,
        /// The `scope` parameter, passed back to the realm.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a challenge; `None` for schemes this server does not speak.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Self::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// Parses `k="v",k2=v2` auth parameters (quoted values may hold commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The token request URL: the realm (keeping any query it has) plus the
/// form-encoded `scope` and `service`.
pub fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_string();
    url.push(if realm.contains('?') { '&' } else { '?' });
    url.push_str("scope=");
    url.push_str(&form_encode(scope));
    if let Some(service) = service {
        url.push_str("&service=");
        url.push_str(&form_encode(service));
    }
    url
}

/// Why a token realm is not asked for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealmError {
    /// Not an absolute http(s) URL.
    #[error("the registry's token realm is not an absolute http(s) URL")]
    NotUrl,
    /// Plain http for a registry that is not both configured and plain http.
    #[error("the registry's token realm is plain http, which only a configured plain-http registry may use")]
    PlainHttp,
}

/// Whether the realm `endpoint` named may be asked for a token: https, or
/// plain http when the registry is `trusted` (configured) and `endpoint`
/// itself is plain http. Credentials and tokens never cross plain http
/// for an https registry.
pub fn check_realm(realm: &str, endpoint: &str, trusted: bool) -> Result<(), RealmError> {
    let uri: awc::http::Uri = realm.parse().map_err(|_| RealmError::NotUrl)?;
    if uri.host().is_none() {
        return Err(RealmError::NotUrl);
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if trusted && endpoint.starts_with("http://") => Ok(()),
        Some("http") => Err(RealmError::PlainHttp),
        _ => Err(RealmError::NotUrl),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A token server's answer (`token` and/or `access_token`, `expires_in`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    /// Docker's field name.
    token: Option<String>,
    /// OAuth2's field name.
    access_token: Option<String>,
    /// Lifetime in seconds.
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it may be used.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let ttl = self
            .expires_in
            .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
        Some((token, ttl))
    }
}

/// Bearer tokens by scope, reused across pulls until shortly before expiry.
#[derive(Debug, Default)]
pub struct TokenCache {
    /// scope → (token, renew-after instant).
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    /// A still-valid token for `scope`.
    pub fn get(&self, scope: &str) -> Option<&str> {
        self.tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.as_str())
    }

    /// Remembers `token` for `scope` for `ttl` (minus a safety margin, and
    /// at most [`MAX_TOKEN_TTL`]).
    pub fn put(&mut self, scope: &str, token: String, ttl: Duration) {
        let ttl = ttl.min(MAX_TOKEN_TTL);
        let now = Instant::now();
        self.tokens.retain(|_, (_, until)| *until > now);
        let until = now + ttl.saturating_sub(EXPIRY_MARGIN.min(ttl / 10));
        self.tokens.insert(scope.to_string(), (token, until));
    }

    /// Forgets the token of `scope` (the upstream refused it).
    pub fn forget(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
    }

    #[test]
    fn parses_quoted_commas_unquoted_values_and_basic() {
        let c = Challenge::parse(r#"bearer realm=https://r/t, scope="repository:a:pull,push""#)
            .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://r/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn token_urls_are_encoded() {
        assert_eq!(
            token_url("https://auth.docker.io/token", Some("registry.docker.io"), "repository:library/alpine:pull"),
            "https://auth.docker.io/token?scope=repository%3Alibrary%2Falpine%3Apull&service=registry.docker.io"
        );
        assert_eq!(
            token_url(
                "https://r/jwt/auth?account=a b",
                None,
                "repository:x y:pull"
            ),
            "https://r/jwt/auth?account=a b&scope=repository%3Ax+y%3Apull"
        );
    }

    #[test]
    fn realms_must_be_https_unless_a_configured_registry_is_plain_http() {
        let https = "https://registry.example";
        let http = "http://registry.internal:5000";
        assert_eq!(
            check_realm("https://auth.example/token?x=y", https, false),
            Ok(())
        );
        assert_eq!(
            check_realm("https://[::1]:8443/token", https, false),
            Ok(())
        );
        assert_eq!(
            check_realm("http://10.0.0.5/internal/issue?x=y", https, false),
            Err(RealmError::PlainHttp)
        );
        assert_eq!(
            check_realm("http://auth.example/token", https, true),
            Err(RealmError::PlainHttp),
            "credentials never go plain for an https registry"
        );
        assert_eq!(
            check_realm("http://auth.example/token", http, false),
            Err(RealmError::PlainHttp),
            "an unlisted registry never gets a plain realm"
        );
        assert_eq!(check_realm("http://[::1]:5001/token", http, true), Ok(()));
        for bad in ["file:///etc/passwd", "/token", "ftp://x/t", "", "https://"] {
            assert_eq!(
                check_realm(bad, https, true),
                Err(RealmError::NotUrl),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_enormous_token_lifetime_is_clamped() {
        let t: TokenResponse =
            serde_json::from_str(&format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX)).unwrap();
        let (token, ttl) = t.into_token().unwrap();
        let mut cache = TokenCache::default();
        cache.put("s", token, ttl);
        assert_eq!(cache.get("s"), Some("t"));
        cache.put("s2", "u".into(), Duration::MAX);
        assert_eq!(cache.get("s2"), Some("u"));
    }

    #[test]
    fn token_fields_and_expiry() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.into_token(), Some(("a".into(), Duration::from_secs(300))));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b"}"#).unwrap();
        assert_eq!(t.into_token(), Some(("b".into(), DEFAULT_TOKEN_TTL)));
        let mut cache = TokenCache::default();
        cache.put("s", "tok".into(), Duration::from_secs(60));
        assert_eq!(cache.get("s"), Some("tok"));
        cache.put("short", "x".into(), Duration::from_secs(2));
        assert_eq!(
            cache.get("short"),
            Some("x"),
            "short-lived tokens are reused while valid"
        );
        cache.put("expired", "x".into(), Duration::ZERO);
        assert_eq!(cache.get("expired"), None, "expired tokens are not reused");
        cache.forget("s");
        assert_eq!(cache.get("s"), None);
    }
}
