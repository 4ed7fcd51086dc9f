//! Behind a reverse proxy: the client's address from `X-Forwarded-For` or `Forwarded`, believed
//! only when the TCP peer is a proxy the operator listed in [`ServerOptions::trusted_proxies`].
//!
//! [`ServerOptions::trusted_proxies`]: super::ServerOptions::trusted_proxies

use alloc::string::String;
use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, SocketAddr};

/// An address or CIDR block of trusted reverse proxies: `"10.0.0.7"`, `"10.0.0.0/8"`, `"::1"`,
/// `"fd00::/8"`.
///
/// ```
/// use socketcluster::server::TrustedProxy;
///
/// let block: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert!(block.contains("10.1.2.3".parse().unwrap()));
/// assert!(!block.contains("192.168.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// Whether `ip` is in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Why a [`TrustedProxy`] did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadProxy(String);

impl fmt::Display for BadProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an IP address or CIDR block: {:?}", self.0)
    }
}

impl core::error::Error for BadProxy {}

impl FromStr for TrustedProxy {
    type Err = BadProxy;

    fn from_str(s: &str) -> Result<Self, BadProxy> {
        let bad = || BadProxy(String::from(s));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(TrustedProxy { net, prefix })
    }
}

/// One `for=` or `X-Forwarded-For` entry as an address (`"[::1]:80"`, `"1.2.3.4"`, quoted or
/// not); `unknown` and obfuscated names are not addresses.
fn entry_address(entry: &str) -> Option<SocketAddr> {
    let e = entry.trim().trim_matches('"');
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip = e.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

/// The `for=` values of `Forwarded` header values, in order.
pub(crate) fn forwarded_for(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').flat_map(|element| element.split(';')).filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })
}

/// The client's address: `peer` unless it is a trusted proxy; then the last hop in `hops`
/// (nearest last) that is not a trusted proxy, or the first one when all are. A hop that is not
/// an address ends the walk there (nothing beyond it can be believed): then `peer` is kept.
pub(crate) fn client_address(
    peer: Option<SocketAddr>,
    hops: &[&str],
    trusted: &[TrustedProxy],
) -> Option<SocketAddr> {
    let Some(p) = peer else { return peer };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !is_trusted(p.ip()) || hops.is_empty() {
        return peer;
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = entry_address(hop) else { return peer };
        client = Some(addr);
        if !is_trusted(addr.ip()) {
            break;
        }
    }
    client
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn t(s: &str) -> TrustedProxy {
        s.parse().expect("parses")
    }

    #[test]
    fn blocks() {
        assert!(t("127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(!t("127.0.0.1").contains("127.0.0.2".parse().unwrap()));
        assert!(t("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(t("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(t("10.0.0.0/8").contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!("nonsense".parse::<TrustedProxy>().is_err());
        assert!("::1/129".parse::<TrustedProxy>().is_err());
    }

    #[test]
    fn walks_the_hops() {
        let peer: Option<SocketAddr> = Some("10.0.0.1:5000".parse().unwrap());
        let trusted = [t("10.0.0.0/8")];
        let client = |hops: &[&str]| client_address(peer, hops, &trusted);
        assert_eq!(client(&["203.0.113.7"]), Some("203.0.113.7:0".parse().unwrap()));
        // A client's spoofed entry before the real one is not believed.
        assert_eq!(client(&["6.6.6.6", "203.0.113.7", "10.0.0.2"]), Some("203.0.113.7:0".parse().unwrap()));
        assert_eq!(client(&["\"[2001:db8::1]:4711\""]), Some("[2001:db8::1]:4711".parse().unwrap()));
        assert_eq!(client(&["unknown"]), peer);
        assert_eq!(client(&[]), peer);
        // An untrusted peer's headers are ignored.
        let direct: Option<SocketAddr> = Some("198.51.100.1:1".parse().unwrap());
        assert_eq!(client_address(direct, &["203.0.113.7"], &trusted), direct);
        let hops: Vec<&str> =
            forwarded_for("for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8::2]\"").collect();
        assert_eq!(hops, ["192.0.2.60", "\"[2001:db8::2]\""]);
    }
}
