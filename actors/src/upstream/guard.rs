//! The upstream guard: which registries clients may make this server dial.
//!
//! Clients name the upstream (`?ns=`, in-path hosts), so an open mirror
//! could be asked to reach anything. Two checks apply to registries the
//! configuration does not list:
//! - their names must match the `upstreams.allow` globs and none of the
//!   `upstreams.deny` globs ([`HostRules`]);
//! - every connection made for them (endpoints, token realms, redirect
//!   targets) skips loopback, link-local, unspecified and cloud metadata
//!   addresses ([`forbidden_ip`]): names are resolved once, the addresses
//!   checked, and only a checked address is dialled, so DNS answers and
//!   redirects cannot route around it.
//!
//! Configured registries are trusted as the operator wrote them.

use std::net::IpAddr;

/// The message of a refused connection; [`is_refusal`] recognises it.
const REFUSED: &str = "refused by the upstream guard";

/// Allow and deny globs on registry names (`*` matches any run of characters).
#[derive(Debug, Clone)]
pub struct HostRules {
    /// A name must match one of these.
    allow: Vec<String>,
    /// A name must match none of these.
    deny: Vec<String>,
}

impl Default for HostRules {
    fn default() -> Self {
        Self {
            allow: vec!["*".into()],
            deny: Vec::new(),
        }
    }
}

impl HostRules {
    /// Rules from glob lists (lower-cased; an empty allow list allows nothing).
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Self {
        let lower = |v: Vec<String>| v.into_iter().map(|g| g.to_ascii_lowercase()).collect();
        Self {
            allow: lower(allow),
            deny: lower(deny),
        }
    }

    /// Whether a client may make the server dial `host` (`name[:port]`).
    pub fn permits(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allow.iter().any(|g| glob(g, &host)) && !self.deny.iter().any(|g| glob(g, &host))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether a connection to `ip` is refused for a registry clients chose.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_ip(IpAddr::V4(v4)),
            None => {
                let metadata = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unicast_link_local()
                    || v6 == metadata
            }
        },
    }
}

/// The error a refused connection fails with.
pub fn refusal(ip: IpAddr) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{REFUSED}: {ip} is a loopback, link-local or metadata address; list the registry under `registries` to allow it"),
    )
}

/// Whether an error message comes from [`refusal`].
pub fn is_refusal(message: &str) -> bool {
    message.contains(REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "quay.io"));
        assert!(glob("*.example.com", "r.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("quay.io", "quay.io"));
        assert!(!glob("quay.io", "quay.io.evil"));
        assert!(glob("reg*.corp:*", "registry.corp:5000"));
        assert!(!glob("a*b*c", "acb"));
        assert!(glob("a*b*c", "aXbYc"));
    }

    #[test]
    fn rules() {
        let rules = HostRules::new(
            vec!["*.corp".into(), "docker.io".into()],
            vec!["bad.corp".into()],
        );
        assert!(rules.permits("Docker.IO"));
        assert!(rules.permits("good.corp"));
        assert!(!rules.permits("bad.corp"));
        assert!(!rules.permits("quay.io"));
        assert!(HostRules::default().permits("anything:5000"));
    }

    #[test]
    fn addresses() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden_ip(bad.parse().unwrap()), "{bad}");
        }
        for good in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!forbidden_ip(good.parse().unwrap()), "{good}");
        }
    }
}
