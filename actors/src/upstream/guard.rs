//! The upstream guard: which registries clients may make this server dial,
//! and where the connections made for them may go.
//!
//! Clients name the upstream (`?ns=`, in-path hosts), so an open mirror
//! could be asked to reach anything. Two checks apply to registries the
//! configuration does not list:
//! - their names must match the `upstreams.allow` globs and none of the
//!   `upstreams.deny` globs ([`HostRules::permits`]);
//! - every connection made for them (the registry, each redirect hop, the
//!   token realm) passes [`HostRules::check_target`] before anything is
//!   resolved or handed to a proxy (the host matches no deny glob; a literal
//!   address, in any numeric spelling the resolver accepts, lies outside the
//!   `upstreams.denyNetworks`), and direct connections dial only addresses
//!   [`HostRules::check_address`] passed: names are resolved once, each
//!   address checked, and only a checked address is dialled, so DNS
//!   answers, redirects and realms cannot route around it.
//!
//! Configured registries are trusted as the operator wrote them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::names::RegistryName;

/// The networks connections for unlisted registries may not reach unless
/// `upstreams.denyNetworks` says otherwise: "this network" and the
/// unspecified addresses, loopback, link-local (cloud metadata at
/// 169.254.169.254), RFC 1918, CGNAT (metadata at 100.100.100.200),
/// broadcast, and IPv6 unique-local (metadata at fd00:ec2::254).
pub const DEFAULT_DENY_NETWORKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// An IP network in CIDR notation (`10.0.0.0/8`, `fc00::/7`); a bare
/// address is the network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The first address (host bits zero).
    base: IpAddr,
    /// Leading bits that are fixed.
    prefix: u8,
}

/// Why a `upstreams.denyNetworks` entry is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// Not `address[/prefix]`.
    #[error("{0:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8, fc00::/7)")]
    Syntax(String),
    /// The prefix is longer than the address.
    #[error("{text:?}: the prefix is longer than the address")]
    Prefix {
        /// The entry as written.
        text: String,
    },
    /// Bits after the prefix are set, so the entry is ambiguous.
    #[error("{text:?} has bits set after the prefix: write {network}")]
    HostBits {
        /// The entry as written.
        text: String,
        /// The network the prefix covers.
        network: Network,
    },
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let syntax = || NetworkError::Syntax(text.to_string());
        let (address, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let base: IpAddr = address.parse().map_err(|_| syntax())?;
        let width = width(base);
        let prefix = match prefix {
            None => width,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().map_err(|_| syntax())?,
            Some(_) => return Err(syntax()),
        };
        if prefix > width {
            return Err(NetworkError::Prefix {
                text: text.to_string(),
            });
        }
        let network = Self {
            base: masked(base, prefix),
            prefix,
        };
        if network.base != base {
            return Err(NetworkError::HostBits {
                text: text.to_string(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl From<IpAddr> for Network {
    /// The network of that one address (`/32` or `/128`).
    fn from(ip: IpAddr) -> Self {
        Self {
            base: ip,
            prefix: width(ip),
        }
    }
}

impl Network {
    /// Whether `ip` lies in this network (addresses of the other family never do).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.base.is_ipv4() && masked(ip, self.prefix) == self.base
    }
}

/// The width of an address in bits.
fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    let host_bits = u32::from(width(ip).saturating_sub(prefix));
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// The IPv4 address an IPv6 address carries, if it is of a kind that
/// reaches that IPv4 address: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d, e, f, ..] = v6.segments();
    let tail = || Ipv4Addr::from((u128::from(v6) & u128::from(u32::MAX)) as u32);
    match [a, b, c, d, e, f] {
        [0, 0, 0, 0, 0, 0 | 0xffff] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(tail()),
        _ => None,
    }
}

/// The address a host stands for when it is an IP literal: IPv4 dotted
/// quads, IPv6 (bracketed or not), and the other numeric spellings the
/// system resolver accepts without DNS (`0x7f.1`, `017700000001`,
/// `2130706433`). A trailing dot is ignored.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    numeric_ipv4(host.strip_suffix('.').unwrap_or(host)).map(IpAddr::V4)
}

/// The numbers-and-dots forms of `inet_aton(3)`: one to four parts, each
/// decimal, octal (leading `0`) or hex (`0x`); the last fills the bytes
/// left.
fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts = host
        .split('.')
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            if let Some(hex) = lower.strip_prefix("0x") {
                u32::from_str_radix(hex, 16).ok()
            } else if lower.len() > 1 && lower.starts_with('0') {
                u32::from_str_radix(&lower[1..], 8).ok()
            } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
                lower.parse().ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u32>>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|p| *p > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if room < 32 && *last >> room != 0 {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, p)| acc | (p << (24 - 8 * i as u32)));
    Some(Ipv4Addr::from(high | last))
}

/// Allow and deny globs on registry names (`*` matches any run of
/// characters), and the networks connections may not reach. A glob with a
/// `:` is matched against `host:port`, one without against the host alone,
/// so `deny: [evil.example]` also covers `evil.example:443`. Globs without
/// `*` are normalised like registry names (`index.docker.io` is
/// `docker.io`). A host that is a numeric IP spelling is matched as
/// written and as its usual form (`0xa.1` also as `10.0.0.1`).
#[derive(Debug, Clone)]
pub struct HostRules {
    /// A registry name must match one of these.
    allow: Vec<String>,
    /// A registry name, and every host dialled for it, must match none of these.
    deny: Vec<String>,
    /// No connection goes to an address in one of these.
    networks: Vec<Network>,
}

impl Default for HostRules {
    /// The configuration's defaults: any name, [`DEFAULT_DENY_NETWORKS`].
    fn default() -> Self {
        Self {
            allow: vec!["*".into()],
            deny: Vec::new(),
            networks: DEFAULT_DENY_NETWORKS
                .iter()
                .map(|n| n.parse().expect("the default networks parse"))
                .collect(),
        }
    }
}

impl HostRules {
    /// Rules from glob lists (an empty allow list allows nothing) and
    /// denied networks. Fails on a glob that could never match a registry
    /// name.
    pub fn new(
        allow: Vec<String>,
        deny: Vec<String>,
        networks: Vec<Network>,
    ) -> Result<Self, String> {
        let normalise = |v: Vec<String>| -> Result<Vec<String>, String> {
            v.into_iter().map(|g| normalise_glob(&g)).collect()
        };
        Ok(Self {
            allow: normalise(allow)?,
            deny: normalise(deny)?,
            networks,
        })
    }

    /// Whether a client may make the server dial `name` (a validated
    /// registry name, `host[:port]`, lower case).
    pub fn permits(&self, name: &RegistryName) -> bool {
        let name = name.as_str();
        let (host, port) = match name.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        };
        any_glob(&self.allow, host, port) && !any_glob(&self.deny, host, port)
    }

    /// Checks one connection for a registry clients chose before anything
    /// is resolved or sent to a proxy: `host` (unbracketed) must match no
    /// deny glob, and when it is an IP literal ([`literal_ip`]) the address
    /// must pass [`Self::check_address`].
    pub fn check_target(&self, host: &str, port: u16) -> Result<(), Refusal> {
        if any_glob(&self.deny, host, Some(&port.to_string())) {
            return Err(Refusal::Name(host.to_string()));
        }
        literal_ip(host).map_or(Ok(()), |ip| self.check_address(ip))
    }

    /// Checks an address a connection would go to: it, and the IPv4
    /// address an IPv6 address carries (mapped, compatible, NAT64), must
    /// lie outside the denied networks.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refusal> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let denied = std::iter::once(ip)
            .chain(embedded)
            .find_map(|ip| self.networks.iter().find(|n| n.contains(ip)));
        match denied {
            Some(network) => Err(Refusal::Address {
                address: ip,
                network: *network,
            }),
            None => Ok(()),
        }
    }
}

/// Whether any glob matches `host` (with `port` for globs that name one),
/// as written or, for a numeric IP spelling, in its usual form.
fn any_glob(globs: &[String], host: &str, port: Option<&str>) -> bool {
    let usual = literal_ip(host).map(|ip| ip.to_string());
    std::iter::once(host).chain(usual.as_deref()).any(|host| {
        let with_port = port.map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
        globs
            .iter()
            .any(|g| glob(g, if g.contains(':') { &with_port } else { host }))
    })
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

/// Why the guard refused a connection; carried inside the `io::Error` the
/// connector fails with, so [`refusal_in`] can find it again. Logged, never
/// shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host matches an `upstreams.deny` glob.
    #[error("{0} matches an upstreams.deny glob")]
    Name(String),
    /// The address lies in a denied network.
    #[error("{address} is in {network}, a network of upstreams.denyNetworks")]
    Address {
        /// The address that would have been dialled.
        address: IpAddr,
        /// The denied network it lies in.
        network: Network,
    },
}

impl From<Refusal> for std::io::Error {
    fn from(refusal: Refusal) -> Self {
        Self::new(std::io::ErrorKind::PermissionDenied, refusal)
    }
}

/// The guard's refusal inside a connection error, if that is what it is.
pub fn refusal_in(e: &std::io::Error) -> Option<&Refusal> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refusal>())
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

    fn rules(allow: &[&str], deny: &[&str]) -> HostRules {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        HostRules::new(strings(allow), strings(deny), HostRules::default().networks).unwrap()
    }

    #[test]
    fn names() {
        let rules = rules(
            &["*.corp", "*.corp:*", "Index.Docker.IO", "10.*"],
            &["bad.corp", "good.corp:444", "10.99.*"],
        );
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
        assert!(rules.permits(&name("10.1.0.1")));
        assert!(
            !rules.permits(&name("0xa.0x63.0.1")),
            "a numeric spelling does not escape a deny"
        );
        assert!(HostRules::default().permits(&name("anything:5000")));
        let networks = Vec::new;
        assert!(HostRules::new(vec!["https://quay.io".into()], vec![], networks()).is_err());
        assert!(HostRules::new(vec![], vec!["quay.io/x*".into()], networks()).is_err());
    }

    #[test]
    fn deny_globs_apply_to_every_host_dialled() {
        let rules = rules(&["*"], &["*.internal", "cdn.example:8443"]);
        assert!(rules.check_target("r.example", 443).is_ok());
        assert_eq!(
            rules.check_target("auth.internal", 443),
            Err(Refusal::Name("auth.internal".into()))
        );
        assert!(rules.check_target("cdn.example", 8443).is_err());
        assert!(rules.check_target("cdn.example", 443).is_ok());
    }

    #[test]
    fn numeric_spellings_are_read_like_the_resolver() {
        for (spelling, usual) in [
            ("127.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0xa.0x63.0.1", "10.99.0.1"),
            ("2130706433", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0177.0.0.01", "127.0.0.1"),
            ("10.1.2", "10.1.0.2"),
            ("169.254.43518", "169.254.169.254"),
            ("0XA9.0xFE.0xA9.0xFE", "169.254.169.254"),
            ("127.0.0.1.", "127.0.0.1"),
            ("[::1]", "::1"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ] {
            assert_eq!(
                literal_ip(spelling),
                Some(usual.parse().unwrap()),
                "{spelling}"
            );
        }
        // The system resolver reads them the same way (numeric hosts need no DNS).
        for spelling in [
            "0x7f.1",
            "0xa.0x63.0.1",
            "2130706433",
            "0177.0.0.01",
            "10.1.2",
        ] {
            use std::net::ToSocketAddrs;
            let resolved: Vec<IpAddr> = (spelling, 0)
                .to_socket_addrs()
                .unwrap()
                .map(|a| a.ip())
                .collect();
            assert_eq!(resolved, vec![literal_ip(spelling).unwrap()], "{spelling}");
        }
        for name in [
            "quay.io",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.65536",
            "4294967296",
            "08.1.1.1",
            "0x",
            "1..2",
            "",
            "[quay.io]",
        ] {
            assert_eq!(literal_ip(name), None, "{name}");
        }
    }

    #[test]
    fn networks_parse_strictly() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.255.1.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: Network = " 127.0.0.2 ".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let all: Network = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Network>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(matches!(
            "10.0.0.1/8".parse::<Network>(),
            Err(NetworkError::HostBits { network, .. }) if network.to_string() == "10.0.0.0/8"
        ));
        for bad in ["10.0.0.0/33", "::/129"] {
            assert!(
                matches!(bad.parse::<Network>(), Err(NetworkError::Prefix { .. })),
                "{bad}"
            );
        }
        for bad in [
            "10/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "localhost",
            "",
            "0xa.0.0.0/8",
        ] {
            assert!(
                matches!(bad.parse::<Network>(), Err(NetworkError::Syntax(_))),
                "{bad}"
            );
        }
        for default in DEFAULT_DENY_NETWORKS {
            assert!(default.parse::<Network>().is_ok(), "{default}");
        }
    }

    #[test]
    fn default_networks() {
        let rules = HostRules::default();
        for denied in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.5",
            "::ffff:169.254.169.254",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c0a8:101",
        ] {
            assert!(
                rules.check_address(denied.parse().unwrap()).is_err(),
                "{denied}"
            );
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(
                rules.check_address(allowed.parse().unwrap()),
                Ok(()),
                "{allowed}"
            );
        }
    }

    #[test]
    fn literal_targets_are_checked_without_resolving() {
        let rules = HostRules::default();
        for host in ["10.0.0.5", "0xa.0x63.0.1", "2130706433", "::1", "[::1]"] {
            assert!(
                matches!(rules.check_target(host, 80), Err(Refusal::Address { .. })),
                "{host}"
            );
        }
        assert_eq!(rules.check_target("8.8.8.8", 443), Ok(()));
        assert_eq!(rules.check_target("registry.example", 443), Ok(()));
        let only: HostRules = HostRules::new(
            vec!["*".into()],
            vec![],
            vec!["127.0.0.2/32".parse().unwrap()],
        )
        .unwrap();
        assert!(only.check_target("127.0.0.2", 80).is_err());
        assert_eq!(only.check_target("127.0.0.1", 80), Ok(()));
        assert_eq!(only.check_address("10.0.0.5".parse().unwrap()), Ok(()));
    }
}
