//! Who a request on the admin listener comes from, for the limit on failed
//! authentications: the peer, or behind a trusted reverse proxy the client
//! the proxy names.
//!
//! Behind a proxy every client shares the proxy's address, so one bad
//! client would use up everyone's failures. `[admin] trusted_proxies`
//! lists the proxies (CIDRs) and `[admin] forwarded_header` the one header
//! they write (`x-forwarded-for`, the default, or RFC 7239's `forwarded`);
//! a request from one of them is attributed to the rightmost address of
//! that header that is not itself a trusted proxy: the first hop a trusted
//! proxy saw. The other header is never read (a proxy passes it through as
//! the client sent it), and a request from anywhere else is its peer's,
//! whatever it claims, so a client cannot pick its own bucket.

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

/// The header trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// The trusted proxies, and the client a request comes from.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    cidrs: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// The proxies given as CIDRs, writing `header`.
    pub fn parse(list: &[String], header: &str) -> Result<Self, String> {
        let header = match header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => ForwardedHeader::XForwardedFor,
            "forwarded" => ForwardedHeader::Forwarded,
            _ => {
                return Err(format!(
                    "forwarded_header `{}`: use x-forwarded-for or forwarded",
                    header
                        .chars()
                        .filter(char::is_ascii_graphic)
                        .take(40)
                        .collect::<String>()
                ));
            }
        };
        let cidrs = list
            .iter()
            .map(|text| Cidr::parse(text))
            .collect::<Result<_, _>>()?;
        Ok(Self { cidrs, header })
    }

    /// Whether a block of them trusts every peer (`0.0.0.0/0`, `::/0`):
    /// then any client can name itself.
    pub fn trusts_everyone(&self) -> bool {
        self.cidrs.iter().any(|cidr| cidr.prefix == 0)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.cidrs.iter().any(|cidr| cidr.contains(address))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = forwarded_for(headers, self.header);
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

/// The addresses a request's proxies recorded in `header`, nearest last.
/// A hop that does not parse (`unknown`, an obfuscated name) is `None`.
fn forwarded_for(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().map(str::to_owned).unwrap_or_default())
            .collect()
    };
    if header == ForwardedHeader::XForwardedFor {
        return values("x-forwarded-for")
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
                    .then(|| unquoted(value.trim()).and_then(parse_hop))
            })
        })
        .collect()
}

/// A `Forwarded` value without its quotes; `None` if it is half-quoted.
fn unquoted(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
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
        let proxies = TrustedProxies::parse(
            &["127.0.0.1/32".into(), "10.0.0.0/8".into()],
            "x-forwarded-for",
        )
        .unwrap();
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
        // `Forwarded` is not the header these proxies write: the client's.
        assert_eq!(proxies.client(ip("127.0.0.1"), &rfc), ip("127.0.0.1"));
        let rfc_proxies =
            TrustedProxies::parse(&["127.0.0.1/32".into(), "10.0.0.0/8".into()], "Forwarded")
                .unwrap();
        assert_eq!(rfc_proxies.client(ip("127.0.0.1"), &rfc), ip("2001:db8::7"));
        // ... and then the client's own X-Forwarded-For is not read.
        let both = headers(&[
            ("x-forwarded-for", "10.77.0.1"),
            ("forwarded", "for=127.0.0.7"),
        ]);
        assert_eq!(rfc_proxies.client(ip("127.0.0.1"), &both), ip("127.0.0.7"));
        let half = headers(&[("forwarded", "for=\"10.2.2.17")]);
        assert_eq!(rfc_proxies.client(ip("127.0.0.1"), &half), ip("127.0.0.1"));
        assert!(TrustedProxies::parse(&[], "x-real-ip").is_err());
        assert!(
            TrustedProxies::parse(&["0.0.0.0/0".into()], "forwarded")
                .unwrap()
                .trusts_everyone()
        );
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
