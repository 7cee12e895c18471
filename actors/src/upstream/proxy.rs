//! The TCP connector of every upstream client: a `CONNECT host:port`
//! tunnel through an HTTP proxy when the proxy rules say so, a direct
//! connection otherwise, both under the upstream guard for registries
//! clients chose. TLS (for https endpoints) runs inside the connection.

use std::sync::Arc;

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;
use futures::future::LocalBoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::guard::{refusal_in, HostRules};

/// Largest proxy answer to a CONNECT read before giving up.
const MAX_CONNECT_RESPONSE: usize = 8 * 1024;

/// Which proxy, if any, carries traffic to which host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    /// `host:port` of the proxy for `http://` endpoints.
    pub http: Option<String>,
    /// `host:port` of the proxy for `https://` endpoints.
    pub https: Option<String>,
    /// Hosts reached directly: exact names or IPs, domain suffixes
    /// (`example.com` and `.example.com` both cover subdomains), or `*`.
    pub no_proxy: Vec<String>,
}

impl ProxyRules {
    /// Rules from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (either case).
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .or_else(|_| std::env::var(name.to_ascii_lowercase()))
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        Self {
            http: var("HTTP_PROXY").and_then(|u| proxy_address(&u)),
            https: var("HTTPS_PROXY").and_then(|u| proxy_address(&u)),
            no_proxy: var("NO_PROXY")
                .map(|v| {
                    v.split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// One proxy for every endpoint of a registry (its `proxy:` key).
    pub fn single(url: &str) -> Option<Self> {
        let addr = proxy_address(url)?;
        Some(Self {
            http: Some(addr.clone()),
            https: Some(addr),
            no_proxy: Vec::new(),
        })
    }

    /// True when no traffic goes through a proxy.
    pub fn is_direct(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy for a connection to `host` over `scheme`, if any.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Option<&str> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|rule| {
            let rule = without_port(rule).trim_start_matches("*.");
            let rule = rule.trim_start_matches('.');
            rule == "*" || host == rule || host.ends_with(&format!(".{rule}"))
        });
        if bypass {
            return None;
        }
        match scheme {
            "https" => self.https.as_deref(),
            _ => self.http.as_deref(),
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

/// `http://[user@]host:port[/]` → `host:port` (port 80 when absent).
fn proxy_address(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return None,
        None => url,
    };
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    Some(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        },
    )
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
            .map(str::to_string);
        let guard = self.guard.clone();
        Box::pin(async move {
            let stream = dial(&host, port, proxy.as_deref(), guard.as_deref()).await;
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
    proxy: Option<&str>,
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

/// Opens a `CONNECT` tunnel to `host:port` through `proxy`.
async fn tunnel(proxy: &str, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await?;
    let target = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    };
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the proxy's header may be consumed here.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE || stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other(format!(
                "proxy {proxy} closed the CONNECT to {target}"
            )));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        let line = status_line.lines().next().unwrap_or("").to_string();
        return Err(std::io::Error::other(format!(
            "proxy {proxy} refused CONNECT {target}: {line}"
        )));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            proxy_address("http://proxy:3128").as_deref(),
            Some("proxy:3128")
        );
        assert_eq!(
            proxy_address("http://u:p@proxy:3128/").as_deref(),
            Some("proxy:3128")
        );
        assert_eq!(proxy_address("proxy").as_deref(), Some("proxy:80"));
        assert_eq!(proxy_address("127.0.0.1:8").as_deref(), Some("127.0.0.1:8"));
        assert_eq!(proxy_address("socks5://x:1"), None);
    }

    #[test]
    fn no_proxy_rules() {
        let rules = ProxyRules {
            http: Some("p:1".into()),
            https: Some("p:2".into()),
            no_proxy: vec!["internal.example".into(), ".corp".into(), "10.0.0.1".into()],
        };
        assert_eq!(rules.proxy_for("https", "quay.io"), Some("p:2"));
        assert_eq!(rules.proxy_for("http", "quay.io"), Some("p:1"));
        assert_eq!(rules.proxy_for("https", "internal.example"), None);
        assert_eq!(rules.proxy_for("https", "r.internal.example"), None);
        assert_eq!(rules.proxy_for("https", "a.corp"), None);
        assert_eq!(rules.proxy_for("https", "10.0.0.1"), None);
        assert_eq!(rules.proxy_for("https", "notinternal.example"), Some("p:2"));
        let v6 = ProxyRules {
            no_proxy: vec![
                "::1".into(),
                "[fd00::5]:5000".into(),
                "r.example:443".into(),
            ],
            ..rules.clone()
        };
        assert_eq!(v6.proxy_for("http", "[::1]"), None);
        assert_eq!(v6.proxy_for("http", "::1"), None);
        assert_eq!(v6.proxy_for("http", "fd00::5"), None);
        assert_eq!(v6.proxy_for("https", "r.example"), None);
        assert_eq!(v6.proxy_for("http", "::2"), Some("p:1"));
        let all = ProxyRules {
            no_proxy: vec!["*".into()],
            ..rules
        };
        assert_eq!(all.proxy_for("https", "quay.io"), None);
    }
}
