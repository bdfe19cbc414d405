//! Who the client is: the connection's peer address, or, when the peer is one of the configured
//! trusted reverse proxies, the address that proxy wrote into `X-Forwarded-For`.
//!
//! Every per-address limit (login throttling, the detection pool's per-client share) keys on
//! [`ClientAddr`], and every route gets it from [`client_addr`], so HTML and API routes agree.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use warp::Filter;
use warp::http::HeaderMap;

/// The peer address of the connection a request came on, attached by [`crate::server::serve`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The address a request is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub Option<IpAddr>);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            // Only requests that did not come through `serve` (in-process filter tests).
            None => f.write_str("unknown"),
        }
    }
}

/// An address (`10.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`), as `trusted_proxies` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyNet(pub IpNet);

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(|n| ProxyNet(n.trunc()))
            .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProxyNet> for String {
    fn from(n: ProxyNet) -> String {
        n.0.to_string()
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Trust these addresses and ranges.
    pub fn new(nets: &[ProxyNet]) -> Self {
        TrustedProxies(Arc::new(nets.iter().map(|n| n.0).collect()))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` with these headers. From an untrusted peer the
    /// header is ignored. From a trusted one, `X-Forwarded-For` is read right to left (each proxy
    /// appends the address it received from) and the first address that is not itself a trusted
    /// proxy is the client; an unparsable entry stops the walk at the last trusted hop, since
    /// anything left of it may be forged.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>().map(canonical) {
                Ok(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of every request (see the module doc).
pub fn client_addr(
    trusted: TrustedProxies,
) -> impl Filter<Extract = (ClientAddr,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::headers_cloned())
        .map(move |peer: Option<PeerAddr>, headers: HeaderMap| {
            ClientAddr(peer.map(|PeerAddr(a)| trusted.client(a.ip(), &headers)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let t = TrustedProxies::default();
        assert_eq!(
            t.client(ip("127.0.0.2"), &headers(&["192.0.2.9"])),
            ip("127.0.0.2")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_forged_hops_to_its_left_are_ignored() {
        let t = TrustedProxies::new(&["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            t.client(ip("127.0.0.1"), &headers(&["192.0.2.9"])),
            ip("192.0.2.9")
        );
        // The client itself sent "1.2.3.4"; the proxy appended the real address.
        assert_eq!(
            t.client(ip("127.0.0.1"), &headers(&["1.2.3.4, 192.0.2.9"])),
            ip("192.0.2.9")
        );
        assert_eq!(
            t.client(ip("127.0.0.1"), &headers(&["1.2.3.4", "192.0.2.9"])),
            ip("192.0.2.9")
        );
        // Chains of trusted proxies are walked through.
        let t2 = TrustedProxies::new(&["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            t2.client(ip("10.0.0.1"), &headers(&["192.0.2.9, 10.1.1.1"])),
            ip("192.0.2.9")
        );
        // Garbage stops the walk at the last trusted hop; no header means the peer.
        assert_eq!(
            t2.client(ip("10.0.0.1"), &headers(&["192.0.2.9, junk, 10.1.1.1"])),
            ip("10.1.1.1")
        );
        assert_eq!(t.client(ip("127.0.0.1"), &headers(&[])), ip("127.0.0.1"));
        // An untrusted peer's header is never read.
        assert_eq!(
            t.client(ip("127.0.0.2"), &headers(&["192.0.2.9"])),
            ip("127.0.0.2")
        );
    }

    #[test]
    fn proxies_are_addresses_or_ranges() {
        let n: ProxyNet = "127.0.0.2".parse().unwrap();
        assert_eq!(n.0.to_string(), "127.0.0.2/32");
        let n: ProxyNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.0.to_string(), "10.0.0.0/8");
        let n: ProxyNet = "::1".parse().unwrap();
        assert_eq!(n.0.to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<ProxyNet>().is_err());
        assert!("proxy.example".parse::<ProxyNet>().is_err());
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_ranges() {
        let t = TrustedProxies::new(&["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            t.client(ip("::ffff:127.0.0.1"), &headers(&["192.0.2.9"])),
            ip("192.0.2.9")
        );
    }
}
