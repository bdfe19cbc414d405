//! Fetching an image from a user-given URL without letting the user reach our private network.
//!
//! Every hop (the URL and each redirect, at most [`FetchLimits::max_redirects`]) is resolved here,
//! every resolved address is checked with [`is_public`], and the connection is pinned to the
//! checked address (reqwest's `resolve` override), so a DNS answer that changes between check and
//! connect (rebinding) cannot redirect the request. Bodies are streamed under a byte cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Limits of one fetch.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Connect timeout per hop.
    pub connect_timeout: Duration,
    /// Total time for the whole fetch, redirects included.
    pub total_timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Allow loopback/private addresses (tests against a local server only).
    pub allow_private: bool,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(20),
            max_redirects: 3,
            allow_private: false,
        }
    }
}

/// Why a URL could not be fetched; each message is safe to show to the user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FetchError {
    /// Not an absolute http(s) URL.
    #[error("not a valid http or https URL")]
    InvalidUrl,
    /// The host resolves to an address that is not public.
    #[error("URL refused: {host} is a private, loopback or otherwise non-public address")]
    Refused {
        /// The host (or address) that was refused.
        host: String,
    },
    /// The host name does not resolve.
    #[error("URL unreachable: cannot resolve {0}")]
    Resolve(String),
    /// Connection failure, timeout or a non-success status.
    #[error("URL unreachable: {0}")]
    Unreachable(String),
    /// More redirects than allowed.
    #[error("URL unreachable: more than {0} redirects")]
    TooManyRedirects(usize),
    /// The body is larger than the limit.
    #[error("image too large: the URL's content exceeds {0} bytes")]
    TooLarge(u64),
}

/// True when `ip` is a globally routable unicast address: not loopback, private, link-local, CGNAT,
/// multicast, unspecified, documentation, benchmarking, reserved, and for IPv6 also not unique-local,
/// site-local, and not an IPv4-mapped/compatible/NAT64/6to4 form of a non-public IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network", unspecified
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254)              // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 88 && c == 99)    // 6to4 relay anycast
        || (a == 192 && b == 168)              // private
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (deprecated ::a.b.c.d), including :: and ::1.
    if s[..6].iter().all(|&x| x == 0) {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !((s[0] & 0xfe00) == 0xfc00              // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80         // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0         // site-local fec0::/10 (deprecated)
        || (s[0] & 0xff00) == 0xff00         // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x200)  // 2001::/23 IETF special (Teredo, benchmarking, ...)
        || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // discard 100::/64
        || (s[0] & 0xe000) != 0x2000) // only 2000::/3 is global unicast
}

/// Resolve `host:port` and return the one address to connect to, refusing if any address the
/// name resolves to is non-public (a name with one private answer is treated as hostile).
async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<SocketAddr, FetchError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = literal.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| FetchError::Resolve(host.to_string()))?
            .collect()
    };
    let first = *addrs
        .first()
        .ok_or_else(|| FetchError::Resolve(host.to_string()))?;
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(FetchError::Refused {
            host: host.to_string(),
        });
    }
    Ok(first)
}

/// Fetch `url` under `limits`, following at most `max_redirects` redirects, each hop checked.
pub async fn fetch(url: &str, limits: &FetchLimits) -> Result<Bytes, FetchError> {
    tokio::time::timeout(limits.total_timeout, fetch_inner(url, limits))
        .await
        .map_err(|_| FetchError::Unreachable("timed out".into()))?
}

async fn fetch_inner(url: &str, limits: &FetchLimits) -> Result<Bytes, FetchError> {
    let mut url = reqwest::Url::parse(url.trim()).map_err(|_| FetchError::InvalidUrl)?;
    for _hop in 0..=limits.max_redirects {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::InvalidUrl);
        }
        let host = url.host_str().ok_or(FetchError::InvalidUrl)?.to_string();
        let port = url.port_or_known_default().ok_or(FetchError::InvalidUrl)?;
        let addr = resolve_checked(&host, port, limits.allow_private).await?;
        // Pin the connection to the address just checked: no second DNS lookup happens.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.total_timeout)
            .no_proxy()
            .resolve(host.trim_start_matches('[').trim_end_matches(']'), addr)
            .build()
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let mut response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "image/*")
            .send()
            .await
            .map_err(|e| FetchError::Unreachable(without_url(e)))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    FetchError::Unreachable(format!("redirect {status} without Location"))
                })?;
            url = url.join(location).map_err(|_| FetchError::InvalidUrl)?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Unreachable(format!(
                "the server answered {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > limits.max_bytes)
        {
            return Err(FetchError::TooLarge(limits.max_bytes));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Unreachable(without_url(e)))?
        {
            if body.len() as u64 + chunk.len() as u64 > limits.max_bytes {
                return Err(FetchError::TooLarge(limits.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(body.freeze());
    }
    Err(FetchError::TooManyRedirects(limits.max_redirects))
}

fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.without_url().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn non_public_ipv4_literals_are_refused() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(!public(a), "{a} should be refused");
        }
    }

    #[test]
    fn public_ipv4_literals_are_allowed() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "223.255.255.255",
        ] {
            assert!(public(a), "{a} should be allowed");
        }
    }

    #[test]
    fn non_public_ipv6_literals_are_refused() {
        for a in [
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001::1",
            "100::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!public(a), "{a} should be refused");
        }
    }

    #[test]
    fn public_ipv6_literals_are_allowed() {
        for a in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(a), "{a} should be allowed");
        }
    }

    #[tokio::test]
    async fn urls_that_are_not_http_are_invalid() {
        let limits = FetchLimits::default();
        for u in [
            "file:///etc/passwd",
            "ftp://example.invalid/x",
            "not a url",
            "gopher://x",
        ] {
            assert_eq!(fetch(u, &limits).await, Err(FetchError::InvalidUrl), "{u}");
        }
    }

    /// The guard must refuse loopback literals before any connection: a listener on 127.0.0.1
    /// sees nothing. (If the guard were broken, the only traffic would be to loopback.)
    #[tokio::test]
    async fn loopback_is_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = FetchLimits::default();
        for u in [
            format!("http://127.0.0.1:{port}/x.png"),
            format!("http://[::ffff:127.0.0.1]:{port}/x.png"),
            format!("http://localhost:{port}/x.png"),
            format!("http://2130706433:{port}/x.png"), // 127.0.0.1 as one decimal number
        ] {
            let e = fetch(&u, &limits).await.unwrap_err();
            assert!(matches!(e, FetchError::Refused { .. }), "{u}: {e:?}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "the guard let a connection through");
    }
}
