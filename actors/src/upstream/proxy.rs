//! The TCP connector of every upstream client: a `CONNECT host:port`
//! tunnel through an HTTP proxy when the proxy rules say so, a direct
//! connection otherwise, both under the upstream guard for registries
//! clients chose. TLS (for https endpoints) runs inside the connection.
//!
//! Proxy URLs are `http://[user:password@]host[:port]`: the credentials go
//! to the proxy as `Proxy-Authorization: Basic` on each CONNECT and are
//! never shown (`Debug` and errors name only `host:port`). Any other
//! scheme, `https://` included, is an error at start-up rather than a
//! proxy skipped.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;
use base64::Engine as _;
use futures::future::LocalBoxFuture;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::guard::{literal_ip, refusal_in, HostRules, Network, NetworkError};

/// Largest proxy answer to a CONNECT read before giving up.
const MAX_CONNECT_RESPONSE: usize = 8 * 1024;

/// Why an egress proxy setting is unusable. No message repeats a proxy
/// URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The URL's scheme is not `http`: TLS to the proxy (`https://`) and
    /// SOCKS are not supported.
    #[error(
        "proxy scheme {0:?} is not supported: only http:// proxies are \
         (CONNECT over plain HTTP, no TLS to the proxy)"
    )]
    Scheme(String),
    /// Not a URL.
    #[error("not a proxy URL http://[user:password@]host[:port]: {0}")]
    Url(url::ParseError),
    /// A `NO_PROXY` entry with a `/` that is not a CIDR network.
    #[error(transparent)]
    NoProxy(NetworkError),
}

/// An unusable proxy environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {source}")]
pub struct ProxyEnvError {
    /// The variable, as it is spelt in the environment.
    pub var: String,
    /// What is wrong with it.
    pub source: ProxyError,
}

/// Which proxy, if any, carries traffic to which host.
#[derive(Debug, Clone, Default)]
pub struct ProxyRules {
    /// The proxy for `http://` endpoints.
    http: Option<Proxy>,
    /// The proxy for `https://` endpoints.
    https: Option<Proxy>,
    /// Hosts reached directly.
    no_proxy: Vec<Bypass>,
}

impl ProxyRules {
    /// Rules from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (upper case
    /// first, then lower case; empty means unset). `NO_PROXY` is a comma
    /// list of `*`, names (`example.com` and `.example.com` both cover
    /// subdomains, a `:port` is ignored), IP addresses (`10.0.0.1`,
    /// `::1`, `[fd00::5]:5000`) and CIDR networks (`10.0.0.0/8`,
    /// `fd00::/8`); addresses and networks match hosts written as IP
    /// literals, names match names (nothing is resolved to decide).
    pub fn from_env() -> Result<Self, ProxyEnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`ProxyRules::from_env`] over any source of variables.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyEnvError> {
        let lookup = |name: &str| {
            [name.to_string(), name.to_ascii_lowercase()]
                .into_iter()
                .find_map(|n| var(&n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let proxy = |name: &str| {
            lookup(name)
                .map(|(var, url)| {
                    Proxy::from_str(&url).map_err(|source| ProxyEnvError { var, source })
                })
                .transpose()
        };
        let no_proxy = match lookup("NO_PROXY") {
            None => Vec::new(),
            Some((var, list)) => list
                .split(',')
                .filter_map(|entry| Bypass::parse(entry).transpose())
                .collect::<Result<_, _>>()
                .map_err(|source| ProxyEnvError { var, source })?,
        };
        Ok(Self {
            http: proxy("HTTP_PROXY")?,
            https: proxy("HTTPS_PROXY")?,
            no_proxy,
        })
    }

    /// One proxy for every endpoint of a registry (its `proxy:` key).
    pub fn single(url: &str) -> Result<Self, ProxyError> {
        let proxy = Proxy::from_str(url)?;
        Ok(Self {
            http: Some(proxy.clone()),
            https: Some(proxy),
            no_proxy: Vec::new(),
        })
    }

    /// The proxy for a connection to `host` over `scheme`, if any.
    fn proxy_for(&self, scheme: &str, host: &str) -> Option<&Proxy> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip = literal_ip(&host);
        if self.no_proxy.iter().any(|rule| rule.covers(&host, ip)) {
            return None;
        }
        match scheme {
            "https" => self.https.as_ref(),
            _ => self.http.as_ref(),
        }
    }
}

/// An HTTP proxy: where it listens, and the credentials its URL carries.
#[derive(Clone, PartialEq, Eq)]
struct Proxy {
    /// `host:port` (an IPv6 host in brackets).
    address: String,
    /// `Basic <base64(user:password)>`, percent-decoded from the URL's
    /// `user:password@`, sent as `Proxy-Authorization` on each CONNECT.
    authorization: Option<String>,
}

impl FromStr for Proxy {
    type Err = ProxyError;

    /// `http://[user[:password]@]host[:port][/]`; `http://` when no scheme
    /// is written, port 80 when none.
    fn from_str(text: &str) -> Result<Self, ProxyError> {
        let text = text.trim();
        let url = if text.contains("://") {
            Url::parse(text)
        } else {
            Url::parse(&format!("http://{text}"))
        }
        .map_err(ProxyError::Url)?;
        if url.scheme() != "http" {
            return Err(ProxyError::Scheme(url.scheme().to_string()));
        }
        let host = url
            .host_str()
            .ok_or(ProxyError::Url(url::ParseError::EmptyHost))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authorization = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => {
                let mut pair: Vec<u8> = percent_decode_str(user).collect();
                pair.push(b':');
                pair.extend(percent_decode_str(password.unwrap_or("")));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Some(format!("Basic {encoded}"))
            }
        };
        Ok(Self {
            address: format!("{host}:{port}"),
            authorization,
        })
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.address)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    /// `*`: every host.
    All,
    /// Hosts written as IP literals in this network (a single address is
    /// a `/32` or `/128`).
    Network(Network),
    /// A name and its subdomains.
    Domain(String),
}

impl Bypass {
    /// An entry; `None` when it is empty. An entry with a `/` must be a
    /// CIDR network (one with host bits set, `10.0.0.1/8`, means the
    /// network it lies in, as curl and Go read it).
    fn parse(entry: &str) -> Result<Option<Self>, ProxyError> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return Ok(None);
        }
        if entry == "*" {
            return Ok(Some(Self::All));
        }
        if entry.contains('/') {
            return match entry.parse::<Network>() {
                Ok(network) | Err(NetworkError::HostBits { network, .. }) => {
                    Ok(Some(Self::Network(network)))
                }
                Err(e) => Err(ProxyError::NoProxy(e)),
            };
        }
        let host = without_port(&entry);
        Ok(Some(match literal_ip(host) {
            Some(ip) => Self::Network(ip.into()),
            None => Self::Domain(
                host.trim_start_matches("*.")
                    .trim_start_matches('.')
                    .to_string(),
            ),
        }))
    }

    /// Whether this entry covers `host` (lower case, unbracketed), which
    /// stands for `ip` when it is an IP literal.
    fn covers(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match (self, ip) {
            (Self::All, _) => true,
            (Self::Network(network), Some(ip)) => network.contains(ip),
            (Self::Domain(domain), None) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.')),
            _ => false,
        }
    }
}

/// The host of a `NO_PROXY` entry: `host[:port]`, `[v6][:port]` or a bare
/// IPv6 address (`::1`).
fn without_port(rule: &str) -> &str {
    if let Some(bracketed) = rule.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match rule.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => rule,
    }
}

/// awc's TCP connector for every upstream connection: through a proxy
/// when the proxy rules say so, directly otherwise, and guarded for
/// registries clients chose. Redirect hops and token realms are dialled
/// here like the registry itself, so the guard covers them by
/// construction. IPv6 literals (`[::1]` in a URL) are dialled unbracketed.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// The rules applied to each connection.
    rules: ProxyRules,
    /// The upstream guard, for registries clients chose.
    guard: Option<Arc<HostRules>>,
}

impl Dialer {
    /// A connector applying `rules`, and `guard` when there is one.
    pub fn new(rules: ProxyRules, guard: Option<Arc<HostRules>>) -> Self {
        Self { rules, guard }
    }
}

impl Service<ConnectInfo<Uri>> for Dialer {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let uri = req.request().clone();
        let hostname = req.hostname();
        let host = hostname
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(hostname)
            .to_ascii_lowercase();
        let port = req.port();
        let proxy = self
            .rules
            .proxy_for(uri.scheme_str().unwrap_or("http"), &host)
            .cloned();
        let guard = self.guard.clone();
        Box::pin(async move {
            let stream = dial(&host, port, proxy.as_ref(), guard.as_deref()).await;
            if stream.as_ref().is_err_and(|e| refusal_in(e).is_some()) {
                crate::metrics::METRICS.guard_refusals.inc();
            }
            Ok(Connection::new(uri, stream.map_err(ConnectError::Io)?))
        })
    }
}

/// Connects to `host:port`, through `proxy` if given. With a `guard`, the
/// target is checked before anything is resolved or sent to the proxy
/// (so literal addresses are refused behind a proxy too), and a direct
/// connection dials only addresses the guard passed.
async fn dial(
    host: &str,
    port: u16,
    proxy: Option<&Proxy>,
    guard: Option<&HostRules>,
) -> std::io::Result<TcpStream> {
    if let Some(guard) = guard {
        guard.check_target(host, port)?;
    }
    match (proxy, guard) {
        (Some(proxy), _) => tunnel(proxy, host, port).await,
        (None, Some(guard)) => connect_guarded(host, port, guard).await,
        (None, None) => TcpStream::connect((host, port)).await,
    }
}

/// Resolves `host` and connects to the first address the guard allows: a
/// denied address is never dialled, and the address checked is the one
/// connected (a second DNS answer cannot differ).
async fn connect_guarded(host: &str, port: u16, guard: &HostRules) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let connected = match guard.check_address(addr.ip()) {
            Ok(()) => TcpStream::connect(addr).await,
            Err(refusal) => Err(refusal.into()),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} has no address"))))
}

/// Opens a `CONNECT` tunnel to `host:port` through `proxy`, with its
/// credentials when it has some.
async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(&proxy.address).await?;
    let target = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    };
    let authorization = proxy
        .authorization
        .as_ref()
        .map(|value| format!("Proxy-Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{authorization}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the proxy's header may be consumed here.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE || stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other(format!(
                "proxy {} closed the CONNECT to {target}",
                proxy.address
            )));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        let line = status_line.lines().next().unwrap_or("").to_string();
        return Err(std::io::Error::other(format!(
            "proxy {} refused CONNECT {target}: {line}",
            proxy.address
        )));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules from the variables `vars`.
    fn rules(vars: &[(&str, &str)]) -> Result<ProxyRules, ProxyEnvError> {
        ProxyRules::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The address of the proxy `rules` pick for `host`.
    fn via<'a>(rules: &'a ProxyRules, scheme: &str, host: &str) -> Option<&'a str> {
        rules.proxy_for(scheme, host).map(|p| p.address.as_str())
    }

    /// The `Proxy-Authorization` value for `pair` (`user:password`).
    fn basic(pair: &str) -> Option<String> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        Some(format!("Basic {encoded}"))
    }

    #[test]
    fn proxy_urls() {
        for (url, address, authorization) in [
            ("http://proxy:3128", "proxy:3128", None),
            ("http://u:p@proxy:3128/", "proxy:3128", basic("u:p")),
            (
                "http://us%40r:p%3As%25s@proxy",
                "proxy:80",
                basic("us@r:p:s%s"),
            ),
            ("http://u@proxy:1", "proxy:1", basic("u:")),
            ("HTTP://Proxy.Corp:1", "proxy.corp:1", None),
            ("http://[::1]:3128", "[::1]:3128", None),
            ("proxy", "proxy:80", None),
            (" 127.0.0.1:8 ", "127.0.0.1:8", None),
        ] {
            let proxy = Proxy::from_str(url).unwrap();
            assert_eq!(proxy.address, address, "{url}");
            assert_eq!(proxy.authorization, authorization, "{url}");
        }
    }

    #[test]
    fn only_http_proxies() {
        for (url, scheme) in [
            ("https://proxy:3128", "https"),
            ("socks5://x:1", "socks5"),
            ("socks5h://x:1", "socks5h"),
        ] {
            assert_eq!(Proxy::from_str(url), Err(ProxyError::Scheme(scheme.into())));
        }
        for bad in ["http://", "http://p:99999", "http://p q:1"] {
            assert!(
                matches!(Proxy::from_str(bad), Err(ProxyError::Url(_))),
                "{bad}"
            );
        }
        let single = ProxyRules::single("https://u:secret@proxy:3128").unwrap_err();
        assert_eq!(single, ProxyError::Scheme("https".into()));
        assert!(!single.to_string().contains("secret"), "{single}");
    }

    #[test]
    fn environment_refused_at_start_up() {
        let e = rules(&[("HTTPS_PROXY", "https://u:secret@proxy:3128")]).unwrap_err();
        assert_eq!(e.var, "HTTPS_PROXY");
        assert_eq!(e.source, ProxyError::Scheme("https".into()));
        let message = e.to_string();
        assert!(message.starts_with("HTTPS_PROXY: "), "{message}");
        assert!(!message.contains("secret"), "{message}");
        let e = rules(&[("http_proxy", "socks5://x:1")]).unwrap_err();
        assert_eq!(e.var, "http_proxy");
        let e = rules(&[("NO_PROXY", "localhost,10.0.0.0/33")]).unwrap_err();
        assert_eq!(e.var, "NO_PROXY");
        assert!(matches!(
            e.source,
            ProxyError::NoProxy(NetworkError::Prefix { .. })
        ));
        assert!(rules(&[("no_proxy", "example.com/x")]).is_err());
    }

    #[test]
    fn environment_upper_case_first_empty_is_unset() {
        let r = rules(&[
            ("HTTP_PROXY", "up:1"),
            ("http_proxy", "low:1"),
            ("HTTPS_PROXY", " "),
            ("https_proxy", "low:2"),
        ])
        .unwrap();
        assert_eq!(via(&r, "http", "quay.io"), Some("up:1"));
        assert_eq!(via(&r, "https", "quay.io"), Some("low:2"));
        assert_eq!(via(&rules(&[]).unwrap(), "https", "quay.io"), None);
    }

    #[test]
    fn debug_never_shows_proxy_credentials() {
        let r = rules(&[("HTTPS_PROXY", "http://user:s3cret@proxy:3128")]).unwrap();
        let single = ProxyRules::single("http://u:s3cret@p").unwrap();
        let shown = format!("{r:?} {single:?}");
        assert!(
            shown.contains("proxy:3128") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        let encoded = base64::engine::general_purpose::STANDARD.encode("user:s3cret");
        assert!(!shown.contains(&encoded), "{shown}");
    }

    #[test]
    fn no_proxy_names() {
        let r = rules(&[
            ("HTTP_PROXY", "p:1"),
            ("HTTPS_PROXY", "p:2"),
            (
                "NO_PROXY",
                "internal.example, .corp,*.lab.example,r.example:443",
            ),
        ])
        .unwrap();
        assert_eq!(via(&r, "https", "quay.io"), Some("p:2"));
        assert_eq!(via(&r, "http", "quay.io"), Some("p:1"));
        assert_eq!(via(&r, "https", "internal.example"), None);
        assert_eq!(via(&r, "https", "r.internal.example"), None);
        assert_eq!(via(&r, "https", "notinternal.example"), Some("p:2"));
        assert_eq!(via(&r, "https", "a.corp"), None);
        assert_eq!(via(&r, "https", "A.CORP"), None);
        assert_eq!(via(&r, "https", "x.lab.example"), None);
        assert_eq!(via(&r, "https", "r.example"), None);
        let all = rules(&[("HTTPS_PROXY", "p:2"), ("NO_PROXY", "localhost,*")]).unwrap();
        assert_eq!(via(&all, "https", "quay.io"), None);
        assert_eq!(via(&all, "https", "10.0.0.1"), None);
    }

    #[test]
    fn no_proxy_addresses() {
        let r = rules(&[
            ("HTTP_PROXY", "p:1"),
            ("NO_PROXY", "10.0.0.1,::1,[fd00::5]:5000,192.168.0.9:80"),
        ])
        .unwrap();
        assert_eq!(via(&r, "http", "10.0.0.1"), None);
        assert_eq!(via(&r, "http", "10.0.0.2"), Some("p:1"));
        assert_eq!(via(&r, "http", "[::1]"), None);
        assert_eq!(via(&r, "http", "::1"), None);
        assert_eq!(via(&r, "http", "0:0::1"), None, "any spelling of ::1");
        assert_eq!(via(&r, "http", "fd00::5"), None);
        assert_eq!(via(&r, "http", "192.168.0.9"), None);
        assert_eq!(via(&r, "http", "::2"), Some("p:1"));
    }

    #[test]
    fn no_proxy_networks() {
        let r = rules(&[
            ("HTTP_PROXY", "p:1"),
            ("NO_PROXY", "10.0.0.0/8,fd00::/8,192.168.1.7/16,corp"),
        ])
        .unwrap();
        assert_eq!(via(&r, "http", "10.1.2.3"), None);
        assert_eq!(via(&r, "http", "0xa.1"), None, "numeric spellings too");
        assert_eq!(via(&r, "http", "11.0.0.1"), Some("p:1"));
        assert_eq!(via(&r, "http", "fd12::1"), None);
        assert_eq!(via(&r, "http", "[fd00::1]"), None);
        assert_eq!(via(&r, "http", "fe80::1"), Some("p:1"));
        assert_eq!(via(&r, "http", "192.168.200.1"), None, "host bits dropped");
        assert_eq!(via(&r, "http", "192.169.0.1"), Some("p:1"));
        // Networks match IP literals only, names match names only.
        assert_eq!(via(&r, "http", "10.0.0.1.nip.io"), Some("p:1"));
        assert_eq!(via(&r, "http", "registry.corp"), None);
    }
}
