//! Who a request or a connection comes from, for the budgets every client
//! gets (publish rate, connections).
//!
//! A client is its user once authenticated, otherwise its address. Nothing
//! is keyed on a value a client can invent for free: an address costs a
//! connection from it, and a whole IPv6 /64 (what one host is usually
//! given) counts as one address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use actix_web::HttpRequest;

/// The network part of an IPv6 address: its first 64 bits.
const NETWORK_64: u128 = !0 << 64;

/// One client, as far as per-client budgets go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// An authenticated user (a token's subject).
    User(Arc<str>),
    /// An anonymous client, by address; IPv6 by its /64.
    Address(IpAddr),
}

impl ClientId {
    pub fn from_address(address: IpAddr) -> Self {
        let address = match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & NETWORK_64)),
            },
            v4 => v4,
        };
        ClientId::Address(address)
    }

    /// The anonymous client behind `request`: the peer, or the `X-Real-IP`
    /// a trusted gateway sets (clients cannot forge it through such a
    /// gateway, which overwrites it). Requests that carry neither (not over
    /// TCP) all count as one client.
    pub fn of_request(request: &HttpRequest, trust_x_real_ip: bool) -> Self {
        let forwarded = trust_x_real_ip
            .then(|| {
                request
                    .headers()
                    .get("x-real-ip")?
                    .to_str()
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .flatten();
        let address = forwarded
            .or_else(|| request.peer_addr().map(|peer| peer.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        ClientId::from_address(address)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::User(subject) => write!(f, "user {subject}"),
            ClientId::Address(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            ClientId::Address(v4) => write!(f, "{v4}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> ClientId {
        ClientId::from_address(text.parse().expect("an address"))
    }

    #[test]
    fn an_ipv6_address_counts_by_its_64() {
        assert_eq!(
            address("2001:db8:1:2:aaaa::1"),
            address("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(address("2001:db8:1:2::1"), address("2001:db8:1:3::1"));
        assert_eq!(address("2001:db8:1:2::7").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn an_ipv4_address_counts_alone_even_when_mapped_into_ipv6() {
        assert_eq!(address("::ffff:10.0.0.1"), address("10.0.0.1"));
        assert_ne!(address("10.0.0.1"), address("10.0.0.2"));
    }
}
