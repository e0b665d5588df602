//! Who a request on the admin listener comes from, for the limit on failed
//! authentications: the peer, or behind a trusted reverse proxy the client
//! the proxy names.
//!
//! Behind a proxy every client shares the proxy's address, so one bad
//! client would use up everyone's failures. `[admin] trusted_proxies`
//! lists the proxies (CIDRs); a request from one of them is attributed to
//! the rightmost address of `X-Forwarded-For` (or, without it, of
//! `Forwarded: for=`) that is not itself a trusted proxy: the first hop a
//! trusted proxy saw. A request from anywhere else is its peer's, whatever
//! it claims, so a client cannot pick its own bucket by sending the header.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// An address block, as `ADDRESS/PREFIX` or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or `127.0.0.1`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("trusted proxy `{text}`: {why}");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| bad("not an IP address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&prefix| prefix <= max)
                .ok_or_else(|| bad(&format!("the prefix must be 0 to {max}")))?,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `address` is in the block.
    pub fn contains(&self, address: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(address)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(address).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(address)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(address), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The trusted proxies, and the client a request comes from.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// The proxies given as CIDRs.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|text| Cidr::parse(text))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(address))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = forwarded_for(headers);
        // From the nearest hop back: the first one no trusted proxy is.
        while let Some(hop) = hops.pop() {
            match hop {
                Some(address) if self.trusts(address) => continue,
                Some(address) => return address,
                // A hop that is not an address: nothing before it can be
                // believed, so the request is the last trusted hop's.
                None => break,
            }
        }
        peer
    }
}

/// The addresses a request's proxies recorded, nearest last: every
/// `X-Forwarded-For` in order, or else every `Forwarded` element's `for=`.
/// A hop that does not parse (`unknown`, an obfuscated name) is `None`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().map(str::to_owned).unwrap_or_default())
            .collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|value| value.split(','))
            .map(|hop| parse_hop(hop.trim()))
            .collect();
    }
    values("forwarded")
        .iter()
        .flat_map(|value| value.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (address, _) = rest.split_once(']')?;
        return address.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    }
    let (address, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains(ip("::ffff:127.0.0.1"))
        );
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "ten/8", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies::parse(&["127.0.0.1/32".into(), "10.0.0.0/8".into()]).unwrap();
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        // From the proxy: the first hop that is no proxy of ours.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &forwarded),
            ip("203.0.113.9")
        );
        // From anyone else: the peer, whatever it claims.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &forwarded),
            ip("198.51.100.1")
        );
        // A client's own forged hop sits left of the real one: ignored.
        let forged = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &forged), ip("203.0.113.9"));
        // Several headers are one list; `Forwarded` when there is no XFF.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &split), ip("203.0.113.9"));
        let rfc = headers(&[(
            "forwarded",
            "for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &rfc), ip("2001:db8::7"));
        // Nothing usable: the proxy's own address.
        let unknown = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &unknown), ip("127.0.0.1"));
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // No trusted proxies: always the peer.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("127.0.0.1"), &forwarded), ip("127.0.0.1"));
    }
}
