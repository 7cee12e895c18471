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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::names::RegistryName;

/// Allow and deny globs on registry names (`*` matches any run of
/// characters). A glob with a `:` is matched against `host:port`, one
/// without against the host alone, so `deny: [evil.example]` also covers
/// `evil.example:443`. Globs without `*` are normalised like registry
/// names (`index.docker.io` is `docker.io`).
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
    /// Rules from glob lists (an empty allow list allows nothing). Fails
    /// on a glob that could never match a registry name.
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Result<Self, String> {
        let normalise = |v: Vec<String>| -> Result<Vec<String>, String> {
            v.into_iter().map(|g| normalise_glob(&g)).collect()
        };
        Ok(Self {
            allow: normalise(allow)?,
            deny: normalise(deny)?,
        })
    }

    /// Whether a client may make the server dial `name` (a validated
    /// registry name, `host[:port]`, lower case).
    pub fn permits(&self, name: &RegistryName) -> bool {
        let name = name.as_str();
        let host = name.rsplit_once(':').map_or(name, |(host, _)| host);
        let matches = |g: &String| glob(g, if g.contains(':') { name } else { host });
        self.allow.iter().any(matches) && !self.deny.iter().any(matches)
    }
}

/// A glob in the form registry names take.
fn normalise_glob(glob: &str) -> Result<String, String> {
    let glob = glob.trim().to_ascii_lowercase();
    if glob.contains('*') {
        let legal = glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b));
        return legal
            .then_some(glob.clone())
            .ok_or_else(|| format!("{glob:?} can never match a registry name (host[:port])"));
    }
    RegistryName::parse(&glob)
        .map(|n| n.as_str().to_string())
        .map_err(|_| format!("{glob:?} is not a registry name (host[:port])"))
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

/// Whether a connection to `ip` is refused for a registry clients chose:
/// loopback, link-local (169.254.169.254 among them), unspecified, the
/// metadata addresses 100.100.100.200 and fd00:ec2::254, and IPv4
/// addresses embedded in IPv6 (mapped, compatible, NAT64 64:ff9b::/96).
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            let metadata = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            let [a, b, ..] = v6.segments();
            let nat64 = (a, b) == (0x64, 0xff9b) && v6.segments()[2..6] == [0; 4];
            let embedded = v6
                .to_ipv4()
                .filter(|_| !v6.is_loopback() && !v6.is_unspecified());
            let nat64_v4 = nat64.then(|| {
                let o = v6.octets();
                Ipv4Addr::new(o[12], o[13], o[14], o[15])
            });
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6 == metadata
                || embedded
                    .or(nat64_v4)
                    .is_some_and(|v4| forbidden_ip(IpAddr::V4(v4)))
        }
    }
}

/// Why the guard refused a connection; carried inside the `io::Error` the
/// connector fails with, so [`is_refusal`] can find it again.
#[derive(Debug, thiserror::Error)]
#[error("refused by the upstream guard: {0} is a loopback, link-local or metadata address; list the registry under `registries` to allow it")]
pub struct Refusal(pub IpAddr);

/// The error a refused connection fails with.
pub fn refusal(ip: IpAddr) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, Refusal(ip))
}

/// The guard's refusal inside a connection error, if that is what it is.
pub fn is_refusal(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refusal>())
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

    fn name(s: &str) -> RegistryName {
        RegistryName::parse(s).unwrap()
    }

    #[test]
    fn rules() {
        let rules = HostRules::new(
            vec!["*.corp".into(), "*.corp:*".into(), "Index.Docker.IO".into()],
            vec!["bad.corp".into(), "good.corp:444".into()],
        )
        .unwrap();
        assert!(rules.permits(&name("docker.io")));
        assert!(rules.permits(&name("good.corp")));
        assert!(rules.permits(&name("good.corp:443")));
        assert!(!rules.permits(&name("good.corp:444")));
        assert!(!rules.permits(&name("bad.corp")));
        assert!(
            !rules.permits(&name("bad.corp:443")),
            "a port does not escape a deny"
        );
        assert!(!rules.permits(&name("quay.io")));
        assert!(HostRules::default().permits(&name("anything:5000")));
        assert!(HostRules::new(vec!["https://quay.io".into()], vec![]).is_err());
        assert!(HostRules::new(vec![], vec!["quay.io/x*".into()]).is_err());
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
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "100.100.100.200",
        ] {
            assert!(forbidden_ip(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "64:ff9b::808:808",
        ] {
            assert!(!forbidden_ip(good.parse().unwrap()), "{good}");
        }
    }
}
