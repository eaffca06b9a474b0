//! What the server knows about the connection a request came on. The
//! listener puts a [`ConnInfo`] into every request's extensions; auth and
//! per-client limits read it from there.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The connection a request arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The subject common name of a verified TLS client certificate (mTLS),
    /// if the client presented one.
    pub client_cert_name: Option<String>,
}

impl ConnInfo {
    /// The connection info of a request, if the listener recorded it.
    pub fn of<B>(req: &http::Request<B>) -> Option<&ConnInfo> {
        req.extensions().get::<ConnInfo>()
    }
}

/// The group of addresses that per-client limits treat as one client: an
/// IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 address)
/// or an IPv6 /64, the smallest block a site or a host is usually given;
/// anyone with one IPv6 address has the other 2^64 of its /64 too.
pub fn client_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(s: &str) -> String {
        client_group(s.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_by_64_ipv4_alone() {
        assert_eq!(group("10.1.2.3"), "10.1.2.3");
        assert_eq!(group("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(group("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(group("2001:db8:1:2:ffff::1"), "2001:db8:1:2::");
        assert_eq!(group("2001:db8:1:3::1"), "2001:db8:1:3::");
        assert_eq!(group("::1"), "::");
    }
}
